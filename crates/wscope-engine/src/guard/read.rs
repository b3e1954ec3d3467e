//! The guard's reading side: what it knows of the client's frames, and the two ways the engine
//! gets their bytes.
//!
//! - **In place**: the engine reads the socket into its own buffer, and the guard follows the
//!   frames in what was read ([`Reader::scan`]). Nothing is copied. This is how every small
//!   frame of a plain message arrives.
//! - **Fed**: the guard reads the socket into its own buffer ([`Feed`]) and hands the engine the
//!   frames it makes: a plain frame larger than [`PIECE`] in pieces of at most that size (each
//!   with its own header, the payload still masked with the client's key), a compressed message
//!   inflated into such pieces, and every header that one read did not bring whole (so the
//!   engine never sees a header it may not get the rest of).
//!
//! The engine is handed no frame larger than a piece, because every engine grows its read
//! buffer to the largest frame it was handed and keeps it for the connection's life: a client's
//! one 1 MB frame cost 1 MB for as long as it stayed connected.
//!
//! While no message is in progress and nothing waits to be handed over, the guard holds no
//! buffer and no zlib state: the feeding buffers and the inflater are borrowed from per-thread
//! spares, the feed while it holds bytes for the engine, the inflater for the span of one
//! compressed message (without context takeover there is nothing to keep between messages).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::ReadBuf;
use tokio::time::Sleep;
use wscope_core::{Charge, Role, TransportError, TransportErrorKind};

use super::check::{self, protocol, too_big, Kind};
use super::header::{Header, HeaderBuf, MAX_HEADER, RSV1};
use super::Tripwire;
use crate::config::SocketConfig;
use crate::deflate::Deflate;

/// The largest frame handed to an engine (smaller when the frame limit is): larger client frames
/// are cut into pieces of this size, and inflated bytes are framed in them. It is what the
/// engines' read buffers hold anyway (tokio-websockets and fastwebsockets read 8 KiB at a time)
/// and what a message may hold without being charged to the budget.
pub(super) const PIECE: usize = wscope_core::MessageBudget::SMALL_MESSAGE;
/// Bytes read from the socket at a time while the guard feeds the engine.
pub(super) const FEED_READ: usize = 8 << 10;
/// What RFC 7692 §7.2.2 has the receiver append to a message before inflating it.
pub(crate) const TRAILER: [u8; 4] = [0, 0, 0xff, 0xff];
/// What a compressed message is charged to the budget on top of its inflated bytes once its
/// connection keeps the inflater while waiting for the client (the message came slower than the
/// socket delivers): about the inflater's memory (zlib's inflate state and 32 KiB window, the
/// feeding buffers), so that slow compressed messages are bounded too. One that arrives whole is
/// not charged it.
pub(super) const INFLATE_COST: u64 = 64 << 10;

/// What the frame being read is, for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Frame {
    Control,
    /// A data frame handed to the engine as it is.
    Plain,
    /// A data frame larger than a piece: the engine gets it in pieces.
    Pieces,
    /// A data frame of a compressed message, inflated by the guard.
    Compressed,
}

/// The data message being received.
#[derive(Clone, Copy, Debug)]
pub(super) struct Msg {
    /// Payload bytes its frames declared so far.
    wire: u64,
    /// Bytes it inflated to so far (compressed messages).
    inflated: u64,
    pub(super) compressed: bool,
    /// Its connection kept the inflater while waiting for the client: it is charged
    /// [`INFLATE_COST`].
    keeps_inflater: bool,
}

/// The reading side: the peer's frames.
pub(super) struct Reader {
    /// Whether the peer masks its frames: a client does, a server must not (RFC 6455 §5.1).
    pub(super) peer_masks: bool,
    pub(super) frame_limit: u64,
    pub(super) message_limit: u64,
    pub(super) deflate: bool,
    /// The largest frame handed to the engine: [`PIECE`], or the frame limit if lower.
    pub(super) piece: usize,
    pub(super) wire: Tripwire,
    pub(super) charge: Charge,
    /// How long a message may wait for the rest of its bytes once the guard waits for them.
    pub(super) timeout: Option<Duration>,
    /// Armed while a message in progress waits for the client.
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
    /// The bytes of a header. In place, none are left between reads; while feeding, those of a
    /// header the guard holds back from the engine until it is whole.
    pub(super) header: HeaderBuf,
    /// Payload bytes of the current frame still to come (0 at a header).
    pub(super) left: u64,
    pub(super) frame: Frame,
    pub(super) fin: bool,
    pub(super) opcode: u8,
    pub(super) mask: [u8; 4],
    /// Payload bytes of the current frame read so far (the mask's phase).
    pub(super) done: u64,
    /// Bytes of the piece being handed to the engine still to come ([`Frame::Pieces`]).
    pub(super) piece_left: u64,
    pub(super) message: Option<Msg>,
    /// zlib's state and what the inflated frames need, for the span of a compressed message.
    pub(super) inflater: Option<Box<Inflater>>,
}

