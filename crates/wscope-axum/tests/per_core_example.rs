//! `examples/per_core_server.rs` does what its doc says: its router, served by two runtimes per
//! core with wscope's engine, echoes over a real WebSocket; the admin API counts the socket, on
//! its runtime; the drain sends 1001 and `run` returns. The example's own `run` serves here, on
//! ports the test picks.
#![cfg(feature = "wscope")]
#![allow(clippy::unwrap_used)]

#[path = "../examples/per_core_server.rs"]
#[allow(dead_code)] // its `main` belongs to the example binary
mod example;

use std::num::NonZeroUsize;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use wscope_axum::PerCore;
use wscope_testkit::{http_get, WAIT};

#[tokio::test]
async fn the_per_core_example_echoes_counts_and_drains() {
    let main = PerCore::bind(
        "127.0.0.1:0".parse().unwrap(),
        NonZeroUsize::new(2).unwrap(),
    )
    .unwrap();
    let main_addr = main.local_addr();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(example::run(main, admin, async move {
        let _ = stopped.await;
    }));

    let (mut ws, _) = timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{main_addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    ws.send(Message::text("hello, core")).await.unwrap();
    let echoed = loop {
        match timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Ping(_) | Message::Pong(_) => {}
            other => break other,
        }
    };
    assert_eq!(echoed, Message::text("hello, core"));

    let stats = http_get(admin_addr, "/api/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["totalConnections"], 1, "{}", stats.text());
    // The socket is counted on the runtime that accepted it, one of the two.
    let metrics = http_get(admin_addr, "/metrics").await.text();
    let per_runtime: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wscope_runtime_connections{"))
        .collect();
    assert_eq!(per_runtime.len(), 2, "{metrics}");
    assert_eq!(
        per_runtime.iter().filter(|l| l.ends_with(" 1")).count(),
        1,
        "{per_runtime:?}"
    );

    stop.send(()).unwrap();
    let mut code = None;
    while let Some(msg) = timeout(WAIT, ws.next()).await.unwrap() {
        if let Message::Close(Some(frame)) = msg.unwrap() {
            code = Some(u16::from(frame.code));
        }
    }
    assert_eq!(code, Some(1001));
    timeout(WAIT, server).await.unwrap().unwrap().unwrap();
}
