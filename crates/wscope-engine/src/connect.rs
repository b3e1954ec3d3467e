//! Tracked client connections: a WebSocket this process opens to a server, registered and driven
//! exactly like an accepted one (same driver, same states, counters, close records, the same
//! frame guard), in the client role. What a proxy's upstream side runs. [`connect`] is the
//! convenience over TCP; [`ClientHandshake`] and [`Engine::client`](crate::engine::Engine::client) take
//! any stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wscope_engine::ConnectError> {
//! use wscope_core::Registry;
//!
//! let upstreams = Registry::new();
//! let connected = wscope_engine::connect("ws://127.0.0.1:8080/ws", &upstreams).await?;
//! tokio::spawn(connected.run(|mut socket| async move {
//!     let _ = socket.send("hello").await;
//!     let reply = socket.recv().await;
//!     println!("{reply:?}");
//! }));
//! # Ok(()) }
//! ```

use std::future::Future;

use http::{Request, Uri};
use tokio::net::TcpStream;
use wscope_core::{
    Accepted, BoxTransport, ConnectionHandle, ConnectionMeta, Refusal, Registry, TrackedSocket,
};

use crate::config::SocketConfig;
use crate::handshake::{ClientHandshake, HandshakeError};

/// Why a client connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The request (URL, headers) is not a valid WebSocket request.
    #[error("invalid request: {0}")]
    Request(String),
    /// The TCP connection failed.
    #[error("connecting failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The WebSocket handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The registry refused it (shutting down).
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// What [`connect`] takes: a `ws://` URL, or an `http::Request` with extra headers such as
/// `Sec-WebSocket-Protocol`.
pub trait IntoClientRequest {
    /// The request.
    fn into_client_request(self) -> Result<Request<()>, ConnectError>;
}

impl IntoClientRequest for Request<()> {
    fn into_client_request(self) -> Result<Request<()>, ConnectError> {
        Ok(self)
    }
}

impl IntoClientRequest for Uri {
    fn into_client_request(self) -> Result<Request<()>, ConnectError> {
        Request::get(self)
            .body(())
            .map_err(|e| ConnectError::Request(e.to_string()))
    }
}

impl IntoClientRequest for &str {
    fn into_client_request(self) -> Result<Request<()>, ConnectError> {
        let uri: Uri = self
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConnectError::Request(e.to_string()))?;
        uri.into_client_request()
    }
}

impl IntoClientRequest for &String {
    fn into_client_request(self) -> Result<Request<()>, ConnectError> {
        self.as_str().into_client_request()
    }
}

impl IntoClientRequest for String {
    fn into_client_request(self) -> Result<Request<()>, ConnectError> {
        self.as_str().into_client_request()
    }
}

/// An open, registered client connection, ready to run.
#[derive(Debug)]
#[must_use = "a connection is closed when dropped; run it"]
pub struct Connected {
    accepted: Accepted,
    transport: BoxTransport,
}

impl Connected {
    /// Runs `handler` with the tracked socket until the connection is over (spawn it, or await
    /// it in place).
    pub fn run<F, Fut>(self, handler: F) -> impl Future<Output = ()> + Send
    where
        F: FnOnce(TrackedSocket) -> Fut + Send,
        Fut: Future<Output = ()> + Send,
    {
        self.accepted.run(self.transport, handler)
    }

    /// A handle to send to or close the connection from elsewhere.
    pub fn handle(&self) -> ConnectionHandle {
        self.accepted.handle()
    }
}

/// Opens a WebSocket to `request` (a `ws://` URL, or an `http::Request` with extra headers such
/// as `Sec-WebSocket-Protocol`) with default settings (the default engine), and registers it in
/// `registry` after its admission.
pub async fn connect(
    request: impl IntoClientRequest,
    registry: &Registry,
) -> Result<Connected, ConnectError> {
    connect_with(request, registry, &SocketConfig::default()).await
}

/// [`connect`] with engine settings: `cfg.engine` runs the connection, behind the frame guard
/// with `cfg`'s limits, and permessage-deflate is offered if `cfg` has it on. For `wss://` or a
/// stream of your own, open it and use [`ClientHandshake`] and
/// [`Engine::client`](crate::engine::Engine::client).
pub async fn connect_with(
    request: impl IntoClientRequest,
    registry: &Registry,
    cfg: &SocketConfig,
) -> Result<Connected, ConnectError> {
    let request = request.into_client_request()?;
    let uri = request.uri();
    if uri.scheme_str().is_some_and(|s| s != "ws") {
        return Err(ConnectError::Request(format!(
            "{uri}: only ws:// here; open a TLS stream and use ClientHandshake"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::Request(format!("no host in {uri}")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let meta = ConnectionMeta::new(uri.path());
    let permit = registry.admit(&meta)?;
    let handshake = ClientHandshake::new(request, cfg)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(ConnectError::Connect)?;
    tcp.set_nodelay(true).map_err(ConnectError::Connect)?; // as on the server side
    let server = tcp.peer_addr().ok().map(|a| a.ip());
    let upgraded = handshake.perform(tcp).await?;
    let accepted = registry
        .register(meta.remote_addr(server), permit)
        .with_protocol(upgraded.protocol.clone());
    let deflate = upgraded.deflate;
    // Registered before the engine is made, so that what it holds shows in the entry.
    let gauge = accepted.memory_gauge();
    Ok(Connected {
        accepted,
        transport: cfg
            .engine
            .client(upgraded.stream, cfg, deflate, gauge)
            .await,
    })
}
