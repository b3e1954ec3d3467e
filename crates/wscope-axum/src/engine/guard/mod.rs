//! The frame guard: the layer between a client's socket and every engine. It reads each frame
//! header as it arrives and, before an engine buffers a byte of the frame's payload, enforces
//! what the engines do not all enforce, or not alike:
//!
//! - client frames are masked (RFC 6455 §5.1), reserved bits and opcodes unused, control frames
//!   whole and at most 125 bytes, continuations only inside a fragmented message (1002);
//! - the frame size limit on each frame's declared length, and the message size limit on the
//!   running total of a fragmented message (1009) — so a frame declaring 2^63 bytes, or a
//!   stream of small fragments past the limit, is refused before its bytes are held;
//! - the shared [`MessageBudget`](wscope_core::MessageBudget) of bytes held in partly received
//!   messages: each message is charged its declared size as its frames' headers arrive and
//!   released once it is whole (1013 when the budget cannot take it);
//! - permessage-deflate (RFC 7692), when negotiated: a compressed message is inflated here, under
//!   the message size limit (a deflate bomb fails with 1009 one byte past it), and handed to the
//!   engine as plain frames; what the engine sends is compressed on the way out.
//!
//! A violation never reaches the engine as an I/O error (tokio-websockets, for one, then refuses
//! to send a close frame): the guard stops feeding the engine at the offending frame's header and
//! trips a [`Tripwire`], which the transport's reader yields as the error once the engine waits
//! for more bytes; the driver then fails the connection with the error's close code.
//!
//! Between compressed messages the guard keeps no buffer and no zlib state: its inflating state is
//! borrowed from a per-thread spare for the span of a compressed message.
//!
//! A connection failed by the guard lingers briefly once the engine lets it go: closing a socket
//! with client bytes still unread makes the kernel send a reset, which can overtake the close
//! frame at the client, so the guard half-closes and reads what still comes (for at most
//! [`LINGER`] and [`LINGER_BYTES`]) before the socket is dropped.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use flate2::{Decompress, FlushDecompress, Status};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use wscope_core::{Charge, Message, TransportError, TransportErrorKind};

use super::deflate::{self, Deflate};
use super::{Io, SocketConfig};

/// The most bytes a frame header takes: 2, then up to 8 of extended length, then 4 of mask.
const MAX_HEADER: usize = 14;
/// RSV1: on the first frame of a message, "compressed" under permessage-deflate.
const RSV1: u8 = 0x40;
/// The largest frame of inflated bytes handed to an engine (smaller when the frame limit is).
const INFLATED_FRAME: usize = 16 << 10;
/// Bytes read from the socket at a time while inflating.
const INFLATE_READ: usize = 8 << 10;
/// How long a failed connection lingers, and how many bytes it reads meanwhile, at most.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// What RFC 7692 §7.2.2 has the receiver append to a message before inflating it.
const TRAILER: [u8; 4] = [0, 0, 0xff, 0xff];
/// What a compressed message is charged to the budget on top of its inflated bytes once its
/// connection keeps the inflating state while waiting for the client (the message came slower
/// than the socket delivers): about that state's memory (zlib's inflate state and 32 KiB window,
/// the input and inflated buffers), so that slow compressed messages are bounded too. One that
/// arrives whole is not charged it.
const INFLATE_COST: u64 = 64 << 10;

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

fn protocol(why: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::Protocol, why)
}

fn too_big(why: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::TooBig, why)
}

/// A frame header, read.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3: no extension wscope speaks uses them.
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// How many bytes the header whose second byte is `b1` takes.
fn header_len(b1: u8) -> usize {
    let extended = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if b1 & 0x80 != 0 { 4 } else { 0 }
}

impl Header {
    fn parse(h: &[u8]) -> Self {
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut n = [0; 8];
                n.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        Self {
            fin: h[0] & 0x80 != 0,
            rsv1: h[0] & RSV1 != 0,
            rsv23: h[0] & 0x30 != 0,
            opcode: h[0] & 0x0f,
            mask: (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]),
            len,
        }
    }

    /// Writes this header, with the shortest length encoding, into `out`; returns its length.
    fn encode(&self, out: &mut [u8; MAX_HEADER]) -> usize {
        out[0] = u8::from(self.fin) << 7 | u8::from(self.rsv1) << 6 | self.opcode;
        let masked = u8::from(self.mask.is_some()) << 7;
        let mut at = match self.len {
            0..=125 => {
                out[1] = masked | self.len as u8;
                2
            }
            126..=0xffff => {
                out[1] = masked | 126;
                out[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
                4
            }
            _ => {
                out[1] = masked | 127;
                out[2..10].copy_from_slice(&self.len.to_be_bytes());
                10
            }
        };
        if let Some(mask) = self.mask {
            out[at..at + 4].copy_from_slice(&mask);
            at += 4;
        }
        at
    }
}

