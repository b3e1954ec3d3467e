//! [`Io`]: what an engine, the guard and a client handshake run over.

use tokio::io::{AsyncRead, AsyncWrite};

/// The I/O an engine runs over: an upgraded HTTP connection, a TCP stream, a test pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
