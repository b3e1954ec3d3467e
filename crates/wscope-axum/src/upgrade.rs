//! The upgrade extractor: tells an upgrade request from a plain one and, on upgrade, passes the
//! registry's admission, registers the socket and runs it on the chosen engine, so that every
//! connection accepted through it is tracked with no further wiring.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::future::{self, Either};
use futures_util::FutureExt as _;
use hyper::upgrade::OnUpgrade;
use wscope_core::{
    Accepted, BoxTransport, CallbackSocket, ConnectionMeta, HopGauge, LabelError, Message,
    OnMessage, Permit, Refusal, Registry, TrackedSocket,
};
use wscope_engine::{Attempt, Engine, ServerHandshake, SocketConfig};

use crate::client_addr::TrustedProxies;
use crate::direct::DirectUpgrade;
use crate::error::{ApiError, UpgradeRefused};
use crate::upgraded_io::UpgradedIo;

/// Where accepted sockets are tracked and how they are accepted. Attach it to a router with
/// [`Tracking::layer`] (after the routes it should cover, as with any axum layer).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Tracking {
    /// The registry sockets are registered in.
    pub registry: Registry,
    /// Peers whose forwarding header (the one [`TrustedProxies::header`] names) is believed.
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

    /// The fallback when a route has no tracking layer: [`Registry::global`], loopback proxies,
    /// default engine settings.
    pub fn global() -> &'static Tracking {
        static GLOBAL: OnceLock<Tracking> = OnceLock::new();
        GLOBAL.get_or_init(|| Tracking::new(Registry::global().clone()))
    }
}

/// An extractor for WebSocket routes, the counterpart of the reference's `isUpgradeRequest` and
/// `upgradeWebSocket()`. It never rejects: ask [`is_upgrade_request`] or let [`on_upgrade`]
/// answer a plain request with 426.
///
/// **Which registry.** The socket is tracked in the registry of the [`Tracking`] layer on the
/// router (`.layer(Tracking::new(registry).layer())`, added after the routes), or in one named
/// with [`WebSocketUpgrade::registry`]. Without either it goes to the process-wide
/// [`Registry::global`], and the first such upgrade logs a warning saying so (an admin API
/// serving another registry would show 0 connections). A handler reaches its registry from the
/// socket: [`TrackedSocket::registry`].
///
/// **Admission.** Before the `101` answer, the upgrade passes the registry's admission; a refused
/// one gets the refusal's status (503 while shutting down) with a JSON body naming the reason.
///
/// **Labels.** [`user`](WebSocketUpgrade::user) and [`tag`](WebSocketUpgrade::tag) may be given
/// what the client sent (`?user=`, `?tag=`): past their caps ([`wscope_core::MAX_USER_LEN`],
/// [`wscope_core::MAX_TAGS`], [`wscope_core::MAX_TAG_LEN`]) the upgrade is refused with 400 and
/// `{"error": "invalid labels: more than 32 tags"}` (counted as `invalidLabels`), without
/// anything being stored.
///
/// [`is_upgrade_request`]: WebSocketUpgrade::is_upgrade_request
/// [`on_upgrade`]: WebSocketUpgrade::on_upgrade
#[derive(Debug)]
pub struct WebSocketUpgrade {
    handshake: Attempt,
    /// Where the upgraded connection will come from, taken from a valid request.
    source: Option<Source>,
    meta: ConnectionMeta,
    tracking: Tracking,
    /// Whether the tracking came from the route (a layer or [`WebSocketUpgrade::registry`]).
    explicit: bool,
    /// Subprotocols the server supports, set with [`WebSocketUpgrade::protocols`].
    protocols: Vec<String>,
    /// The first label past its cap: [`WebSocketUpgrade::on_upgrade`] answers it with 400.
    label_error: Option<LabelError>,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let (handshake, source) = match ServerHandshake::check(parts) {
            Attempt::Valid(valid) => match Source::take(parts) {
                Some(source) => (Attempt::Valid(valid), Some(source)),
                // Served without upgrades (a test harness, HTTP/2): nothing to take over.
                None => (Attempt::NotUpgrade, None),
            },
            other => (other, None),
        };
        let layer = parts.extensions.get::<Tracking>().cloned();
        let explicit = layer.is_some();
        let tracking = layer.unwrap_or_else(|| Tracking::global().clone());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if peer.is_none() {
            warn_once(
                &NO_CONNECT_INFO,
                "no ConnectInfo<SocketAddr> on the request: client addresses are not recorded; \
                 serve with into_make_service_with_connect_info::<SocketAddr>()",
            );
        }
        let remote_addr = peer.map(|p| tracking.trusted_proxies.client_ip(p, &parts.headers));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let meta = ConnectionMeta::new(parts.uri.path())
            .remote_addr(remote_addr)
            .user_agent(user_agent)
            .origin(origin);
        Ok(Self {
            handshake,
            source,
            meta,
            tracking,
            explicit,
            protocols: Vec::new(),
            label_error: None,
        })
    }
}

