//! The peer's frames, parsed where they were read: every complete frame in a read's bytes is
//! checked, unmasked in place and, once its message is whole, copied out once into the
//! message's [`Bytes`]. This is where the checks of the frame guard (`crate::guard`) are made
//! for this engine, once, as each header arrives and before a byte of its payload is held:
//!
//! - masking per role (a client masks, a server must not), reserved bits (RSV1 only on the
//!   first frame of a message under permessage-deflate), opcodes, control frames whole and at
//!   most 125 bytes, continuations only inside a fragmented message and no new data message
//!   inside one (1002);
//! - the frame limit on a frame's declared length and the message limit on a message's running
//!   total, and on what a compressed message inflates to (1009);
//! - the shared [`MessageBudget`](wscope_core::MessageBudget), charged the declared size of a
//!   message as its headers arrive and released once it is whole (1013);
//! - UTF-8 of text, checked as each fragment or read arrives so that an invalid prefix fails at
//!   once, and of a close frame's reason (1007); close frames' payloads and codes (1002).
//!
//! Between reads a connection keeps only the bytes of a header that a read cut (at most 14: the
//! spill), the frame and the message in progress (with a vector that exists only while a message
//! spans frames or reads) and the payload of a control frame that a read cut; all of it in one
//! box that exists only while any of it does, so an idle connection holds a null pointer here.

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use std::cell::RefCell;
use wscope_core::{Charge, CloseCode, CloseFrame, Message, TransportError, TransportErrorKind};

use super::mask;
use crate::config::SocketConfig;
use crate::engines::message::text;
use crate::guard::check::{self, protocol, too_big, Kind};
use crate::guard::header::{Header, HeaderBuf};
use crate::guard::read::TRAILER;

fn invalid_utf8(why: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::InvalidUtf8, why)
}

/// The frame whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes read so far (the mask's phase).
    done: u64,
}

/// The data message being received.
#[derive(Clone, Copy, Debug)]
struct Msg {
    text: bool,
    compressed: bool,
    /// Payload bytes its frames declared so far.
    wire: u64,
    /// How much of the message's bytes held so far is known to be UTF-8 (text only).
    checked: usize,
}

/// What a connection holds between reads while a frame or message is in progress: a cut
/// header, the frame and data message being received and their payloads. Boxed in [`Parser`]
/// only while there is any of it (see [`Progress::idle`]).
#[derive(Default)]
struct Progress {
    /// The bytes of a header a read did not bring whole (the spill).
    header: HeaderBuf,
    frame: Option<Frame>,
    message: Option<Msg>,
    /// The message in progress's payload, while it spans frames or reads; no capacity else.
    partial: Vec<u8>,
    /// The payload of a control frame a read cut; no capacity else.
    control: Vec<u8>,
}

impl Progress {
    /// Whether nothing is in progress: the stream is at a frame boundary outside a message.
    fn idle(&self) -> bool {
        self.header.is_empty()
            && self.frame.is_none()
            && self.message.is_none()
            && self.partial.capacity() == 0
            && self.control.capacity() == 0
    }
}

/// The reading side of one connection. See the module documentation.
pub(super) struct Parser {
    /// Whether the peer masks its frames: a client does, a server must not (RFC 6455 §5.1).
    peer_masks: bool,
    deflate: bool,
    /// A close frame was read: nothing after it is parsed.
    closed: bool,
    frame_limit: u64,
    message_limit: u64,
    charge: Charge,
    /// What is in progress between reads; none at a frame boundary outside a message (an idle
    /// connection's state), so a read that brings whole messages allocates nothing here.
    progress: Option<Box<Progress>>,
}

impl Parser {
    /// The reading side of a connection whose peer masks its frames if `peer_masks`, with
    /// `cfg`'s limits, charging `charge`, inflating compressed messages if `deflate`.
    pub(super) fn new(cfg: &SocketConfig, peer_masks: bool, deflate: bool, charge: Charge) -> Self {
        Self {
            peer_masks,
            deflate,
            closed: false,
            frame_limit: cfg.frame_limit() as u64,
            message_limit: cfg.max_message_size as u64,
            charge,
            progress: None,
        }
    }

