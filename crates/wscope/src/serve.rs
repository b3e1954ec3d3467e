//! [`Server`]: an application's router on the main listener, beside the `/health` and `/ready`
//! of the registry that tracks its WebSockets; the admin API on its own listener; cluster mode;
//! TLS on either listener, its certificates reread on SIGHUP; and a graceful drain once its
//! shutdown signal fires; the main listener once per runtime with a runtime per core
//! (`--runtime per-core`, [`PerCore`]). `wscope serve` is a `Server` serving
//! [`demo::app`](crate::demo::app).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;

use anyhow::Context;
use axum::Extension;
use tokio::net::TcpListener;
use wscope_axum::{
    admin_router, health_router_at, json_errors, ready_router_at, AdminConfig, PerCore,
    ServeOptions, Tracking,
};
use wscope_cluster::Cluster;
use wscope_core::{Registry, ShutdownReport};

use crate::app::{App, Url};
use crate::config::ServerGroups;
use crate::listener;
use crate::reload::Reloader;
use crate::runtime::{self, RuntimeLayout};
use crate::tls::ListenerTls;

/// Bound listeners and the registry behind them, ready to serve an application
/// ([`Server::serve`]); made from any settings that hold the server's groups ([`Server::bind`]).
pub struct Server {
    registry: Registry,
    tracking: Tracking,
    main: MainListener,
    admin: TcpListener,
    /// `--runtime` and `--threads` (resolved), for the start-up line.
    layout: RuntimeLayout,
    threads: usize,
    /// The admin API's token and allowed hosts and origins.
    admin_config: AdminConfig,
    /// The request-head bound and deadline of both listeners.
    serve_options: ServeOptions,
    /// Where the main listener answers its health and readiness checks (`--health-path`,
    /// `--ready-path`).
    health_path: String,
    ready_path: String,
    /// Where and how to join a cluster (`--redis-url`), if at all.
    cluster: Option<ClusterPlan>,
    /// TLS on the main and admin listeners (`--tls-cert`, `--admin-tls-cert`), if any.
    main_tls: Option<ListenerTls>,
    admin_tls: Option<ListenerTls>,
    /// What SIGHUP rereads: the listeners' certificates, and what is added by
    /// [`Server::on_reload`].
    reloader: Reloader,
}

/// The main listener, as `--runtime` lays it out.
enum MainListener {
    /// One listener on the runtime the server runs on (`multi`).
    One(TcpListener),
    /// A listener per runtime, each runtime on a thread of its own (`per-core`).
    PerCore(PerCore),
}

impl MainListener {
    fn bind(listeners: &crate::config::Listeners) -> std::io::Result<Self> {
        let (addr, backlog) = (listeners.listen, listeners.backlog);
        Ok(match listeners.runtime {
            RuntimeLayout::Multi => Self::One(listener::bind(addr, backlog)?),
            RuntimeLayout::PerCore => Self::PerCore(PerCore::bind_with_backlog(
                addr,
                runtime::threads(listeners),
                backlog,
            )?),
        })
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::One(listener) => listener.local_addr(),
            Self::PerCore(per_core) => Ok(per_core.local_addr()),
        }
    }
}

/// The cluster this server joins when it runs.
struct ClusterPlan {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    redis_url: String,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    config: wscope_cluster::ClusterConfig,
}

impl Server {
    /// Reads the listeners' certificates and binds both listeners; an error names the flag
    /// whose address or files failed (a [`ConfigError`](crate::config::ConfigError) for the
    /// files).
    pub fn bind(settings: &impl ServerGroups) -> anyhow::Result<Self> {
        let listeners = settings.listeners();
        if listeners.health_path == listeners.ready_path {
            anyhow::bail!(
                "--health-path and --ready-path are both {}: give each its own path",
                listeners.health_path
            );
        }
        let main_tls = ListenerTls::load(listeners.main_tls()?)?;
        let admin_tls = ListenerTls::load(listeners.admin_tls()?)?;
        let mut reloader = Reloader::new();
        for tls in main_tls.iter().chain(&admin_tls) {
            tls.reload_on(&mut reloader);
        }
        let main = MainListener::bind(listeners)
            .with_context(|| format!("--listen {}", listeners.listen))?;
        let admin = listener::bind(listeners.admin_listen, listeners.backlog)
            .with_context(|| format!("--admin-listen {}", listeners.admin_listen))?;
        let registry = Registry::with_config(settings.registry_config());
        let tracking = Tracking::new(registry.clone())
            .trusted_proxies(listeners.proxies())
            .socket_config(settings.socket_config());
        let cluster = settings.cluster();
        Ok(Self {
            registry,
            tracking,
            main,
            admin,
            layout: listeners.runtime,
            threads: runtime::threads(listeners).get(),
            admin_config: settings.admin().admin_config(),
            serve_options: listeners.serve_options(),
            health_path: listeners.health_path.clone(),
            ready_path: listeners.ready_path.clone(),
            cluster: cluster.redis_url.as_ref().map(|url| ClusterPlan {
                redis_url: url.expose().to_owned(),
                config: cluster.cluster_config(),
            }),
            main_tls,
            admin_tls,
            reloader,
        })
    }

    /// Adds `action` to what SIGHUP rereads, after the listeners' certificates (see
    /// [`Reloader::add`]): it puts the new in place, or returns why not and leaves the old.
    pub fn on_reload(
        &mut self,
        name: impl Into<String>,
        action: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.reloader.add(name, action);
    }