/// A frame header as its bytes arrive, possibly over several reads.
#[derive(Default)]
struct HeaderBuf {
    bytes: [u8; MAX_HEADER],
    have: u8,
}

impl HeaderBuf {
    /// Whether no byte of a header is in yet (the stream is at a frame boundary).
    fn is_empty(&self) -> bool {
        self.have == 0
    }

    /// Takes what `bytes` holds of the header: how many bytes it took, and the header once
    /// complete (its bytes stay in [`HeaderBuf::raw`] until the next one begins).
    fn take(&mut self, bytes: &[u8]) -> (usize, Option<Header>) {
        let mut taken = 0;
        loop {
            let have = usize::from(self.have);
            let need = if have < 2 {
                2
            } else {
                header_len(self.bytes[1])
            };
            if have == need {
                self.have = 0;
                return (taken, Some(Header::parse(&self.bytes[..need])));
            }
            let n = (need - have).min(bytes.len() - taken);
            if n == 0 {
                return (taken, None);
            }
            self.bytes[have..have + n].copy_from_slice(&bytes[taken..taken + n]);
            self.have += n as u8;
            taken += n;
        }
    }

    /// The bytes of the header last completed.
    fn raw(&self) -> &[u8] {
        &self.bytes[..header_len(self.bytes[1])]
    }
}

/// What the frame being read is, for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Control,
    /// A data frame handed to the engine as it is.
    Plain,
    /// A data frame of a compressed message, inflated by the guard.
    Compressed,
}

/// The data message being received.
#[derive(Clone, Copy, Debug)]
struct Msg {
    /// Payload bytes its frames declared so far.
    wire: u64,
    /// Bytes it inflated to so far (compressed messages).
    inflated: u64,
    compressed: bool,
    /// Its connection kept the inflating state between reads: it is charged [`INFLATE_COST`].
    keeps_inflater: bool,
}

/// Room a compressed message gets on the wire beyond the limits: deflate may make incompressible
/// data slightly larger (5 bytes per stored block of up to 64 KiB), and that is no reason to
/// refuse a message whose inflated size is within the limit.
fn compressed_slack(limit: u64) -> u64 {
    limit.saturating_add(limit / 8192 + 64)
}

/// The reading side: the client's frames.
struct Reader {
    frame_limit: u64,
    message_limit: u64,
    deflate: bool,
    wire: Tripwire,
    charge: Charge,
    header: HeaderBuf,
    /// Payload bytes of the current frame still to come (0 at a header).
    left: u64,
    frame: Frame,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes of the current frame read so far (the mask's phase).
    done: u64,
    message: Option<Msg>,
    /// Present while the guard feeds the engine bytes it made (a compressed message); the rest
    /// of the time the engine reads the socket's bytes in place.
    inflating: Option<Box<Inflating>>,
}

/// What a read of the socket's bytes in place found.
enum Scan {
    /// Every byte may go to the engine.
    All,
    /// Only the bytes before `at`: a frame the engine must not see begins there.
    Stop(usize, Stop),
}

enum Stop {
    Violation(TransportError),
    /// A compressed message, for the guard to inflate.
    Compressed,
}

impl Reader {
    /// Checks a complete header against the protocol, the limits and the budget, and makes its
    /// frame the current one.
    fn begin(&mut self, h: &Header) -> Result<(), TransportError> {
        let Some(mask) = h.mask else {
            return Err(protocol("unmasked frame from a client"));
        };
        if h.rsv23 {
            return Err(protocol("reserved bits RSV2/RSV3 set"));
        }
        let compressed_start = h.rsv1 && self.deflate && matches!(h.opcode, 1 | 2);
        if h.rsv1 && !compressed_start {
            return Err(protocol(if self.deflate {
                "RSV1 set on a frame other than a message's first"
            } else {
                "RSV1 set without permessage-deflate"
            }));
        }
        self.frame = match h.opcode {
            0x8..=0xa if !h.fin => return Err(protocol("fragmented control frame")),
            0x8..=0xa if h.len > 125 => {
                return Err(protocol(format!("control frame of {} bytes", h.len)))
            }
            0x8..=0xa => Frame::Control,
            0..=2 => self.begin_data(h, compressed_start)?,
            op => return Err(protocol(format!("reserved opcode {op:#x}"))),
        };
        self.left = h.len;
        self.fin = h.fin;
        self.mask = mask;
        self.done = 0;
        if self.left == 0 {
            self.frame_done();
        }
        Ok(())
    }

