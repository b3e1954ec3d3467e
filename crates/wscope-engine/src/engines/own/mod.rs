//! wscope's own engine (`--engine wscope`): RFC 6455 and permessage-deflate written for
//! wscope, in either role, with the frame guard's checks made where frames are parsed (it does
//! not run behind `crate::guard`, whose pieces it shares: header coding, limits, lingering).
//!
//! One state object per connection, [`Core`], owns the stream: no split stream, no buffer held
//! while idle. Reads go into a buffer per thread ([`READ_BUF`]) in which every complete frame is
//! parsed and unmasked in place (`parse`); what the connection keeps between reads is a header
//! spill of at most 14 bytes and the message in progress while it spans reads or fragments (in a
//! box that exists only while they do), and the messages parsed but not yet yielded (likewise
//! boxed, none once they are): an idle connection's core holds none of these inline. Writes are corked (`write`): what
//! the driver queues, and every reply a read produces (pongs, the close reply, which the engine
//! sends itself as the driver expects), goes out in one write per flush, and the buffer is freed
//! once written.
//!
//! The core is the transport itself: a `Stream` of the frames in and a `Sink` of the frames out,
//! handed to the driver whole ([`Whole`]). The callback driver (`wscope serve`'s echo and chat
//! routes) owns and polls it for both directions, with no lock and no halves; an async handler's
//! socket and the writer, which poll the directions apart, get it split behind an uncontended
//! lock.
//!
//! # Layout
//! - `parse`: the peer's frames, checked, unmasked and assembled into messages.
//! - `write`: frames encoded into the cork and written.
//! - `mask`: the masking key applied a word at a time.

mod mask;
mod parse;
#[cfg(test)]
mod tests;
mod write;

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::ReadBuf;
use tokio::time::Sleep;
use wscope_core::{
    Charge, MemoryGauge, Message, Role, Transport, TransportError, TransportErrorKind, Whole,
};

use super::message::Outbound;
use crate::config::SocketConfig;
use crate::guard::header::RSV1;
use crate::guard::linger;
use crate::guard::read::humanize;
use crate::io::Io;
use parse::Parser;
use write::Out;

/// Bytes read from the socket at a time, into the thread's buffer.
const READ_SIZE: usize = 64 << 10;
/// Reads one poll of the reader makes at most before it yields to the runtime.
const READS_PER_POLL: usize = 16;

