//! A tracked WebSocket server, complete and safe to start from: echo and chat routes whose
//! sockets wscope tracks, the public `/health` and `/ready`, the admin API on loopback behind its
//! guard (and a token, if `WSCOPE_ADMIN_TOKEN` is set), the reference's stats lines in the log, and a
//! drain on SIGINT/SIGTERM. Run it with `cargo run -p wscope-axum --example tracked_server`.

use std::future::Future;

use axum::{response::Response, routing::get, Router};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use wscope_axum::{
    admin_router, health_router, ready_router, serve, shutdown_signal, AdminConfig, ServeOptions,
    Tracking, WebSocketUpgrade,
};
use wscope_core::Registry;

async fn echo(ws: WebSocketUpgrade) -> Response {
    // A plain GET gets 426 "Upgrade required"; an upgrade gets a tracked socket.
    ws.on_upgrade(|mut socket| async move {
        let _ = socket.send("welcome").await; // &str, String, Vec<u8>, Bytes or a Message
        while let Some(msg) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

async fn chat(ws: WebSocketUpgrade) -> Response {
    ws.protocols(["chat.v1"])
        .on_upgrade(|mut socket| async move {
            // The socket knows its registry: each message goes to every open connection on this
            // path, without waiting (a member whose queue is full is closed as a slow consumer).
            let registry = socket.registry();
            while let Some(msg) = socket.recv().await {
                registry.broadcast(Some("/ws/chat"), &msg);
            }
        })
}

/// The public listener's routes: tracked WebSockets, `/health` and `/ready`.
fn app(registry: &Registry) -> Router {
    Router::new()
        .route("/ws", get(echo))
        .route("/ws/chat", get(chat))
        // After the routes: an axum layer covers the routes added before it.
        .layer(Tracking::new(registry.clone()).layer())
        // The reference's four health fields, and 503 on /ready from the moment a drain begins.
        .merge(health_router(registry.clone()))
        .merge(ready_router(registry.clone()))
}

/// The admin listener's routes: stats, actions, metrics and the dashboard, behind the admin
/// guard (`Host`, `Origin`, JSON bodies), and behind `token` when there is one.
fn admin_app(registry: &Registry, token: Option<String>) -> Router {
    let mut config = AdminConfig::new();
    if let Some(token) = token {
        config = config.token(token);
    }
    admin_router(registry.clone()).layer(config.layer())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // wscope logs through `tracing`: without a subscriber, the reference's three stats lines
    // (every 30 s) and wscope's warnings go nowhere. `RUST_LOG` picks the level (info here).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let listener = TcpListener::bind("127.0.0.1:8080").await?;
    // The admin API can close every connection: keep it on loopback, or set a token.
    let admin = TcpListener::bind("127.0.0.1:9090").await?;
    let token = std::env::var("WSCOPE_ADMIN_TOKEN").ok();
    run(listener, admin, token, shutdown_signal()?).await // SIGINT and SIGTERM, installed now
}

/// Serves both listeners until `stop`, then drains: 1001 to every client, after flushing its
/// queue.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    token: Option<String>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Registry::new();
    // The stats lines and the stale-entry sweep from now on, not from the first connection.
    registry.start_background_tasks();
    // wscope_axum::serve rather than axum::serve: it bounds and times request heads, gives
    // handlers the client address, and tells the admin guard which address each request
    // reached (its `Host` check against DNS rebinding needs it).
    let admin_app = admin_app(&registry, token);
    tokio::spawn(async move { serve(admin, admin_app, ServeOptions::default()).await });
    serve(listener, app(&registry), ServeOptions::default())
        .with_graceful_shutdown(async move {
            stop.await;
            registry.shutdown().await;
        })
        .await
}
