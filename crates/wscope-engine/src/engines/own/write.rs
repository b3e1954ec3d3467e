//! What this side sends, corked: every frame queued for a connection (and every reply one read
//! produces) is encoded into one buffer that a flush writes with as few writes as the socket
//! allows, one when it takes it all. A large payload from the server side is not copied: it is
//! queued as the sender's [`Bytes`] behind the corked bytes before it, and written with them in
//! one vectored write where the stream supports it. Once all is written the buffer is freed: an
//! idle connection holds nothing here.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::mask;
use crate::guard::header::{Header, MAX_HEADER};

/// A payload at least this large goes out from its own bytes rather than copied into the cork
/// (when it need not be masked).
const BY_REFERENCE: usize = 16 << 10;
/// The most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Payloads queued by reference, boxed so that a connection with none pays a pointer rather
/// than an empty deque's 32 bytes.
#[allow(clippy::box_collection)]
type Chunks = Box<VecDeque<Bytes>>;

/// The frames waiting for the socket. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Out {
    /// Bytes ahead of `cork`, in order: corked bytes frozen before a large payload, and large
    /// payloads themselves; allocated only while any wait.
    chunks: Option<Chunks>,
    /// Corked bytes after every chunk.
    cork: Vec<u8>,
    /// Bytes already written of the first chunk (or of the cork, when there is no chunk).
    pos: usize,
    /// Bytes waiting in all.
    len: usize,
}

impl Out {
    /// Bytes waiting to be written.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether payloads are queued by reference (their queue is allocated).
    #[cfg(test)]
    pub(super) fn busy(&self) -> bool {
        self.chunks.is_some()
    }

    /// Bytes held, by capacity (payloads queued by reference count as their length).
    pub(super) fn held(&self) -> usize {
        self.cork.capacity()
            + self
                .chunks
                .iter()
                .flat_map(|c| c.iter())
                .map(Bytes::len)
                .sum::<usize>()
    }

    /// Queues a frame: `first` is its first byte (FIN, RSV1, opcode), its payload masked with
    /// `mask` if given (the client role).
    pub(super) fn frame(&mut self, first: u8, payload: &Bytes, key: Option<[u8; 4]>) {
        let header = Header::new(first, key, payload.len() as u64);
        let mut head = [0; MAX_HEADER];
        let n = header.encode(&mut head);
        self.len += n + payload.len();
        if key.is_none() && payload.len() >= BY_REFERENCE {
            self.cork.extend_from_slice(&head[..n]);
            let chunks = self.chunks.get_or_insert_with(Default::default);
            chunks.push_back(Bytes::from(std::mem::take(&mut self.cork)));
            chunks.push_back(payload.clone());
            return;
        }
        if self.cork.capacity() == 0 {
            self.cork.reserve((n + payload.len()).max(256));
        }
        self.cork.extend_from_slice(&head[..n]);
        let at = self.cork.len();
        self.cork.extend_from_slice(payload);
        if let Some(key) = key {
            mask::apply(&mut self.cork[at..], key, 0);
        }
    }

    /// Writes what waits to `io`; once all is written, frees the buffer.
    pub(super) fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.len > 0 {
            let n = match self.chunks.as_deref() {
                Some(chunks) if io.is_write_vectored() => {
                    let mut slices = Vec::with_capacity(MAX_SLICES.min(chunks.len() + 1));
                    for (i, chunk) in chunks.iter().take(MAX_SLICES - 1).enumerate() {
                        let from = if i == 0 { self.pos } else { 0 };
                        slices.push(IoSlice::new(&chunk[from..]));
                    }
                    if chunks.len() < MAX_SLICES {
                        slices.push(IoSlice::new(&self.cork));
                    }
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
                }
                chunks => {
                    let first = match chunks.and_then(VecDeque::front) {
                        Some(chunk) => &chunk[self.pos..],
                        None => &self.cork[self.pos..],
                    };
                    ready!(Pin::new(&mut *io).poll_write(cx, first))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        *self = Self::default(); // frees the cork: nothing is kept between writes
        Poll::Ready(Ok(()))
    }

    /// `n` more bytes were written.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(chunks) = self.chunks.as_mut() else {
                self.pos += n;
                return;
            };
            let rest = chunks.front().map_or(0, |chunk| chunk.len() - self.pos);
            if n < rest {
                self.pos += n;
                return;
            }
            n -= rest;
            self.pos = 0;
            chunks.pop_front();
            if chunks.is_empty() {
                self.chunks = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;

    /// A socket that takes at most `step` bytes a write, vectored or not.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        vectored: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn corked_and_referenced_payloads_leave_in_order_and_nothing_is_kept() {
        let big = Bytes::from(vec![7u8; 70_000]);
        let small = Bytes::from_static(b"hello");
        let mut expected = vec![0x81, 5];
        expected.extend_from_slice(b"hello");
        expected.extend([0x82, 127]);
        expected.extend(70_000u64.to_be_bytes());
        expected.extend_from_slice(&big);
        expected.extend([0x89, 5]);
        expected.extend_from_slice(b"hello");
        for vectored in [false, true] {
            for step in [1, 3, 1000, 1 << 20] {
                let mut out = Out::default();
                out.frame(0x81, &small, None);
                out.frame(0x82, &big, None);
                out.frame(0x89, &small, None);
                assert_eq!(out.len(), expected.len());
                assert!(out.busy(), "the large payload is queued by reference");
                let mut io = Trickle {
                    got: Vec::new(),
                    step,
                    vectored,
                };
                let mut cx = Context::from_waker(noop_waker_ref());
                assert!(matches!(
                    out.poll_write(&mut io, &mut cx),
                    Poll::Ready(Ok(()))
                ));
                assert_eq!(io.got, expected, "step {step}, vectored {vectored}");
                assert_eq!((out.len(), out.held()), (0, 0), "nothing kept");
                assert!(!out.busy(), "the queue of chunks is freed");
            }
        }
    }

    #[test]
    fn a_client_frame_is_masked_with_its_key() {
        let mut out = Out::default();
        let key = [9, 8, 7, 6];
        out.frame(0x81, &Bytes::from_static(b"abcdef"), Some(key));
        let got = &out.cork;
        assert_eq!(&got[..6], &[0x81, 0x86, 9, 8, 7, 6]);
        let unmasked: Vec<u8> = got[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(unmasked, b"abcdef");
    }
}
