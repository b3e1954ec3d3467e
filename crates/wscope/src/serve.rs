//! `wscope serve`: the echo and chat endpoints on the main listener, the admin API on its own
//! listener, and a graceful drain on SIGINT/SIGTERM.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use wscope_axum::{
    admin_router, health_router, json_errors, ready_router, AdminConfig, ServeOptions, Tracking,
    WebSocketUpgrade,
};
use wscope_core::{Registry, ShutdownReport};

pub use wscope_core::shutdown_signal;

use crate::config::ServeConfig;
use crate::listener;

/// The path chat connections share.
pub const CHAT_PATH: &str = "/ws/chat";

/// Bound listeners, ready to serve.
pub struct Server {
    registry: Registry,
    tracking: Tracking,
    main: TcpListener,
    admin: TcpListener,
    /// The admin API's token and allowed hosts and origins.
    admin_config: AdminConfig,
    /// The request-head bound and deadline of both listeners.
    serve_options: ServeOptions,
    /// Where and how to join a cluster (`--redis-url`), if at all.
    cluster: Option<ClusterPlan>,
}

/// The cluster this server joins when it runs.
struct ClusterPlan {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    redis_url: String,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    config: wscope_core::cluster::ClusterConfig,
}

impl Server {
    /// Binds both listeners; an error names the flag whose address failed.
    pub fn bind(cfg: &ServeConfig) -> anyhow::Result<Self> {
        let main = listener::bind(cfg.listen, cfg.backlog)
            .with_context(|| format!("--listen {}", cfg.listen))?;
        let admin = listener::bind(cfg.admin_listen, cfg.backlog)
            .with_context(|| format!("--admin-listen {}", cfg.admin_listen))?;
        let registry = Registry::with_config(cfg.registry_config());
        let tracking = Tracking::new(registry.clone())
            .trusted_proxies(cfg.proxies())
            .socket_config(cfg.socket_config());
        Ok(Self {
            registry,
            tracking,
            main,
            admin,
            admin_config: cfg.admin_config(),
            serve_options: cfg.serve_options(),
            cluster: cfg.redis_url.as_ref().map(|url| ClusterPlan {
                redis_url: url.expose().to_owned(),
                config: cfg.cluster_config(),
            }),
        })
    }

    /// Joins the cluster of `--redis-url`, if set: Redis down is no error (the instance serves
    /// locally and joins when it can); another live instance with this instance id is.
    async fn join_cluster(&mut self, main: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
        let Some(plan) = self.cluster.take() else {
            return Ok(());
        };
        #[cfg(feature = "redis")]
        {
            let backend = wscope_redis::RedisBackend::connect(&plan.redis_url, Default::default())
                .context("--redis-url")?;
            let config = plan
                .config
                .main_addr(main.to_string())
                .admin_addr(admin.to_string());
            let cluster = wscope_core::cluster::Cluster::join(
                &self.registry,
                std::sync::Arc::new(backend),
                config,
            )
            .await?;
            tracing::info!(
                cluster = cluster.name(),
                state = cluster.state().as_str(),
                "cluster mode over Redis"
            );
            Ok(())
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (plan, main, admin);
            anyhow::bail!("--redis-url: this build has no Redis support")
        }
    }

    /// The bound addresses (main, admin): with port 0 in the config, the ports chosen.
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.main.local_addr()?, self.admin.local_addr()?))
    }

    /// Serves until `signal` completes, then drains: new upgrades get 503, every connection gets
    /// 1001 "Server shutting down" after its queue is flushed, and what is left at the drain
    /// deadline is dropped.
    pub async fn run(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<ShutdownReport> {
        let (main_addr, admin_addr) = self.local_addrs()?;
        self.join_cluster(main_addr, admin_addr).await?;
        self.registry.start_background_tasks();
        let app = app(self.registry.clone(), self.tracking);
        let admin = admin_router(self.registry.clone()).layer(self.admin_config.layer());
        tracing::info!(
            main = %main_addr,
            admin = %admin_addr,
            instance = self.registry.instance_id(),
            "listening: echo {echo}, chat {chat}, dashboard {dashboard}",
            echo = Url("ws", main_addr, "/ws"),
            chat = Url("ws", main_addr, CHAT_PATH),
            dashboard = Url("http", admin_addr, "/"),
        );

        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // wscope_axum::serve, not axum::serve: it bounds request heads and times them out.
        let main_server = wscope_axum::serve(self.main, app, self.serve_options.clone())
            .with_graceful_shutdown(stopped(http_stopped.clone()));
        let admin_server = wscope_axum::serve(self.admin, admin, self.serve_options)
            .with_graceful_shutdown(stopped(http_stopped));
        let main_task = tokio::spawn(async move { main_server.await });
        let admin_task = tokio::spawn(async move { admin_server.await });

        signal.await;
        // HTTP keeps answering during the drain, so health checks see "shutting_down". The drain
        // logs its own outcome (how many closed cleanly, how many were dropped) once.
        let report = self.registry.shutdown().await;
        let _ = stop_http.send(true);
        main_task
            .await
            .context("main listener task")?
            .context("main listener")?;
        admin_task
            .await
            .context("admin listener task")?
            .context("admin listener")?;
        Ok(report)
    }
}