    fn begin_data(&mut self, h: &Header, compressed_start: bool) -> Result<Frame, TransportError> {
        let msg = match (h.opcode, self.message) {
            (0, Some(msg)) => msg,
            (0, None) => return Err(protocol("continuation frame outside a fragmented message")),
            (_, Some(_)) => return Err(protocol("new message before the fragmented one ended")),
            (_, None) => Msg {
                wire: 0,
                inflated: 0,
                compressed: compressed_start,
                keeps_inflater: false,
            },
        };
        let (frame_limit, message_limit) = if msg.compressed {
            (
                compressed_slack(self.frame_limit),
                compressed_slack(self.message_limit),
            )
        } else {
            (self.frame_limit, self.message_limit)
        };
        if h.len > frame_limit {
            return Err(too_big(format!(
                "frame of {} bytes over the {}-byte frame limit",
                h.len, self.frame_limit
            )));
        }
        let wire = msg.wire.saturating_add(h.len);
        if wire > message_limit {
            return Err(too_big(format!(
                "message of {wire} bytes or more over the {}-byte limit",
                self.message_limit
            )));
        }
        if !msg.compressed {
            self.hold(wire)?;
        }
        self.message = Some(Msg { wire, ..msg });
        Ok(if msg.compressed {
            Frame::Compressed
        } else {
            Frame::Plain
        })
    }

    /// Charges the message in progress `total` bytes.
    fn hold(&mut self, total: u64) -> Result<(), TransportError> {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        self.charge.hold(total).map_err(|e| {
            TransportError::new(
                TransportErrorKind::Overloaded,
                format!("message of {total} bytes refused: {e}"),
            )
        })
    }

    /// The current frame's payload is all in: a plain message's last frame completes it.
    /// (A compressed message completes once inflated.)
    fn frame_done(&mut self) {
        if self.frame == Frame::Plain && self.fin {
            self.message = None;
            self.charge.release();
        }
    }

    /// Follows the frames in `bytes`, just read, which the engine reads in place.
    fn scan(&mut self, bytes: &[u8]) -> Scan {
        let (mut i, mut header_at) = (0, 0);
        while i < bytes.len() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += n;
                self.left -= n as u64;
                if self.left == 0 {
                    self.frame_done();
                }
                continue;
            }
            if self.header.is_empty() {
                header_at = i;
                if self.deflate && bytes[i] & RSV1 != 0 {
                    return Scan::Stop(i, Stop::Compressed);
                }
            }
            let (taken, header) = self.header.take(&bytes[i..]);
            i += taken;
            if let Some(h) = header {
                if let Err(e) = self.begin(&h) {
                    // A header begun in an earlier read is partly the engine's already; it
                    // never gets the rest.
                    return Scan::Stop(header_at, Stop::Violation(e));
                }
            }
        }
        Scan::All
    }
}

/// The state of handing an engine frames the guard made: while a compressed message comes in,
/// and until the bytes read with it are passed on.
struct Inflating {
    /// Bytes read from the socket; `input[pos..end]` not yet used, `input[..clear]` unmasked
    /// where compressed.
    input: Vec<u8>,
    pos: usize,
    end: usize,
    clear: usize,
    /// A frame header waiting for room in the engine's buffer: `head[head_pos..head_len]`.
    head: [u8; MAX_HEADER],
    head_pos: usize,
    head_len: usize,
    /// Inflated bytes; the first `body` from `staged_pos` are the payload of the frame whose
    /// header was queued last, the rest not yet in a frame.
    staged: Vec<u8>,
    staged_pos: usize,
    body: usize,
    /// The largest frame handed over.
    chunk: usize,
    z: Decompress,
    /// A compressed message is in progress.
    active: bool,
    /// Its opcode, and whether a frame of it went to the engine (the rest are continuations).
    opcode: u8,
    first_sent: bool,
    /// Bytes of the trailer inflated after its last frame.
    trailer: usize,
    /// The deflate stream ended (a final block) before the message did; the rest is ignored.
    ended: bool,
}