/// Where an upgraded connection comes from.
#[derive(Debug)]
enum Source {
    /// hyper's connection hands it over once it has written the 101.
    Hyper(OnUpgrade),
    /// `serve`'s direct path writes the 101 and hands it over ([`crate::direct`]).
    Direct(DirectUpgrade),
}

impl Source {
    /// The request's, if it has one (the direct path's first).
    fn take(parts: &mut Parts) -> Option<Self> {
        if let Some(direct) = parts.extensions.remove::<DirectUpgrade>() {
            return Some(Self::Direct(direct));
        }
        parts.extensions.remove::<OnUpgrade>().map(Self::Hyper)
    }
}

static NO_CONNECT_INFO: AtomicBool = AtomicBool::new(false);
static NO_TRACKING_LAYER: AtomicBool = AtomicBool::new(false);

/// Logs `message` the first time only.
fn warn_once(flag: &AtomicBool, message: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        tracing::warn!("{message}");
    }
}

impl WebSocketUpgrade {
    /// Whether the request asks for a WebSocket upgrade (a valid one, or one that
    /// [`on_upgrade`](Self::on_upgrade) will refuse with 400 as an invalid handshake).
    pub fn is_upgrade_request(&self) -> bool {
        !matches!(self.handshake, Attempt::NotUpgrade)
    }

