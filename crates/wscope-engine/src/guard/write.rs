//! The guard's writing side under permessage-deflate: what the engine writes goes to the socket
//! as it is, except that the first frame of every data message gets RSV1 ("compressed", RFC 7692
//! §6): the transport compressed the message's payload before the engine framed it (once for
//! every connection that sends the same payload, see `deflate::compress_message`), so nothing
//! here holds a message or compresses one.
//!
//! Small writes are gathered, up to [`GATHER`] bytes, so that a batch of small frames reaches
//! the socket in one write; a larger payload goes straight through. Between writes nothing is
//! kept.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

use super::header::{HeaderBuf, RSV1};

/// The most bytes gathered before they go to the socket.
const GATHER: usize = 16 << 10;

/// See the module documentation.
#[derive(Default)]
pub(super) struct Marker {
    header: HeaderBuf,
    /// Payload bytes of the current frame still to come (0 at a header).
    left: u64,
    /// Bytes for the socket: `out[out_pos..]` not yet written.
    out: Vec<u8>,
    out_pos: usize,
}

impl Marker {
    /// Writes `buf`, the engine's bytes, to `io`: at once when it is payload enough to go
    /// alone, else gathered. Returns how many bytes of `buf` were taken.
    pub(super) fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.out.len() >= GATHER || (self.left > 0 && buf.len() >= GATHER) {
            ready!(self.poll_drain(io, cx))?;
        }
        if self.out.is_empty() && self.left > 0 && buf.len() >= GATHER {
            let n = usize::try_from(self.left)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = ready!(Pin::new(io).poll_write(cx, &buf[..n]))?;
            self.left -= n as u64;
            return Poll::Ready(Ok(n));
        }
        let taken = self.gather(buf);
        // Start writing now; what the socket does not take goes on the next write or flush.
        if let Poll::Ready(Err(e)) = self.poll_drain(io, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    /// Takes what `buf` holds, up to [`GATHER`] bytes gathered (a header may pass it by its
    /// length), marking data frames' headers; returns how many bytes it took.
    fn gather(&mut self, buf: &[u8]) -> usize {
        let mut taken = 0;
        while taken < buf.len() && self.out.len() < GATHER {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - taken)
                    .min(GATHER - self.out.len());
                self.out.extend_from_slice(&buf[taken..taken + n]);
                taken += n;
                self.left -= n as u64;
                continue;
            }
            let (n, header) = self.header.take(&buf[taken..]);
            taken += n;
            if let Some(h) = header {
                let at = self.out.len();
                self.out.extend_from_slice(self.header.raw());
                // Text or binary: a message's first frame (continuations have opcode 0).
                if matches!(h.opcode, 1 | 2) {
                    self.out[at] |= RSV1;
                }
                self.left = h.len;
            }
        }
        taken
    }

    /// Writes what is gathered to `io`.
    pub(super) fn poll_drain<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        // Keep no buffer between writes: an idle connection holds nothing here.
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked) with `first` as FIN/opcode.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=0xffff => {
                out.push(126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn the_first_frame_of_each_data_message_is_marked_and_payloads_pass_unchanged() {
        let big = vec![9u8; 100_000];
        let mut engine = frame(0x81, b"one"); // text
        engine.extend(frame(0x89, b"ping")); // ping
        engine.extend(frame(0x02, &big)); // binary, first of two
        engine.extend(frame(0x80, b"end")); // its continuation
        engine.extend(frame(0x88, &[3, 232])); // close
        let mut expected = engine.clone();
        let at_text = 0;
        let at_binary = frame(0x81, b"one").len() + frame(0x89, b"ping").len();
        expected[at_text] |= RSV1;
        expected[at_binary] |= RSV1;
        for step in [1, 7, 1000, engine.len()] {
            let mut socket: Vec<u8> = Vec::new();
            let mut marker = Marker::default();
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            let mut at = 0;
            while at < engine.len() {
                let end = (at + step).min(engine.len());
                match marker.poll_write(&mut socket, &mut cx, &engine[at..end]) {
                    Poll::Ready(Ok(n)) => at += n,
                    other => panic!("{other:?}"),
                }
            }
            assert!(matches!(
                marker.poll_drain(&mut socket, &mut cx),
                Poll::Ready(Ok(()))
            ));
            assert!(marker.out.capacity() == 0, "nothing kept between writes");
            assert_eq!(socket, expected, "step {step}");
        }
    }
}