/// What a read of the socket's bytes in place found.
pub(super) enum Scan {
    /// Every byte may go to the engine.
    All,
    /// Only the bytes before `at`: the guard must stop the engine there.
    Stop(usize, Stop),
}

pub(super) enum Stop {
    Violation(TransportError),
    /// From here on the guard feeds the engine (a compressed message, a frame to cut into
    /// pieces, a header the read did not bring whole).
    Feed,
}

impl Reader {
    /// The reading side of a connection in `role` with `cfg`'s limits and deadline, charging
    /// `charge`, tripping `wire`.
    pub(super) fn new(
        cfg: &SocketConfig,
        role: Role,
        deflate: Option<Deflate>,
        charge: Charge,
        wire: Tripwire,
    ) -> Self {
        let frame_limit = cfg.frame_limit();
        Self {
            peer_masks: role == Role::Server,
            frame_limit: frame_limit as u64,
            message_limit: cfg.max_message_size as u64,
            deflate: deflate.is_some(),
            piece: PIECE.min(frame_limit).max(1),
            wire,
            charge,
            timeout: cfg.message_timeout,
            deadline: None,
            header: HeaderBuf::default(),
            left: 0,
            frame: Frame::Control,
            fin: true,
            opcode: 0,
            mask: [0; 4],
            done: 0,
            piece_left: 0,
            message: None,
            inflater: None,
        }
    }

    /// Whether the engine must be fed by the guard rather than read in place: a header is held
    /// back, a compressed message or a frame cut into pieces is in progress.
    pub(super) fn needs_feed(&self) -> bool {
        !self.header.is_empty()
            || self.message.is_some_and(|m| m.compressed)
            || (self.frame == Frame::Pieces && self.left > 0)
    }

    /// Checks a complete header against the protocol, the limits and the budget, and makes its
    /// frame the current one.
    fn begin(&mut self, h: &Header) -> Result<(), TransportError> {
        let (mask, kind) = check::header(h, self.peer_masks, self.deflate)?;
        self.frame = match kind {
            Kind::Control => Frame::Control,
            Kind::Data { compressed_start } => match self.begin_data(h, compressed_start)? {
                Frame::Plain if self.cut(h) => Frame::Pieces,
                frame => frame,
            },
        };
        self.left = h.len;
        self.fin = h.fin;
        self.opcode = h.opcode;
        self.mask = mask.unwrap_or([0; 4]); // unmasking with zeros changes nothing
        self.done = 0;
        self.piece_left = 0;
        if self.left == 0 {
            self.frame_done();
        }
        Ok(())
    }

    /// Whether a data frame goes to the engine in pieces.
    fn cut(&self, h: &Header) -> bool {
        matches!(h.opcode, 0..=2) && h.len > self.piece as u64
    }

    fn begin_data(&mut self, h: &Header, compressed_start: bool) -> Result<Frame, TransportError> {
        check::fragment(h.opcode, self.message.is_some())?;
        let msg = self.message.unwrap_or(Msg {
            wire: 0,
            inflated: 0,
            compressed: compressed_start,
            keeps_inflater: false,
        });
        let wire = check::size(
            h.len,
            msg.wire,
            msg.compressed,
            self.frame_limit,
            self.message_limit,
        )?;
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
        if matches!(self.frame, Frame::Plain | Frame::Pieces) && self.fin {
            self.message_done();
        }
    }

    /// The message is whole: its bytes leave the budget and its deadline is off.
    fn message_done(&mut self) {
        self.message = None;
        self.charge.release();
        self.deadline = None;
    }

