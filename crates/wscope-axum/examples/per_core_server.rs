//! A tracked echo server on a runtime per core, its sockets run by wscope's own WebSocket engine:
//! one `current_thread` tokio runtime per core (`PerCore`), each accepting on its own
//! `SO_REUSEPORT` listener on one address, all tracking into one registry; the admin API (stats,
//! actions, `/metrics` with each runtime's connections) on loopback, on the main runtime; a drain
//! on SIGINT/SIGTERM. Run it with
//! `cargo run --release -p wscope-axum --example per_core_server`, then connect any client to
//! `ws://127.0.0.1:8080/ws` (`cargo run --release -- bench echo --url ws://127.0.0.1:8080/ws`)
//! and read `curl -s 127.0.0.1:9090/api/stats`.

use std::future::Future;
use std::num::NonZeroUsize;

use axum::{response::Response, routing::get, Extension, Router};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use wscope_axum::{
    admin_router, serve, shutdown_signal, Engine, PerCore, ServeOptions, SocketConfig, Tracking,
    WebSocketUpgrade,
};
use wscope_core::Registry;

async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(msg) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

/// The routes every runtime serves: `/ws`, an echo whose sockets wscope's engine runs and
/// `registry` tracks.
pub fn app(registry: &Registry) -> Router {
    let engine = SocketConfig::default().engine(Engine::Wscope);
    Router::new()
        .route("/ws", get(echo))
        // After the routes: an axum layer covers the routes added before it.
        .layer(
            Tracking::new(registry.clone())
                .socket_config(engine)
                .layer(),
        )
}

// The calling runtime serves the admin API and waits for the signal; the runtimes per core
// serve the WebSockets.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let main = PerCore::bind("127.0.0.1:8080".parse().expect("an address"), threads)?;
    // The admin API can close every connection: keep it on loopback.
    let admin = TcpListener::bind("127.0.0.1:9090").await?;
    run(main, admin, shutdown_signal()?).await // SIGINT and SIGTERM, installed now
}

/// Serves `main` (the WebSockets, a runtime per core) and `admin` (the admin API, on the calling
/// runtime) until `stop`, then drains: 1001 to every client, before the runtimes stop.
pub async fn run(
    main: PerCore,
    admin: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Registry::new();
    registry.start_background_tasks();
    // `wscope_runtime_connections{runtime="0"}`… in `/metrics`.
    let admin_app = admin_router(registry.clone()).layer(Extension(main.runtimes()));
    tokio::spawn(async move { serve(admin, admin_app, ServeOptions::default()).await });
    main.serve(app(&registry), ServeOptions::default())
        .with_graceful_shutdown(async move {
            stop.await;
            // Before the runtimes stop: a runtime's WebSockets end with it.
            registry.shutdown().await;
        })
        .await
}