    /// Whether a data message is partly received (its deadline runs while the peer is awaited).
    pub(super) fn in_message(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| p.message.is_some())
    }

    /// Whether the peer's close frame was read.
    pub(super) fn closed(&self) -> bool {
        self.closed
    }

    /// Bytes this side holds between reads (the spill aside): the message in progress and a
    /// cut control frame, by capacity.
    pub(super) fn held(&self) -> usize {
        self.progress
            .as_ref()
            .map_or(0, |p| p.partial.capacity() + p.control.capacity())
    }

    /// Whether the state of a frame or message in progress is allocated.
    #[cfg(test)]
    pub(super) fn busy(&self) -> bool {
        self.progress.is_some()
    }

    /// Parses `bytes`, just read, handing each message to `out` as it completes. An error ends
    /// the connection: nothing after it is parsed.
    pub(super) fn parse(
        &mut self,
        bytes: &mut [u8],
        out: &mut impl FnMut(Message),
    ) -> Result<(), TransportError> {
        // The state in progress, or a fresh one on the stack: boxed only if this read leaves
        // something in progress, and the box freed once a read leaves nothing.
        match self.progress.take() {
            Some(mut st) => {
                let parsed = self.run(&mut st, bytes, out);
                if !st.idle() {
                    self.progress = Some(st);
                }
                parsed
            }
            None => {
                let mut st = Progress::default();
                let parsed = self.run(&mut st, bytes, out);
                if !st.idle() {
                    self.progress = Some(Box::new(st));
                }
                parsed
            }
        }
    }

    fn run(
        &mut self,
        st: &mut Progress,
        mut bytes: &mut [u8],
        out: &mut impl FnMut(Message),
    ) -> Result<(), TransportError> {
        while !bytes.is_empty() && !self.closed {
            let Some(frame) = st.frame.as_mut() else {
                let (taken, header) = st.header.take(bytes);
                bytes = &mut std::mem::take(&mut bytes)[taken..];
                if let Some(h) = header {
                    self.begin(st, &h, out)?;
                }
                continue;
            };
            let n = usize::try_from(frame.left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let (chunk, rest) = std::mem::take(&mut bytes).split_at_mut(n);
            bytes = rest;
            if let Some(key) = frame.mask {
                mask::apply(chunk, key, (frame.done % 4) as usize);
            }
            frame.left -= n as u64;
            frame.done += n as u64;
            self.payload(st, chunk, out)?;
        }
        Ok(())
    }

    /// Checks a complete header against the protocol, the limits and the budget, and makes its
    /// frame the current one.
    fn begin(
        &mut self,
        st: &mut Progress,
        h: &Header,
        out: &mut impl FnMut(Message),
    ) -> Result<(), TransportError> {
        let (mask, kind) = check::header(h, self.peer_masks, self.deflate)?;
        if let Kind::Data { compressed_start } = kind {
            check::fragment(h.opcode, st.message.is_some())?;
            let msg = st.message.unwrap_or(Msg {
                text: h.opcode == 1,
                compressed: compressed_start,
                wire: 0,
                checked: 0,
            });
            let wire = check::size(
                h.len,
                msg.wire,
                msg.compressed,
                self.frame_limit,
                self.message_limit,
            )?;
            self.hold(wire)?;
            st.message = Some(Msg { wire, ..msg });
        }
        st.frame = Some(Frame {
            fin: h.fin,
            opcode: h.opcode,
            mask,
            left: h.len,
            done: 0,
        });
        if h.len == 0 {
            self.payload(st, &mut [], out)?;
        }
        Ok(())
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

    /// Takes `chunk`, unmasked payload of the current frame (all of it that this read holds).
    fn payload(
        &mut self,
        st: &mut Progress,
        chunk: &mut [u8],
        out: &mut impl FnMut(Message),
    ) -> Result<(), TransportError> {
        let Some(frame) = st.frame else {
            return Ok(());
        };
        let whole = frame.left == 0;
        if whole {
            st.frame = None;
        }
        if frame.opcode >= 8 {
            if !whole {
                st.control.extend_from_slice(chunk);
                return Ok(());
            }
            let payload = if st.control.is_empty() {
                Bytes::copy_from_slice(chunk)
            } else {
                st.control.extend_from_slice(chunk);
                Bytes::from(std::mem::take(&mut st.control))
            };
            out(self.control_frame(frame.opcode, payload)?);
            return Ok(());
        }
        let Some(mut msg) = st.message else {
            return Err(protocol("no message in progress"));
        };
        // The whole of a message's only bytes in this read: copied out once, straight.
        if whole && frame.fin && st.partial.is_empty() && frame.done == chunk.len() as u64 {
            let payload = Bytes::copy_from_slice(chunk);
            return self.message_done(st, msg, payload, out);
        }
        if st.partial.capacity() == 0 {
            let rest = usize::try_from(frame.left).unwrap_or(usize::MAX);
            st.partial.reserve(chunk.len().saturating_add(rest));
        }
        st.partial.extend_from_slice(chunk);
        if msg.text && !msg.compressed {
            msg.checked = utf8_prefix(&st.partial, msg.checked)?;
            st.message = Some(msg);
        }
        if whole && frame.fin {
            let payload = Bytes::from(std::mem::take(&mut st.partial));
            return self.message_done(st, msg, payload, out);
        }
        Ok(())
    }

    /// A data message is whole: inflated if compressed, released from the budget, handed on.
    fn message_done(
        &mut self,
        st: &mut Progress,
        msg: Msg,
        payload: Bytes,
        out: &mut impl FnMut(Message),
    ) -> Result<(), TransportError> {
        let payload = if msg.compressed {
            let inflated = inflate(&payload, self.message_limit)?;
            self.hold(msg.wire.saturating_add(inflated.len() as u64))?;
            inflated
        } else {
            payload
        };
        st.message = None;
        self.charge.release();
        out(if msg.text {
            text(payload)?
        } else {
            Message::Binary(payload)
        });
        Ok(())
    }

    fn control_frame(&mut self, opcode: u8, payload: Bytes) -> Result<Message, TransportError> {
        Ok(match opcode {
            0x9 => Message::Ping(payload),
            0xa => Message::Pong(payload),
            _ => {
                self.closed = true;
                Message::Close(close(&payload)?)
            }
        })
    }
}

/// How much of `bytes` is known to be UTF-8, given that `checked` bytes were: fails as soon as
/// the bytes cannot be the start of UTF-8 text (an incomplete character at the end may be
/// completed by the next bytes).
fn utf8_prefix(bytes: &[u8], checked: usize) -> Result<usize, TransportError> {
    match std::str::from_utf8(&bytes[checked..]) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() => Ok(checked + e.valid_up_to()),
        Err(e) => Err(invalid_utf8(format!("text is not UTF-8: {e}"))),
    }
}