    /// Follows the frames in `bytes`, just read, which the engine reads in place.
    pub(super) fn scan(&mut self, bytes: &[u8]) -> Scan {
        let mut i = 0;
        while i < bytes.len() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += n;
                self.left -= n as u64;
                self.done += n as u64;
                if self.left == 0 {
                    self.frame_done();
                }
                continue;
            }
            if self.deflate && bytes[i] & RSV1 != 0 {
                return Scan::Stop(i, Stop::Feed);
            }
            let (taken, header) = self.header.take(&bytes[i..]);
            let header = match header {
                Some(h) if !self.cut(&h) => h,
                // A header the read did not bring whole, or a frame to cut into pieces: the
                // guard takes it from here (and reads the header again).
                _ => {
                    self.header = HeaderBuf::default();
                    return Scan::Stop(i, Stop::Feed);
                }
            };
            if let Err(e) = self.begin(&header) {
                return Scan::Stop(i, Stop::Violation(e));
            }
            i += taken;
        }
        Scan::All
    }

    /// The guard waits for the client with a message in progress: from now on its connection
    /// keeps the inflater (charged), and the message's deadline runs. Trips the wire when the
    /// budget refuses the inflater or the deadline has passed; `cx` is woken at the deadline.
    pub(super) fn waiting(&mut self, cx: &mut Context<'_>) {
        let Some(msg) = self.message.as_mut() else {
            return;
        };
        if msg.compressed && !msg.keeps_inflater {
            msg.keeps_inflater = true;
            if let Err(e) = self.hold_compressed() {
                return self.wire.trip(e);
            }
        }
        let Some(timeout) = self.timeout else {
            return;
        };
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.wire.trip(TransportError::new(
                TransportErrorKind::TimedOut,
                format!("message not received in full within {}", humanize(timeout)),
            ));
        }
    }
}

/// `30s`, `1500ms`: a timeout as the settings write it.
pub(crate) fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The buffers of a connection the guard feeds: the socket's bytes it read, a header waiting
/// for room in the engine's buffer, inflated bytes. Borrowed from the thread's spare while they
/// hold something for the engine.
pub(super) struct Feed {
    /// Bytes read from the socket; `input[pos..end]` not yet used, `input[..clear]` unmasked
    /// where compressed.
    pub(super) input: Vec<u8>,
    pub(super) pos: usize,
    pub(super) end: usize,
    pub(super) clear: usize,
    /// A frame header waiting for room in the engine's buffer: `head[head_pos..head_len]`.
    head: [u8; MAX_HEADER],
    head_pos: usize,
    head_len: usize,
    /// Inflated bytes; the first `body` from `staged_pos` are the payload of the frame whose
    /// header was queued last, the rest not yet in a frame.
    pub(super) staged: Vec<u8>,
    staged_pos: usize,
    body: usize,
}

/// zlib's inflate state, and how the message it inflates is framed for the engine.
pub(super) struct Inflater {
    z: Decompress,
    /// The message's opcode, and whether a frame of it went to the engine (the rest are
    /// continuations).
    opcode: u8,
    first_sent: bool,
    /// Bytes of the trailer inflated after its last frame.
    trailer: usize,
    /// The deflate stream ended (a final block) before the message did; the rest is ignored.
    ended: bool,
}

thread_local! {
    /// One spare [`Feed`] and one spare [`Inflater`] per thread, so that a connection borrows
    /// them only while it needs them, without allocating them (zlib's state included) each time.
    static SPARE_FEED: RefCell<Option<Box<Feed>>> = const { RefCell::new(None) };
    static SPARE_INFLATER: RefCell<Option<Box<Inflater>>> = const { RefCell::new(None) };
}

/// How a fill of the engine's buffer stopped.
pub(super) enum Fill {
    NeedInput,
    /// The engine has bytes: its buffer is full, or a frame's last bytes went. The guard hands
    /// over one frame a read at most, so an engine's buffer holds no more than the frame it
    /// parses and the next one's header (with two, the engines' buffers doubled and stayed so).
    Handed,
}

/// What [`Feed::flush`] handed over.
enum Flushed {
    /// Not all: `out` is full.
    Partly,
    /// All that waited, the last of a frame's payload among it.
    FrameEnd,
    /// All that waited (a header, or nothing).
    All,
}

impl Feed {
    pub(super) fn borrow() -> Box<Self> {
        SPARE_FEED
            .with(|s| s.borrow_mut().take())
            .unwrap_or_else(|| {
                Box::new(Self {
                    input: vec![0; FEED_READ],
                    pos: 0,
                    end: 0,
                    clear: 0,
                    head: [0; MAX_HEADER],
                    head_pos: 0,
                    head_len: 0,
                    staged: Vec::new(),
                    staged_pos: 0,
                    body: 0,
                })
            })
    }

    /// Whether nothing is held for the engine: input used, no header or payload waiting, no
    /// inflated byte unframed.
    pub(super) fn is_drained(&self) -> bool {
        self.pos == self.end
            && self.head_pos == self.head_len
            && self.body == 0
            && self.staged_pos == self.staged.len()
    }

