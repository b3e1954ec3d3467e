//! `wscope bench` against small servers that do not behave like the echo server it expects: one
//! that answers with something else, one that hangs up after a few echoes, one that stops
//! accepting. Each runs on 127.0.0.1:0 in this process and is stopped and joined at the end.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use wscope_bench::{churn, echo, report, ChurnOptions, CommonOptions, EchoOptions};

/// Bound on any single test step.
const STEP: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket server whose `n`th WebSocket connection (from 0) is handled by `handle(ws, n)`;
/// it stops accepting after `accept` of them (closing its listener). Plain TCP connects (the
/// load generator's preflight) do not count.
struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start<F, Fut>(accept: usize, handle: F) -> Self
    where
        F: Fn(Ws, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            let mut n = 0;
            while n < accept {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    continue;
                };
                conns.spawn(handle(ws, n));
                n += 1;
            }
            drop(listener); // connection refused from here on
            while conns.join_next().await.is_some() {}
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn stop(self) {
        self.task.abort();
        let _ = timeout(STEP, self.task).await.unwrap();
    }
}

fn common() -> CommonOptions {
    CommonOptions {
        timeout: Some(Duration::from_secs(15)),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Answers `limit` data messages (echoing them when `echo`, else with other text), then sends a
/// close frame.
async fn answer(mut ws: Ws, echo: bool, limit: usize) {
    let mut answered = 0;
    while let Some(Ok(msg)) = ws.next().await {
        if !(msg.is_text() || msg.is_binary()) {
            continue;
        }
        if answered == limit {
            let _ = ws.close(None).await;
            break;
        }
        let reply = if echo {
            msg
        } else {
            Message::text("not an echo")
        };
        if ws.send(reply).await.is_err() {
            break;
        }
        answered += 1;
    }
    while let Some(Ok(_)) = ws.next().await {} // until the client's side of the close
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_are_not_echoes_are_errors_not_messages() {
    let server = TestServer::start(4, |ws, _| answer(ws, false, usize::MAX)).await;
    let report = timeout(
        STEP,
        echo(EchoOptions {
            url: server.url(),
            connections: 4,
            in_flight: 2,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.messages, 0, "nothing was an echo");
    assert_eq!(report.messages_per_sec, 0.0);
    assert_eq!(report.latency.count, 0);
    assert!(report.mismatches > 0);
    assert_eq!(report.mismatches, report.messages_received);
    assert_eq!(report.errors, report.mismatches);
    let first = report.first_mismatch.as_deref().unwrap();
    assert!(first.contains("got text 11 B \"not an echo\""), "{first}");
    assert_eq!(report.first_error.as_deref(), Some(first));
    let table = report::table(&report);
    assert!(
        table.contains("replies were not the echo of what was sent (counted in errors"),
        "{table}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_lost_the_rate_is_over_the_time_before() {
    // Each connection gets 50 echoes, then the server hangs up: the run stops long before its
    // 10 s window ends.
    let server = TestServer::start(3, |ws, _| answer(ws, true, 50)).await;
    let started = Instant::now();
    let report = timeout(
        STEP,
        echo(EchoOptions {
            url: server.url(),
            connections: 3,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "it did not wait out the window"
    );
    assert_eq!(report.connected, 3);
    assert_eq!((report.lost.count, report.lost.all), (3, true));
    let (first, last) = (
        report.lost.first_secs.unwrap(),
        report.lost.last_secs.unwrap(),
    );
    assert!(first <= last && last < 8.0, "{:?}", report.lost);
    assert_eq!(report.messages, 150);
    assert_eq!(report.mismatches, 0);
    assert_eq!(report.errors, 3, "{:?}", report.first_error);
    assert!(
        (9.9..=10.1).contains(&report.duration_secs),
        "{}",
        report.duration_secs
    );
    assert!(report.active_secs > 0.0 && report.active_secs <= last + 0.01);
    let rate = report.messages as f64 / report.active_secs;
    assert!((report.messages_per_sec - rate).abs() < 1e-6 * rate.max(1.0));
    assert!(
        report.usage.cpu_window_secs < 8.0,
        "CPU over the same, shorter window"
    );
    let table = report::table(&report);
    assert!(table.contains("3 connections"), "{table}");
    assert!(table.contains("every connection was lost"), "{table}");
    assert!(table.contains(" under load, of "), "{table}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_rate_is_over_the_time_the_server_answered() {
    // 30 cycles are answered; then the listener is closed and every connect is refused.
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let server = TestServer::start(30, move |ws, _| {
        count.fetch_add(1, Ordering::Relaxed);
        answer(ws, true, usize::MAX)
    })
    .await;
    let report = timeout(
        STEP,
        churn(ChurnOptions {
            url: server.url(),
            connections: 2,
            duration: Duration::from_secs(2),
            common: common(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.completed, 30);
    assert_eq!(answered.load(Ordering::Relaxed), 30);
    assert!(report.errors > 0);
    assert_eq!((report.lost.count, report.lost.all), (2, true));
    assert!(report.active_secs < report.elapsed_secs);
    let rate = report.completed as f64 / report.active_secs;
    assert!((report.connections_per_sec - rate).abs() < 1e-6 * rate);
    server.stop().await;
}
