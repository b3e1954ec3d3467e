//! Tracked client connections: a WebSocket this process opens to a server, registered and driven
//! exactly like an accepted one (same driver, same states, counters, close records), in the
//! client role. What a proxy's upstream side runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wscope_axum::ConnectError> {
//! use wscope_core::Registry;
//!
//! let upstreams = Registry::new();
//! let connected = wscope_axum::connect("ws://127.0.0.1:8080/ws", &upstreams).await?;
//! tokio::spawn(connected.run(|mut socket| async move {
//!     let _ = socket.send("hello").await;
//!     let reply = socket.recv().await;
//!     println!("{reply:?}");
//! }));
//! # Ok(()) }
//! ```

use std::future::Future;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::MaybeTlsStream;
use wscope_core::{Accepted, ConnectionMeta, Refusal, Registry, Role, TrackedSocket};

use crate::engine::{tungstenite, SocketConfig};

/// Why a client connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The request (URL, headers) is not a valid WebSocket request.
    #[error("invalid request: {0}")]
    Request(String),
    /// The TCP connection or the WebSocket handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The registry refused it (shutting down).
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// An open, registered client connection, ready to run.
#[derive(Debug)]
#[must_use = "a connection is closed when dropped; run it"]
pub struct Connected<T> {
    accepted: Accepted,
    transport: T,
}

impl<T: wscope_core::Transport> Connected<T> {
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
    pub fn handle(&self) -> wscope_core::ConnectionHandle {
        self.accepted.handle()
    }
}

/// Opens a WebSocket to `request` (a `ws://` URL, or an `http::Request` with extra headers such
/// as `Sec-WebSocket-Protocol`) on the tungstenite engine with default settings, and registers it
/// in `registry` after its admission.
pub async fn connect(
    request: impl IntoClientRequest + Unpin,
    registry: &Registry,
) -> Result<Connected<impl wscope_core::Transport>, ConnectError> {
    connect_with(request, registry, &SocketConfig::default()).await
}

/// [`connect`] with engine settings.
pub async fn connect_with(
    request: impl IntoClientRequest + Unpin,
    registry: &Registry,
    cfg: &SocketConfig,
) -> Result<Connected<impl wscope_core::Transport>, ConnectError> {
    let request = request
        .into_client_request()
        .map_err(|e| ConnectError::Request(e.to_string()))?;
    let meta = ConnectionMeta::new(request.uri().path());
    let permit = registry.admit(&meta)?;
    let (ws, response) = tokio_tungstenite::connect_async_with_config(
        request,
        Some(tungstenite::config(cfg)),
        true, // no Nagle delay, as on the server side
    )
    .await
    .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let server = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.peer_addr().ok().map(|a| a.ip()),
        _ => None,
    };
    let protocol = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let accepted = registry
        .register(meta.remote_addr(server), permit)
        .with_protocol(protocol);
    Ok(Connected {
        accepted,
        transport: tungstenite::transport(ws, Role::Client, None),
    })
}