    /// Puts this back as the thread's spare, holding nothing of a connection.
    pub(super) fn give_back(mut self: Box<Self>) {
        self.input.truncate(FEED_READ);
        self.input.shrink_to(FEED_READ);
        (self.pos, self.end, self.clear) = (0, 0, 0);
        (self.head_pos, self.head_len) = (0, 0);
        self.staged.clear(); // at most a piece's worth, kept by the thread's spare
        (self.staged_pos, self.body) = (0, 0);
        SPARE_FEED.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.is_none() {
                *spare = Some(self);
            }
        });
    }

    /// Takes `bytes` as input (what a read in place found from where the guard takes over).
    pub(super) fn load(&mut self, bytes: &[u8]) {
        if self.input.len() < bytes.len() {
            self.input.resize(bytes.len(), 0);
        }
        self.input[..bytes.len()].copy_from_slice(bytes);
        (self.pos, self.end, self.clear) = (0, bytes.len(), 0);
    }

    /// Hands over what is waiting (a header, a frame's payload): whether all of it went, and
    /// whether a frame's payload ended with it.
    fn flush(&mut self, out: &mut ReadBuf<'_>) -> Flushed {
        if self.head_pos < self.head_len {
            let n = (self.head_len - self.head_pos).min(out.remaining());
            out.put_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            if self.head_pos < self.head_len {
                return Flushed::Partly;
            }
        }
        if self.body == 0 {
            return Flushed::All;
        }
        let n = self.body.min(out.remaining());
        out.put_slice(&self.staged[self.staged_pos..self.staged_pos + n]);
        self.staged_pos += n;
        self.body -= n;
        if self.body > 0 {
            return Flushed::Partly;
        }
        if self.staged_pos == self.staged.len() {
            self.staged.clear();
            self.staged_pos = 0;
        }
        Flushed::FrameEnd
    }

    fn queue_head(&mut self, header: &[u8]) {
        self.head[..header.len()].copy_from_slice(header);
        (self.head_pos, self.head_len) = (0, header.len());
    }

    fn queue_header(&mut self, header: &Header) {
        let mut bytes = [0; MAX_HEADER];
        let n = header.encode(&mut bytes);
        self.queue_head(&bytes[..n]);
    }

    /// Inflated bytes not yet in a frame.
    fn unframed(&self) -> usize {
        self.staged.len() - self.staged_pos - self.body
    }
}

impl Inflater {
    fn borrow(opcode: u8) -> Box<Self> {
        let mut inflater = SPARE_INFLATER
            .with(|s| s.borrow_mut().take())
            .unwrap_or_else(|| {
                Box::new(Self {
                    z: Decompress::new(false),
                    opcode: 0,
                    first_sent: false,
                    trailer: 0,
                    ended: false,
                })
            });
        inflater.z.reset(false);
        (inflater.opcode, inflater.first_sent) = (opcode, false);
        (inflater.trailer, inflater.ended) = (0, false);
        inflater
    }

    fn give_back(self: Box<Self>) {
        SPARE_INFLATER.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.is_none() {
                *spare = Some(self);
            }
        });
    }
}

impl Reader {
    /// Fills `out` from the feed: frames passed through or cut into pieces, compressed messages
    /// inflated.
    pub(super) fn fill(
        &mut self,
        t: &mut Feed,
        out: &mut ReadBuf<'_>,
    ) -> Result<Fill, TransportError> {
        loop {
            match t.flush(out) {
                Flushed::Partly | Flushed::FrameEnd => return Ok(Fill::Handed),
                Flushed::All if out.remaining() == 0 => return Ok(Fill::Handed),
                Flushed::All => {}
            }
            if self.left > 0 {
                match self.frame {
                    Frame::Compressed => {
                        if !self.inflate(t)? {
                            return Ok(Fill::NeedInput);
                        }
                    }
                    Frame::Pieces if self.piece_left == 0 => self.next_piece(t),
                    _ => {
                        let avail = t.end - t.pos;
                        if avail == 0 {
                            return Ok(Fill::NeedInput);
                        }
                        let mut n = usize::try_from(self.left)
                            .unwrap_or(usize::MAX)
                            .min(avail)
                            .min(out.remaining());
                        if self.frame == Frame::Pieces {
                            n = n.min(usize::try_from(self.piece_left).unwrap_or(usize::MAX));
                            self.piece_left -= n as u64;
                        }
                        out.put_slice(&t.input[t.pos..t.pos + n]);
                        t.pos += n;
                        self.left -= n as u64;
                        self.done += n as u64;
                        if self.left == 0 {
                            self.frame_done();
                            return Ok(Fill::Handed);
                        }
                        if self.frame == Frame::Pieces && self.piece_left == 0 {
                            return Ok(Fill::Handed);
                        }
                    }
                }
            } else if self.frame == Frame::Compressed && self.fin && self.inflater.is_some() {
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
                match self.frame {
                    Frame::Control | Frame::Plain => t.queue_head(self.header.raw()),
                    Frame::Pieces => {} // each piece gets a header of its own
                    Frame::Compressed if starts => {
                        self.inflater = Some(Inflater::borrow(h.opcode));
                    }
                    Frame::Compressed => {}
                }
            }
        }
    }