thread_local! {
    /// One spare [`Inflating`] per thread, so that a connection borrows one only while a
    /// compressed message comes in, without allocating it (zlib's inflate state included) each
    /// time.
    static SPARE: RefCell<Option<Box<Inflating>>> = const { RefCell::new(None) };
}

/// How a fill of the engine's buffer stopped.
enum Fill {
    NeedInput,
    OutFull,
}

impl Inflating {
    fn borrow(chunk: usize) -> Box<Self> {
        let mut t = SPARE.with(|s| s.borrow_mut().take()).unwrap_or_else(|| {
            Box::new(Self {
                input: vec![0; INFLATE_READ],
                pos: 0,
                end: 0,
                clear: 0,
                head: [0; MAX_HEADER],
                head_pos: 0,
                head_len: 0,
                staged: Vec::new(),
                staged_pos: 0,
                body: 0,
                chunk,
                z: Decompress::new(false),
                active: false,
                opcode: 0,
                first_sent: false,
                trailer: 0,
                ended: false,
            })
        });
        t.chunk = chunk;
        t
    }

    /// Puts this back as the thread's spare, holding nothing of a connection.
    fn give_back(mut self: Box<Self>) {
        self.input.truncate(INFLATE_READ);
        self.input.shrink_to(INFLATE_READ);
        (self.pos, self.end, self.clear) = (0, 0, 0);
        (self.head_pos, self.head_len) = (0, 0);
        self.staged.clear(); // at most a frame's worth, kept by the thread's spare
        (self.staged_pos, self.body) = (0, 0);
        self.active = false;
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.is_none() {
                *spare = Some(self);
            }
        });
    }

    /// Takes `bytes` as input (what a read in place found from a compressed frame on).
    fn load(&mut self, bytes: &[u8]) {
        if self.input.len() < bytes.len() {
            self.input.resize(bytes.len(), 0);
        }
        self.input[..bytes.len()].copy_from_slice(bytes);
        (self.pos, self.end, self.clear) = (0, bytes.len(), 0);
    }

    /// Hands over what is waiting (a header, a frame's payload); false when `out` filled first.
    fn flush(&mut self, out: &mut ReadBuf<'_>) -> bool {
        if self.head_pos < self.head_len {
            let n = (self.head_len - self.head_pos).min(out.remaining());
            out.put_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            if self.head_pos < self.head_len {
                return false;
            }
        }
        if self.body > 0 {
            let n = self.body.min(out.remaining());
            out.put_slice(&self.staged[self.staged_pos..self.staged_pos + n]);
            self.staged_pos += n;
            self.body -= n;
            if self.body > 0 {
                return false;
            }
            if self.staged_pos == self.staged.len() {
                self.staged.clear();
                self.staged_pos = 0;
            }
        }
        true
    }

    fn queue_head(&mut self, header: &[u8]) {
        self.head[..header.len()].copy_from_slice(header);
        (self.head_pos, self.head_len) = (0, header.len());
    }

    /// Frames every inflated byte not yet framed: a masked frame (key 0, so its payload reads as
    /// it is) of the message's opcode, or a continuation once one went.
    fn emit(&mut self, fin: bool) {
        let len = self.staged.len() - self.staged_pos;
        let header = Header {
            fin,
            rsv1: false,
            rsv23: false,
            opcode: if self.first_sent { 0 } else { self.opcode },
            mask: Some([0; 4]),
            len: len as u64,
        };
        let mut bytes = [0; MAX_HEADER];
        let n = header.encode(&mut bytes);
        self.queue_head(&bytes[..n]);
        self.body = len;
        self.first_sent = true;
    }

    fn staged_full(&self) -> bool {
        self.staged.len() - self.staged_pos >= self.chunk
    }

    /// Nothing of the connection is held: input used, nothing waiting, no message inflating.
    fn idle(&self) -> bool {
        self.pos == self.end && self.head_pos == self.head_len && self.body == 0 && !self.active
    }
}