    /// Tracks this socket in `registry` instead of the router's (or the global) one.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.tracking.registry = registry.clone();
        self.explicit = true;
        self
    }

    /// The registry the socket will be tracked in.
    pub fn tracking_registry(&self) -> &Registry {
        &self.tracking.registry
    }

    /// The subprotocols this route supports: the first one the client offers (in its order) is
    /// agreed in the `101` answer and shown by [`TrackedSocket::protocol`].
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The subprotocol that will be agreed, if any.
    pub fn selected_protocol(&self) -> Option<String> {
        match &self.handshake {
            Attempt::Valid(handshake) => handshake.choose_protocol(&self.protocols),
            _ => None,
        }
    }

    /// Attaches a user id to the connection from its registration on (shown as `user`,
    /// filterable and closable by in the admin API). Cheaper than `socket.set_user` in the
    /// handler when the id is known before the upgrade: the handler then captures nothing for it.
    /// One longer than [`wscope_core::MAX_USER_LEN`] bytes makes
    /// [`on_upgrade`](Self::on_upgrade) answer 400 naming the cap.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        if self.label_error.is_none() {
            self.label_error = self.meta.set_user(user).err();
        }
        self
    }

    /// Adds a tag to the connection from its registration on (see [`user`](Self::user)); a
    /// repeat is attached once. A tag longer than [`wscope_core::MAX_TAG_LEN`] bytes, or one
    /// past [`wscope_core::MAX_TAGS`], makes [`on_upgrade`](Self::on_upgrade) answer 400 naming
    /// the cap; later tags are then not even looked at.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        if self.label_error.is_none() {
            self.label_error = self.meta.add_tag(tag).err();
        }
        self
    }

    /// The first label past its cap, if any (the upgrade will be refused with 400).
    pub fn label_error(&self) -> Option<LabelError> {
        self.label_error
    }

    /// The WebSocket engine for this socket.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.tracking.socket.engine = engine;
        self
    }

    /// Largest message accepted (bytes).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.tracking.socket.max_message_size = bytes;
        self
    }

    /// Largest frame accepted (bytes); unset, the message limit.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.tracking.socket.max_frame_size = Some(bytes);
        self
    }

    /// Bytes read from the socket at a time (tungstenite's read buffer).
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.tracking.socket.read_buffer_size = bytes;
        self
    }

    /// Bytes buffered before a write goes to the socket.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.tracking.socket.write_buffer_size = bytes;
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

    /// Names the upstream a proxy relays this socket to (shown as `upstream` in the stats and
    /// filterable with `?upstream=`); see [`crate::relay`].
    pub fn upstream(mut self, upstream: impl Into<String>) -> Self {
        self.meta.upstream = Some(upstream.into());
        self
    }

    /// Accepts the upgrade and runs `handler` with the tracked socket. A plain request gets 426
    /// "Upgrade required"; an invalid handshake (a `Sec-WebSocket-Key` that is not 16 bytes in
    /// base64, HTTP/1.0) 400, counted as `invalidHandshake`; labels past their caps 400, counted
    /// as `invalidLabels`; a refused one the refusal's status (503 while shutting down).
    pub fn on_upgrade<F, Fut>(self, handler: F) -> Response
    where
        F: FnOnce(TrackedSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self.admit() {
            Ok(admitted) => {
                let protocol = admitted.choose_protocol();
                admitted.accept(protocol, handler)
            }
            Err(refused) => refused,
        }
    }

    /// Accepts the upgrade as [`on_upgrade`](Self::on_upgrade) does, but runs the connection with
    /// a callback called with each text or binary message instead of an async handler: no
    /// handler future is kept or polled, so each message costs fewer instructions and an idle
    /// connection fewer bytes. The callback must not block; its [`CallbackSocket::send`] never
    /// waits (the connection reads no further message while its queue is full). Use it for
    /// handlers that answer or fan out each message as it comes (echo, chat); use
    /// [`on_upgrade`](Self::on_upgrade) when the handler awaits something (a database, an
    /// upstream) or drives the connection itself. A handler type of your own: implement
    /// [`OnMessage`] and pass it to [`Admitted::accept_callback`].
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use wscope_axum::WebSocketUpgrade;
    ///
    /// let app: Router = Router::new().route(
    ///     "/ws",
    ///     get(|ws: WebSocketUpgrade| async move {
    ///         // An echo.
    ///         ws.on_message(|socket, msg| {
    ///             let _ = socket.send(msg);
    ///         })
    ///     }),
    /// );
    /// ```
    pub fn on_message<F>(self, handler: F) -> Response
    where
        F: FnMut(&CallbackSocket, Message) + Send + 'static,
    {
        match self.admit() {
            Ok(admitted) => {
                let protocol = admitted.choose_protocol();
                admitted.accept_callback(protocol, handler)
            }
            Err(refused) => refused,
        }
    }

    /// The first step of [`on_upgrade`](Self::on_upgrade), for a handler that must do something
    /// between admission and the `101` answer (a proxy opens its upstream there): the handshake
    /// checked, the labels checked and admission passed — its permit held, so the upgrade counts
    /// against the limits — but nothing registered yet. The error is the answer to give instead
    /// (426, 400, the refusal's status), already counted. Dropping the [`Admitted`] releases the
    /// permit and leaves no trace in the registry.
    #[allow(clippy::result_large_err)]
    pub fn admit(self) -> Result<Admitted, Response> {
        let (handshake, source) = match (self.handshake, self.source) {
            (Attempt::Valid(handshake), Some(source)) => (handshake, source),
            (Attempt::Valid(_) | Attempt::NotUpgrade, _) => return Err(upgrade_required()),
            (Attempt::Invalid(why), _) => {
                let refusal = Refusal::InvalidHandshake(why);
                self.tracking.registry.record_refusal(&refusal, &self.meta);
                return Err(UpgradeRefused(refusal).into_response());
            }
        };
        if let Some(error) = self.label_error {
            let refusal = Refusal::InvalidLabels(error);
            self.tracking.registry.record_refusal(&refusal, &self.meta);
            return Err(UpgradeRefused(refusal).into_response());
        }
        if !self.explicit {
            warn_once(
                &NO_TRACKING_LAYER,
                "WebSocketUpgrade without a Tracking layer: sockets go to Registry::global(); \
                 add .layer(Tracking::new(registry).layer()) after the routes",
            );
        }
        let permit = match self.tracking.registry.admit(&self.meta) {
            Ok(permit) => permit,
            Err(refusal) => return Err(UpgradeRefused(refusal).into_response()),
        };
        Ok(Admitted {
            handshake,
            source,
            meta: self.meta,
            permit,
            tracking: self.tracking,
            protocols: self.protocols,
            hop: None,
        })
    }
}