    /// Queues the header of the next piece of a frame cut into pieces: the frame's opcode on the
    /// first (a continuation's stays one), FIN on the last if the frame had it, and the peer's
    /// mask (if it masks) at the phase the piece starts at, so that its payload goes over as it came.
    fn next_piece(&mut self, t: &mut Feed) {
        let len = self.left.min(self.piece as u64);
        let phase = (self.done % 4) as usize;
        let header = Header {
            fin: self.fin && len == self.left,
            rsv1: false,
            rsv23: false,
            opcode: if self.done == 0 { self.opcode } else { 0 },
            mask: self
                .peer_masks
                .then(|| std::array::from_fn(|i| self.mask[(phase + i) % 4])),
            len,
        };
        t.queue_header(&header);
        self.piece_left = len;
    }

    /// Frames the inflated bytes not yet framed: a frame masked as the peer's are (with key 0,
    /// so its payload reads as it is) of the message's opcode, or a continuation once one went.
    fn emit(&mut self, t: &mut Feed, fin: bool) -> Result<(), TransportError> {
        let inflater = self
            .inflater
            .as_mut()
            .ok_or_else(|| protocol("no compressed message"))?;
        let len = t.unframed();
        let header = Header {
            fin,
            rsv1: false,
            rsv23: false,
            opcode: if inflater.first_sent {
                0
            } else {
                inflater.opcode
            },
            mask: self.peer_masks.then_some([0; 4]),
            len: len as u64,
        };
        t.queue_header(&header);
        t.body = len;
        inflater.first_sent = true;
        Ok(())
    }

    /// Inflates what the input holds of the current compressed frame; false when it holds
    /// nothing (what was inflated is framed first, so the feed holds nothing while waiting).
    fn inflate(&mut self, t: &mut Feed) -> Result<bool, TransportError> {
        if t.unframed() >= self.piece {
            self.emit(t, false)?;
            return Ok(true);
        }
        let avail = t.end - t.pos;
        if avail == 0 {
            if t.unframed() > 0 {
                self.emit(t, false)?;
                return Ok(true);
            }
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
        let ended = self.inflater.as_ref().is_some_and(|i| i.ended);
        let used = if ended {
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

    /// The message's last frame is in: inflates the trailer, then hands over the last frame and
    /// gives the inflater back.
    fn finish(&mut self, t: &mut Feed) -> Result<(), TransportError> {
        if t.unframed() >= self.piece {
            return self.emit(t, false);
        }
        let (ended, trailer) = match &self.inflater {
            Some(i) => (i.ended, i.trailer),
            None => return Err(protocol("no compressed message")),
        };
        if !ended {
            let (used, filled) =
                self.inflate_some(t, &TRAILER[trailer..], FlushDecompress::Sync)?;
            let trailer = trailer + used;
            if let Some(i) = self.inflater.as_mut() {
                i.trailer = trailer;
            }
            if trailer < TRAILER.len() || filled {
                return Ok(()); // more to inflate: called again
            }
        }
        self.emit(t, true)?;
        if let Some(inflater) = self.inflater.take() {
            inflater.give_back();
        }
        self.message_done();
        Ok(())
    }

    /// Inflates from `input` into the staged bytes, no further than the message size limit
    /// allows plus one byte (which fails it); returns the bytes used and whether the output room
    /// was all filled.
    fn inflate_some(
        &mut self,
        t: &mut Feed,
        input: &[u8],
        flush: FlushDecompress,
    ) -> Result<(usize, bool), TransportError> {
        let (Some(msg), Some(inflater)) = (self.message.as_mut(), self.inflater.as_mut()) else {
            return Err(protocol("no compressed message"));
        };
        let allowed = (self.message_limit - msg.inflated.min(self.message_limit)).saturating_add(1);
        let room = (self.piece - t.unframed().min(self.piece))
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let at = t.staged.len();
        t.staged.resize(at + room, 0);
        let z = &mut inflater.z;
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let status = z.decompress(input, &mut t.staged[at..], flush);
        let used = (z.total_in() - in_before) as usize;
        let made = (z.total_out() - out_before) as usize;
        t.staged.truncate(at + made);
        match status {
            Err(e) => return Err(protocol(format!("invalid compressed data: {e}"))),
            Ok(Status::StreamEnd) => inflater.ended = true,
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