thread_local! {
    /// The read buffer of every connection this thread polls: a read's frames are all parsed
    /// before the poll returns, so nothing in it belongs to a connection afterwards.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// What the reader yields.
type Item = Result<Message, TransportError>;

/// Items waiting to be yielded, boxed so that a connection with none pays a pointer rather than
/// an empty deque's 32 bytes (an extra allocation only while several wait).
#[allow(clippy::box_collection)]
type Queue = Box<VecDeque<Item>>;

/// This engine over `io`, whose handshake is done, in `role`, with `cfg`'s limits and deadline,
/// charging partly received messages to `charge`; data messages compressed with a `window_bits`
/// window when given, and compressed messages from the peer inflated when `deflate`.
pub(super) fn take_over<S: Io>(
    io: S,
    role: Role,
    cfg: &SocketConfig,
    deflate: bool,
    window_bits: Option<u8>,
    charge: Charge,
    gauge: MemoryGauge,
) -> impl Transport {
    let mut core = Core::new(io, role, cfg, deflate, window_bits, charge);
    core.gauge = gauge;
    Whole::new(role, core)
}

/// One connection's state, polled for both directions. See the module documentation.
struct Core<S: Io> {
    /// The stream; taken only by `Drop`, to linger.
    io: Option<S>,
    role: Role,
    parser: Parser,
    out: Out,
    /// What waits to be yielded: the messages one read parsed after the one yielded at once,
    /// and errors to end with; allocated only while it holds any (a read that brings one
    /// message hands it straight out).
    queue: Option<Queue>,
    window_bits: Option<u8>,
    /// Bytes corked before a send waits for the socket.
    write_limit: usize,
    /// The masking keys' generator (client role).
    rng: u64,
    timeout: Option<Duration>,
    /// Armed while a message in progress waits for the peer.
    deadline: Option<Pin<Box<Sleep>>>,
    /// A close frame was queued to the peer.
    sent_close: bool,
    /// The connection broke the protocol or its deadline: it lingers when dropped.
    failed: bool,
    /// The reader yielded its end.
    ended: bool,
    /// Where what the connection holds is reported (`memoryBytes`), and what was reported last
    /// (reported again only when it changes: not per message on an idle-between-messages
    /// connection, whose holdings stay 0).
    gauge: MemoryGauge,
    reported: u32,
}

impl<S: Io> Core<S> {
    fn new(
        io: S,
        role: Role,
        cfg: &SocketConfig,
        deflate: bool,
        window_bits: Option<u8>,
        charge: Charge,
    ) -> Self {
        Self {
            io: Some(io),
            role,
            parser: Parser::new(cfg, role == Role::Server, deflate, charge),
            out: Out::default(),
            queue: None,
            window_bits,
            write_limit: cfg.write_buffer_size.max(1),
            rng: RandomState::new().hash_one(0u8) | 1,
            timeout: cfg.message_timeout,
            deadline: None,
            sent_close: false,
            failed: false,
            ended: false,
            gauge: MemoryGauge::detached(),
            reported: 0,
        }
    }

    fn io(&mut self) -> io::Result<&mut S> {
        self.io
            .as_mut()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Hands `item` out through `first` if it is free, or queues it behind what was.
    fn push(first: &mut Option<Item>, queue: &mut Option<Queue>, item: Item) {
        if first.is_none() && queue.is_none() {
            *first = Some(item);
        } else {
            queue.get_or_insert_with(Default::default).push_back(item);
        }
    }

    /// Queues `item`, to be yielded after what waits.
    fn queue(&mut self, item: Item) {
        Self::push(&mut None, &mut self.queue, item);
    }

    fn pop(&mut self) -> Option<Item> {
        let queue = self.queue.as_mut()?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queue = None;
        }
        item
    }

    /// A masking key (client role), or none (server role).
    fn key(&mut self) -> Option<[u8; 4]> {
        if self.role == Role::Server {
            return None;
        }
        // xorshift64: masking keys need to be unpredictable to scripts in a browser, not
        // cryptographically strong; the seed is the process's random hasher keys.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Some((self.rng as u32).to_ne_bytes())
    }

    /// Queues `msg` for the peer.
    fn send(&mut self, msg: Message) -> Result<(), TransportError> {
        if self.sent_close {
            return match msg {
                Message::Close(_) => Ok(()), // the close was sent already (a reply, say)
                _ => Err(TransportError::new(
                    TransportErrorKind::Gone,
                    "sending after the close frame",
                )),
            };
        }
        let rsv1 = if self.window_bits.is_some() { RSV1 } else { 0 };
        let (first, payload) = match Outbound::new(msg, self.window_bits)? {
            Outbound::Text(b) => (0x81 | rsv1, b),
            Outbound::Binary(b) => (0x82 | rsv1, b),
            Outbound::Ping(b) => (0x89, b),
            Outbound::Pong(b) => (0x8a, b),
            Outbound::Close(frame) => {
                self.sent_close = true;
                let mut body = Vec::new();
                if let Some(f) = frame {
                    body.extend(f.code.as_u16().to_be_bytes());
                    body.extend_from_slice(f.reason.as_bytes());
                }
                (0x88, Bytes::from(body))
            }
        };
        if first & 0x08 != 0 && payload.len() > 125 {
            return Err(crate::guard::check::protocol(format!(
                "control frame of {} bytes",
                payload.len()
            )));
        }
        let key = self.key();
        self.out.frame(first, &payload, key);
        Ok(())
    }

    /// Writes what is corked and flushes the stream.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let Self { io, out, .. } = self;
        let io = io
            .as_mut()
            .ok_or_else(|| gone(io::ErrorKind::NotConnected.into()))?;
        ready!(out.poll_write(io, cx)).map_err(gone)?;
        Pin::new(io).poll_flush(cx).map_err(gone)
    }

    /// Reads once into the thread's buffer and parses what came; the bytes read (0: end of
    /// stream). The first item parsed goes to `first`, when it is free and nothing is queued,
    /// the rest to the queue. Pings are answered and a close frame replied to here, corked.
    fn poll_read_parse(
        &mut self,
        cx: &mut Context<'_>,
        first: &mut Option<Item>,
    ) -> Poll<io::Result<usize>> {
        READ_BUF.with(|cell| {
            let mut spare;
            let mut borrowed = cell.try_borrow_mut();
            let buf: &mut [u8] = match borrowed.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => {
                    spare = vec![0; READ_SIZE];
                    &mut spare
                }
            };
            let mut read = ReadBuf::new(buf);
            ready!(Pin::new(self.io()?).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n > 0 && !self.parser.closed() {
                self.parse(read.filled_mut(), first);
            }
            Poll::Ready(Ok(n))
        })
    }

    fn parse(&mut self, bytes: &mut [u8], first: &mut Option<Item>) {
        let mut replies = Vec::new();
        let Self { parser, queue, .. } = self;
        let parsed = parser.parse(bytes, &mut |msg| {
            match &msg {
                Message::Ping(p) => replies.push(Message::Pong(p.clone())),
                Message::Close(f) => replies.push(Message::Close(f.as_ref().map(|f| {
                    wscope_core::CloseFrame {
                        code: f.code,
                        reason: String::new(),
                    }
                }))),
                _ => {}
            }
            Self::push(first, queue, Ok(msg));
        });
        for reply in replies {
            if self.sent_close {
                break;
            }
            if let Err(e) = self.send(reply) {
                Self::push(first, &mut self.queue, Err(e));
            }
        }
        if let Err(e) = parsed {
            self.failed = true;
            Self::push(first, &mut self.queue, Err(e));
        }
        if !self.parser.in_message() {
            self.deadline = None;
        }
    }

    /// The peer is awaited: a message in progress must come whole before its deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let (true, Some(timeout)) = (self.parser.in_message(), self.timeout) else {
            return Poll::Pending;
        };
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        self.deadline = None;
        self.failed = true;
        self.ended = true;
        Poll::Ready(Some(Err(TransportError::new(
            TransportErrorKind::TimedOut,
            format!("message not received in full within {}", humanize(timeout)),
        ))))
    }

    /// The close handshake is complete on the reading side: the server ends the stream, the
    /// client waits for the server to (bounded by the driver's close timeout).
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.role == Role::Server {
            if let Ok(io) = self.io() {
                let _ = ready!(Pin::new(io).poll_shutdown(cx));
            }
            self.ended = true;
            return Poll::Ready(None);
        }
        for _ in 0..READS_PER_POLL {
            // Nothing is parsed after the close frame: nothing comes out here.
            match ready!(self.poll_read_parse(cx, &mut None)) {
                Ok(0) | Err(_) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Yields `item`, the first of what waits.
    fn hand_out(&mut self, item: Item, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if item.is_err() {
            // An error is the last item: the stream ends with it.
            self.ended = true;
            self.queue = None;
        }
        // Replies this read produced start out now; the rest go with the next poll.
        if self.out.len() > 0 {
            if let Poll::Ready(Err(e)) = self.poll_flush(cx) {
                self.queue(Err(e));
            }
        }
        Poll::Ready(Some(item))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if let Some(item) = self.pop() {
            return self.hand_out(item, cx);
        }
        if self.ended || self.failed {
            self.ended = true;
            return Poll::Ready(None);
        }
        if self.out.len() > 0 {
            match self.poll_flush(cx) {
                Poll::Ready(Err(e)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                // A peer that sends pings and reads nothing is not read further.
                Poll::Pending if self.out.len() >= self.write_limit || self.parser.closed() => {
                    return Poll::Pending;
                }
                _ => {}
            }
        }
        if self.parser.closed() {
            return self.poll_closed(cx);
        }
        for _ in 0..READS_PER_POLL {
            let mut first = None;
            match self.poll_read_parse(cx, &mut first) {
                Poll::Pending => return self.poll_deadline(cx),
                Poll::Ready(Err(e)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(gone(e))));
                }
                Poll::Ready(Ok(0)) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(item) = first {
                        return self.hand_out(item, cx);
                    }
                    if self.queue.is_some() || self.parser.closed() {
                        return self.poll_next(cx);
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// What the connection holds now: the message in progress and a cut control frame (by
    /// capacity), what waits to be written, and the messages parsed but not yet handed on.
    fn held(&self) -> usize {
        let parsed = |item: &Item| item.as_ref().map_or(0, Message::payload_len);
        self.parser.held()
            + self.out.held()
            + self.queue.as_ref().map_or(0, |queue| {
                queue.iter().map(parsed).sum::<usize>()
                    + queue.capacity() * std::mem::size_of::<Item>()
            })
    }

    /// Reports what the connection holds to its gauge, if it changed.
    fn report(&mut self) {
        // What the gauge keeps: it saturates at 4 GiB.
        let held = u32::try_from(self.held()).unwrap_or(u32::MAX);
        if held != self.reported {
            self.reported = held;
            self.gauge.set(held as usize);
        }
    }
}

impl<S: Io> Drop for Core<S> {
    /// A failed connection lingers, as one the frame guard failed does (`guard/linger.rs`):
    /// half-closed, its peer's last bytes read, so that no reset overtakes the close frame.
    fn drop(&mut self) {
        if !self.failed {
            return;
        }
        if let Some(io) = self.io.take() {
            linger::spawn(io);
        }
    }
}

/// An I/O failure: the connection is gone.
fn gone(e: io::Error) -> TransportError {
    TransportError::from_cause(TransportErrorKind::Gone, &e)
}

/// The connection's frames in: read, parsed, and what it holds reported.
impl<S: Io> Stream for Core<S> {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let core = self.get_mut();
        let polled = core.poll_next(cx);
        core.report();
        polled
    }
}

/// The connection's frames out: corked, and written on flush (or once the cork is full).
impl<S: Io> Sink<Message> for Core<S> {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let core = self.get_mut();
        if core.out.len() >= core.write_limit {
            ready!(core.poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Self::Error> {
        self.get_mut().send(msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let core = self.get_mut();
        let polled = core.poll_flush(cx);
        core.report();
        polled
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let core = self.get_mut();
        ready!(core.poll_flush(cx))?;
        let io = core.io().map_err(gone)?;
        Pin::new(io).poll_shutdown(cx).map_err(gone)
    }
}
