//! The live stream (`GET /api/stats/stream`) of the real `wscope serve` process: events follow a
//! WebSocket client, and SIGTERM with a stream open still drains and exits.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wscope_core::wire::LiveStats;
use wscope_testkit::served::Served;
use wscope_testkit::sse;

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

#[tokio::test]
async fn sigterm_with_a_stream_open_ends_the_stream_and_exits_zero() {
    let mut served = Served::start(BIN, &["--drain-timeout", "5s"]);
    // A long interval: nothing but the shutdown can end this stream in time.
    let mut stream = sse::open(served.admin, "/api/stats/stream?interval=60s", &[]).await;
    assert_eq!(stream.status, 200);
    let first: LiveStats = stream.next_event().await.unwrap().parse();
    assert_eq!(first.total_connections, 0);

    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let mut counted = sse::open(served.admin, "/api/stats/stream?interval=100ms", &[]).await;
    let seen: LiveStats = counted
        .next_event_where(|e| e.parse::<LiveStats>().traffic.messages_in == 1)
        .await
        .parse();
    assert_eq!(seen.total_connections, 1);
    drop(counted);

    served.signal("TERM");
    // The client gets its 1001; reading on to the end sends the answer that completes the
    // close handshake.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut code = None;
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(frame) = msg {
                code = frame.map(|f| u16::from(f.code));
            }
        }
        code
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1001));
    let mut last = None;
    while let Some(event) = stream.next_event().await {
        last = Some(event.parse::<LiveStats>());
    }
    let last = last.expect("one last event once shutdown began");
    assert!(last.shut_down);
    let status = served.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}
