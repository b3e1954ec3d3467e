//! Serving a router over HTTP/1.1 with the limits `axum::serve` cannot set: a bound on the
//! request head (431 past it) and a deadline for it to arrive (the connection is dropped at it,
//! so a byte-a-second "slowloris" cannot hold a connection open). Each request carries
//! [`ConnectInfo<SocketAddr>`](ConnectInfo) (the peer, for the client address) and
//! [`LocalAddr`] (the address it reached, for the admin API's `Host` check). With
//! [`ServeOptions::tls`] every connection is TLS first (`https://`, `wss://`), its handshake
//! under the same deadline.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use wscope_axum::{serve, ServeOptions};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hi" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let options = ServeOptions::default().max_header_size(8 << 10);
//! serve(listener, app, options)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::direct::{self, read_head, Answered, DirectUpgrade, Head};
use crate::upgraded_io::Rewound;

/// The local address a request came in on (an extension set by [`serve`]): with a listener
/// bound to `0.0.0.0`, the address the client actually reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// How [`serve`] treats each connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Largest request head (request line and headers) accepted, in bytes; a larger one gets
    /// 431 and the connection is closed.
    pub max_header_size: usize,
    /// How long a request head may take to arrive, from the connection's start or the end of
    /// the previous request on it; past it the connection is dropped. `None`: no limit. This
    /// also closes a keep-alive connection left idle that long.
    pub handshake_timeout: Option<Duration>,
    /// Whether to set `TCP_NODELAY` on each accepted connection (small WebSocket frames go out
    /// at once).
    pub nodelay: bool,
    /// TLS on every connection (`https://`, `wss://`), or `None` for plain HTTP. The handshake
    /// is bounded by [`ServeOptions::handshake_timeout`] (and the request head then by the same
    /// again); a client that fails it is dropped alone. Made by
    /// [`tls::server_config`](crate::tls::server_config), whose certificate can be reloaded.
    pub tls: Option<Arc<ServerConfig>>,
    /// Whether a plain connection's first request, when it is a WebSocket upgrade, is read by
    /// wscope rather than hyper (the default): the router answers it as ever, but its 101 is
    /// written, and the TCP stream handed to the engine, without hyper's connection in
    /// between — fewer instructions and allocations per handshake. Every other request, and
    /// every later one on a connection, is hyper's as before. Turn it off to serve routes that
    /// upgrade with axum's own `axum::extract::ws::WebSocketUpgrade`, which needs hyper's
    /// upgrade (on this path it answers 426); wscope's [`WebSocketUpgrade`](crate::WebSocketUpgrade)
    /// works on both.
    pub direct_upgrades: bool,
}

