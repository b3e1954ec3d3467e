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
            if options.nodelay {
                let _ = tcp.set_nodelay(true);
            }
            let local = tcp.local_addr().unwrap_or(listen_addr);
            let connection = Connection {
                builder: builder.clone(),
                service: tagged(router.clone(), peer, local),
                stop: stop.clone(),
                peer,
            };
            match &acceptor {
                Some(acceptor) => connections.spawn(connection.serve_tls(
                    acceptor.clone(),
                    tcp,
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
struct Connection<S> {
    builder: http1::Builder,
    service: S,
    /// Cancelled when the server stops: the request in flight finishes, then the connection
    /// closes.
    stop: CancellationToken,
    peer: SocketAddr,
}

impl<S> Connection<S>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static,
{
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
            service,
            stop,
            peer,
        } = self;
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
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
