//! wscope-axum: every WebSocket accepted through [`WebSocketUpgrade`] is tracked in a wscope
//! [`Registry`] — counted, described, closable and drained — with no further wiring.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use wscope_axum::{admin_router, Tracking, WebSocketUpgrade};
//! use wscope_core::Registry;
//!
//! async fn echo(ws: WebSocketUpgrade) -> axum::response::Response {
//!     // A plain GET gets 426 "Upgrade required"; an upgrade gets a tracked socket.
//!     ws.on_upgrade(|mut socket| async move {
//!         while let Some(msg) = socket.recv().await {
//!             if socket.send(msg).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let registry = Registry::new();
//! let app = Router::new()
//!     .route("/ws", get(echo))
//!     .layer(Tracking::new(registry.clone()).layer());
//! let admin = admin_router(registry.clone()); // GET /api/stats, POST /api/admin, GET /health
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! tokio::spawn(async move { axum::serve(admin_listener, admin).await });
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .with_graceful_shutdown(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     registry.shutdown().await; // 1001 to every client, after flushing their queues
//! })
//! .await
//! # }
//! ```
//!
//! Serve with `into_make_service_with_connect_info::<SocketAddr>()` so the client address is
//! known; without it `remoteAddress` is absent.
//!
//! # Layout
//! - `upgrade`: the [`WebSocketUpgrade`] extractor and the [`Tracking`] it reads.
//! - `handshake`: the HTTP/1.1 upgrade handshake, so any engine can take the connection over.
//! - `engine`: the WebSocket engines ([`Engine`]) behind one reader/writer pair of messages.
//! - `socket`: [`TrackedSocket`] and the connection task (handler and writer joined).
//! - `client_addr`: [`TrustedProxies`] and forwarding-header parsing.
//! - `admin`: the admin router and health handler.
//! - `error`: [`ApiError`], the JSON error body.

mod admin;
mod client_addr;
mod engine;
mod error;
mod handshake;
mod socket;
mod upgrade;

pub use admin::{admin, admin_router, health, health_router, stats, Health};
pub use client_addr::{parse_net, TrustedProxies};
pub use engine::Engine;
pub use error::ApiError;
pub use socket::TrackedSocket;
pub use upgrade::{upgrade_required, SocketConfig, Tracking, WebSocketUpgrade};
pub use wscope_core::{self as core, Registry};
