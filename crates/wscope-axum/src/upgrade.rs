//! The upgrade extractor: tells an upgrade request from a plain one and, on upgrade, registers the
//! socket so that every connection accepted through it is tracked with no further wiring.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use wscope_core::{ConnectionMeta, Registry};

use hyper_util::rt::TokioIo;
use wscope_core::Initiator;

use crate::client_addr::TrustedProxies;
use crate::engine::{self, Engine};
use crate::error::ApiError;
use crate::handshake::Handshake;
use crate::socket::{self, TrackedSocket};

/// Engine settings for accepted sockets.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// The WebSocket implementation.
    pub engine: Engine,
    /// Bytes read from the socket at a time (the engine's read buffer).
    pub read_buffer_size: usize,
    /// Bytes buffered before a write goes to the socket (frames batch up to this).
    pub write_buffer_size: usize,
    /// Largest message accepted (bytes).
    pub max_message_size: usize,
    /// Largest frame accepted (bytes).
    pub max_frame_size: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            engine: Engine::default(),
            // axum defaults to 128 KiB, held by every connection even when idle; the read buffer
            // is what an idle connection mostly costs (tungstenite fills it on every read), and
            // 512 B still takes a small message, or a batch of them, in one read.
            read_buffer_size: 512,
            write_buffer_size: 16 * 1024,
            max_message_size: 64 << 20,
            max_frame_size: 16 << 20,
        }
    }
}

/// Where accepted sockets are tracked and how they are accepted. Attach it to a router with
/// [`Tracking::layer`]; without it, sockets go to [`Registry::global`] with the defaults.
#[derive(Clone, Debug)]
pub struct Tracking {
    /// The registry sockets are registered in.
    pub registry: Registry,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Engine settings.
    pub socket: SocketConfig,
}

impl Tracking {
    /// Tracks into `registry`, trusting loopback proxies, with default engine settings.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            trusted_proxies: TrustedProxies::default(),
            socket: SocketConfig::default(),
        }
    }

    /// Sets the trusted proxies.
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Sets the engine settings.
    pub fn socket_config(mut self, socket: SocketConfig) -> Self {
        self.socket = socket;
        self
    }

    /// A layer that makes [`WebSocketUpgrade`] use this tracking (`router.layer(t.layer())`).
    pub fn layer(self) -> Extension<Tracking> {
        Extension(self)
    }

    /// The default: the global registry, loopback proxies, default engine settings.
    pub fn global() -> &'static Tracking {
        static GLOBAL: OnceLock<Tracking> = OnceLock::new();
        GLOBAL.get_or_init(|| Tracking::new(Registry::global().clone()))
    }
}

/// An extractor for WebSocket routes, the counterpart of the reference's `isUpgradeRequest` and
/// `upgradeWebSocket()`. It never rejects: ask [`is_upgrade_request`] or let [`on_upgrade`]
/// answer a plain request with 426.
///
/// [`is_upgrade_request`]: WebSocketUpgrade::is_upgrade_request
/// [`on_upgrade`]: WebSocketUpgrade::on_upgrade
#[derive(Debug)]
pub struct WebSocketUpgrade {
    handshake: Option<Handshake>,
    meta: ConnectionMeta,
    tracking: Tracking,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let handshake = Handshake::from_parts(parts);
        let tracking = parts
            .extensions
            .get::<Tracking>()
            .cloned()
            .unwrap_or_else(|| Tracking::global().clone());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if peer.is_none() {
            warn_no_connect_info();
        }
        let remote_addr = peer.map(|p| tracking.trusted_proxies.client_ip(p, &parts.headers));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let meta = ConnectionMeta {
            remote_addr,
            user_agent,
            path: parts.uri.path().to_owned(),
        };
        Ok(Self {
            handshake,
            meta,
            tracking,
        })
    }
}

impl WebSocketUpgrade {
    /// Whether the request asks for a WebSocket upgrade.
    pub fn is_upgrade_request(&self) -> bool {
        self.handshake.is_some()
    }

    /// Tracks this socket in `registry` instead of the router's (or the global) one.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.tracking.registry = registry.clone();
        self
    }

    /// The client address that will be recorded.
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.meta.remote_addr
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.meta.path
    }

    /// Accepts the upgrade and runs `handler` with the tracked socket. A plain request gets 426
    /// "Upgrade required"; a registry that is shutting down refuses with 503.
    pub fn on_upgrade<F, Fut>(self, handler: F) -> Response
    where
        F: FnOnce(TrackedSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(handshake) = self.handshake else {
            return upgrade_required();
        };
        let conn = match self.tracking.registry.register(self.meta) {
            Ok(conn) => conn,
            Err(refusal) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string())
                    .into_response()
            }
        };
        let response = handshake.response();
        let cfg = self.tracking.socket;
        // The registry's tracker lets a server wait for every connection task on shutdown.
        let tracker = conn.task_tracker().clone();
        tokio::spawn(tracker.track_future(async move {
            match handshake.on_upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    let (reader, writer) = engine::start(cfg.engine, io, &cfg).await;
                    socket::serve(reader, writer, conn, handler).await;
                }
                // Dropping `conn` removes the entry, with this as the reason.
                Err(e) => conn.record_close(Initiator::Error, None, format!("upgrade failed: {e}")),
            }
        }));
        response
    }
}

/// Tracking still works without the peer address, but say once how to get it.
fn warn_no_connect_info() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "no ConnectInfo<SocketAddr> on the request: client addresses are not recorded; \
             serve with into_make_service_with_connect_info::<SocketAddr>()"
        );
    }
}

/// 426 with a JSON body and the `Upgrade` header a client needs.
pub fn upgrade_required() -> Response {
    let mut response =
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "Upgrade required").into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    response
}
