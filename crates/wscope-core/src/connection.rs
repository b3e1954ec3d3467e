//! One tracked connection: its registry entry, the handle others use to reach it, and the
//! drop-guarded [`Connection`] that the engine integration drives.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::close::{CloseCode, CloseFrame, CloseRecord, Initiator, ReasonTooLong};
use crate::id::ConnectionId;
use crate::message::Message;
use crate::outbox::{Outbox, SendError};
use crate::registry::Shared;
use crate::strings::SharedStr;

/// The lifecycle of a connection, as the reference names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum ConnectionState {
    /// The upgrade was accepted; the handshake is not complete yet.
    Connecting = 0,
    /// The WebSocket is open.
    Open = 1,
    /// A close frame was sent or received; the handshake is not complete.
    Closing = 2,
    /// The connection is over; the entry is stale until its owner drops it or a sweep removes it.
    Closed = 3,
}

impl ConnectionState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Open,
            2 => Self::Closing,
            _ => Self::Closed,
        }
    }

    /// The reference's name (`"OPEN"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "CONNECTING",
            Self::Open => "OPEN",
            Self::Closing => "CLOSING",
            Self::Closed => "CLOSED",
        }
    }
}

/// What is known of a connection when it is registered.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMeta {
    /// The client's address (after trusted-proxy resolution), if known.
    pub remote_addr: Option<IpAddr>,
    /// The `User-Agent` header; cut to the registry's bound when stored.
    pub user_agent: Option<String>,
    /// The request path the socket was accepted on (`/ws/chat`).
    pub path: String,
}

/// A registry entry. Every field the hot path touches is an atomic; nothing here is locked while
/// a message is read or written except the outbox's short critical sections.
///
/// `repr(C)` with the fields a snapshot reads first, so reading one entry touches as few cache
/// lines as possible (a snapshot of 100k entries is bound by memory latency, not arithmetic).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Entry {
    /// Sequence number, the registry key (the public id adds the registry's prefix).
    pub(crate) seq: u64,
    /// When it was registered (clock nanos).
    pub(crate) connected_at: u64,
    /// Last frame sent or received, data or control (clock nanos).
    pub(crate) last_activity: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Request path (shared with the other connections on it).
    pub(crate) path: SharedStr,
    /// Bounded user agent (shared likewise).
    pub(crate) user_agent: Option<SharedStr>,
    /// Client address after proxy resolution.
    pub(crate) remote_addr: Option<IpAddr>,
    /// [`ConnectionState`] as u8.
    pub(crate) state: AtomicU8,
    /// Set when the connection is being failed (RFC 6455 §7.1.7): the writer drops it as soon as
    /// the close frame is out, without waiting for the peer's reply.
    pub(crate) fail_fast: AtomicBool,
    /// Outbound queue the writer drains (its counters come first).
    pub(crate) outbox: Outbox,
    /// Cancelled to drop the connection at once (drain deadline passed, writer failed).
    pub(crate) cancel: CancellationToken,
    /// The first close event: who, code, reason.
    pub(crate) close_record: Mutex<Option<CloseRecord>>,
}

impl Entry {
    pub(crate) fn state(&self) -> ConnectionState {
        ConnectionState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves the state forward only (OPEN never goes back to CONNECTING, CLOSED is final).
    fn advance_state(&self, to: ConnectionState) {
        self.state.fetch_max(to as u8, Ordering::AcqRel);
    }

    /// Keeps the first close record; later ones are ignored.
    fn record_close(&self, record: CloseRecord) {
        let mut slot = self.close_record.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(record);
        }
    }

    /// The connection is dropped without a finished close handshake: whatever started the close,
    /// the record now says the deadline ended it (keeping the code that was sent, if any).
    pub(crate) fn record_dropped(&self, reason: &str) {
        let mut slot = self.close_record.lock().unwrap_or_else(|e| e.into_inner());
        let code = slot.as_ref().and_then(|r| r.code);
        *slot = Some(CloseRecord {
            initiator: Initiator::Deadline,
            code,
            reason: reason.to_owned(),
        });
    }

    pub(crate) fn close_record(&self) -> Option<CloseRecord> {
        self.close_record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests a close on behalf of `initiator`; the first request wins.
    pub(crate) fn request_close(&self, frame: CloseFrame, initiator: Initiator) -> bool {
        let record = CloseRecord {
            initiator,
            code: Some(frame.code.as_u16()),
            reason: frame.reason.clone(),
        };
        if self.outbox.request_close(frame) {
            self.record_close(record);
            true
        } else {
            false
        }
    }
}

/// A cheap, cloneable reference to a live connection: send to it, close it, read its figures.
///
/// Returned by [`crate::Registry::active_connections`]. Sending never waits: a full queue is an
/// error ([`SendError::QueueFull`]), so a broadcast is never held up by one slow client.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    pub(crate) entry: Arc<Entry>,
    pub(crate) shared: Arc<Shared>,
}

impl ConnectionHandle {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.shared.id_of(self.entry.seq)
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.entry.state()
    }

    /// The request path it was accepted on.
    pub fn path(&self) -> &str {
        &self.entry.path
    }

    /// The client's address, if known.
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.entry.remote_addr
    }

    /// The user agent, if sent (bounded in length).
    pub fn user_agent(&self) -> Option<&str> {
        self.entry.user_agent.as_deref()
    }

    /// Queues a message without waiting.
    pub fn send(&self, msg: Message) -> Result<(), SendError> {
        self.entry.outbox.try_push(msg)
    }

    /// Closes the connection after what is queued to it is flushed. Returns false when it was
    /// already closing.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<bool, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        Ok(self.entry.request_close(frame, Initiator::Admin))
    }
}

