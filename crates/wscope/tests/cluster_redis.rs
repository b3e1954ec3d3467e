//! Cluster mode against the real Redis: `wscope serve` processes on their own ports sharing a
//! unique cluster name. Sums, close by id through another instance, broadcast and chat across
//! instances, SIGKILL and expiry, the duplicate instance id, and a Redis of the test's own that
//! is down at start, killed and restarted mid-run.
//!
//! Without a reachable Redis each test prints one `SKIPPED: …` line and passes, unless
//! `WSCOPE_REQUIRE_REDIS=1` (as `.ci/run` sets) makes it fail.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use wscope_redis::testing::{redis_url_or_skip, required, skip_or_fail, RedisServer};
use wscope_redis::{RedisBackend, RedisOptions};
use wscope_testkit::http::{http_get, http_post};
use wscope_testkit::served::Served;

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A cluster name no other run shares (names allow `A-Z a-z 0-9 . _ -`).
fn cluster_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t-{test}-{}-{nanos}", std::process::id())
}

/// One instance of the cluster `name` on `url`.
fn instance(url: &str, name: &str, id: &str) -> Served {
    Served::start(
        BIN,
        &[
            "--redis-url",
            url,
            "--cluster-name",
            name,
            "--instance-id",
            id,
            "--cluster-heartbeat",
            "200ms",
            "--cluster-ttl",
            "800ms",
            "--cluster-timeout",
            "2s",
            "--ping-interval",
            "0",
            "--stats-interval",
            "0",
        ],
    )
}

/// Deletes the cluster's keys (its instances' leases), as every test does at its end.
async fn clean(url: &str, name: &str) {
    let backend = RedisBackend::connect(url, RedisOptions::default()).unwrap();
    let _ = backend.delete_matching(&format!("wscope:{name}:*")).await;
}

async fn get(served: &Served, path: &str) -> (u16, Value) {
    let res = http_get(served.admin, path).await;
    let body = serde_json::from_str(&res.text()).unwrap_or(Value::Null);
    (res.status, body)
}

async fn post(served: &Served, path: &str, body: &str) -> (u16, Value) {
    let res = http_post(served.admin, path, body).await;
    let body = serde_json::from_str(&res.text()).unwrap_or(Value::Null);
    (res.status, body)
}

