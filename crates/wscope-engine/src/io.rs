//! [`Io`]: what an engine, the guard and a client handshake run over; and [`Prefixed`], a stream
//! some of whose bytes were read already.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The I/O an engine runs over: an upgraded HTTP connection, a TCP stream, a test pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A stream some of whose bytes were read already, while its HTTP head was read: they are
/// served before the stream's own, then reads and writes go straight to it.
///
/// Both ends of an upgrade need it: a client's first frames can come in the same read as the
/// request head (the server side), and a server's first message in the same read as its 101
/// (the client side, [`Upgraded::stream`](crate::Upgraded::stream)).
#[derive(Debug)]
pub struct Prefixed<S> {
    read: Bytes,
    io: S,
}

impl<S> Prefixed<S> {
    /// `io`, with `read` (bytes already read from it) served first.
    pub fn new(read: Bytes, io: S) -> Self {
        Self { read, io }
    }

    /// The bytes still to be served before the stream's own.
    pub fn prefix(&self) -> &[u8] {
        &self.read
    }

    /// The bytes still to be served first, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.read, self.io)
    }

    /// The same stream with `first` served before what is left of its prefix (a read buffer of
    /// an HTTP server that read from this stream in turn).
    pub fn after(self, first: Bytes) -> Self {
        let read = match (first.is_empty(), self.read.is_empty()) {
            (true, _) => self.read,
            (false, true) => first,
            (false, false) => [first, self.read].concat().into(),
        };
        Self { read, ..self }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_comes_first_in_reads_of_any_size_then_the_stream() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut stream = Prefixed::new(Bytes::from_static(b"abc"), ours).after("01".into());
        assert_eq!(stream.prefix(), b"01abc");
        theirs.write_all(b"XYZ").await.unwrap();
        let mut one = [0u8; 2];
        stream.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"01");
        let mut rest = [0u8; 6];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"abcXYZ");
        stream.write_all(b"out").await.unwrap();
        let mut out = [0u8; 3];
        theirs.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"out");
        let (left, _) = stream.into_parts();
        assert!(left.is_empty());
    }

    #[test]
    fn after_an_empty_prefix_keeps_the_other_whole() {
        let only = |first: &'static [u8], own: &'static [u8]| {
            let stream =
                Prefixed::new(Bytes::from_static(own), ()).after(Bytes::from_static(first));
            stream.into_parts().0
        };
        assert_eq!(only(b"", b"own"), "own");
        assert_eq!(only(b"first", b""), "first");
        assert_eq!(only(b"", b""), "");
    }
}
