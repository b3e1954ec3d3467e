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
use axum::Router;
use wscope_axum::relay::{relay, RelayConfig, RelayRoute, Relays};
use wscope_axum::{
    ApiError, Forwarding, HttpProxy, HttpProxyConfig, ReloadAnswer, ReloadHook, WebSocketUpgrade,
};

use crate::app::App;
use crate::config::{ProxyArgs, ProxyRoutes, ProxySettings, ServerGroups};

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
        let mut relay = settings
            .proxy
            .relay_config()
            .socket(settings.socket_config());
        if settings.listeners.tls_cert.is_some() {
            relay = relay.proto("https");
        }
        let http_config = HttpProxyConfig {
            timeout: settings.proxy.upstream_timeout,
            ..HttpProxyConfig::default()
        };
        let http = match upstream_tls(settings, &specs)? {
            Some(tls) => {
                relay = relay.tls(tls.clone());
                HttpProxy::with_tls(http_config, tls)
            }
            None => HttpProxy::new(http_config),
        };
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
    /// `/ready` aside); its routes handed to the admin listener's `GET /api/upstreams` and the
    /// `wscope_upstream_*` metrics.
    pub fn app(&self) -> App {
        let main = Router::new().fallback(proxied).with_state(self.clone());
        App::new(main)
            .announce("proxy", "http", "/")
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
    pub fn apply(&self, routes: &ProxyRoutes) -> Result<ReloadAnswer, String> {
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

impl Proxy {
    /// The reload SIGHUP and the admin action `reload` run: the settings resolved again from
    /// `args` and the `--config` file they name, the routes put in force ([`Proxy::apply`]); a
    /// file that does not parse or validate changes nothing and says why in one line. Settings
    /// other than the routes that changed are named as needing a restart (logged, not applied).
    pub fn reload_hook(&self, args: ProxyArgs, running: ProxySettings) -> ReloadHook {
        let proxy = self.clone();
        ReloadHook::new(move || {
            let Some(path) = args.config.as_ref() else {
                return Err("no --config file: the routes came from flags alone".to_owned());
            };
            let fresh = ProxySettings::resolve(args.clone()).map_err(|e| e.to_string())?;
            let answer = proxy.apply(&fresh.proxy)?;
            let restart = reload::needs_restart(&running, &fresh);
            if !restart.is_empty() {
                tracing::warn!(
                    file = %path.display(),
                    "reload: {} changed and need a restart; the running values are kept",
                    restart.join(", ")
                );
            }
            tracing::info!(
                routes_retired = answer.routes_retired,
                connections_drained = answer.connections_drained,
                "reload: routes from {} in force",
                path.display()
            );
            Ok(answer)
        })
    }
}

/// The TLS client configuration for `https://` and `wss://` upstreams: made when a route needs
/// it or `--upstream-ca` is set (so that a reload may add such routes), from that bundle or the
/// system's roots.
fn upstream_tls(
    settings: &ProxySettings,
    specs: &[crate::config::RouteSpec],
) -> anyhow::Result<Option<Arc<wscope_axum::tls::tokio_rustls::rustls::ClientConfig>>> {
    let ca = settings.proxy.upstream_ca.as_deref();
    if ca.is_none() && !specs.iter().any(|s| s.upstream.is_tls()) {
        return Ok(None);
    }
    let config = wscope_axum::tls::client_config(ca).map_err(|e| match ca {
        Some(path) => anyhow::anyhow!("--upstream-ca {}: {e}", path.display()),
        None => anyhow::anyhow!("TLS upstreams: {e} (set --upstream-ca)"),
    })?;
    Ok(Some(config))
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