/// Polls (bounded) until `check` holds for the answer of `path`; returns that answer.
async fn wait_for(
    served: &Served,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get(served, path).await;
        if status == 200 && check(&body) || path == "/health" && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn statuses(stats: &Value) -> HashMap<String, String> {
    stats["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn connect(served: &Served, path: &str) -> Ws {
    tokio_tungstenite::connect_async(served.url(path))
        .await
        .unwrap()
        .0
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn send_chat(ws: &mut Ws, prefix: &str) {
    for i in 0..50 {
        ws.send(Message::text(format!("{prefix}{i}")))
            .await
            .unwrap();
    }
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next_text(ws).await, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_are_seen_and_steered_as_one() {
    let Some(url) = redis_url_or_skip("three_instances_are_seen_and_steered_as_one").await else {
        return;
    };
    let name = cluster_name("three");
    let mut nodes: Vec<Served> = ["n0", "n1", "n2"]
        .iter()
        .map(|id| instance(&url, &name, id))
        .collect();
    for n in &nodes {
        wait_for(n, "/api/cluster/stats", "three live", |s| {
            statuses(s).values().filter(|v| *v == "live").count() == 3
        })
        .await;
    }

    // Clients spread over the instances: 2, 1 and 3 on /ws, one chat client each.
    let mut echo_clients = Vec::new();
    for (n, count) in nodes.iter().zip([2, 1, 3]) {
        for _ in 0..count {
            echo_clients.push(connect(n, "/ws").await);
        }
    }
    let mut chat = Vec::new();
    for n in &nodes {
        chat.push(connect(n, "/ws/chat").await);
    }
    for ws in &mut echo_clients {
        echo(ws, "hi").await;
    }
    let mut own_sum = 0;
    for n in &nodes {
        own_sum += wait_for(n, "/api/stats?connections=0", "own stats", |s| {
            s["connectionsByState"]["OPEN"].as_u64().unwrap() > 0
        })
        .await["totalConnections"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(own_sum, 9);
    let stats = wait_for(&nodes[1], "/api/cluster/stats", "sum", |s| {
        s["totalConnections"] == 9
    })
    .await;
    assert_eq!(stats["totalConnections"].as_u64().unwrap(), own_sum);
    assert_eq!(stats["connectionsByState"]["OPEN"], 9);
    assert_eq!(stats["traffic"]["messagesIn"], 6);
    assert_eq!(stats["instancesCounted"], 3);

    // Close one connection of n2 through n0's admin API.
    let (_, page) = get(&nodes[2], "/api/connections?path=/ws&limit=1").await;
    let id = page["connections"][0]["id"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"action":"close","id":"{id}","code":4000,"reason":"from n0"}}"#);
    let (status, answer) = post(&nodes[0], "/api/cluster/admin", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["instances"][0]["instanceId"], "n2");
    let mut closed = None;
    for (i, ws) in echo_clients.iter_mut().enumerate().skip(3) {
        if let Ok(Some(Ok(Message::Close(Some(frame))))) =
            tokio::time::timeout(Duration::from_millis(300), ws.next()).await
        {
            closed = Some((i, u16::from(frame.code), frame.reason.to_string()));
        }
    }
    let (gone, code, reason) = closed.expect("one of n2's clients was closed");
    assert_eq!((code, reason.as_str()), (4000, "from n0"));
    echo_clients.remove(gone);

    // A broadcast through n1 reaches every /ws client of every instance once.
    let (status, answer) = post(
        &nodes[1],
        "/api/cluster/admin",
        r#"{"action":"broadcast","path":"/ws","text":"to everyone"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sent"], 5);
    assert_eq!(answer["instances"].as_array().unwrap().len(), 3);
    for ws in &mut echo_clients {
        assert_eq!(next_text(ws).await, "to everyone");
    }

    // Chat: two senders at once; every chat client of every instance gets each message once,
    // in order per sender.
    let (mut a, mut c) = (chat.remove(0), chat.pop().unwrap());
    tokio::join!(send_chat(&mut a, "a"), send_chat(&mut c, "c"));
    chat.insert(0, a);
    chat.push(c);
    for ws in &mut chat {
        let mut got = Vec::new();
        for _ in 0..100 {
            got.push(next_text(ws).await);
        }
        let from =
            |p: char| -> Vec<String> { got.iter().filter(|m| m.starts_with(p)).cloned().collect() };
        let expect = |p: char| -> Vec<String> { (0..50).map(|i| format!("{p}{i}")).collect() };
        assert_eq!(from('a'), expect('a'));
        assert_eq!(from('c'), expect('c'));
        let extra = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
        assert!(extra.is_err(), "nothing more: {extra:?}");
    }

    // A second instance named n0 is refused with one clear line, and exits.
    let dup = run_duplicate_n0(&url, &name);
    let stderr = String::from_utf8_lossy(&dup.stderr);
    assert_eq!(dup.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.starts_with("error: instance id \"n0\" is already a member of cluster")
            && line.contains("--instance-id"),
        "{line}"
    );

    // SIGKILL n2: it is reported gone (after the TTL; the wait is bounded), and its connections
    // leave the sums.
    nodes[2].child.kill().unwrap();
    let stats = wait_for(&nodes[0], "/api/cluster/stats", "n2 gone", |s| {
        statuses(s).get("n2").map(String::as_str) == Some("gone")
    })
    .await;
    assert_eq!(stats["instancesCounted"], 2);
    assert_eq!(stats["totalConnections"], 5); // n0: 2 + 1 chat; n1: 1 + 1 chat
    nodes.pop();
    clean(&url, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_leaves_local_service_alone_and_the_cluster_recovers() {
    let test = "a_redis_outage_leaves_local_service_alone_and_the_cluster_recovers";
    if !RedisServer::available() {
        skip_or_fail(test, "no redis-server binary to start", required());
        return;
    }
    let mut redis = RedisServer::on_free_port().unwrap();
    let url = redis.url();
    let name = cluster_name("outage");
    // Redis down at start: both serve locally and say so.
    let a = instance(&url, &name, "a");
    let b = instance(&url, &name, "b");
    let health = wait_for(&a, "/health", "disconnected", |h| {
        h["cluster"] == "disconnected"
    })
    .await;
    assert_eq!(health["status"], "healthy");
    let (status, body) = get(&a, "/api/cluster/stats").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["cluster"], "disconnected");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("cannot be reached"));
    let mut ws = connect(&a, "/ws").await;
    echo(&mut ws, "local while Redis is down").await;

    // Redis appears: both join.
    redis.start().await.unwrap();
    for n in [&a, &b] {
        wait_for(n, "/api/cluster/stats", "joined", |s| {
            statuses(s).values().filter(|v| *v == "live").count() == 2
        })
        .await;
    }
    assert_eq!(get(&b, "/health").await.1["cluster"], "connected");

    // Redis lost mid-run: local echo goes on; the cluster endpoints say why they cannot answer.
    redis.kill();
    for i in 0..20 {
        echo(&mut ws, &format!("local {i}")).await;
    }
    wait_for(&a, "/health", "lost", |h| h["cluster"] == "disconnected").await;
    let (status, body) = post(&a, "/api/cluster/admin", r#"{"action":"cleanup"}"#).await;
    assert_eq!(status, 503, "{body}");
    for i in 0..20 {
        echo(&mut ws, &format!("still local {i}")).await;
    }

    // Back: the view and the actions resume (each instance answers its own survey only once it
    // has rejoined, so both are asked).
    redis.start().await.unwrap();
    wait_for(&a, "/api/cluster/stats", "a recovered", |s| {
        statuses(s).values().filter(|v| *v == "live").count() == 2 && s["instancesCounted"] == 2
    })
    .await;
    let stats = wait_for(&b, "/api/cluster/stats", "b recovered", |s| {
        statuses(s).values().filter(|v| *v == "live").count() == 2 && s["instancesCounted"] == 2
    })
    .await;
    assert_eq!(stats["totalConnections"], 1);
    let (status, answer) = post(&b, "/api/cluster/admin", r#"{"action":"cleanup"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["instances"].as_array().unwrap().len(), 2);
    echo(&mut ws, "after").await;

    // Logged once per state change, not per retry: one line per loss of the link (the instance's
    // own count of them), however many attempts the backoff made. (The line at start, Redis
    // down, comes before "listening", which the harness reads past.)
    drop(a);
    let metrics = http_get(b.admin, "/metrics").await.text();
    let disconnects: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wscope_cluster_disconnects_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the disconnect counter");
    assert!(disconnects >= 1, "{metrics}");
    let lines: Vec<String> = b.lines.try_iter().collect();
    let down = lines
        .iter()
        .filter(|l| l.contains("cluster engine unreachable"))
        .count();
    assert_eq!(down, disconnects, "{lines:#?}");
    clean(&url, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_never_holds_up_a_socket() {
    let test = "a_slow_redis_never_holds_up_a_socket";
    if !RedisServer::available() {
        skip_or_fail(test, "no redis-server binary to start", required());
        return;
    }
    let mut redis = RedisServer::on_free_port()
        .unwrap()
        .with_args(["--enable-debug-command", "yes"]);
    redis.start().await.unwrap();
    let url = redis.url();
    let name = cluster_name("slow");
    let a = instance(&url, &name, "a");
    let b = instance(&url, &name, "b");
    for n in [&a, &b] {
        wait_for(n, "/api/cluster/stats", "joined", |s| {
            statuses(s).values().filter(|v| *v == "live").count() == 2
        })
        .await;
    }
    let mut echo_ws = connect(&a, "/ws").await;
    let mut chat_a = connect(&a, "/ws/chat").await;
    let mut chat_b = connect(&b, "/ws/chat").await;
    echo(&mut echo_ws, "warm").await;
    send_chat(&mut chat_a, "w").await;
    for _ in 0..50 {
        next_text(&mut chat_a).await;
        next_text(&mut chat_b).await;
    }

    // Redis stops answering for 3 s (past the backend's 1 s command timeout: the instances will
    // also see their link time out).
    let mut sleeper = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "DEBUG", "SLEEP", "3"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Meanwhile, on A: echo round trips, and chat messages reach A's own chat client...
    for i in 0..10 {
        echo(&mut echo_ws, &format!("during {i}")).await;
    }
    send_chat(&mut chat_a, "s").await;
    for i in 0..50 {
        assert_eq!(next_text(&mut chat_a).await, format!("s{i}"));
    }
    // ...before Redis has answered anything: no socket task waited on it.
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "Redis woke before the local traffic was through"
    );
    sleeper.wait().unwrap();
    // Once Redis answers again the cluster is whole: new chat messages reach B, in order
    // (those sent during the freeze reached B, or were counted undelivered on A).
    for n in [&a, &b] {
        wait_for(n, "/api/cluster/stats", "whole again", |s| {
            statuses(s).values().filter(|v| *v == "live").count() == 2 && s["instancesCounted"] == 2
        })
        .await;
    }
    send_chat(&mut chat_a, "t").await;
    let mut got_during = 0;
    loop {
        let text = next_text(&mut chat_b).await;
        if text.starts_with('s') {
            got_during += 1;
            continue;
        }
        // Past the freeze's messages (if they came): this is a warm-up echo of the new round.
        assert_eq!(text, "t0", "after {got_during} messages of the freeze");
        break;
    }
    for i in 1..50 {
        assert_eq!(next_text(&mut chat_b).await, format!("t{i}"));
    }
    assert!(
        got_during == 0 || got_during == 50,
        "{got_during} of the freeze's 50"
    );
    clean(&url, &name).await;
}

/// A second instance with a live instance's id says so once: the one `error:` line the README
/// promises, not the same refusal logged first at error level as well.
/// Runs a second `wscope serve` named n0 in cluster `name` to its end (it is refused when an n0
/// is already a live member).
fn run_duplicate_n0(url: &str, name: &str) -> std::process::Output {
    std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--redis-url",
            url,
            "--cluster-name",
            name,
            "--instance-id",
            "n0",
        ])
        .args(["--cluster-heartbeat", "200ms", "--cluster-ttl", "800ms"])
        .env_remove("INSTANCE_ID")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_instance_id_is_refused_in_one_line() {
    let Some(url) = redis_url_or_skip("a_duplicate_instance_id_is_refused_in_one_line").await
    else {
        return;
    };
    let name = cluster_name("dup");
    let first = instance(&url, &name, "n0");
    wait_for(&first, "/health", "joined", |h| h["cluster"] == "connected").await;
    let dup = run_duplicate_n0(&url, &name);
    let stderr = String::from_utf8_lossy(&dup.stderr);
    assert_eq!(dup.status.code(), Some(1), "{stderr}");
    let refusals: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("is already a member of cluster"))
        .collect();
    assert_eq!(refusals.len(), 1, "{stderr}");
    assert!(
        refusals[0].starts_with("error: instance id \"n0\""),
        "{stderr}"
    );
    drop(first);
    clean(&url, &name).await;
}
