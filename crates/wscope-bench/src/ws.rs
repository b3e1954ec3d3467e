//! A client connection ([`Ws`]) and how long its close handshake may take: what the modes, the
//! connector and the keeper all handle, below each of them.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A client connection.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// How long a close handshake may take before the socket is simply dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
