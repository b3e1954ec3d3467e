//! Hostile cases of cluster mode, against the real Redis: a chat client that floods large
//! messages, and a forger who publishes straight to the cluster's channel (Redis is the
//! documented trust boundary; what the forger makes an instance hold or do must stay bounded).
//! Without a reachable Redis each test prints one `SKIPPED: …` line and passes, unless
//! `WSCOPE_REQUIRE_REDIS=1` makes it fail.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use wscope_cluster::{ClusterBackend, Link};
use wscope_redis::testing::redis_url_or_skip;
use wscope_redis::{RedisBackend, RedisOptions};
use wscope_testkit::http_get;
use wscope_testkit::served::Served;

use super::{report_rss, still_serves, BIN};

/// A cluster name no other run shares.
fn cluster_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("h-{test}-{}-{nanos}", std::process::id())
}

fn instance(url: &str, name: &str, id: &str, extra: &[&str]) -> Served {
    let mut args = vec![
        "--redis-url",
        url,
        "--cluster-name",
        name,
        "--instance-id",
        id,
        "--cluster-heartbeat",
        "200ms",
        "--cluster-timeout",
        "1s",
        "--ping-interval",
        "0",
        "--stats-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Served::start(BIN, &args)
}

async fn connected_backend(url: &str) -> RedisBackend {
    let backend = RedisBackend::connect(url, RedisOptions::default()).unwrap();
    let mut link = backend.link();
    tokio::time::timeout(
        Duration::from_secs(5),
        link.wait_for(|l| *l == Link::Connected),
    )
    .await
    .expect("a link to Redis within 5 s")
    .unwrap();
    backend
}

async fn clean(url: &str, name: &str) {
    let backend = RedisBackend::connect(url, RedisOptions::default()).unwrap();
    let _ = backend.delete_matching(&format!("wscope:{name}:*")).await;
}

/// The counter `name` (with its `_total`) from the instance's `/metrics`.
async fn metric(served: &Served, name: &str) -> u64 {
    let text = http_get(served.admin, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics")) as u64
}

/// Polls (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn members_counted(served: &Served, n: u64) {
    eventually("the instances see each other", || async {
        let res = http_get(served.admin, "/api/cluster/stats").await;
        res.status == 200 && res.json()["instancesCounted"] == n
    })
    .await;
}

/// One chat client on A sends 40 messages of 1,000,000 bytes, then 200 of 60,000, each once its
/// echo is back (a chat client that reads). The large ones reach A's clients only (past the
/// 64 KiB relay limit: counted undelivered), the others reach B's; neither instance loses its
/// Redis link or drops a delivery, and neither holds the flood in memory. Before the relay
/// limit every 1 MB message went through Redis to every instance (300 of them made Redis drop
/// both subscribers in the security review, its pub/sub limit being 32 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chat_client_cannot_push_the_cluster_off_redis() {
    let Some(url) = redis_url_or_skip("one_chat_client_cannot_push_the_cluster_off_redis").await
    else {
        return;
    };
    let name = cluster_name("flood");
    let a = instance(&url, &name, "a", &[]);
    let b = instance(&url, &name, "b", &[]);
    members_counted(&a, 2).await;
    members_counted(&b, 2).await;
    let before = (a.rss(), b.rss());
    let (listener, _) = tokio_tungstenite::connect_async(b.url("/ws/chat"))
        .await
        .unwrap();
    let (_to_b, mut from_b) = listener.split();
    let heard = tokio::spawn(async move {
        let mut sizes = Vec::new();
        while let Some(Ok(msg)) = from_b.next().await {
            if let Message::Text(t) = msg {
                if t.as_str() == "done" {
                    break;
                }
                sizes.push(t.len());
            }
        }
        sizes
    });
    let (sender, _) = tokio_tungstenite::connect_async(a.url("/ws/chat"))
        .await
        .unwrap();
    let (mut to_a, mut echoes) = sender.split();
    let plan: Vec<usize> = std::iter::repeat_n(1_000_000, 40)
        .chain(std::iter::repeat_n(60_000, 200))
        .collect();
    for &size in &plan {
        to_a.send(Message::text("x".repeat(size))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(10), echoes.next())
            .await
            .expect("the echo within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(echo.len(), size);
    }
    eventually("every message is published or counted", || async {
        metric(&a, "wscope_cluster_broadcasts_sent_total").await
            + metric(&a, "wscope_cluster_broadcasts_undelivered_total").await
            == plan.len() as u64
    })
    .await;
    let sent = metric(&a, "wscope_cluster_broadcasts_sent_total").await;
    eventually("B receives what A sent", || async {
        metric(&b, "wscope_cluster_broadcasts_received_total").await == sent
    })
    .await;
    to_a.send(Message::text("done")).await.unwrap();
    let sizes = tokio::time::timeout(Duration::from_secs(10), heard)
        .await
        .expect("B's client hears the end")
        .unwrap();
    assert!(
        sizes.iter().all(|n| *n == 60_000),
        "B's client got a message past the relay limit"
    );
    assert_eq!(sizes.len() as u64, sent);
    assert!(
        metric(&a, "wscope_cluster_broadcasts_undelivered_total").await >= 40,
        "the 1 MB messages are counted undelivered"
    );
    for (who, served) in [("A", &a), ("B", &b)] {
        assert_eq!(
            metric(served, "wscope_cluster_disconnects_total").await,
            0,
            "{who} lost its Redis link"
        );
        assert_eq!(
            metric(served, "wscope_cluster_deliveries_dropped_total").await,
            0,
            "{who} dropped deliveries"
        );
        assert_eq!(
            http_get(served.admin, "/health").await.json()["cluster"],
            "connected"
        );
    }
    report_rss(
        "A after 40 MB and 12 MB of chat",
        before.0,
        a.rss(),
        64 << 20,
    );
    report_rss("B after the relayed 12 MB", before.1, b.rss(), 64 << 20);
    still_serves(&a).await;
    still_serves(&b).await;
    clean(&url, &name).await;
}

/// Someone who can reach Redis publishes 5,000 announcements from made-up instances, then 5,000
/// broadcasts from instances that never announced themselves, straight to the cluster's channel.
/// The instance keeps at most 1,024 members (the rest ignored and counted), delivers none of
/// the broadcasts, and its `/api/cluster/stats` stays a bounded answer. Before, it kept all
/// 5,000, and 20,000 such members with 16,000 such broadcasts made an idle instance burn a
/// second of CPU every two seconds and its stats answer 7 MB (`scripts/cluster/forge.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cluster_messages_cost_an_instance_in_proportion() {
    let Some(url) =
        redis_url_or_skip("forged_cluster_messages_cost_an_instance_in_proportion").await
    else {
        return;
    };
    let name = cluster_name("forge");
    // A long TTL: the forged members stay live while the test looks.
    let victim = instance(&url, &name, "victim", &["--cluster-ttl", "60s"]);
    eventually("joined", || async {
        http_get(victim.admin, "/health").await.json()["cluster"] == "connected"
    })
    .await;
    let (client, _) = tokio_tungstenite::connect_async(victim.url("/ws/chat"))
        .await
        .unwrap();
    let (_out, mut client) = client.split();
    let before = victim.rss();
    let channel = format!("wscope:{name}:all");
    let envelope = |from: &str, incarnation: &str, body: Value| {
        let v = serde_json::json!({
            "v": 1, "cluster": name, "from": from, "incarnation": incarnation, "body": body,
        });
        (channel.clone(), serde_json::to_vec(&v).unwrap().into())
    };
    let summary = serde_json::json!({
        "totalConnections": 0, "totalConnectionsEver": 0, "totalConnectionsClosed": 0,
        "averageAge": 0, "averageIdleTime": 0,
        "connectionsByState": {"CONNECTING": 0, "OPEN": 0, "CLOSING": 0, "CLOSED": 0},
    });
    let forger = connected_backend(&url).await;
    for chunk in (0..5000).collect::<Vec<u32>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|i| {
                let id = format!("forged-{i}");
                let body = serde_json::json!({
                    "type": "announce", "instanceId": id, "startedAt": 1, "version": "0",
                    "heartbeatMs": 1000, "summary": summary,
                });
                envelope(&id, &format!("{i:x}"), body)
            })
            .collect();
        forger.publish_batch(batch).await.unwrap();
    }
    for chunk in (0..5000).collect::<Vec<u32>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|i| {
                let body = serde_json::json!({
                    "type": "broadcast", "seq": 1, "path": "/ws/chat",
                    "message": {"text": "forged"},
                });
                envelope(&format!("stranger-{i}"), &format!("{i:x}"), body)
            })
            .collect();
        forger.publish_batch(batch).await.unwrap();
    }
    // Past the view's 1,024: 3,976 announcements ignored, and every broadcast.
    eventually("every forgery is read", || async {
        metric(&victim, "wscope_cluster_messages_ignored_total").await >= 3976 + 5000
    })
    .await;
    assert_eq!(
        metric(&victim, "wscope_cluster_messages_ignored_total").await,
        3976 + 5000
    );
    let members: u64 = {
        let text = http_get(victim.admin, "/metrics").await.text();
        text.lines()
            .filter(|l| l.starts_with("wscope_cluster_members{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(members, 1024, "the view holds its cap, not 5,000");
    let stats = http_get(victim.admin, "/api/cluster/stats").await;
    assert_eq!(stats.status, 200);
    let body = stats.text();
    let rows = stats.json()["instances"].as_array().unwrap().len();
    println!(
        "/api/cluster/stats after 5,000 forged announcements: {} bytes, {rows} rows",
        body.len()
    );
    assert_eq!(rows, 1025);
    assert!(body.len() < 1 << 20, "{} bytes", body.len());
    assert_eq!(
        metric(&victim, "wscope_cluster_broadcasts_received_total").await,
        0
    );
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), client.next()).await {
        panic!("a forged broadcast reached a client: {msg:?}");
    }
    report_rss(
        "after 10,000 forged cluster messages",
        before,
        victim.rss(),
        32 << 20,
    );
    still_serves(&victim).await;
    clean(&url, &name).await;
}
