//! `--runtime` and `--threads` on the real binary: with a runtime per core and with one
//! multi-thread runtime, many connections echo, the stats count every one whatever runtime holds
//! it, and `close_all` and the SIGTERM drain reach each with 1001; bad values exit 2.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wscope_testkit::served::{wait_line, Served};
use wscope_testkit::{http_get, http_post};

const BIN: &str = env!("CARGO_BIN_EXE_wscope");
/// Connections per wave: enough that both runtimes get some, whatever the kernel's hash.
const CLIENTS: usize = 200;

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// `n` clients on `/ws`, each having had one message echoed.
async fn echoing_clients(served: &Served, n: usize) -> Vec<Client> {
    let url = served.url("/ws");
    let clients = (0..n).map(|i| {
        let url = url.clone();
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let text = format!("hello {i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let echoed = ws.next().await.unwrap().unwrap();
            assert_eq!(echoed.into_text().unwrap().as_str(), text);
            ws
        }
    });
    futures_util::future::join_all(clients).await
}

/// The close code and reason each client receives next (within the drain deadline).
async fn closes(clients: Vec<Client>) -> Vec<(u16, String)> {
    let each = clients.into_iter().map(|mut ws| async move {
        let next = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return (u16::from(frame.code), frame.reason.as_str().to_owned())
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("a close frame within the drain deadline")
    });
    futures_util::future::join_all(each).await
}

async fn open_connections(admin: SocketAddr) -> u64 {
    let stats = http_get(admin, "/api/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    stats.json()["totalConnections"].as_u64().unwrap()
}

/// `wscope_runtime_connections` by runtime, as `/metrics` shows it.
async fn runtime_connections(admin: SocketAddr) -> Vec<(String, u64)> {
    let text = http_get(admin, "/metrics").await.text();
    text.lines()
        .filter_map(|l| l.strip_prefix("wscope_runtime_connections{runtime=\""))
        .map(|rest| {
            let (index, value) = rest.split_once("\"} ").unwrap();
            (index.to_owned(), value.parse().unwrap())
        })
        .collect()
}

async fn serves_counts_and_drains(runtime: &str) {
    let mut served = Served::start(
        BIN,
        &[
            "--threads",
            "2",
            "--runtime",
            runtime,
            "--drain-timeout",
            "5s",
        ],
    );
    // The first wave: counted whatever runtime holds each, closed by the admin's close_all.
    let clients = echoing_clients(&served, CLIENTS).await;
    assert_eq!(open_connections(served.admin).await, CLIENTS as u64);
    let spread = runtime_connections(served.admin).await;
    if runtime == "per-core" {
        let indexes: Vec<&str> = spread.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(indexes, ["0", "1"], "{spread:?}");
        let total: u64 = spread.iter().map(|(_, n)| n).sum();
        assert_eq!(total, CLIENTS as u64, "{spread:?}");
        // 200 connections hashed over 2 listeners: all on one has odds of 2 in 2^200.
        assert!(spread.iter().all(|(_, n)| *n > 0), "{spread:?}");
    } else {
        assert!(spread.is_empty(), "{spread:?}");
    }
    let body = r#"{"action":"close_all","code":1001,"reason":"maintenance"}"#;
    let answer = http_post(served.admin, "/api/admin", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["closed"], CLIENTS);
    for (code, reason) in closes(clients).await {
        assert_eq!((code, reason.as_str()), (1001, "maintenance"));
    }

    // The second wave: the SIGTERM drain reaches every one, wherever it lives.
    let clients = echoing_clients(&served, CLIENTS).await;
    assert_eq!(open_connections(served.admin).await, CLIENTS as u64);
    served.signal("TERM");
    for (code, reason) in closes(clients).await {
        assert_eq!((code, reason.as_str()), (1001, "Server shutting down"));
    }
    let line = wait_line(&served.lines, "closed cleanly", Duration::from_secs(10));
    let expected = format!("{CLIENTS} of {CLIENTS} connections closed cleanly, 0 dropped");
    assert!(line.contains(&expected), "{line}");
    let status = served.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test]
async fn a_runtime_per_core_serves_counts_and_drains_every_connection() {
    serves_counts_and_drains("per-core").await;
}

#[tokio::test]
async fn one_multi_thread_runtime_serves_counts_and_drains_every_connection() {
    serves_counts_and_drains("multi").await;
}

/// The names of the process's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn per_core_starts_a_named_thread_per_runtime_and_multi_none() {
    let served = Served::start(BIN, &["--threads", "3", "--runtime", "per-core"]);
    // The threads start as the start-up line is written: wait for them (bounded).
    let mut runtimes = Vec::new();
    for _ in 0..200 {
        runtimes = thread_names(served.child.id())
            .into_iter()
            .filter(|name| name.starts_with("wscope-rt-"))
            .collect();
        if runtimes.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(runtimes, ["wscope-rt-0", "wscope-rt-1", "wscope-rt-2"]);
    drop(served);
    let served = Served::start(BIN, &["--threads", "3", "--runtime", "multi"]);
    let names = thread_names(served.child.id());
    assert!(
        !names.iter().any(|n| n.starts_with("wscope-rt-")),
        "{names:?}"
    );
}

/// Exit status and stderr of `wscope args` with `envs`.
fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("INSTANCE_ID")
        .env_remove("WSCOPE_THREADS")
        .env_remove("WSCOPE_RUNTIME")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A refused command line: its arguments, its environment, and the flag the error must name.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn bad_threads_or_runtime_exit_2_with_one_line_naming_the_flag() {
    let cases: [Case; 6] = [
        (&["serve", "--threads", "0"], &[], "--threads"),
        (&["serve", "--threads", "lots"], &[], "--threads"),
        (&["serve", "--threads", "100000"], &[], "--threads"),
        (&["serve", "--runtime", "fast"], &[], "--runtime"),
        (&["serve"], &[("WSCOPE_THREADS", "0")], "WSCOPE_THREADS"),
        (
            &[
                "proxy",
                "--upstream",
                "http://127.0.0.1:1",
                "--runtime",
                "single",
            ],
            &[],
            "--runtime",
        ),
    ];
    for (args, envs, flag) in cases {
        let (code, stderr) = run(args, envs);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("error:"), "{stderr}");
        assert!(lines[0].contains(flag), "{args:?}: {stderr}");
    }
    let (_, stderr) = run(&["serve", "--runtime", "fast"], &[]);
    assert!(stderr.contains("use per-core or multi"), "{stderr}");
}

/// Every runtime's listener sets `SO_REUSEPORT`, which the kernel refuses beside a listener
/// without it: an address another server holds is still an error naming the flag.
#[test]
fn a_main_address_in_use_is_refused_naming_the_flag_with_a_runtime_per_core() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(
        &[
            "serve",
            "--listen",
            &addr,
            "--admin-listen",
            "127.0.0.1:0",
            "--threads",
            "2",
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("--listen") && line.contains(&addr),
        "{stderr}"
    );
    assert!(line.to_lowercase().contains("in use"), "{stderr}");
}