/// A URL to paste into a client or a browser: `scheme://address/path`, with loopback in place of
/// an unspecified address (`0.0.0.0`, `::`), which a listener binds but no client can reach.
struct Url(&'static str, SocketAddr, &'static str);

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self(scheme, addr, path) = *self;
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        write!(f, "{scheme}://{}{path}", SocketAddr::new(ip, addr.port()))
    }
}

/// The main listener's routes: `/ws` echo, `/ws/chat` fan-out (both label a connection from
/// `?user=` and `?tag=a,b`), `/health`, `/ready`.
pub fn app(registry: Registry, tracking: Tracking) -> Router {
    let routes = Router::new()
        .route("/ws", get(echo))
        .route(CHAT_PATH, get(chat))
        .merge(health_router(registry.clone()))
        .merge(ready_router(registry))
        .layer(tracking.layer());
    // The router's own 404 and 405 in JSON, as its other errors (426, refusals) are.
    json_errors(routes)
}

/// What a demo client may say about itself in its URL (`/ws?user=ann&tag=red,blue`): shown as
/// `user` and `tags` in the admin API, which filters and closes by them. Other parameters, and a
/// query that does not parse, are ignored: labels are a demonstration, not a gate. Labels past
/// their caps (a user of more than 256 bytes, more than 32 tags or one of more than 64 bytes)
/// get the upgrade refused with 400 naming the cap.
#[derive(Debug, serde::Deserialize)]
struct DemoLabels {
    user: Option<String>,
    /// Comma-separated.
    tag: Option<String>,
}

impl DemoLabels {
    /// Labels `ws` from the URL at registration, so that the connection's task keeps nothing for
    /// them (a handler's captures live inline in the task as long as the connection: capturing
    /// these grew every idle connection by ~240 B, DHAT at 1,000 connections).
    fn label(
        query: Result<Query<Self>, QueryRejection>,
        mut ws: WebSocketUpgrade,
    ) -> WebSocketUpgrade {
        let Ok(Query(labels)) = query else { return ws };
        if let Some(user) = labels.user.filter(|u| !u.is_empty()) {
            ws = ws.user(user);
        }
        for tag in labels.tag.iter().flat_map(|t| t.split(',')) {
            if ws.label_error().is_some() {
                // Refused already: the rest of a long list is not read.
                break;
            }
            if !tag.is_empty() {
                ws = ws.tag(tag);
            }
        }
        ws
    }
}

/// Sends each text or binary message back unchanged.
async fn echo(labels: Result<Query<DemoLabels>, QueryRejection>, ws: WebSocketUpgrade) -> Response {
    DemoLabels::label(labels, ws).on_upgrade(|mut socket| async move {
        while let Some(msg) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

/// Sends each message to every open chat connection (the sender included), visiting only the
/// chat path's members; in cluster mode, to those of every instance too (published once, in
/// order, never waiting on Redis). A member whose queue is full is closed as a slow consumer
/// (1008) rather than holding up the others.
async fn chat(labels: Result<Query<DemoLabels>, QueryRejection>, ws: WebSocketUpgrade) -> Response {
    DemoLabels::label(labels, ws).on_upgrade(move |mut socket| async move {
        let registry = socket.registry();
        while let Some(msg) = socket.recv().await {
            let outcome = match registry.cluster() {
                Some(cluster) => cluster.broadcast(Some(CHAT_PATH), &msg).local,
                None => registry.broadcast(Some(CHAT_PATH), &msg),
            };
            if outcome.slow > 0 {
                tracing::debug!(slow = outcome.slow, "chat: closed members too slow to read");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Url;

    #[test]
    fn urls_name_loopback_for_an_unspecified_address() {
        let url = |addr: &str, path| Url("ws", addr.parse().unwrap(), path).to_string();
        assert_eq!(url("127.0.0.1:8080", "/ws"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url("0.0.0.0:8080", "/ws"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url("[::]:9090", "/"), "ws://[::1]:9090/");
        assert_eq!(url("[2001:db8::1]:80", "/x"), "ws://[2001:db8::1]:80/x");
    }
}
