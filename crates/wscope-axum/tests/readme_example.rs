//! The README's library example is `examples/tracked_server.rs`, word for word, and it does what
//! the README says: tracked echo and chat, the public `/health` and `/ready`, the admin API behind
//! its token and `Host` check, a drain with 1001. The example's own `run` serves here, on ports
//! the test picks.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

#[path = "../examples/tracked_server.rs"]
#[allow(dead_code)] // its `main` belongs to the example binary
mod example;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Captured;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use wscope_testkit::{http, http_get, send_raw, WAIT};

const EXAMPLE: &str = include_str!("../examples/tracked_server.rs");

/// The README block that starts with the example's first line.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the workspace README");
    let first_line = EXAMPLE.lines().next().unwrap();
    let start = readme
        .find(&format!("```rust,no_run\n{first_line}\n"))
        .expect("the README shows the example in a ```rust,no_run block");
    let body = &readme[start + "```rust,no_run\n".len()..];
    let end = body.find("\n```\n").expect("the block ends");
    format!("{}\n", &body[..end])
}

#[test]
fn the_readme_shows_the_example_word_for_word() {
    let block = readme_block();
    if block != EXAMPLE {
        let diff = block
            .lines()
            .zip(EXAMPLE.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n  README:  {a}\n  example: {b}", i + 1))
            .unwrap_or_else(|| "one is longer".to_owned());
        panic!("README.md and crates/wscope-axum/examples/tracked_server.rs differ at {diff}");
    }
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(addr: std::net::SocketAddr, path: &str, protocol: Option<&str>) -> Client {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap()
        .unwrap();
    ws
}

async fn next_text(ws: &mut Client) -> String {
    loop {
        match timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The close code the server sends, once the client has answered it (the close handshake ends
/// when the stream does).
async fn close_code(ws: &mut Client) -> u16 {
    let mut code = None;
    while let Some(msg) = timeout(WAIT, ws.next()).await.unwrap() {
        if let Message::Close(Some(frame)) = msg.unwrap() {
            code = Some(frame.code.into());
        }
    }
    code.expect("a close frame with a code")
}

#[tokio::test]
async fn the_example_tracks_sockets_serves_health_and_ready_and_guards_its_admin_api() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(example::run(
        listener,
        admin,
        Some("example-token".to_owned()),
        async move {
            let _ = stopped.await;
        },
    ));

    // The public listener: the reference's four health fields, readiness, 426 on a plain GET.
    let health = http_get(main_addr, "/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let fields: BTreeSet<String> = health.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        fields,
        ["activeConnections", "averageAge", "status", "uptime"]
            .map(String::from)
            .into()
    );
    let ready = http_get(main_addr, "/ready").await;
    assert_eq!(
        (ready.status, ready.json()["ready"].clone()),
        (200, true.into())
    );
    assert_eq!(http_get(main_addr, "/ws").await.status, 426);

    // Echo, and chat to every member of the path.
    let mut echo = connect(main_addr, "/ws", None).await;
    assert_eq!(next_text(&mut echo).await, "welcome");
    echo.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut echo).await, "hi");
    let mut ann = connect(main_addr, "/ws/chat", Some("chat.v1")).await;
    let mut bob = connect(main_addr, "/ws/chat", Some("chat.v1")).await;
    let bearer = [("Authorization", "Bearer example-token")];
    // A connection is marked OPEN a moment after its 101: a broadcast reaches OPEN ones only.
    timeout(WAIT, async {
        while http(admin_addr, "GET", "/api/stats", &bearer, None)
            .await
            .json()["connectionsByState"]["OPEN"]
            != 3
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the three clients open in time");
    ann.send(Message::text("hello all")).await.unwrap();
    assert_eq!(next_text(&mut ann).await, "hello all");
    assert_eq!(next_text(&mut bob).await, "hello all");

    // The admin listener: the token, and the `Host` check that needs wscope_axum::serve (under
    // axum::serve, `localhost` at any port would pass).
    assert_eq!(http_get(admin_addr, "/api/stats").await.status, 401);
    let stats = http(admin_addr, "GET", "/api/stats", &bearer, None).await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["totalConnections"], 3);
    let other_port = send_raw(
        admin_addr,
        b"GET /api/stats HTTP/1.1\r\nHost: localhost:1\r\nAuthorization: Bearer example-token\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        other_port.starts_with("HTTP/1.1 421"),
        "a Host naming another port is refused: {other_port}"
    );

    // The drain: 1001 to every client, then `run` returns.
    stop.send(()).unwrap();
    for ws in [&mut echo, &mut ann, &mut bob] {
        assert_eq!(close_code(ws).await, 1001);
    }
    timeout(WAIT, server).await.unwrap().unwrap().unwrap();
}

/// The example's registry logs the reference's three lines every 30 s from the start, before any
/// connection (they would otherwise wait for the first one), under a subscriber like its own.
#[test]
fn the_example_logs_the_stats_lines_from_the_start() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{}=info",
            wscope_core::STATS_TARGET
        )))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(example::run(listener, admin, None, async move {
            let _ = stopped.await;
        }));
        // Paused time: this sleep is virtual, and passes one 30 s period.
        tokio::time::sleep(Duration::from_secs(31)).await;
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    });
    assert_eq!(
        out.lines(),
        [
            "[WebSocket Stats] Active: 0, Total: 0, Closed: 0",
            "[WebSocket Stats] Avg Age: 0s, Avg Idle: 0s",
            "[WebSocket Stats] By State - Open: 0, Connecting: 0, Closing: 0",
        ]
    );
}