impl Reader {
    /// Fills `out` from the input: frames passed through, compressed messages inflated.
    fn fill(&mut self, t: &mut Inflating, out: &mut ReadBuf<'_>) -> Result<Fill, TransportError> {
        loop {
            if !t.flush(out) || out.remaining() == 0 {
                return Ok(Fill::OutFull);
            }
            if self.left > 0 && self.frame == Frame::Compressed {
                if !self.inflate(t)? {
                    return Ok(Fill::NeedInput);
                }
            } else if self.left > 0 {
                let avail = t.end - t.pos;
                if avail == 0 {
                    return Ok(Fill::NeedInput);
                }
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(avail)
                    .min(out.remaining());
                out.put_slice(&t.input[t.pos..t.pos + n]);
                t.pos += n;
                self.left -= n as u64;
                if self.left == 0 {
                    self.frame_done();
                }
            } else if t.active && self.frame == Frame::Compressed && self.fin {
                self.finish(t)?;
            } else {
                if t.pos == t.end {
                    return Ok(Fill::NeedInput);
                }
                let (taken, header) = self.header.take(&t.input[t.pos..t.end]);
                t.pos += taken;
                let Some(h) = header else { continue };
                let starts = self.message.is_none();
                self.begin(&h)?;
                if self.frame != Frame::Compressed {
                    t.queue_head(self.header.raw());
                } else if starts {
                    t.z.reset(false);
                    (t.active, t.opcode, t.first_sent) = (true, h.opcode, false);
                    (t.trailer, t.ended) = (0, false);
                }
            }
        }
    }

    /// Inflates what the input holds of the current compressed frame; false when it holds
    /// nothing.
    fn inflate(&mut self, t: &mut Inflating) -> Result<bool, TransportError> {
        if t.staged_full() {
            t.emit(false);
            return Ok(true);
        }
        let avail = t.end - t.pos;
        if avail == 0 {
            return Ok(false);
        }
        let end = t.pos + usize::try_from(self.left).unwrap_or(usize::MAX).min(avail);
        if t.clear < end {
            let from = t.clear.max(t.pos);
            let phase = self.done + (from - t.pos) as u64;
            for (i, b) in t.input[from..end].iter_mut().enumerate() {
                *b ^= self.mask[((phase + i as u64) % 4) as usize];
            }
            t.clear = end;
        }
        let used = if t.ended {
            end - t.pos
        } else {
            let input = std::mem::take(&mut t.input);
            let used = self.inflate_some(t, &input[t.pos..end], FlushDecompress::None);
            t.input = input;
            used?.0
        };
        t.pos += used;
        self.left -= used as u64;
        self.done += used as u64;
        Ok(true)
    }

    /// The message's last frame is in: inflates the trailer, then hands over the last frame.
    fn finish(&mut self, t: &mut Inflating) -> Result<(), TransportError> {
        if t.staged_full() {
            t.emit(false);
            return Ok(());
        }
        if !t.ended {
            let (used, filled) =
                self.inflate_some(t, &TRAILER[t.trailer..], FlushDecompress::Sync)?;
            t.trailer += used;
            if t.trailer < TRAILER.len() || filled {
                return Ok(()); // more to inflate: called again
            }
        }
        t.emit(true);
        t.active = false;
        self.message = None;
        self.charge.release();
        Ok(())
    }

    /// Inflates from `input` into the staged bytes, no further than the message size limit
    /// allows plus one byte (which fails it); returns the bytes used and whether the output room
    /// was all filled.
    fn inflate_some(
        &mut self,
        t: &mut Inflating,
        input: &[u8],
        flush: FlushDecompress,
    ) -> Result<(usize, bool), TransportError> {
        let msg = self
            .message
            .as_mut()
            .ok_or_else(|| protocol("no message"))?;
        let allowed = (self.message_limit - msg.inflated.min(self.message_limit)).saturating_add(1);
        let room = (t.chunk - (t.staged.len() - t.staged_pos))
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let at = t.staged.len();
        t.staged.resize(at + room, 0);
        let (in_before, out_before) = (t.z.total_in(), t.z.total_out());
        let status = t.z.decompress(input, &mut t.staged[at..], flush);
        let used = (t.z.total_in() - in_before) as usize;
        let made = (t.z.total_out() - out_before) as usize;
        t.staged.truncate(at + made);
        match status {
            Err(e) => return Err(protocol(format!("invalid compressed data: {e}"))),
            Ok(Status::StreamEnd) => t.ended = true,
            Ok(_) if used == 0 && made == 0 && !input.is_empty() => {
                return Err(protocol("invalid compressed data: no progress"))
            }
            Ok(_) => {}
        }
        msg.inflated += made as u64;
        if msg.inflated > self.message_limit {
            return Err(too_big(format!(
                "compressed message inflates past the {}-byte limit",
                self.message_limit
            )));
        }
        self.hold_compressed()?;
        Ok((used, made == room))
    }