/// The engine side of a tracked connection, owned by the socket task(s). Dropping the last
/// `Connection` removes the entry from the registry, however the connection ended.
#[derive(Debug)]
pub struct Connection {
    pub(crate) entry: Arc<Entry>,
    pub(crate) shared: Arc<Shared>,
}

impl Connection {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.shared.id_of(self.entry.seq)
    }

    /// A handle others can keep to send to or close this connection.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            entry: self.entry.clone(),
            shared: self.shared.clone(),
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.entry.state()
    }

    /// The handshake completed: CONNECTING → OPEN.
    pub fn mark_open(&self) {
        self.touch();
        self.entry.advance_state(ConnectionState::Open);
    }

    /// A close frame was sent or received.
    pub fn mark_closing(&self) {
        self.entry.advance_state(ConnectionState::Closing);
    }

    /// The connection is over (the stream ended or failed); the outbox refuses further sends.
    /// During a shutdown the entry leaves at once: the drain waits for handshakes, not for
    /// handlers that still hold a finished socket.
    pub fn mark_closed(&self) {
        self.entry.advance_state(ConnectionState::Closed);
        self.entry.outbox.shut();
        if self.shared.is_shutting_down() {
            self.shared.remove(&self.entry);
        }
    }

    /// Records activity without a message (a handshake step).
    #[inline]
    pub fn touch(&self) {
        let now = self.shared.clock.now_nanos();
        self.entry.last_activity.store(now, Ordering::Relaxed);
    }

    /// Records a frame received (data or control) of `len` payload bytes.
    #[inline]
    pub fn record_received(&self, len: usize) {
        self.entry.messages_in.fetch_add(1, Ordering::Relaxed);
        self.entry.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Records frames sent: `count` frames, `len` payload bytes in all.
    #[inline]
    pub fn record_sent(&self, count: usize, len: usize) {
        self.entry
            .messages_out
            .fetch_add(count as u64, Ordering::Relaxed);
        self.entry
            .bytes_out
            .fetch_add(len as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Queues a message, waiting while the queue is full.
    pub async fn send(&self, msg: Message) -> Result<(), SendError> {
        self.entry.outbox.push(msg).await
    }

    /// Queues a message without waiting.
    pub fn try_send(&self, msg: Message) -> Result<(), SendError> {
        self.entry.outbox.try_push(msg)
    }

    /// Requests a close after the queue is flushed; the first request wins. Returns whether this
    /// one was first.
    pub fn request_close(&self, frame: CloseFrame, initiator: Initiator) -> bool {
        self.entry.request_close(frame, initiator)
    }

    /// Fails the connection: sends what is queued, then `frame`, then drops it without waiting
    /// for the peer's reply. Returns false if a close was already under way (nothing queued).
    pub fn fail_after_flush(&self, frame: CloseFrame) -> bool {
        self.entry.fail_fast.store(true, Ordering::Release);
        self.entry.request_close(frame, Initiator::Error)
    }

    /// Whether the connection is being failed (see [`Connection::fail_after_flush`]).
    pub fn fails_fast(&self) -> bool {
        self.entry.fail_fast.load(Ordering::Acquire)
    }

    /// Whether a close was requested or the connection is over.
    pub fn is_closing(&self) -> bool {
        self.entry.outbox.is_closed()
    }

    /// Records why the connection ended, if nothing was recorded before (the first cause wins:
    /// a client's close frame received after a server's close request does not overwrite it).
    pub fn record_close(&self, initiator: Initiator, code: Option<u16>, reason: impl Into<String>) {
        self.entry.record_close(CloseRecord {
            initiator,
            code,
            reason: reason.into(),
        });
    }

    /// The close handshake or flush did not finish in time: record the deadline as the cause.
    pub fn record_dropped(&self, reason: &str) {
        self.entry.record_dropped(reason);
    }

    /// Why it ended, once known.
    pub fn close_record(&self) -> Option<CloseRecord> {
        self.entry.close_record()
    }

    /// Waits until the writer has something to do.
    pub async fn outbound_ready(&self) {
        self.entry.outbox.ready().await
    }

    /// Takes every queued message into `out`, and a pending close (to be sent after them).
    pub fn drain_outbound(&self, out: &mut Vec<Message>) -> Option<CloseFrame> {
        self.entry.outbox.drain_into(out)
    }

    /// Completes when the connection must be dropped at once (drain deadline, fatal error).
    pub async fn cancelled(&self) {
        self.entry.cancel.cancelled().await
    }

    /// Drops the connection at once: readers and writers waiting on [`Connection::cancelled`] stop.
    pub fn abort(&self) {
        self.entry.cancel.cancel();
    }

    /// Whether [`Connection::abort`] (or the drain deadline) fired.
    pub fn is_aborted(&self) -> bool {
        self.entry.cancel.is_cancelled()
    }

    /// The registry's task tracker, for the tasks that serve this connection.
    pub fn task_tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.shared.tracker
    }

    /// How long a closing connection may take to flush and finish its handshake.
    pub fn close_timeout(&self) -> Duration {
        self.shared.config.drain_timeout
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.remove(&self.entry);
    }
}