/// An upgrade admitted but not yet answered ([`WebSocketUpgrade::admit`]): answer it with
/// [`accept`](Admitted::accept), or drop it (and answer something else) to refuse it.
#[derive(Debug)]
pub struct Admitted {
    handshake: ServerHandshake,
    source: Source,
    meta: ConnectionMeta,
    /// What admission reserved for the connection: released if this is dropped.
    permit: Permit,
    tracking: Tracking,
    protocols: Vec<String>,
    /// The second engine that carries the connection on, if any (a proxy's upstream hop).
    hop: Option<HopGauge>,
}

impl Admitted {
    /// The subprotocol the route's [`protocols`](WebSocketUpgrade::protocols) would agree on.
    pub fn choose_protocol(&self) -> Option<String> {
        self.handshake.choose_protocol(&self.protocols)
    }

    /// The client's address as recorded.
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.meta.remote_addr
    }

    /// The registry the socket will be tracked in.
    pub fn registry(&self) -> &Registry {
        &self.tracking.registry
    }

    /// Counts `hop`'s engine — a second engine that carries the connection on, made before
    /// it was accepted (a proxy's upstream hop) — in the connection's `memoryBytes`, beside its
    /// own socket's engine, from the moment its entry is made ([`HopGauge`]).
    pub fn with_hop(mut self, hop: HopGauge) -> Self {
        self.hop = Some(hop);
        self
    }

    /// Registers the socket, answers `101` agreeing on `protocol` (which the client must have
    /// offered: a proxy passes on its upstream's choice), and runs `handler` with the tracked
    /// socket once hyper hands the connection over.
    pub fn accept<F, Fut>(self, protocol: Option<String>, handler: F) -> Response
    where
        F: FnOnce(TrackedSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.accept_with(protocol, move |accepted, transport| {
            accepted.run(transport, handler)
        })
    }

    /// As [`accept`](Self::accept), running the connection with a callback handler
    /// ([`WebSocketUpgrade::on_message`]).
    pub fn accept_callback<H: OnMessage>(self, protocol: Option<String>, handler: H) -> Response {
        self.accept_with(protocol, move |accepted, transport| {
            accepted.run_callback(transport, handler)
        })
    }

    /// What [`accept`](Self::accept) and [`accept_callback`](Self::accept_callback) share: `run`
    /// runs the connection once the engine has taken the socket over.
    fn accept_with<R, Fut>(self, protocol: Option<String>, run: R) -> Response
    where
        R: FnOnce(Accepted, BoxTransport) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self {
            handshake,
            source,
            meta,
            permit,
            tracking,
            protocols: _,
            hop,
        } = self;
        // The budget's share is the client's as admission counts it (an IPv6 host's network).
        let registry = &tracking.registry;
        let client = meta.remote_addr.map(|ip| registry.client_key(ip));
        let accepted = registry.register(meta, permit);
        let cfg = tracking.socket;
        let deflate = cfg
            .permessage_deflate
            .then(|| handshake.deflate())
            .flatten();
        let response = handshake
            .response(protocol.as_deref(), deflate.as_ref())
            .map(|()| Body::empty());
        let accepted = accepted.with_protocol(protocol);
        // The 101 leaves once this returns, before the task below runs the connection: from
        // here broadcasts queue to it, so a client that has its 101 misses none sent after.
        accepted.mark_answered();
        let gauge = match &hop {
            Some(hop) => accepted.memory_gauge_with(hop),
            None => accepted.memory_gauge(),
        };
        // What taking over the socket needs (the settings, the engine's set-up) is boxed: the
        // connection's task lives as long as the connection and would otherwise keep room for
        // it all along (some 200 B of every idle connection).
        let take_over = Box::new(move |io| {
            Box::pin(async move { cfg.engine.server(io, &cfg, deflate, client, gauge).await })
        });
        // The registry's tracker lets a server wait for every connection task on shutdown.
        let tracker = accepted.task_tracker().clone();
        // Counted on its runtime, when served by one of `PerCore`'s, for as long as it runs.
        let on_runtime = crate::per_core::OnRuntime::enter();
        match source {
            Source::Hyper(on_upgrade) => {
                let task = connection_task(on_upgrade, take_over, accepted, run);
                tokio::spawn(tracker.track_future(task.map(move |()| drop(on_runtime))));
            }
            // The server calls this once the 101 is written, with the stream.
            Source::Direct(slot) => slot.put(Box::new(move |io| match io {
                Ok(io) => {
                    let task =
                        call_boxed(take_over, io).then(move |transport| run(accepted, transport));
                    tokio::spawn(tracker.track_future(task.map(move |()| drop(on_runtime))));
                }
                Err(e) => accepted.fail(format!("upgrade failed: {e}")),
            })),
        }
        response
    }
}