impl ServeOptions {
    /// The default [`ServeOptions::max_header_size`]: 16 KiB, as nginx's largest default
    /// header buffers; browsers send a few hundred bytes to a few KiB.
    pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 << 10;
    /// The default [`ServeOptions::handshake_timeout`].
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Sets [`ServeOptions::max_header_size`].
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Sets [`ServeOptions::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handshake_timeout = timeout.into();
        self
    }

    /// Sets [`ServeOptions::nodelay`].
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Sets [`ServeOptions::tls`].
    pub fn tls(mut self, config: impl Into<Option<Arc<ServerConfig>>>) -> Self {
        self.tls = config.into();
        self
    }

    /// Sets [`ServeOptions::direct_upgrades`].
    pub fn direct_upgrades(mut self, direct: bool) -> Self {
        self.direct_upgrades = direct;
        self
    }

    /// hyper's HTTP/1 connection settings for these options.
    fn builder(&self) -> http1::Builder {
        /// hyper refuses a smaller read buffer; a smaller head limit is still enforced, by
        /// `max_header_size`, once the head is complete.
        const HYPER_MIN_BUF: usize = 8192;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            // Bounds a head that never completes; `max_header_size` one that does.
            .max_buf_size(self.max_header_size.max(HYPER_MIN_BUF))
            .max_header_size(self.max_header_size);
        builder
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            handshake_timeout: Some(Self::DEFAULT_HANDSHAKE_TIMEOUT),
            nodelay: true,
            tls: None,
            direct_upgrades: true,
        }
    }
}

/// Serves `router` on `listener` (HTTP/1.1, with upgrades) with `options`; await it, after
/// [`Serve::with_graceful_shutdown`] if it should stop.
pub fn serve(listener: TcpListener, router: Router, options: ServeOptions) -> Serve {
    Serve(Graceful::new(listener, router, options))
}

/// What a server serves, how, on what (`S`: a listener, or [`PerCore`](crate::PerCore)'s) and
/// until when: the part [`Serve`] and [`ServePerCore`](crate::ServePerCore) share.
pub(crate) struct Graceful<S> {
    pub(crate) on: S,
    pub(crate) router: Router,
    pub(crate) options: ServeOptions,
    /// The shutdown signal; pending until one is given.
    pub(crate) signal: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S> Graceful<S> {
    pub(crate) fn new(on: S, router: Router, options: ServeOptions) -> Self {
        Self {
            on,
            // Turns every handler into a route once, as `axum::serve` does: a router served as
            // built clones and boxes each handler (and the layers above it) on every request.
            router: router.with_state(()),
            options,
            signal: Box::pin(std::future::pending()),
        }
    }

    /// Stops when `signal` completes.
    pub(crate) fn until(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.signal = Box::pin(signal);
        self
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Graceful<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graceful")
            .field("on", &self.on)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A server [`serve`] made: a future (through `IntoFuture`) that runs until its shutdown
/// signal, then stops accepting, lets each connection finish its request in flight (idle
/// keep-alive connections close) and returns. Upgraded connections are not waited for: they
/// belong to the registry, whose own shutdown drains them.
///
/// Like `axum::serve`'s, it is awaited rather than polled, and its future is `Send + 'static`,
/// so it runs in a task of its own either way:
///
/// ```no_run
/// use std::future::IntoFuture;
/// use wscope_axum::{admin_router, serve, ServeOptions};
///
/// # async fn run(registry: wscope_core::Registry) -> std::io::Result<()> {
/// let admin = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
/// let other = tokio::net::TcpListener::bind("127.0.0.1:9091").await?;
/// let app = admin_router(registry);
/// let copy = app.clone();
/// let one = tokio::spawn(async move { serve(admin, app, ServeOptions::default()).await });
/// let two = tokio::spawn(serve(other, copy, ServeOptions::default()).into_future());
/// # let _ = (one, two);
/// # Ok(())
/// # }
/// ```
#[must_use = "a server does nothing until awaited"]
#[derive(Debug)]
pub struct Serve(Graceful<TcpListener>);

impl Serve {
    /// Stops when `signal` completes.
    pub fn with_graceful_shutdown(self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(self.0.until(signal))
    }

    async fn run(self) -> io::Result<()> {
        let Graceful {
            on: listener,
            router,
            options,
            mut signal,
        } = self.0;
        let listen_addr = listener.local_addr()?;
        let builder = options.builder();
        let acceptor = options.tls.clone().map(TlsAcceptor::from);
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let mut nodelay = Nodelay::new(&listener, options.nodelay);
        // A listener bound to one address: every connection's local address is that one, and
        // needs no system call to learn.
        let ask_local = listen_addr.ip().is_unspecified();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            nodelay.set(&tcp);
            let local = match ask_local {
                true => tcp.local_addr().unwrap_or(listen_addr),
                false => listen_addr,
            };
            let connection = Connection {
                builder: builder.clone(),
                router: router.clone(),
                stop: stop.clone(),
                peer,
                local,
            };
            match &acceptor {
                Some(acceptor) => connections.spawn(connection.serve_tls(
                    acceptor.clone(),
                    tcp,
                    options.handshake_timeout,
                )),
                None if options.direct_upgrades => connections.spawn(connection.serve_plain(
                    tcp,
                    options.max_header_size,
                    options.handshake_timeout,
                )),
                None => connections.spawn(connection.serve(tcp)),
            };
        }
        drop(listener);
        stop.cancel();
        connections.close();
        connections.wait().await;
        Ok(())
    }
}

/// One accepted connection, served in a task of its own: whatever happens to it (a failed TLS
/// handshake, a timeout, an oversized head) ends it alone.
struct Connection {
    builder: http1::Builder,
    router: Router,
    /// Cancelled when the server stops: the request in flight finishes, then the connection
    /// closes.
    stop: CancellationToken,
    peer: SocketAddr,
    /// The address the connection reached.
    local: SocketAddr,
}

impl Connection {
    /// A plain connection: its first request read here, and answered without hyper when it is
    /// a WebSocket upgrade ([`crate::direct`]); HTTP then goes on with hyper, from the bytes
    /// read. The head has `timeout` to arrive (the connection is dropped at it) and may take
    /// `max` bytes (past them hyper reads it, and answers 431).
    async fn serve_plain(self, mut tcp: TcpStream, max: usize, timeout: Option<Duration>) {
        let read = async {
            match timeout {
                Some(limit) => tokio::time::timeout(limit, read_head(&mut tcp, max))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head timed out",
                        ))
                    }),
                None => read_head(&mut tcp, max).await,
            }
        };
        let head = tokio::select! {
            head = read => head,
            () = self.stop.cancelled() => return,
        };
        let (mut request, rest) = match head {
            Ok(Head::Upgrade(request, rest)) => (request, rest),
            // Boxed, here and below: the task's future stays the size of this path's state
            // (it is moved into the task, and within it, on every spawn), not hyper's.
            Ok(Head::Other(read)) => return Box::pin(self.serve(Rewound::new(read, tcp))).await,
            Err(e) => return tracing::debug!(peer = %self.peer, "connection ended: {e}"),
        };
        let close = direct::asks_to_close(request.headers());
        let slot = DirectUpgrade::default();
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(self.peer));
        extensions.insert(LocalAddr(self.local));
        extensions.insert(slot.clone());
        let mut router = self.router.clone();
        let ready = std::future::poll_fn(|cx| {
            <Router as Service<axum::http::Request<axum::body::Body>>>::poll_ready(&mut router, cx)
        });
        let Ok(()) = ready.await;
        let Ok(response) = router.call(request).await;
        match direct::answer(tcp, &slot, response, rest, close).await {
            Ok(Answered::Upgraded) => {}
            Ok(Answered::Answered(tcp, rest)) if !close => {
                Box::pin(self.serve(Rewound::new(rest, tcp))).await;
            }
            Ok(Answered::Answered(..)) => {}
            Err(e) => tracing::debug!(peer = %self.peer, "connection ended: {e}"),
        }
    }

    /// The TLS handshake, bounded by `timeout` (the request head then gets its own), then HTTP
    /// over it.
    async fn serve_tls(self, acceptor: TlsAcceptor, tcp: TcpStream, timeout: Option<Duration>) {
        let handshake = async {
            match timeout {
                Some(limit) => tokio::time::timeout(limit, acceptor.accept(tcp))
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        ))
                    }),
                None => acceptor.accept(tcp).await,
            }
        };
        let stop = self.stop.clone();
        let tls = tokio::select! {
            done = handshake => done,
            () = stop.cancelled() => return,
        };
        match tls {
            Ok(tls) => self.serve(tls).await,
            // A plain-HTTP client, a scanner, a client that distrusts the certificate.
            Err(e) => tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}"),
        }
    }

    /// HTTP/1.1 (with upgrades) over `io` until the peer leaves or the server stops.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            router,
            stop,
            peer,
            local,
        } = self;
        let connection = builder
            .serve_connection(TokioIo::new(io), tagged(router, peer, local))
            .with_upgrades();
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        // Timeouts, oversized heads and vanished peers end here; hyper has already answered
        // what deserved an answer.
        if let Err(e) = ended {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// `router` as a hyper service for one connection, each request tagged with its addresses.
fn tagged(
    router: Router,
    peer: SocketAddr,
    local: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send,
> + Send {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(LocalAddr(local));
        let mut router = router.clone();
        async move {
            std::future::poll_fn(|cx| {
                <Router as Service<Request<Incoming>>>::poll_ready(&mut router, cx)
            })
            .await?;
            router.call(request).await
        }
    })
}

