//! `wscope bench` against a real in-process `wscope serve`: each mode runs briefly and what it
//! reports must match what the server counted. Loopback only, every wait bounded.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use wscope::config::{Limits, Listeners, Liveness, ServeSettings};
use wscope::serve::Server;
use wscope_bench::{
    broadcast, churn, echo, idle, BroadcastOptions, Checkpoint, ChurnOptions, CommonOptions,
    EchoOptions, IdleOptions,
};

/// Bound on any single test step.
const STEP: Duration = Duration::from_secs(20);

struct TestServer {
    main: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<wscope_core::ShutdownReport>>,
}

async fn start_server() -> TestServer {
    start_server_with(ServeSettings::default()).await
}

/// A server with `cfg`'s settings, on free loopback ports.
async fn start_server_with(cfg: ServeSettings) -> TestServer {
    let cfg = ServeSettings {
        listeners: Listeners {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..cfg.listeners
        },
        ..cfg
    };
    let server = Server::bind(&cfg).unwrap();
    let (main, admin) = server.local_addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(wscope::demo::app(), async move {
        let _ = stopped.await;
    }));
    TestServer {
        main,
        admin,
        stop,
        task,
    }
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.main)
    }

    async fn stats(&self) -> Value {
        timeout(STEP, get_json(self.admin, "/api/stats"))
            .await
            .expect("stats in time")
    }

    /// Polls the stats until `done` holds (the server removes a closed connection a moment
    /// after the client saw its close handshake complete), within [`STEP`].
    async fn stats_when(&self, done: impl Fn(&Value) -> bool) -> Value {
        timeout(STEP, async {
            loop {
                let stats = get_json(self.admin, "/api/stats").await;
                if done(&stats) {
                    return stats;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server's stats settle in time")
    }

    async fn shut_down(self) {
        let _ = self.stop.send(());
        timeout(STEP, self.task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

/// `GET path`, which must answer 200, as JSON.
async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let response = wscope_testkit::http_get(addr, path).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn connections_on<'a>(stats: &'a Value, path: &str) -> Vec<&'a Value> {
    stats["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"] == path)
        .collect()
}

fn sum(conns: &[&Value], field: &str) -> u64 {
    conns.iter().map(|c| c[field].as_u64().unwrap()).sum()
}

fn common() -> CommonOptions {
    CommonOptions {
        timeout: Some(Duration::from_secs(15)),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_counts_match_the_servers_message_counts() {
    let server = start_server().await;
    let (checkpoint, mut at) = Checkpoint::new();
    let run = tokio::spawn(echo(EchoOptions {
        url: server.url("/ws"),
        connections: 8,
        in_flight: 4,
        size: 32,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        common: common(),
        checkpoint: Some(checkpoint),
        ..Default::default()
    }));
    assert!(timeout(STEP, at.reached()).await.unwrap(), "checkpoint");
    let stats = server.stats().await;
    at.resume();
    let report = timeout(STEP, run).await.unwrap().unwrap().unwrap();

    let conns = connections_on(&stats, "/ws");
    assert_eq!(report.connected, 8);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(
        conns.len(),
        8,
        "all connections open at the checkpoint: {stats:#}"
    );
    assert!(report.messages > 0);
    assert_eq!(report.latency.count, report.messages);
    assert!(report.latency.p50 <= report.latency.p99 && report.latency.p99 <= report.latency.max);
    // Drained: every message sent was echoed, and the server saw exactly those data frames.
    assert_eq!(report.messages_sent, report.messages_received);
    assert_eq!(sum(&conns, "messagesIn"), report.messages_sent);
    assert_eq!(sum(&conns, "messagesOut"), report.messages_received);
    assert_eq!(sum(&conns, "bytesIn"), report.messages_sent * 32);
    assert!(report.usage.client_cpu.cpu.percent >= 0.0);
    assert!(!report.timed_out);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_against_the_chat_endpoint_counts_mismatches_not_messages() {
    // /ws/chat sends every message to every member: each connection gets the others' messages,
    // which are not the echo of what it sent.
    let server = start_server().await;
    let report = timeout(
        STEP,
        echo(EchoOptions {
            url: server.url("/ws/chat"),
            connections: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.connected, 4);
    assert!(report.mismatches > 0, "{report:?}");
    assert!(report.errors >= report.mismatches);
    assert!(report.messages < report.messages_received);
    assert_eq!(report.latency.count, report.messages);
    assert!(report
        .first_mismatch
        .as_deref()
        .unwrap()
        .contains("not the echo"));
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_what_the_server_holds() {
    let server = start_server().await;
    let before = server.stats().await["totalConnections"].as_u64().unwrap();
    let (checkpoint, mut at) = Checkpoint::new();
    let run = tokio::spawn(idle(IdleOptions {
        url: server.url("/ws"),
        connections: 300,
        handshake_concurrency: 50,
        hold: Duration::from_millis(100),
        message: None,
        common: CommonOptions {
            // The server runs in this process: its RSS is ours.
            pid: Some(std::process::id()),
            // Spread the 300 over 127.0.0.1, .2 and .3, as 60k would be.
            per_source: 100,
            ..common()
        },
        checkpoint: Some(checkpoint),
    }));
    assert!(timeout(STEP, at.reached()).await.unwrap(), "checkpoint");
    // Registered before the 101 went out; marked OPEN a moment after: wait for that.
    let stats = server
        .stats_when(|s| s["connectionsByState"]["OPEN"].as_u64() == Some(300))
        .await;
    at.resume();
    let report = timeout(STEP, run).await.unwrap().unwrap().unwrap();

    assert_eq!(before, 0);
    assert_eq!(report.opened, 300);
    assert_eq!(report.failed, 0, "{:?}", report.first_error);
    assert_eq!(report.held, 300);
    assert_eq!(stats["totalConnections"].as_u64().unwrap(), 300);
    assert_eq!(stats["connectionsByState"]["OPEN"].as_u64().unwrap(), 300);
    assert_eq!(connections_on(&stats, "/ws").len(), 300);
    assert_eq!(report.source_addresses, 3);
    let mut sources: Vec<_> = connections_on(&stats, "/ws")
        .iter()
        .map(|c| c["remoteAddress"].as_str().unwrap().to_owned())
        .collect();
    sources.sort();
    sources.dedup();
    assert_eq!(sources, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    assert!(report.handshakes_per_sec > 0.0);
    assert_eq!(report.handshake_latency.count, 300);
    let server_use = report.usage.server.unwrap();
    assert_eq!(server_use.pid, std::process::id());
    assert!(server_use.rss_before > 0 && server_use.rss_after > 0);
    assert!(report.server_bytes_per_connection.is_some());
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_with_a_message_first_has_each_connection_echo_it_before_the_hold() {
    const SIZE: usize = 256 * 1024;
    let server = start_server().await;
    let (checkpoint, mut at) = Checkpoint::new();
    let run = tokio::spawn(idle(IdleOptions {
        url: server.url("/ws"),
        connections: 20,
        handshake_concurrency: 5,
        hold: Duration::from_millis(100),
        message: Some(SIZE),
        common: common(),
        checkpoint: Some(checkpoint),
    }));
    assert!(timeout(STEP, at.reached()).await.unwrap(), "checkpoint");
    // At the checkpoint (during the hold) every connection has had its one message echoed.
    let stats = server.stats().await;
    let rows = connections_on(&stats, "/ws");
    assert_eq!(rows.len(), 20);
    for row in rows {
        assert_eq!(row["messagesIn"], 1, "{row}");
        assert_eq!(row["messagesOut"], 1, "{row}");
        assert_eq!(row["bytesIn"], SIZE as u64, "{row}");
    }
    at.resume();
    let report = timeout(STEP, run).await.unwrap().unwrap().unwrap();
    assert_eq!(report.opened, 20);
    assert_eq!(report.message_bytes, SIZE);
    assert_eq!(report.message_failures, 0);
    assert_eq!(report.held, 20);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_answer_the_servers_pings_and_stay_open() {
    // The server pings every 50 ms and gives up on a ping after 100 ms: a client that does not
    // answer is closed (1011 "ping timeout") a fraction of the hold into it.
    let server = start_server_with(ServeSettings {
        liveness: Liveness {
            ping_interval: Duration::from_millis(50),
            ping_timeout: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (checkpoint, mut at) = Checkpoint::new();
    let run = tokio::spawn(idle(IdleOptions {
        url: server.url("/ws"),
        connections: 5,
        hold: Duration::from_millis(1500),
        message: None,
        common: common(),
        checkpoint: Some(checkpoint),
        ..Default::default()
    }));
    assert!(timeout(STEP, at.reached()).await.unwrap(), "checkpoint");
    let stats = server.stats().await;
    at.resume();
    let report = timeout(STEP, run).await.unwrap().unwrap().unwrap();
    assert_eq!(report.opened, 5);
    assert_eq!(
        (report.held, report.dropped),
        (5, 0),
        "{:?}",
        report.drop_reasons
    );
    assert_eq!(report.unclean_closes, 0);
    let conns = connections_on(&stats, "/ws");
    assert_eq!(conns.len(), 5, "all open after the hold: {stats:#}");
    assert!(
        conns.iter().all(|c| c["rttMs"].is_number()),
        "every connection answered a ping: {stats:#}"
    );
    let stats = server
        .stats_when(|s| s["totalConnections"].as_u64() == Some(0))
        .await;
    assert_eq!(stats["closedBy"]["timeout"], 0, "{stats:#}");
    assert_eq!(stats["closedBy"]["client"], 5, "{stats:#}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_why_the_server_dropped_connections() {
    // Idle connections move no message: the server closes them with 1000 "idle timeout".
    let server = start_server_with(ServeSettings {
        liveness: Liveness {
            idle_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let report = timeout(
        STEP,
        idle(IdleOptions {
            url: server.url("/ws"),
            connections: 3,
            hold: Duration::from_millis(1500),
            message: None,
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((report.opened, report.held, report.dropped), (3, 0, 3));
    assert_eq!(
        report.drop_reasons,
        [("1000 idle timeout".to_owned(), 3)].into_iter().collect()
    );
    let table = wscope_bench::report::table(&report);
    assert!(
        table.contains("0 for ") && table.contains("(3 dropped by the server: 1000 idle timeout)"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&wscope_bench::report::json(&report)).unwrap();
    assert_eq!(json["dropReasons"]["1000 idle timeout"], 3, "{json}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_says_with_which_code_the_server_closed_a_connection() {
    // Past 20 messages a second the server closes with 1008 "message rate exceeded".
    let server = start_server_with(ServeSettings {
        limits: Limits {
            max_messages_per_second: 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let report = timeout(
        STEP,
        echo(EchoOptions {
            url: server.url("/ws"),
            connections: 1,
            in_flight: 64,
            size: 8,
            duration: Duration::from_millis(500),
            warmup: Duration::ZERO,
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.errors, 1);
    assert_eq!(
        report.first_error.as_deref(),
        Some("the server closed the connection (1008 message rate exceeded)")
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_completes_what_the_server_registered() {
    let server = start_server().await;
    let ever = |s: &Value| s["totalConnectionsEver"].as_u64().unwrap();
    let before = ever(&server.stats().await);
    let report = timeout(
        STEP,
        churn(ChurnOptions {
            url: server.url("/ws"),
            connections: 4,
            duration: Duration::from_millis(800),
            size: 16,
            common: common(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert!(report.completed > 0);
    assert_eq!(report.cycle_latency.count, report.completed);
    assert!(report.connections_per_sec > 0.0);
    // Registered before the 101 went out: already counted.
    assert_eq!(ever(&server.stats().await) - before, report.completed);
    // Removed a moment after the close handshake: every cycle, each closed by the client.
    let after = server
        .stats_when(|s| s["totalConnections"].as_u64() == Some(0))
        .await;
    assert_eq!(ever(&after) - before, report.completed);
    assert_eq!(
        after["closedBy"]["client"].as_u64().unwrap(),
        report.completed
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_listener_with_every_message() {
    let server = start_server().await;
    let (checkpoint, mut at) = Checkpoint::new();
    let run = tokio::spawn(broadcast(BroadcastOptions {
        url: server.url("/ws/chat"),
        connections: 25,
        messages: 30,
        common: common(),
        checkpoint: Some(checkpoint),
        ..Default::default()
    }));
    assert!(timeout(STEP, at.reached()).await.unwrap(), "checkpoint");
    let stats = server.stats().await;
    at.resume();
    let report = timeout(STEP, run).await.unwrap().unwrap().unwrap();

    assert_eq!(report.listeners, 25);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.messages, 30);
    assert_eq!(report.deliveries, 25 * 30);
    assert_eq!(report.expected, 25 * 30);
    assert_eq!(report.missed, 0);
    assert_eq!(report.last_receiver_latency.count, 30);
    assert_eq!(report.delivery_latency.count, 25 * 30);
    assert!(report.last_receiver_latency.max >= report.delivery_latency.p50);
    let chat = connections_on(&stats, "/ws/chat");
    assert_eq!(chat.len(), 26, "25 listeners and the sender");
    // Only the sender sends: the server read the sync messages and the measured ones.
    assert_eq!(
        sum(&chat, "messagesIn"),
        report.sync_messages + report.messages
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_with_a_sender_url_sends_from_there() {
    let server = start_server().await;
    // The sender's URL differs from the listeners' only by its spelling (localhost): the server
    // sees it as one more chat member, and the report keeps both URLs.
    let sender_url = format!("ws://localhost:{}/ws/chat", server.main.port());
    let report = timeout(
        STEP,
        broadcast(BroadcastOptions {
            url: server.url("/ws/chat"),
            sender_url: Some(sender_url.clone()),
            connections: 10,
            messages: 20,
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.url, server.url("/ws/chat"));
    assert_eq!(report.sender_url, sender_url);
    assert_eq!(report.listeners, 10);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!((report.deliveries, report.missed), (10 * 20, 0));
    assert_eq!(report.last_receiver_latency.count, 20);

    // A sender URL with nothing behind it: refused before any listener opens.
    let (_held, port) = closed_port();
    let nowhere = format!("ws://127.0.0.1:{port}/ws/chat");
    let e = broadcast(BroadcastOptions {
        url: server.url("/ws/chat"),
        sender_url: Some(nowhere.clone()),
        connections: 2,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot connect to {nowhere}: connection refused")
    );
    let stats = server
        .stats_when(|s| connections_on(s, "/ws/chat").is_empty())
        .await;
    assert!(connections_on(&stats, "/ws/chat").is_empty());
    server.shut_down().await;
}

/// A loopback port with nothing listening on it, held (bound, not listening) for as long as the
/// socket lives, so no other test's server can be given it meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_websocket_gives_the_http_status() {
    let server = start_server().await;
    let url = server.url("/nope");
    let e = echo(EchoOptions {
        url: url.clone(),
        connections: 2,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to {url}: ")) && text.contains("404"),
        "{text}"
    );
    server.shut_down().await;
}

/// Runs the `wscope` binary (bounded by its own `--timeout` and by [`STEP`] here).
async fn run_bin(args: Vec<String>) -> std::process::Output {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wscope"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    });
    timeout(STEP, run).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_prints_json_or_one_error_line() {
    let server = start_server().await;
    let out = run_bin(vec![
        "bench".into(),
        "echo".into(),
        "--url".into(),
        server.url("/ws"),
        "-c=2".into(),
        "-w=2".into(),
        "-s=16".into(),
        "-d=300ms".into(),
        "--warmup=0".into(),
        "--timeout=15s".into(),
        "--json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["connected"], 2);
    assert!(report["messagesPerSec"].as_f64().unwrap() > 0.0);
    assert!(report["latency"]["p99"].is_u64());
    assert!(report["clientCpu"]["percent"].is_f64());

    let (_held, port) = closed_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let out = run_bin(vec![
        "bench".into(),
        "churn".into(),
        "--url".into(),
        url.clone(),
        "-c=1".into(),
        "-d=1s".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!("error: cannot connect to {url}: connection refused\n")
    );
    assert!(out.stdout.is_empty());
    server.shut_down().await;
}
