//! wscope-axum: every WebSocket accepted through [`WebSocketUpgrade`] is tracked in a wscope
//! [`Registry`] — admitted, counted, described, closable and drained — with no further wiring.
//!
//! ```no_run
//! use axum::{response::Response, routing::get, Router};
//! use wscope_axum::{
//!     admin_router, health_router, ready_router, serve, shutdown_signal, ServeOptions, Tracking,
//!     WebSocketUpgrade,
//! };
//! use wscope_core::Registry;
//!
//! async fn echo(ws: WebSocketUpgrade) -> Response {
//!     // A plain GET gets 426 "Upgrade required"; an upgrade gets a tracked socket.
//!     ws.on_upgrade(|mut socket| async move {
//!         let _ = socket.send("welcome").await;
//!         while let Some(msg) = socket.recv().await {
//!             if socket.send(msg).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! async fn chat(ws: WebSocketUpgrade) -> Response {
//!     ws.on_upgrade(|mut socket| async move {
//!         // The socket knows its registry: every open connection on the path gets each
//!         // message, without waiting on a slow member.
//!         let registry = socket.registry();
//!         while let Some(msg) = socket.recv().await {
//!             registry.broadcast(Some("/ws/chat"), &msg);
//!         }
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let registry = Registry::new();
//! let app = Router::new()
//!     .route("/ws", get(echo))
//!     .route("/ws/chat", get(chat))
//!     // After the routes: a layer covers the routes added before it.
//!     .layer(Tracking::new(registry.clone()).layer())
//!     .merge(health_router(registry.clone())) // the public GET /health
//!     .merge(ready_router(registry.clone())); // GET /ready: 503 once draining
//! let admin = admin_router(registry.clone()); // /api/stats, /api/admin, /health, /metrics, /
//!
//! let signal = shutdown_signal()?; // SIGINT and SIGTERM
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // Loopback only (or a token: AdminConfig), and served by `serve`, whose requests tell the
//! // admin guard's `Host` check which address they reached.
//! let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! tokio::spawn(async move { serve(admin_listener, admin, ServeOptions::default()).await });
//! serve(listener, app, ServeOptions::default())
//!     .with_graceful_shutdown(async move {
//!         signal.await;
//!         registry.shutdown().await; // 1001 to every client, after flushing their queues
//!     })
//!     .await
//! # }
//! ```
//!
//! [`serve()`] gives every request the client address (`remoteAddress`) and the local one; with
//! `axum::serve`, serve `into_make_service_with_connect_info::<SocketAddr>()` or the address is
//! absent, and the admin guard cannot check the port of a loopback `Host`. Without a [`Tracking`]
//! layer, sockets go to [`Registry::global`] (logged once): see [`WebSocketUpgrade`]. wscope logs
//! through `tracing` (the reference's stats lines every 30 s, warnings): install a subscriber to
//! see them. The README's complete server, with a token and the log, is
//! `examples/tracked_server.rs`.
//!
//! # Engines
//! The engines live in `wscope-engine` (re-exported as [`engine`]; [`Engine`], [`SocketConfig`]
//! and the client role, [`connect`], also at the root). One cargo feature per engine, forwarded
//! to it: `wscope` (wscope's own, the default engine), `tungstenite` (in the default features too),
//! `tokio-websockets`, `fastwebsockets`. [`Engine::ALL`]
//! lists those compiled in.
//!
//! # Layout
//! - `upgrade`: the [`WebSocketUpgrade`] extractor (the handshake checked by wscope-engine,
//!   admission, registration, the upgraded connection handed to the engine) and the
//!   [`Tracking`] layer it reads; `upgraded_io`: the TCP stream the engine takes over (taken
//!   back from hyper when hyper answered the upgrade), with what was read past the head served
//!   first (`wscope_engine::Prefixed`).
//! - `client_addr`: [`TrustedProxies`] and the one forwarding header they set
//!   ([`ClientIpHeader`]).
//! - `admin`: the admin router and health handlers, answering with `wscope_core::wire` types;
//!   `closed`: `GET /api/closed`; `connections`: `GET /api/connections` (paged, sorted,
//!   filtered) and `GET /api/connections/{id}`; `stream`: `GET /api/stats/stream`, the live
//!   stream (SSE); `ready`: `GET /ready` for load balancers; `metrics`: `GET /metrics`
//!   (Prometheus text, [`metrics_text`]), its close observer and `metrics/process` (the
//!   `process_*` families from `/proc/self`); `cluster`: `GET /api/cluster/stats`,
//!   `GET /api/cluster/connections` and `POST /api/cluster/admin` over the registry's cluster
//!   (`wscope_cluster`), handed to the router as an extension.
//! - `stats_query`: [`StatsQuery`], the query of both stats routes and its `connections=N`.
//! - `dashboard`: the dashboard page at the admin listener's `/` and its assets (files under
//!   `src/dashboard/`, embedded; uPlot vendored under `src/dashboard/vendor/`).
//! - `admin_access`: [`AdminConfig`] and [`admin_guard`]: the token, `Host`, `Origin` and
//!   `Content-Type` checks in front of every admin route.
//! - `serve`: [`serve()`], HTTP/1.1 serving with a bound on request heads and a deadline for them
//!   ([`ServeOptions`]), over TLS when [`ServeOptions::tls`] is set; `direct`: the upgrade path
//!   that answers a plain connection's first request, when it is a WebSocket upgrade, without
//!   hyper ([`ServeOptions::direct_upgrades`]).
//! - `per_core`: [`PerCore`], a router served by one `current_thread` runtime per core, each
//!   with its own `SO_REUSEPORT` listener on one address ([`ServePerCore`]); [`Runtimes`], the
//!   WebSockets open on each (counted where `upgrade` spawns a connection's task);
//!   [`bind_listener`], the listeners' socket options.
//! - `tls`: [`tls`], rustls with the `ring` provider — the listeners' certificate, reloadable in
//!   place ([`tls::ReloadableCert`]), and the client side for connections upstream
//!   ([`tls::client_config`], [`tls::connect_tls`]).
//! - `forward`: [`forward_headers`] and [`strip_hop_by_hop`], the headers a proxy sends on
//!   ([`Forwarding`]: hop-by-hop ones dropped, `X-Forwarded-*` and `Forwarded` added) and
//!   brings back.
//! - `http_proxy`: [`HttpProxy`] ([`HttpProxyConfig`]), the reverse proxy for plain HTTP
//!   requests: bodies streamed, a keep-alive pool per upstream, 502 and 504 as JSON errors;
//!   `proxy_deadline`: its wait for a response head, re-armed while the request body moves.
//! - `relay/`: [`relay::relay`], a tracked WebSocket relayed to an upstream server (`open`: the
//!   upstream hop and the answers when it fails; `pump`: both directions and the closes;
//!   `figures`: [`relay::Upstream`], [`relay::Relays`] and `GET /api/upstreams`), and
//!   `metrics/relays.rs`, their `wscope_upstream_*` families.
//! - `reload`: the admin action `reload` ([`ReloadHook`], [`ReloadAnswer`]).
//! - `error`: [`ApiError`] (the JSON error body), [`UpgradeRefused`] and [`json_errors`] (JSON
//!   bodies for the router's own 404 and 405).

