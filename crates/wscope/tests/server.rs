//! `Server` serving an application other than `wscope serve`'s demo, as the proxy will: the
//! application's routes on the main listener beside `/health` and `/ready`, its WebSockets
//! tracked, listed by the admin API and drained with 1001, its endpoints in the start-up line.
//! Loopback only, every wait bounded.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wscope::app::App;
use wscope::config::{Listeners, ServeSettings};
use wscope::serve::Server;
use wscope_axum::WebSocketUpgrade;
use wscope_testkit::{http_get, wait_until, WAIT};

/// Says hello, then echoes.
async fn greet(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        if socket.send("hello").await.is_err() {
            return;
        }
        while let Some(msg) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

/// What the log subscriber of one test writes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

// One thread: the server's tasks log through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_server_serves_any_router_tracked_beside_health_ready_and_the_admin_api() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let settings = ServeSettings {
        listeners: Listeners {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..Listeners::default()
        },
        ..ServeSettings::default()
    };
    let server = Server::bind(&settings).unwrap();
    let (main, admin) = server.local_addrs().unwrap();
    let routes = Router::new()
        .route("/greet", get(greet))
        .route("/plain", get(|| async { "plain" }));
    let app = App::new(routes).announce("greeter", "ws", "/greet");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(app, async move {
        let _ = stopped.await;
    }));

    // The application's routes, a plain GET on its WebSocket route refused as on any other.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{main}/greet"))
        .await
        .unwrap();
    let first = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first, Message::text("hello"));
    ws.send(Message::text("echo me")).await.unwrap();
    let echoed = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("echo me"));
    assert_eq!(http_get(main, "/plain").await.text(), "plain");
    assert_eq!(http_get(main, "/greet").await.status, 426);
    // Not the demo: its paths are unknown here, in JSON as every error of the main listener.
    let unknown = http_get(main, "/ws").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "no route for GET /ws");

    // Health and readiness beside the application's routes; the socket is tracked.
    let health = http_get(main, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["activeConnections"], 1, "{}", health.text());
    assert_eq!(http_get(main, "/ready").await.status, 200);
    let stats = http_get(admin, "/api/stats").await.json();
    assert_eq!(stats["connections"][0]["path"], "/greet", "{stats}");

    let line = log.text();
    assert!(
        line.contains(&format!(
            "listening: greeter ws://{main}/greet, dashboard http://{admin}/"
        )),
        "{line}"
    );

    // The drain closes the application's sockets with 1001 and reports them closed cleanly.
    stop.send(()).unwrap();
    let close = timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close.unwrap().code, CloseCode::Away);
    drop(ws);
    let report = timeout(Duration::from_secs(20), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((report.connections, report.dropped), (1, 0));
    wait_until("the drain's outcome is logged", || {
        log.text().contains("1 of 1 connections closed cleanly")
    })
    .await;
}
