//! The frame guard: the layer between the socket and every engine, in either role (a server's
//! guard reads a client, a client's guard reads a server; what differs is only the masking
//! required). It reads each frame header as it arrives and, before an engine buffers a byte of
//! the frame's payload, enforces what the engines do not all enforce, or not alike:
//!
//! - a client's frames are masked and a server's are not (RFC 6455 §5.1), reserved bits and
//!   opcodes unused, control frames whole and at most 125 bytes, continuations only inside a
//!   fragmented message (1002);
//! - the frame size limit on each frame's declared length, and the message size limit on the
//!   running total of a fragmented message (1009) — so a frame declaring 2^63 bytes, or a
//!   stream of small fragments past the limit, is refused before its bytes are held;
//! - the shared [`MessageBudget`](wscope_core::MessageBudget) of bytes held in partly received
//!   messages: each message is charged its declared size as its frames' headers arrive and
//!   released once it is whole (1013 when the budget, or the client address's share of it,
//!   cannot take it);
//! - a deadline on a partly received message, running from the first time the guard waits for
//!   the rest of it (1008 when it passes), so that a client cannot hold its share of the budget
//!   while answering pings;
//! - permessage-deflate (RFC 7692), when negotiated: a compressed message is inflated here, under
//!   the message size limit (a deflate bomb fails with 1009 one byte past it), and handed to the
//!   engine as plain frames; what the engine sends (compressed before the engine framed it) gets
//!   RSV1 on its way out.
//!
//! No engine is handed a frame larger than a piece (4 KiB): larger frames are cut into pieces
//! and inflated bytes framed in them (`read`), because every engine grows its read buffer to
//! the largest frame it is handed and keeps it.
//!
//! A violation never reaches the engine as an I/O error (tokio-websockets, for one, then refuses
//! to send a close frame): the guard stops feeding the engine at the offending frame's header and
//! trips a [`Tripwire`], which the transport's reader yields as the error once the engine waits
//! for more bytes; the driver then fails the connection with the error's close code.
//!
//! A connection failed by the guard lingers briefly once the engine lets it go: closing a socket
//! with client bytes still unread makes the kernel send a reset, which can overtake the close
//! frame at the client, so the guard half-closes and reads what still comes (for a bounded time
//! and number of bytes, in a task that [`lingering`](crate::lingering) tracks) before the
//! socket is dropped.
//!
//! # Layout
//! - `check`: the checks of a frame header, shared with wscope's own engine.
//! - `header`: frame headers, parsed as their bytes arrive and encoded.
//! - `read`: the peer's frames — in place or fed, cut into pieces, inflated.
//! - `write`: what the engine sends, marked compressed under permessage-deflate.
//! - `linger`: the tracked tasks in which failed connections linger.

pub(crate) mod check;
pub(crate) mod header;
pub(crate) mod linger;

pub use linger::lingering;
pub(crate) mod read;
mod write;

use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
#[cfg(test)]
use wscope_core::ClientKey;
use wscope_core::{Charge, MemoryGauge, Message, Role, TransportError};

use crate::config::SocketConfig;
use crate::deflate::Deflate;
use crate::io::Io;
use read::{Feed, Fill, Reader, Scan, Stop, FEED_READ};
use write::Marker;

/// Where the guard leaves the violation that ends a connection, for the transport's reader
/// ([`Watched`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Tripwire(Arc<OnceLock<TransportError>>);

impl Tripwire {
    fn trip(&self, error: TransportError) {
        let _ = self.0.set(error);
    }

    fn is_tripped(&self) -> bool {
        self.0.get().is_some()
    }
}

pin_project_lite::pin_project! {
    /// An engine's reader, failing with the guard's violation once the engine waits for the
    /// bytes the guard held back. It needs no waker of its own: the guard trips the wire while
    /// the engine reads, within the same poll.
    pub(crate) struct Watched<R> {
        #[pin]
        reader: R,
        wire: Tripwire,
        failed: bool,
    }
}

impl<R> Watched<R> {
    pub(crate) fn new(reader: R, wire: Tripwire) -> Self {
        Self {
            reader,
            wire,
            failed: false,
        }
    }
}