mod admin;
mod admin_access;
mod client_addr;
mod closed;
mod cluster;
mod connections;
mod dashboard;
mod direct;
mod error;
mod forward;
mod http_proxy;
mod json_body;
mod metrics;
mod per_core;
mod proxy_deadline;
mod ready;
pub mod relay;
mod reload;
mod serve;
mod stats_query;
mod stream;
pub mod tls;
mod upgrade;
mod upgraded_io;

pub use admin::{
    admin, admin_router, health, health_router, health_router_at, public_health, stats,
};
pub use admin_access::{admin_guard, AdminConfig, AllowedHost};
pub use client_addr::{parse_net, ClientIpHeader, TrustedProxies};
pub use closed::{closed, ClosedQuery};
pub use connections::{connection, connections};
pub use error::{json_errors, ApiError, UpgradeRefused};
pub use forward::{forward_headers, strip_hop_by_hop, Forwarding};
pub use http_proxy::{HttpProxy, HttpProxyConfig};
pub use metrics::{metrics, metrics_text, metrics_text_with};
pub use per_core::{bind_listener, PerCore, Runtimes, ServePerCore};
pub use ready::{ready, ready_router, ready_router_at};
pub use reload::{ReloadAnswer, ReloadHook};
pub use serve::{serve, LocalAddr, Serve, ServeOptions};
pub use stats_query::StatsQuery;
pub use stream::{stats_stream, StreamQuery};
pub use upgrade::{upgrade_required, Admitted, Tracking, WebSocketUpgrade};
pub use wscope_core::wire::{Health, PublicHealth};
pub use wscope_core::{
    self as core, shutdown_signal, CallbackSocket, OnMessage, Registry, TrackedSocket,
};
// The engines, their settings and the client role live in wscope-engine; re-exported here so
// that a server needs one import path.
pub use wscope_engine::{
    self as engine, connect, connect_with, ConnectError, Connected, Engine, SocketConfig,
    UnknownEngine,
};

/// The README's examples, compiled as doctests so that they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
