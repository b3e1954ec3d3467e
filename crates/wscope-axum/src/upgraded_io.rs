//! The socket an upgrade hands the engine: the accepted TCP stream itself when hyper served one
//! (recovered with [`Upgraded::downcast`]), so that the engine reads and writes the socket
//! directly — not through hyper's boxed, rewinding [`Upgraded`] and the two adapters between
//! tokio's and hyper's I/O traits around it (four calls deep for every read and write), and
//! without the heap block that held the stream behind them.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wscope_engine::Prefixed;

/// The accepted TCP stream with the bytes read past a request head (by the direct path, or by
/// hyper before an upgrade) served first.
pub(crate) type Rewound = Prefixed<TcpStream>;

/// What the engine takes over after a 101.
pub(crate) enum UpgradedIo {
    /// The accepted TCP stream, with nothing read past the request head: every plain
    /// connection of `wscope_axum::serve` and `PerCore`.
    Tcp(TcpStream),
    /// The TCP stream and bytes read past the request head (a client that sent its first
    /// frames before the 101 came): served first. Rare, so boxed.
    Rewound(Box<Rewound>),
    /// Anything else hyper served: a TLS stream, an application's own listener's stream. Boxed:
    /// the common case's state stays the stream's size.
    Hyper(Box<TokioIo<Upgraded>>),
}

impl UpgradedIo {
    /// `tcp`, with `read` (bytes already read from it) served first.
    pub(crate) fn rewound(read: Bytes, tcp: TcpStream) -> Self {
        Rewound::new(read, tcp).into()
    }
}

impl From<Rewound> for UpgradedIo {
    fn from(rewound: Rewound) -> Self {
        if rewound.prefix().is_empty() {
            Self::Tcp(rewound.into_parts().1)
        } else {
            Self::Rewound(Box::new(rewound))
        }
    }
}

impl From<Upgraded> for UpgradedIo {
    fn from(upgraded: Upgraded) -> Self {
        // The stream hyper was given: the accepted one, or one the direct path
        // (`crate::direct`) read a head from and passed on.
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return Self::rewound(parts.read_buf, parts.io.into_inner()),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<Rewound>>() {
            Ok(parts) => parts.io.into_inner().after(parts.read_buf).into(),
            Err(upgraded) => Self::Hyper(Box::new(TokioIo::new(upgraded))),
        }
    }
}

impl AsyncRead for UpgradedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Rewound(rewound) => Pin::new(&mut **rewound).poll_read(cx, buf),
            Self::Hyper(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpgradedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Rewound(rewound) => Pin::new(&mut **rewound).poll_write(cx, buf),
            Self::Hyper(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Rewound(rewound) => Pin::new(&mut **rewound).poll_write_vectored(cx, bufs),
            Self::Hyper(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(tcp) => tcp.is_write_vectored(),
            Self::Rewound(rewound) => rewound.is_write_vectored(),
            Self::Hyper(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Rewound(rewound) => Pin::new(&mut **rewound).poll_flush(cx),
            Self::Hyper(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Rewound(rewound) => Pin::new(&mut **rewound).poll_shutdown(cx),
            Self::Hyper(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The common case holds the stream and no more: hyper's `Upgraded` inline was 48 B, with
    /// a heap block behind it for the stream.
    #[test]
    fn an_upgraded_tcp_stream_is_the_streams_size() {
        println!(
            "UpgradedIo {} B, TcpStream {} B, TokioIo<Upgraded> {} B",
            size_of::<UpgradedIo>(),
            size_of::<TcpStream>(),
            size_of::<TokioIo<Upgraded>>()
        );
        assert!(size_of::<UpgradedIo>() <= size_of::<TcpStream>() + 8);
        assert!(size_of::<UpgradedIo>() < size_of::<TokioIo<Upgraded>>());
    }
}