    /// Charges the compressed message in progress what it holds: its inflated bytes, and its
    /// inflater if the connection keeps it.
    fn hold_compressed(&mut self) -> Result<(), TransportError> {
        match self.message {
            Some(m) if m.compressed => {
                self.hold(m.inflated + if m.keeps_inflater { INFLATE_COST } else { 0 })
            }
            _ => Ok(()),
        }
    }
}

/// The outgoing side under permessage-deflate: the engine's frames, each whole data message
/// compressed (RFC 7692 §6.1). Fragmented messages (only tokio-websockets splits messages, those
/// over 4 MiB) and control frames go as they are.
struct Compressor {
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
    fn consume(&mut self, mut bytes: &[u8]) {
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
    fn poll_drain<S: AsyncWrite + Unpin>(
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

/// A client's socket behind the guard (server role). See the module documentation.
pub(crate) struct FrameGuard<S: Io> {
    /// The socket; taken only by `Drop`, to linger.
    io: Option<S>,
    read: Reader,
    /// Present when permessage-deflate compresses what the server sends.
    write: Option<Box<Compressor>>,
}

impl<S: Io> FrameGuard<S> {
    /// Guards `io` with `cfg`'s limits and budget and the negotiated compression, tripping
    /// `wire` on a violation.
    pub(crate) fn server(
        io: S,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        wire: Tripwire,
    ) -> Self {
        let write = deflate
            .and_then(|d| d.compress_window_bits())
            .map(|window_bits| {
                Box::new(Compressor {
                    window_bits,
                    header: HeaderBuf::default(),
                    left: 0,
                    gathering: None,
                    payload: Vec::new(),
                    fragmented: false,
                    out: Vec::new(),
                    out_pos: 0,
                })
            });
        let message_limit = cfg.max_message_size as u64;
        Self {
            io: Some(io),
            read: Reader {
                frame_limit: cfg.frame_limit() as u64,
                message_limit,
                deflate: deflate.is_some(),
                wire,
                charge: cfg.message_budget.charge(),
                header: HeaderBuf::default(),
                left: 0,
                frame: Frame::Control,
                fin: true,
                mask: [0; 4],
                done: 0,
                message: None,
                inflating: None,
            },
            write,
        }
    }

    /// Reads while the guard makes the engine's bytes (see [`Inflating`]).
    fn poll_inflating(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut t) = self.read.inflating.take() else {
            return Poll::Ready(Ok(()));
        };
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
                Ok(Fill::OutFull) => break Poll::Ready(Ok(())),
                Ok(Fill::NeedInput) if buf.filled().len() > start => break Poll::Ready(Ok(())),
                Ok(Fill::NeedInput) => {
                    if t.input.len() < INFLATE_READ {
                        t.input.resize(INFLATE_READ, 0);
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
        if t.idle() && self.read.header.is_empty() && !self.read.wire.is_tripped() {
            t.give_back(); // the engine reads the socket in place again
            return polled;
        }
        self.read.inflating = Some(t);
        match self.read.message.as_mut() {
            Some(m) if m.compressed && !m.keeps_inflater && polled.is_pending() => {
                // The message waits for the client: its connection keeps the inflater meanwhile.
                m.keeps_inflater = true;
                if let Err(e) = self.read.hold_compressed() {
                    self.read.wire.trip(e);
                }
            }
            _ => {}
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
        if this.read.wire.is_tripped() {
            return Poll::Pending; // the transport's reader yields the violation
        }
        if this.read.inflating.is_some() {
            return this.poll_inflating(cx, buf);
        }
        let start = buf.filled().len();
        let io = this.io.as_mut().ok_or_else(gone)?;
        ready!(Pin::new(io).poll_read(cx, buf))?;
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
            Scan::Stop(at, Stop::Compressed) => {
                let chunk = INFLATED_FRAME
                    .min(usize::try_from(this.read.frame_limit).unwrap_or(usize::MAX))
                    .max(1);
                let mut t = Inflating::borrow(chunk);
                t.load(&buf.filled()[start + at..]);
                buf.set_filled(start + at);
                this.read.inflating = Some(t);
                if at > 0 {
                    Poll::Ready(Ok(()))
                } else {
                    this.poll_inflating(cx, buf)
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
        let Some(c) = this.write.as_mut() else {
            return Pin::new(io).poll_write(cx, buf);
        };
        ready!(c.poll_drain(io, cx))?;
        c.consume(buf);
        // Start writing now; what the socket does not take goes on the next write or flush.
        if let Poll::Ready(Err(e)) = c.poll_drain(io, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
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
        let (Some(io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(linger(io));
    }
}

/// Half-closes a failed connection (its close frame is written) and reads what the client still
/// sends, until it hangs up or the linger is over, so that the kernel has no unread bytes to
/// answer with a reset when the socket is dropped.
async fn linger<S: Io>(mut io: S) {
    let drain = async {
        let _ = io.shutdown().await;
        let (mut scratch, mut read) = ([0u8; 4096], 0);
        while read < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use futures_util::FutureExt;
    use tokio::io::{duplex, DuplexStream};
    use wscope_core::MessageBudget;

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

    /// A guard over a pipe whose other end already holds `input`.
    async fn guard(
        limit: usize,
        input: &[u8],
    ) -> (FrameGuard<DuplexStream>, Tripwire, DuplexStream) {
        let (server, mut client) = duplex(4 << 20);
        client.write_all(input).await.unwrap();
        let cfg = SocketConfig::default()
            .max_message_size(limit)
            .message_budget(MessageBudget::new(1 << 30));
        let deflate =
            Deflate::negotiate([&axum::http::HeaderValue::from_static("permessage-deflate")]);
        let wire = Tripwire::default();
        (
            FrameGuard::server(server, &cfg, deflate, wire.clone()),
            wire,
            client,
        )
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

    /// The payloads of the frames in `bytes` (masked with key 0, as the guard makes them), and
    /// the opcode and FIN of each.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = header_len(bytes[1]);
            let h = Header::parse(&bytes[..n]);
            let end = n + h.len as usize;
            let payload: Vec<u8> = bytes[n..end]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ h.mask.unwrap()[i % 4])
                .collect();
            out.push((h.opcode, h.fin, payload));
            bytes = &bytes[end..];
        }
        out
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
        let held = g.read.inflating.as_ref().map_or(0, |t| t.staged.len());
        assert!(
            payload + held <= limit + 1,
            "inflated {} bytes",
            payload + held
        );
    }

    #[tokio::test]
    async fn inflated_frames_fit_the_smallest_engine_buffer_and_nothing_is_kept() {
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
        assert!(rest.iter().all(|f| f.2.len() <= INFLATED_FRAME));
        assert_eq!(*rest[rest.len() - 1], (0x1, true, b"plain".to_vec()));
        assert!(g.read.inflating.is_none(), "the inflating state went back");
        assert_eq!(g.read.charge.held(), 0);
    }

    #[tokio::test]
    async fn a_violation_in_a_header_split_over_reads_stops_the_engine_there() {
        let mut input = frame(0x82, b"fine");
        let len = input.len();
        input.extend(header_bytes(0x82, 1 << 40));
        let (server, mut client) = duplex(1 << 16);
        let cfg = SocketConfig::default();
        let wire = Tripwire::default();
        let mut g = FrameGuard::server(server, &cfg, None, wire.clone());
        let mut handed = Vec::new();
        for byte in &input {
            client.write_all(&[*byte]).await.unwrap();
            handed.extend(drain(&mut g, 64));
        }
        assert!(wire.is_tripped());
        // The good frame, then some of the header's bytes: never all of it, so the engine
        // never learns of the frame, let alone waits for its payload.
        assert_eq!(&handed[..len], &input[..len]);
        assert!(handed.len() < input.len(), "{}", handed.len());
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