impl<R> Stream for Watched<R>
where
    R: Stream<Item = Result<Message, TransportError>>,
{
    type Item = R::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.reader.poll_next(cx) {
            Poll::Pending => match this.wire.0.get() {
                Some(error) => {
                    *this.failed = true;
                    Poll::Ready(Some(Err(error.clone())))
                }
                None => Poll::Pending,
            },
            ready => ready,
        }
    }
}

/// A socket behind the guard, in either role. See the module documentation.
pub(crate) struct FrameGuard<S: Io> {
    /// The socket; taken only by `Drop`, to linger.
    io: Option<S>,
    read: Reader,
    /// Present while the guard feeds the engine and holds bytes for it; the rest of the time
    /// the engine reads the socket's bytes in place.
    feed: Option<Box<Feed>>,
    /// Present when permessage-deflate compresses what the server sends.
    write: Option<Box<Marker>>,
    /// Where the bytes the guard holds for the connection are reported (`memoryBytes`), and
    /// what was reported last (reported again only when it changes).
    gauge: MemoryGauge,
    reported: usize,
}

impl<S: Io> FrameGuard<S> {
    /// Guards `io`, a socket in `role` (a server's guard requires masked frames, a client's
    /// unmasked ones), with `cfg`'s limits, budget (charging `charge`) and deadline and the
    /// negotiated compression, tripping `wire` on a violation.
    pub(crate) fn new(
        io: S,
        cfg: &SocketConfig,
        role: Role,
        deflate: Option<Deflate>,
        charge: Charge,
        wire: Tripwire,
    ) -> Self {
        let read = Reader::new(cfg, role, deflate, charge, wire);
        let write = deflate
            .and_then(|d| d.compress_window_bits())
            .map(|_| Box::<Marker>::default());
        Self {
            io: Some(io),
            read,
            feed: None,
            write,
            gauge: MemoryGauge::detached(),
            reported: 0,
        }
    }

    /// This guard reporting what it holds for the connection to `gauge`.
    pub(crate) fn reporting_to(mut self, gauge: MemoryGauge) -> Self {
        self.gauge = gauge;
        self
    }

    /// Reports what the guard holds for the connection if it changed: the bytes its partly
    /// received message is charged (its declared size, past the budget's small-message
    /// allowance) and the buffers it feeds the engine from while it holds any.
    fn report(&mut self) {
        let feed = self
            .feed
            .as_ref()
            .map_or(0, |f| f.input.capacity() + f.staged.capacity());
        let held = self.read.charge.held() + feed;
        if held != self.reported {
            self.reported = held;
            self.gauge.set(held);
        }
    }

    /// A server's guard charging the budget to `client`'s share if known.
    #[cfg(test)]
    pub(crate) fn server(
        io: S,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        client: Option<ClientKey>,
        wire: Tripwire,
    ) -> Self {
        let charge = match client {
            Some(client) => cfg.message_budget.charge_for(client),
            None => cfg.message_budget.charge(),
        };
        Self::new(io, cfg, Role::Server, deflate, charge, wire)
    }

    /// A client's guard.
    #[cfg(test)]
    pub(crate) fn client(
        io: S,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        wire: Tripwire,
    ) -> Self {
        let charge = cfg.message_budget.charge();
        Self::new(io, cfg, Role::Client, deflate, charge, wire)
    }

    /// Reads while the guard makes the engine's bytes (see `read`).
    fn poll_fed(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut t = self.feed.take().unwrap_or_else(Feed::borrow);
        let start = buf.filled().len();
        let polled = loop {
            match self.read.fill(&mut t, buf) {
                Err(e) => {
                    self.read.wire.trip(e);
                    break if buf.filled().len() > start {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    };
                }
                Ok(Fill::Handed) => break Poll::Ready(Ok(())),
                Ok(Fill::NeedInput) if buf.filled().len() > start => break Poll::Ready(Ok(())),
                Ok(Fill::NeedInput) => {
                    if t.input.len() < FEED_READ {
                        t.input.resize(FEED_READ, 0);
                    }
                    let mut into = ReadBuf::new(&mut t.input);
                    let Some(io) = self.io.as_mut() else {
                        break Poll::Ready(Err(gone()));
                    };
                    match Pin::new(io).poll_read(cx, &mut into) {
                        Poll::Ready(Ok(())) if into.filled().is_empty() => {
                            break Poll::Ready(Ok(())); // end of stream: the engine sees it
                        }
                        Poll::Ready(Ok(())) => {
                            let n = into.filled().len();
                            (t.pos, t.end, t.clear) = (0, n, 0);
                        }
                        other => break other,
                    }
                }
            }
        };
        if t.is_drained() {
            t.give_back(); // nothing held for the engine: no buffer kept while waiting
        } else {
            self.feed = Some(t);
        }
        if polled.is_pending() && !self.read.wire.is_tripped() {
            self.read.waiting(cx);
        }
        polled
    }
}

