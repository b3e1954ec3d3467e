//! `wscope proxy`: the application a [`Server`](crate::serve::Server) serves to put wscope in
//! front of any web app — every WebSocket upgrade admitted, tracked and relayed to the upstream
//! of its route ([`wscope_axum::relay`]), every other request reverse-proxied
//! ([`wscope_axum::HttpProxy`]) — and its reload, which swaps the routes and drains only the
//! sockets of routes that changed.
//!
//! ```no_run
//! # async fn run(args: wscope::config::ProxyArgs) -> anyhow::Result<()> {
//! use wscope::config::ProxySettings;
//! use wscope::proxy::Proxy;
//! use wscope::serve::Server;
//!
//! let settings = ProxySettings::resolve(args)?;
//! let server = Server::bind(&settings)?;
//! let proxy = Proxy::new(&settings)?;
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! server.serve(proxy.app(), shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `routes`: the route table (longest prefix first) and what a reload keeps of it.
//! - `reload`: reading the routes again and draining the retired ones' sockets.

mod reload;
mod routes;

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use wscope_axum::relay::{relay, RelayConfig, RelayRoute, Relays};
use wscope_axum::{ApiError, Forwarding, HttpProxy, HttpProxyConfig, WebSocketUpgrade};

use crate::app::App;
use crate::config::{ProxyRoutes, ProxySettings, ServerGroups};

pub use reload::ReloadReport;
use routes::RouteTable;

/// The proxy: its routes (swapped whole by a reload), how relays and plain requests go.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The routes in force; a reload replaces the table, requests read the one in force when
    /// they came.
    table: RwLock<Arc<RouteTable>>,
    /// The routes as `/metrics` and `GET /api/upstreams` show them.
    relays: Relays,
    relay: RelayConfig,
    http: HttpProxy,
    /// How many connections per second a reload's drain closes (0 = all at once).
    drain_rate: u32,
}

impl Proxy {
    /// The proxy of `settings`' routes, the upstream hop on the same engine and limits as the
    /// client hop.
    pub fn new(settings: &ProxySettings) -> anyhow::Result<Self> {
        let specs = settings.proxy.table().map_err(anyhow::Error::msg)?;
        let table =
            RouteTable::build(&specs, &RouteTable::default()).map_err(anyhow::Error::msg)?;
        let relays = Relays::default();
        relays.set(table.routes().to_vec());
        let relay = settings
            .proxy
            .relay_config()
            .socket(settings.socket_config());
        let http = HttpProxy::new(HttpProxyConfig {
            timeout: settings.proxy.upstream_timeout,
            ..HttpProxyConfig::default()
        });
        Ok(Self {
            inner: Arc::new(Inner {
                table: RwLock::new(Arc::new(table)),
                relays,
                relay,
                http,
                drain_rate: settings.liveness.drain_rate,
            }),
        })
    }

    /// The application: every path to its route's upstream (the server's own `/health` and
    /// `/ready` aside), and `GET /api/upstreams` with the `wscope_upstream_*` metrics on the
    /// admin listener.
    pub fn app(&self) -> App {
        let main = Router::new().fallback(proxied).with_state(self.clone());
        let admin = Router::new().route("/api/upstreams", get(wscope_axum::relay::upstreams));
        App::new(main)
            .announce("proxy", "http", "/")
            .admin(admin)
            .extension(self.inner.relays.clone())
            .extension(self.clone())
    }

    /// The routes in force.
    fn table(&self) -> Arc<RouteTable> {
        self.inner
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `routes` in force: routes whose prefix and upstream are unchanged keep their sockets
    /// and figures; the sockets of the others are closed with 1001 (paced by `--drain-rate`),
    /// after what their upstream had sent them is flushed.
    pub fn apply(&self, routes: &ProxyRoutes) -> Result<ReloadReport, String> {
        let specs = routes.table()?;
        let mut slot = self.inner.table.write().unwrap_or_else(|e| e.into_inner());
        let new = RouteTable::build(&specs, &slot)?;
        let retired = slot.retired_by(&new);
        self.inner.relays.set(new.routes().to_vec());
        *slot = Arc::new(new);
        drop(slot);
        Ok(reload::drain(retired, self.inner.drain_rate))
    }
}

/// Every request: an upgrade is relayed, anything else reverse-proxied, to the upstream of the
/// longest prefix that covers its path.
async fn proxied(State(proxy): State<Proxy>, ws: WebSocketUpgrade, request: Request) -> Response {
    let table = proxy.table();
    let Some(RelayRoute { upstream, .. }) = table.pick(request.uri().path()) else {
        let message = format!("no route for {}", request.uri().path());
        return ApiError::new(StatusCode::NOT_FOUND, message).into_response();
    };
    let inner = &proxy.inner;
    if ws.is_upgrade_request() {
        return relay(ws, request.headers(), request.uri(), upstream, &inner.relay).await;
    }
    let fwd = Forwarding {
        client: ws.remote_addr(),
        proto: inner.relay.proto,
    };
    inner
        .http
        .forward(request, upstream.http_base(), &fwd)
        .await
}