/// `TCP_NODELAY` on every accepted connection, with a system call per connection only where
/// it is needed: set on the listener first, it is inherited by the connections accepted from it
/// on Linux, which the first connection shows (one `getsockopt`); elsewhere each connection
/// gets its own `setsockopt`.
struct Nodelay {
    wanted: bool,
    /// Whether accepted connections have it already: unknown until the first.
    inherited: Option<bool>,
}

impl Nodelay {
    fn new(listener: &TcpListener, wanted: bool) -> Self {
        let on_listener = wanted
            && socket2::SockRef::from(listener)
                .set_tcp_nodelay(true)
                .is_ok();
        Self {
            wanted,
            inherited: (!on_listener).then_some(false),
        }
    }

    fn set(&mut self, tcp: &TcpStream) {
        if !self.wanted {
            return;
        }
        let inherited = *self
            .inherited
            .get_or_insert_with(|| tcp.nodelay().unwrap_or(false));
        if !inherited {
            let _ = tcp.set_nodelay(true);
        }
    }
}

/// A failed `accept`: a connection that died in the backlog is no matter; anything else (out of
/// file descriptors) is logged and retried after a pause, as axum does, rather than spun on.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every accepted connection has `TCP_NODELAY` when asked for (inherited from the listener
    /// on Linux, with no system call per connection), and none when not.
    #[tokio::test]
    async fn accepted_connections_get_nodelay_as_asked() {
        for wanted in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut nodelay = Nodelay::new(&listener, wanted);
            for _ in 0..2 {
                let _client = TcpStream::connect(addr).await.unwrap();
                let (tcp, _) = listener.accept().await.unwrap();
                nodelay.set(&tcp);
                assert_eq!(tcp.nodelay().unwrap(), wanted);
            }
            if cfg!(target_os = "linux") && wanted {
                assert_eq!(nodelay.inherited, Some(true), "inherited from the listener");
            }
        }
    }
}