impl<S: Io> AsyncRead for FrameGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = this.poll_guarded(cx, buf);
        this.report();
        polled
    }
}

impl<S: Io> FrameGuard<S> {
    /// Reads the peer's bytes for the engine through the guard's checks.
    fn poll_guarded(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
        if this.read.wire.is_tripped() {
            return Poll::Pending; // the transport's reader yields the violation
        }
        if this.feed.is_some() || this.read.needs_feed() {
            return this.poll_fed(cx, buf);
        }
        let start = buf.filled().len();
        let io = this.io.as_mut().ok_or_else(gone)?;
        if Pin::new(io).poll_read(cx, buf)?.is_pending() {
            this.read.waiting(cx);
            return Poll::Pending;
        }
        match this.read.scan(&buf.filled()[start..]) {
            Scan::All => Poll::Ready(Ok(())),
            Scan::Stop(at, Stop::Violation(e)) => {
                buf.set_filled(start + at);
                this.read.wire.trip(e);
                if at > 0 {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
            Scan::Stop(at, Stop::Feed) => {
                let mut t = Feed::borrow();
                t.load(&buf.filled()[start + at..]);
                buf.set_filled(start + at);
                this.feed = Some(t);
                if at > 0 {
                    Poll::Ready(Ok(()))
                } else {
                    this.poll_fed(cx, buf)
                }
            }
        }
    }
}

impl<S: Io> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = this.io.as_mut().ok_or_else(gone)?;
        match this.write.as_mut() {
            Some(marker) => marker.poll_write(io, cx, buf),
            None => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.is_none() {
            let io = this.io.as_mut().ok_or_else(gone)?;
            return Pin::new(io).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_none() && self.io.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.as_mut().ok_or_else(gone)?;
        if let Some(c) = this.write.as_mut() {
            ready!(c.poll_drain(io, cx))?;
        }
        Pin::new(io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.as_mut().ok_or_else(gone)?;
        if let Some(c) = this.write.as_mut() {
            ready!(c.poll_drain(io, cx))?;
        }
        Pin::new(io).poll_shutdown(cx)
    }
}

/// The socket was let go (only `Drop` takes it).
fn gone() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl<S: Io> Drop for FrameGuard<S> {
    fn drop(&mut self) {
        if !self.read.wire.is_tripped() {
            return;
        }
        if let Some(io) = self.io.take() {
            linger::spawn(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::header::{header_len, Header, MAX_HEADER, RSV1};
    use super::read::PIECE;
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use futures_util::FutureExt;
    use std::time::Duration;
    use tokio::io::{duplex, DuplexStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wscope_core::{MessageBudget, TransportErrorKind};

    const KEY: [u8; 4] = [1, 2, 3, 4];

    /// A client frame: `first` is FIN/RSV/opcode, masked with [`KEY`].
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let header = Header {
            fin: first & 0x80 != 0,
            rsv1: first & RSV1 != 0,
            rsv23: false,
            opcode: first & 0x0f,
            mask: Some(KEY),
            len: payload.len() as u64,
        };
        let mut head = [0; MAX_HEADER];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        out
    }

    fn deflate(payload: &[u8]) -> Vec<u8> {
        let mut z = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(payload.len() + 1024);
        z.compress_vec(payload, &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    /// A guard with `cfg` (and permessage-deflate agreed) over a pipe whose other end already
    /// holds `input`.
    async fn guard_with(
        cfg: SocketConfig,
        input: &[u8],
    ) -> (FrameGuard<DuplexStream>, Tripwire, DuplexStream) {
        let (server, mut client) = duplex(4 << 20);
        client.write_all(input).await.unwrap();
        let deflate = Deflate::negotiate([&http::HeaderValue::from_static("permessage-deflate")]);
        let wire = Tripwire::default();
        (
            FrameGuard::server(server, &cfg, deflate, None, wire.clone()),
            wire,
            client,
        )
    }

    /// A guard with a message limit of `limit` and a budget that takes anything.
    async fn guard(
        limit: usize,
        input: &[u8],
    ) -> (FrameGuard<DuplexStream>, Tripwire, DuplexStream) {
        let cfg = SocketConfig::default()
            .max_message_size(limit)
            .message_budget(MessageBudget::new(1 << 30).per_address(0));
        guard_with(cfg, input).await
    }

    /// Reads what the guard hands over, `step` bytes at a time, until it waits.
    fn drain(guard: &mut FrameGuard<DuplexStream>, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        while let Some(n) = guard.read(&mut buf).now_or_never() {
            let n = n.unwrap();
            assert!(n > 0, "no end of stream here");
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The payloads of the frames in `bytes` (unmasked with each frame's key), and the opcode
    /// and FIN of each.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = header_len(bytes[1]);
            let h = Header::parse(&bytes[..n]);
            let end = n + h.len as usize;
            let payload: Vec<u8> = bytes[n..end]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ h.mask.unwrap_or_default()[i % 4])
                .collect();
            out.push((h.opcode, h.fin, payload));
            bytes = &bytes[end..];
        }
        out
    }

    /// Nothing of the connection is held by the guard: no feed, no inflater, no charge.
    fn holds_nothing(g: &FrameGuard<DuplexStream>) -> bool {
        g.feed.is_none() && g.read.inflater.is_none() && g.read.charge.held() == 0
    }

    #[tokio::test]
    async fn a_deflate_bomb_is_inflated_no_further_than_one_byte_past_the_limit() {
        let limit = 100_000;
        let bomb = deflate(&vec![0u8; 16 << 20]);
        let (mut g, wire, _client) = guard(limit, &frame(0x80 | RSV1 | 0x2, &bomb)).await;
        let handed = drain(&mut g, 4096);
        let payload: usize = frames(&handed).iter().map(|f| f.2.len()).sum();
        assert!(payload <= limit, "{payload} bytes handed over");
        let error = wire.0.get().expect("tripped");
        assert_eq!(error.kind(), TransportErrorKind::TooBig);
        assert!(error
            .message()
            .contains("inflates past the 100000-byte limit"));
        let held = g.feed.as_ref().map_or(0, |t| t.staged.len());
        assert!(
            payload + held <= limit + 1,
            "inflated {} bytes",
            payload + held
        );
    }

    #[tokio::test]
    async fn inflated_frames_fit_a_piece_and_nothing_is_kept() {
        let text: Vec<u8> = b"permessage-deflate, ".repeat(5000);
        let body = deflate(&text);
        let (head, tail) = body.split_at(body.len() / 2);
        let mut input = frame(RSV1 | 0x1, head);
        input.extend(frame(0x80 | 0x9, b"ping"));
        input.extend(frame(0x80, tail));
        input.extend(frame(0x81, b"plain"));
        let (mut g, wire, _client) = guard(1 << 20, &input).await;
        let handed = drain(&mut g, 3);
        assert!(!wire.is_tripped());
        let got = frames(&handed);
        let (pings, rest): (Vec<_>, Vec<_>) = got.iter().partition(|f| f.0 == 0x9);
        assert_eq!(pings.len(), 1);
        let message: Vec<u8> = rest[..rest.len() - 1]
            .iter()
            .flat_map(|f| f.2.clone())
            .collect();
        assert_eq!(message, text);
        assert_eq!(rest[0].0, 0x1, "the message keeps its opcode");
        assert!(rest[1..rest.len() - 1].iter().all(|f| f.0 == 0));
        assert!(rest[rest.len() - 2].1, "and ends with FIN");
        assert!(rest.iter().all(|f| f.2.len() <= PIECE));
        assert_eq!(*rest[rest.len() - 1], (0x1, true, b"plain".to_vec()));
        assert!(holds_nothing(&g), "the feed and the inflater went back");
    }

    /// A frame larger than a piece reaches the engine in pieces, each under the client's mask
    /// at its phase (a piece of 1,001 bytes shifts it), the first keeping the frame's opcode
    /// and the last its FIN; smaller frames go as they came.
    #[tokio::test]
    async fn a_large_frame_reaches_the_engine_in_pieces() {
        let text: Vec<u8> = (0..10_013u32).map(|i| b'a' + (i % 26) as u8).collect();
        let binary: Vec<u8> = (0..9_999u32).map(|i| (i * 7) as u8).collect();
        let mut input = frame(0x1, &text[..10]);
        input.extend(frame(0x80, &text[10..]));
        input.extend(frame(0x82, &binary));
        input.extend(frame(0x82, b"small"));
        for step in [3, 64 << 10] {
            let (mut g, wire, _client) = guard(1 << 20, &input).await;
            g.read.piece = 1001;
            let handed = frames(&drain(&mut g, step));
            assert!(!wire.is_tripped());
            assert!(handed.iter().all(|f| f.2.len() <= 1001), "{step}");
            let split = handed.iter().position(|f| f.0 == 2).unwrap();
            let (first, second) = handed.split_at(split);
            assert_eq!((first[0].0, first[0].1, first[0].2.len()), (1, false, 10));
            assert!(first[1..].iter().all(|f| f.0 == 0));
            assert!(first.iter().rev().skip(1).all(|f| !f.1) && first.last().unwrap().1);
            assert_eq!(
                first.iter().flat_map(|f| f.2.clone()).collect::<Vec<_>>(),
                text
            );
            let (pieces, small) = second.split_at(second.len() - 1);
            assert_eq!(pieces.len(), 10);
            assert!(pieces[1..].iter().all(|f| f.0 == 0));
            assert!(pieces.last().unwrap().1 && !pieces[0].1);
            let joined: Vec<u8> = pieces.iter().flat_map(|f| f.2.clone()).collect();
            assert_eq!(joined, binary);
            assert_eq!(small[0], (2, true, b"small".to_vec()));
            assert!(holds_nothing(&g), "{step}");
        }
    }

    /// A stray header byte after a compressed message keeps neither the inflater nor the feed:
    /// the guard holds the byte itself, and the frame goes on when the rest comes.
    #[tokio::test]
    async fn nothing_is_kept_while_a_header_waits_for_its_rest() {
        let text = b"{\"hello\": \"world\"} ".repeat(40);
        let mut input = frame(0x80 | RSV1 | 0x1, &deflate(&text));
        input.push(0x81);
        let (mut g, wire, mut client) = guard(1 << 20, &input).await;
        let handed = frames(&drain(&mut g, 512));
        assert_eq!(
            handed.iter().flat_map(|f| f.2.clone()).collect::<Vec<_>>(),
            text
        );
        assert!(!wire.is_tripped());
        assert!(holds_nothing(&g));
        assert!(!g.read.header.is_empty(), "the guard holds the stray byte");
        let rest = frame(0x81, b"hi");
        client.write_all(&rest[1..]).await.unwrap();
        assert_eq!(frames(&drain(&mut g, 512)), vec![(1, true, b"hi".to_vec())]);
        assert!(holds_nothing(&g) && g.read.header.is_empty());
    }

    /// A message that stalls gets its deadline from the first wait: 1008 once it passes, and
    /// none for one that completes in time.
    #[tokio::test(start_paused = true)]
    async fn a_message_that_stalls_past_its_deadline_is_failed() {
        let cfg = SocketConfig::default().message_timeout(Duration::from_secs(5));
        let whole = frame(0x82, &[7u8; 10_000]);
        let (mut g, wire, mut client) = guard_with(cfg, &whole[..3000]).await;
        drain(&mut g, 512);
        assert!(g.read.deadline.is_some(), "armed at the first wait");
        tokio::time::advance(Duration::from_secs(4)).await;
        client.write_all(&whole[3000..6000]).await.unwrap();
        drain(&mut g, 512);
        assert!(
            !wire.is_tripped(),
            "more bytes do not move the deadline, nor pass it"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        drain(&mut g, 512);
        let error = wire.0.get().expect("tripped at the deadline");
        assert_eq!(error.kind(), TransportErrorKind::TimedOut);
        assert_eq!(error.message(), "message not received in full within 5s");
        assert_eq!(error.kind().close_frame().unwrap().code.as_u16(), 1008);

        let cfg = SocketConfig::default().message_timeout(Duration::from_secs(5));
        let (mut g, wire, mut client) = guard_with(cfg, &whole[..3000]).await;
        drain(&mut g, 512);
        client.write_all(&whole[3000..]).await.unwrap();
        drain(&mut g, 512);
        assert!(g.read.deadline.is_none(), "disarmed once whole");
        tokio::time::advance(Duration::from_secs(60)).await;
        drain(&mut g, 512);
        assert!(!wire.is_tripped());
    }

    #[tokio::test]
    async fn a_violation_in_a_header_split_over_reads_stops_the_engine_there() {
        let mut input = frame(0x82, b"fine");
        let len = input.len();
        input.extend(header_bytes(0x82, 1 << 40));
        let (server, mut client) = duplex(1 << 16);
        let cfg = SocketConfig::default();
        let wire = Tripwire::default();
        let mut g = FrameGuard::server(server, &cfg, None, None, wire.clone());
        let mut handed = Vec::new();
        for byte in &input {
            client.write_all(&[*byte]).await.unwrap();
            handed.extend(drain(&mut g, 64));
        }
        assert!(wire.is_tripped());
        // The good frame and not a byte of the header: the guard holds a header back until it
        // is whole, so the engine never learns of the frame, let alone waits for its payload.
        assert_eq!(handed, &input[..len]);
    }

    /// Whether each frame in `bytes` is masked.
    fn masked(mut bytes: &[u8]) -> Vec<bool> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = header_len(bytes[1]);
            let h = Header::parse(&bytes[..n]);
            out.push(h.mask.is_some());
            bytes = &bytes[n + h.len as usize..];
        }
        out
    }

    /// In the client role the server's frames come unmasked and reach the engine so, a large one
    /// in pieces; a masked one is refused with 1002 before the engine sees it.
    #[tokio::test]
    async fn a_client_guard_takes_unmasked_frames_and_refuses_masked_ones() {
        let unmasked = |first: u8, payload: &[u8]| {
            let mut head = [0; MAX_HEADER];
            let header = Header {
                fin: first & 0x80 != 0,
                rsv1: false,
                rsv23: false,
                opcode: first & 0x0f,
                mask: None,
                len: payload.len() as u64,
            };
            let n = header.encode(&mut head);
            [&head[..n], payload].concat()
        };
        let binary: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut input = unmasked(0x82, &binary);
        input.extend(unmasked(0x81, b"small"));
        let (ours, mut server) = duplex(1 << 20);
        server.write_all(&input).await.unwrap();
        let wire = Tripwire::default();
        let mut g = FrameGuard::client(ours, &SocketConfig::default(), None, wire.clone());
        let handed = drain(&mut g, 4096);
        assert!(!wire.is_tripped());
        assert!(masked(&handed).iter().all(|m| !m), "handed over unmasked");
        let got = frames(&handed);
        assert!(got.len() > 2 && got.iter().all(|f| f.2.len() <= PIECE));
        let (pieces, small) = got.split_at(got.len() - 1);
        assert_eq!(
            pieces.iter().flat_map(|f| f.2.clone()).collect::<Vec<_>>(),
            binary
        );
        assert_eq!(small[0], (1, true, b"small".to_vec()));

        let (ours, mut server) = duplex(1 << 16);
        server.write_all(&frame(0x81, b"hi")).await.unwrap();
        let wire = Tripwire::default();
        let mut g = FrameGuard::client(ours, &SocketConfig::default(), None, wire.clone());
        assert!(drain(&mut g, 512).is_empty());
        let error = wire.0.get().expect("tripped");
        assert_eq!(error.kind(), TransportErrorKind::Protocol);
        assert_eq!(error.message(), "masked frame from a server");
    }

    fn header_bytes(first: u8, len: u64) -> Vec<u8> {
        let header = Header {
            fin: true,
            rsv1: false,
            rsv23: false,
            opcode: first & 0x0f,
            mask: Some(KEY),
            len,
        };
        let mut head = [0; MAX_HEADER];
        let n = header.encode(&mut head);
        head[..n].to_vec()
    }

    #[test]
    fn headers_encode_with_the_shortest_length_and_parse_back() {
        for len in [0, 125, 126, 65_535, 65_536, 1 << 40] {
            let bytes = header_bytes(0x82, len);
            assert_eq!(bytes.len(), header_len(bytes[1]));
            let h = Header::parse(&bytes);
            assert_eq!((h.len, h.opcode, h.fin, h.mask), (len, 2, true, Some(KEY)));
        }
        assert_eq!(header_bytes(0x82, 125).len(), 6);
        assert_eq!(header_bytes(0x82, 126).len(), 8);
        assert_eq!(header_bytes(0x82, 65_536).len(), 14);
    }
}
