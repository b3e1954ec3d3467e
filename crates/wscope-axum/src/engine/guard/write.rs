//! The guard's writing side under permessage-deflate: the engine's frames, each whole data
//! message compressed on its way to the socket.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

use super::super::deflate;
use super::header::{Header, HeaderBuf, MAX_HEADER};

/// The outgoing side under permessage-deflate: the engine's frames, each whole data message
/// compressed (RFC 7692 §6.1). Fragmented messages (only tokio-websockets splits messages, those
/// over 4 MiB) and control frames go as they are.
pub(super) struct Compressor {
    window_bits: u8,
    header: HeaderBuf,
    left: u64,
    /// The message being gathered to be compressed once whole.
    gathering: Option<Header>,
    payload: Vec<u8>,
    /// Inside a fragmented message.
    fragmented: bool,
    /// Bytes for the socket: `out[out_pos..]` not yet written.
    out: Vec<u8>,
    out_pos: usize,
}

impl Compressor {
    pub(super) fn consume(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let to = if self.gathering.is_some() {
                    &mut self.payload
                } else {
                    &mut self.out
                };
                to.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                self.left -= n as u64;
                if self.left == 0 {
                    self.frame_done();
                }
                continue;
            }
            let (taken, header) = self.header.take(bytes);
            bytes = &bytes[taken..];
            if let Some(h) = header {
                self.begin(&h);
            }
        }
    }

    fn begin(&mut self, h: &Header) {
        let data_start = matches!(h.opcode, 1 | 2);
        let whole = data_start && h.fin && !self.fragmented && !h.rsv1 && !h.rsv23;
        if data_start && !h.fin {
            self.fragmented = true;
        } else if h.opcode == 0 && h.fin {
            self.fragmented = false;
        }
        self.left = h.len;
        if whole && h.mask.is_none() {
            self.gathering = Some(*h);
            self.payload
                .reserve(usize::try_from(h.len).unwrap_or(0).min(1 << 20));
        } else {
            self.out.extend_from_slice(self.header.raw());
        }
        if self.left == 0 {
            self.frame_done();
        }
    }

    fn frame_done(&mut self) {
        let Some(mut h) = self.gathering.take() else {
            return;
        };
        let payload = std::mem::take(&mut self.payload);
        let body = match deflate::compress(&payload, self.window_bits) {
            Some(compressed) => {
                (h.rsv1, h.len) = (true, compressed.len() as u64);
                compressed
            }
            None => payload,
        };
        let mut head = [0; MAX_HEADER];
        let n = h.encode(&mut head);
        self.out.extend_from_slice(&head[..n]);
        self.out.extend_from_slice(&body);
    }

    /// Writes what is waiting to `io`.
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

impl Compressor {
    pub(super) fn new(window_bits: u8) -> Self {
        Self {
            window_bits,
            header: HeaderBuf::default(),
            left: 0,
            gathering: None,
            payload: Vec::new(),
            fragmented: false,
            out: Vec::new(),
            out_pos: 0,
        }
    }
}
