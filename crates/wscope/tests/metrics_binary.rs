//! `GET /metrics` on the real binary's admin listener: served with no wiring beyond the admin
//! router, behind `--admin-token`, with the process families of the binary's own process.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wscope_testkit::served::Served;
use wscope_testkit::{http, http_get, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_wscope");
const AUTH: [(&str, &str); 1] = [("Authorization", "Bearer m3trics")];

/// The value of the line that starts with `series ` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[prefix.len()..].parse().unwrap()
}

#[tokio::test]
async fn the_binary_serves_metrics_behind_its_admin_token() {
    let mut served = Served::start(
        BIN,
        &["--instance-id", "metrics-1", "--admin-token", "m3trics"],
    );
    let denied = http_get(served.admin, "/metrics").await;
    assert_eq!(denied.status, 401);
    assert!(denied.json()["error"].is_string());

    let mut clients = Vec::new();
    for i in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text(format!("hello {i}"))).await.unwrap(); // 7 bytes
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
        clients.push(ws);
    }
    let mut first = clients.remove(0);
    first
        .close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    while let Some(Ok(_)) = first.next().await {}

    let mut text = String::new();
    // Until the server has seen the close (bounded: WAIT in steps of 10 ms).
    for _ in 0..WAIT.as_millis() / 10 {
        let response = http(served.admin, "GET", "/metrics", &AUTH, None).await;
        assert_eq!(response.status, 200, "{}", response.text());
        text = response.text();
        if text.contains("wscope_connections{state=\"open\"} 2\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sample(&text, "wscope_connections{state=\"open\"}"), 2.0);
    assert_eq!(sample(&text, "wscope_connections_opened_total"), 3.0);
    assert_eq!(
        sample(
            &text,
            "wscope_connections_closed_total{code_class=\"going_away\",closed_by=\"client\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "wscope_messages_received_total"), 3.0);
    assert_eq!(sample(&text, "wscope_messages_received_bytes_total"), 21.0);
    assert_eq!(
        sample(&text, "wscope_connection_lifetime_seconds_count"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "wscope_info{{instance_id=\"metrics-1\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // The binary's own process: at least its listeners and the two open sockets.
    assert!(sample(&text, "process_open_fds") >= 4.0);
    assert!(sample(&text, "process_resident_memory_bytes") > 0.0);

    drop(clients);
    served.signal("TERM");
    assert_eq!(served.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