/// The task of one accepted connection: waits for hyper to hand the socket over, lets the
/// engine take it over (`take_over`), then `run`s the connection; fails the connection if the
/// upgrade fails.
///
/// Chained futures, not one `async` block: a block keeps what it captured (the connection, the
/// closures) in slots of its own for its whole life, beside the running connection's future
/// that took them over; each stage of a chain takes the room of the one before. Every idle
/// connection's task is this future (`an_idle_connection_task_is_small`).
fn connection_task<T, F, R, Fut>(
    on_upgrade: OnUpgrade,
    take_over: Box<T>,
    accepted: Accepted,
    run: R,
) -> impl Future<Output = ()> + Send + 'static
where
    T: FnOnce(UpgradedIo) -> F + Send + 'static,
    F: Future<Output = BoxTransport> + Send + 'static,
    R: FnOnce(Accepted, BoxTransport) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_upgrade.then(move |upgraded| match upgraded {
        Ok(upgraded) => Either::Left(
            call_boxed(take_over, UpgradedIo::from(upgraded))
                .then(move |transport| run(accepted, transport)),
        ),
        Err(e) => {
            accepted.fail(format!("upgrade failed: {e}"));
            Either::Right(future::ready(()))
        }
    })
}

/// Calls a boxed closure, freeing its box before what it returns is awaited: a box whose
/// closure was moved out of (`(*boxed)(arg)`) is only freed when it goes out of scope, which in a
/// connection's task is when the connection ends (104 B of every idle connection).
fn call_boxed<A, R>(f: Box<impl FnOnce(A) -> R>, arg: A) -> R {
    f(arg)
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

#[cfg(test)]
mod tests {
    use super::*;
    use wscope_core::{memory, CallbackSocket, ConnectionMeta, Message, Registry, Transport};

    /// What every idle connection's task holds besides the running connection's own future:
    /// the upgrade's stages share its room (an `async` block kept some 100 B more).
    #[test]
    fn an_idle_connection_task_is_small() {
        let registry = Registry::new();
        let echo = |socket: &CallbackSocket, message: Message| {
            let _ = socket.send(message);
        };
        let accepted = registry.accept(ConnectionMeta::new("/ws")).unwrap();
        let (transport, _peer) = memory::pair();
        let running = std::mem::size_of_val(&accepted.run_callback(transport.boxed(), echo));
        let accepted = registry.accept(ConnectionMeta::new("/ws")).unwrap();
        let take_over = Box::new(|_io| Box::pin(async { memory::pair().0.boxed() }));
        let mut request = axum::http::Request::new(());
        let task = connection_task(
            hyper::upgrade::on(&mut request),
            take_over,
            accepted,
            move |accepted: Accepted, transport| accepted.run_callback(transport, echo),
        );
        let task = std::mem::size_of_val(&task);
        println!("connection task: {task} B, of which the running connection {running} B");
        assert!(task <= running + 16, "{task} B against {running} B");
    }
}