    /// Joins the cluster of `--redis-url`, if set, and returns the node: Redis down is no error
    /// (the instance serves locally and joins when it can); another live instance with this
    /// instance id is.
    async fn join_cluster(
        &mut self,
        main: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<Option<Cluster>> {
        let Some(plan) = self.cluster.take() else {
            return Ok(None);
        };
        #[cfg(feature = "redis")]
        {
            let backend = wscope_redis::RedisBackend::connect(&plan.redis_url, Default::default())
                .context("--redis-url")?;
            let config = plan
                .config
                .main_addr(main.to_string())
                .admin_addr(admin.to_string());
            let cluster =
                Cluster::join(&self.registry, std::sync::Arc::new(backend), config).await?;
            tracing::info!(
                cluster = cluster.name(),
                state = cluster.state().as_str(),
                "cluster mode over Redis"
            );
            Ok(Some(cluster))
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

    /// Serves `app` on the main listener until `shutdown` completes, then drains: new upgrades
    /// get 503, every connection gets 1001 "Server shutting down" after its queue is flushed,
    /// and what is left at the drain deadline is dropped.
    ///
    /// Beside `app`'s routes the main listener answers `GET /health` and `GET /ready` (or the
    /// paths `--health-path` and `--ready-path` name: an application with routes of its own
    /// there moves them, as two routes on one path cannot be merged); every
    /// WebSocket it accepts is tracked (admitted, counted, listed, closable, drained), and its
    /// router's own 404 and 405 are JSON. The admin listener serves the admin API.
    ///
    /// With `--runtime per-core` the main listener is served by `--threads` runtimes of their
    /// own ([`PerCore`]), which stop only after the drain (their WebSockets end with them);
    /// the admin listener, the background tasks, cluster mode and the drain run on the runtime
    /// this is awaited on. With `multi`, everything runs on that one runtime.
    pub async fn serve(
        mut self,
        app: impl Into<App>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<ShutdownReport> {
        let (main_addr, admin_addr) = self.local_addrs()?;
        let cluster = self.join_cluster(main_addr, admin_addr).await?;
        self.registry.start_background_tasks();
        let mut app = app.into();
        let layers = app.take_layers();
        let (routes, listing) = app.into_parts(main_addr);
        let main = routes
            .merge(health_router_at(self.registry.clone(), &self.health_path))
            .merge(ready_router_at(self.registry.clone(), &self.ready_path))
            .layer(self.tracking.layer());
        // The router's own 404 and 405 in JSON, as its other errors (426, refusals) are.
        let mut main = json_errors(main);
        let mut admin = admin_router(self.registry.clone());
        for layer in &layers {
            main = layer(main);
            admin = layer(admin);
        }
        // In cluster mode the node is handed to both routers: the application's handlers
        // broadcast through it, the admin API surveys it. The registry does not know it.
        if let Some(cluster) = &cluster {
            main = main.layer(Extension(cluster.clone()));
            admin = admin.layer(Extension(cluster.clone()));
        }
        if let MainListener::PerCore(per_core) = &self.main {
            // `wscope_runtime_connections`: how the kernel spread the WebSockets.
            admin = admin.layer(Extension(per_core.runtimes()));
        }
        let admin = admin.layer(self.admin_config.layer());
        // Before the start-up line: from then on a SIGHUP reloads rather than ends the process.
        let reloads = std::mem::take(&mut self.reloader)
            .listen()
            .context("cannot handle SIGHUP")?;
        let mut listing = listing.and("dashboard", Url("http", admin_addr, "/"));
        if self.main_tls.is_some() {
            listing = listing.over_tls(main_addr);
        }
        if self.admin_tls.is_some() {
            listing = listing.over_tls(admin_addr);
        }
        tracing::info!(
            main = %main_addr,
            admin = %admin_addr,
            instance = self.registry.instance_id(),
            runtime = self.layout.as_str(),
            threads = self.threads,
            "listening: {listing}",
        );

        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // wscope_axum::serve, not axum::serve: it bounds request heads and times them out.
        let tls = |listener: &Option<ListenerTls>| listener.as_ref().map(|t| t.config.clone());
        let main_options = self.serve_options.clone().tls(tls(&self.main_tls));
        let admin_options = self.serve_options.tls(tls(&self.admin_tls));
        // With a runtime per core the main listener's runtimes run on threads of their own,
        // sharing the registry; this task only waits for them.
        let main_server = match self.main {
            MainListener::One(listener) => wscope_axum::serve(listener, main, main_options)
                .with_graceful_shutdown(stopped(http_stopped.clone()))
                .into_future(),
            MainListener::PerCore(per_core) => per_core
                .serve(main, main_options)
                .with_graceful_shutdown(stopped(http_stopped.clone()))
                .into_future(),
        };
        let admin_server = wscope_axum::serve(self.admin, admin, admin_options)
            .with_graceful_shutdown(stopped(http_stopped));
        let main_task = tokio::spawn(main_server);
        let admin_task = tokio::spawn(async move { admin_server.await });

        shutdown.await;
        // HTTP keeps answering during the drain, so health checks see "shutting_down". The drain
        // logs its own outcome (how many closed cleanly, how many were dropped) once.
        let report = self.registry.shutdown().await;
        // Connections the frame guard failed linger (half-closed, reading their peer's last
        // bytes) for at most 2 s each in tracked tasks: let them end as meant, not with a reset
        // when the process exits.
        let lingering = wscope_axum::engine::lingering();
        lingering.close();
        lingering.wait().await;
        if let Some(cluster) = cluster {
            // The node left as the drain began; its leave is published before the process
            // exits (each of its steps is bounded by the survey timeout).
            let bound = cluster.config().survey_timeout * 4;
            let _ = tokio::time::timeout(bound, cluster.stopped()).await;
        }
        let _ = stop_http.send(true);
        if let Some(reloads) = reloads {
            reloads.abort();
        }
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