/// A close frame's payload: empty, or a code that may be sent and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Option<CloseFrame>, TransportError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(protocol("close frame with a 1-byte payload")),
        [a, b, reason @ ..] => (u16::from_be_bytes([*a, *b]), reason),
    };
    let code = CloseCode::new(code).map_err(|_| protocol(format!("invalid close code {code}")))?;
    let reason = std::str::from_utf8(reason)
        .map_err(|e| invalid_utf8(format!("close reason is not UTF-8: {e}")))?;
    Ok(Some(CloseFrame {
        code,
        reason: reason.to_owned(),
    }))
}

thread_local! {
    /// One inflater per thread: without context takeover each message is inflated on its own,
    /// so no connection keeps zlib's state.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A permessage-deflate message body inflated (RFC 7692 §7.2.2: with the trailer appended), no
/// further than `limit` bytes plus one (which fails it).
fn inflate(body: &[u8], limit: u64) -> Result<Bytes, TransportError> {
    let mut z = INFLATER
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| Decompress::new(false));
    z.reset(false);
    let inflated = inflate_with(&mut z, body, limit);
    INFLATER.with(|s| *s.borrow_mut() = Some(z));
    inflated.map(Bytes::from)
}

fn inflate_with(z: &mut Decompress, body: &[u8], limit: u64) -> Result<Vec<u8>, TransportError> {
    let allowed = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut out = Vec::with_capacity(body.len().saturating_mul(2).clamp(64, allowed));
    for input in [body, &TRAILER[..]] {
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                let room = allowed - out.len().min(allowed);
                if room == 0 {
                    return Err(too_big(format!(
                        "compressed message inflates past the {limit}-byte limit"
                    )));
                }
                out.reserve(out.capacity().max(1024).min(room));
            }
            let (in_before, out_before) = (z.total_in(), z.total_out());
            let status = z
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                .map_err(|e| protocol(format!("invalid compressed data: {e}")))?;
            let took = (z.total_in() - in_before) as usize;
            let made = (z.total_out() - out_before) as usize;
            used += took;
            if out.len() as u64 > limit {
                return Err(too_big(format!(
                    "compressed message inflates past the {limit}-byte limit"
                )));
            }
            if status == Status::StreamEnd {
                return Ok(out); // a final block: what follows is ignored
            }
            if used == input.len() && out.len() < out.capacity() {
                break;
            }
            if took == 0 && made == 0 && out.len() < out.capacity() {
                return Err(protocol("invalid compressed data: no progress"));
            }
        }
    }
    Ok(out)
}
