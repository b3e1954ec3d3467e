//! One tracked connection as others hold it: the [`ConnectionHandle`] others use to reach it,
//! and the drop-guarded `Connection` that the driver owns and moves through its states (the
//! entry they both point at is in `entry`).
//!
//! Only this crate's driver changes a connection's state, counters and close record: the
//! sequencing lives in one place (`driver`), and the methods here are crate-private.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::admission::{LabelError, Permit};
use crate::close::{CloseCode, CloseFrame, CloseRecord, Initiator, ReasonTooLong};
use crate::entry::Entry;
use crate::id::ConnectionId;
use crate::message::Message;
use crate::outbox::{Drained, SendError};
use crate::shared::Shared;
use crate::state::{ConnectionState, NO_PING, REMOVED, RTT_REMOVED};

/// A cheap, cloneable reference to a live connection: send to it, close it, read its figures.
///
/// Returned by [`crate::Registry::active_connections`] and [`crate::TrackedSocket::handle`].
/// Sending never waits: a full queue is an error ([`SendError::QueueFull`]), so a broadcast is
/// never held up by one slow client.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    pub(crate) entry: Arc<Entry>,
    shared: Arc<Shared>,
}

impl ConnectionHandle {
    pub(crate) fn new(entry: Arc<Entry>, shared: Arc<Shared>) -> Self {
        Self { entry, shared }
    }

    /// The state of the registry it is tracked in.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

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

    /// Queues a message without waiting: `"text"`, a `String`, `Vec<u8>`, [`bytes::Bytes`] or a
    /// [`Message`]. A connection whose queue is full (a client that does not read) is a slow
    /// consumer: what was queued to it is dropped and it is closed with 1008 "slow consumer"
    /// (counted as closed by `limit`); the sender gets [`SendError::QueueFull`] and never waits.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        let result = self.entry.outbox.try_push(msg.into());
        if result == Err(SendError::QueueFull) {
            self.shared.slow_consumer(&self.entry);
        }
        result
    }

    /// Queues a message, waiting while the queue is full, as [`TrackedSocket::send`] does: what a
    /// relay feeding the connection from elsewhere uses, so that a client that stops reading
    /// stops the relay (and, through it, whoever feeds the relay) instead of being closed as a
    /// slow consumer. Fails once the connection is closing.
    ///
    /// [`TrackedSocket::send`]: crate::TrackedSocket::send
    pub async fn send_waiting(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.entry.outbox.push(msg.into()).await
    }

    /// Closes the connection, after what is queued to it, with the code and reason the upstream
    /// of a relay closed with (`wscope proxy`): recorded as closed by `upstream`. Returns false
    /// when it was already closing.
    pub fn close_from_upstream(
        &self,
        code: CloseCode,
        reason: &str,
    ) -> Result<bool, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        Ok(self.entry.request_close(frame, Initiator::Upstream))
    }

    /// Completes once the connection is over for good: its close handshake done or given up,
    /// or the drain deadline passed (at once if it is). A relay races its writes to the other
    /// side with it, so that a peer that reads nothing cannot keep a closed connection's task.
    pub async fn ended(&self) {
        self.entry.aborted().await;
    }

    /// The last ping's round-trip time in milliseconds, once a pong has come.
    pub fn rtt_ms(&self) -> Option<u32> {
        self.entry.rtt()
    }

    /// Attaches a user id (replacing any): shown as `user` in the stats and the connections API,
    /// which can filter and close by it. One longer than [`MAX_USER_LEN`](crate::MAX_USER_LEN)
    /// bytes is refused, and the user id is left as it was.
    pub fn set_user(&self, user: impl AsRef<str>) -> Result<(), LabelError> {
        self.entry.set_user(Some(user.as_ref()))
    }

    /// Removes the user id.
    pub fn clear_user(&self) {
        // Clearing checks nothing: it cannot fail.
        let _ = self.entry.set_user(None);
    }

    /// The user id, if one is attached.
    pub fn user(&self) -> Option<String> {
        self.entry.user().map(|u| u.to_string())
    }

    /// Adds a tag (shown in `tags`; the connections API can filter and close by it). Returns
    /// false if the connection had it already. A tag longer than
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes, or one past [`MAX_TAGS`](crate::MAX_TAGS), is refused.
    pub fn tag(&self, tag: impl AsRef<str>) -> Result<bool, LabelError> {
        self.entry.tag(tag.as_ref())
    }

    /// Removes a tag; false if the connection did not have it.
    pub fn untag(&self, tag: impl AsRef<str>) -> bool {
        self.entry.untag(tag.as_ref())
    }

    /// The tags, in the order first added.
    pub fn tags(&self) -> Vec<String> {
        self.entry.tags().iter().map(|t| t.to_string()).collect()
    }

    /// Closes the connection after what is queued to it is flushed. Returns false when it was
    /// already closing.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<bool, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        Ok(self.entry.request_close(frame, Initiator::Admin))
    }
}

/// The driver's side of a tracked connection. Dropping the last `Connection` removes the entry
/// from the registry, however the connection ended, and releases its admission [`Permit`].
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) entry: Arc<Entry>,
    shared: Arc<Shared>,
    /// What admission reserved for this connection; released with it.
    permit: Permit,
}

impl Connection {
    pub(crate) fn new(entry: Arc<Entry>, shared: Arc<Shared>, permit: Permit) -> Self {
        Self {
            entry,
            shared,
            permit,
        }
    }

    /// The connection's id.
    pub(crate) fn id(&self) -> ConnectionId {
        self.shared.id_of(self.entry.seq)
    }

    /// A handle others can keep to send to or close this connection.
    pub(crate) fn memory_gauge(&self) -> MemoryGauge {
        MemoryGauge::new(self.entry.clone())
    }

    pub(crate) fn handle(&self) -> ConnectionHandle {
        ConnectionHandle::new(self.entry.clone(), self.shared.clone())
    }

    /// The state of the registry it is tracked in.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The current state.
    pub(crate) fn state(&self) -> ConnectionState {
        self.entry.state()
    }

    /// Moves the state forward only (OPEN never goes back to CONNECTING; CLOSED is final), and
    /// the registry's counts by state with it.
    fn advance_state(&self, to: ConnectionState) {
        let prev = self.entry.state.fetch_max(to as u8, Ordering::AcqRel);
        if prev < to as u8 {
            self.shared
                .aggregates()
                .state_moved(ConnectionState::from_u8(prev), to);
        }
    }

    /// The handshake completed: CONNECTING → OPEN.
    pub(crate) fn mark_open(&self) {
        self.touch();
        self.advance_state(ConnectionState::Open);
    }

    /// A close frame was sent or received.
    pub(crate) fn mark_closing(&self) {
        self.advance_state(ConnectionState::Closing);
    }

    /// The connection is over (the stream ended or failed): it becomes CLOSED and its queue
    /// refuses further sends. The entry stays (stale) until its owner drops it or a sweep removes
    /// it — except during a shutdown, when it leaves at once: the drain waits for handshakes, not
    /// for handlers that still hold a finished socket.
    pub(crate) fn end(&self) {
        self.advance_state(ConnectionState::Closed);
        self.entry.outbox.shut();
        if self.shared.shutdown().is_begun_fenced() {
            self.shared.remove(&self.entry);
        }
    }

    /// Records activity (a message sent or received, or the handshake). The registry's activity sum moves only
    /// when the millisecond does, so a busy connection pays one load for most messages.
    #[inline]
    pub(crate) fn touch(&self) {
        let now = self.shared.clock.now_ms();
        let last = self.entry.last_activity_ms.load(Ordering::Relaxed);
        if last == now || last == REMOVED {
            return;
        }
        // Fails only if the entry was removed meanwhile (or another task of this connection
        // moved it first); either way the sum already holds the right value.
        if self
            .entry
            .last_activity_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.shared.aggregates().activity_moved(last, now);
        }
    }

    /// Records a text or binary message received, of `len` payload bytes.
    #[inline]
    pub(crate) fn record_received(&self, len: usize) {
        self.entry.messages_in.fetch_add(1, Ordering::Relaxed);
        self.entry.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        self.touch();
    }

    /// Records text and binary messages sent: `count` of them, `len` payload bytes in all.
    #[inline]
    pub(crate) fn record_sent(&self, count: usize, len: usize) {
        if count == 0 {
            return;
        }
        self.entry
            .messages_out
            .fetch_add(count as u64, Ordering::Relaxed);
        self.entry
            .bytes_out
            .fetch_add(len as u64, Ordering::Relaxed);
        self.touch();
    }

    /// A pong came: if a ping of ours was outstanding, its round trip is the RTT.
    pub(crate) fn pong(&self) {
        let sent = self.entry.ping_sent_ms.swap(NO_PING, Ordering::AcqRel);
        if sent == NO_PING {
            return; // unsolicited, or a reply to the client's own ping scheme
        }
        let rtt = u32::try_from(self.shared.clock.now_ms().saturating_sub(sent))
            .unwrap_or(RTT_REMOVED - 1)
            .min(RTT_REMOVED - 1);
        let old = self.entry.rtt_ms.load(Ordering::Relaxed);
        if old == RTT_REMOVED {
            return;
        }
        if self
            .entry
            .rtt_ms
            .compare_exchange(old, rtt, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.shared.aggregates().rtt_moved(old, rtt);
            self.shared.observers().rtt_measured(rtt);
        }
    }

    /// The registry clock's now, in ms.
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// The registry's limit on messages received per second (0: none).
    pub(crate) fn message_rate_limit(&self) -> u32 {
        self.shared.config().max_messages_per_second
    }

    /// Fails the connection because it broke a limit: `frame` after what is queued, counted as
    /// closed by `limit`.
    pub(crate) fn fail_for_limit(&self, frame: CloseFrame) -> bool {
        self.entry.fail_fast.store(true, Ordering::Release);
        self.entry.request_close(frame, Initiator::Limit)
    }

    /// Queues a message, waiting while the queue is full.
    pub(crate) async fn send(&self, msg: Message) -> Result<(), SendError> {
        self.entry.outbox.push(msg).await
    }

    /// Queues a message without waiting, past the queue's bounds if need be, waking no one: a
    /// callback handler's send, from inside its driver's poll, which takes the queue afterwards
    /// (and waits for [`Connection::room`] before reading on).
    pub(crate) fn send_unbounded(&self, msg: Message) -> Result<(), SendError> {
        self.entry.outbox.push_unbounded(msg)
    }

    /// Whether the queue is under its bounds (read without a lock).
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.entry.outbox.has_room()
    }

    /// Completes once the queue is under its bounds again or the connection is closing.
    pub(crate) async fn room(&self) {
        self.entry.outbox.room().await
    }

    /// Requests a close after the queue is flushed; the first request wins. Returns whether this
    /// one was first.
    pub(crate) fn request_close(&self, frame: CloseFrame, initiator: Initiator) -> bool {
        self.entry.request_close(frame, initiator)
    }

    /// Fails the connection: sends what is queued, then `frame`, then drops it without waiting
    /// for the peer's reply. Returns false if a close was already under way (nothing queued).
    pub(crate) fn fail_after_flush(&self, frame: CloseFrame) -> bool {
        self.entry.fail_fast.store(true, Ordering::Release);
        self.entry.request_close(frame, Initiator::Error)
    }

    /// The engine failed the connection and queued its own close: flush that and drop the
    /// connection (what was queued here is dropped: the engine takes nothing more).
    pub(crate) fn fail_by_engine(&self) -> bool {
        self.entry.fail_fast.store(true, Ordering::Release);
        self.entry.outbox.request_flush()
    }

    /// Whether the connection is being failed (see [`Connection::fail_after_flush`]).
    pub(crate) fn fails_fast(&self) -> bool {
        self.entry.fail_fast.load(Ordering::Acquire)
    }

    /// Records why the connection ended, if nothing was recorded before (the first cause wins:
    /// a client's close frame received after a server's close request does not overwrite it).
    pub(crate) fn record_close(
        &self,
        initiator: Initiator,
        code: Option<u16>,
        reason: impl Into<String>,
    ) {
        self.entry.record_close(CloseRecord {
            initiator,
            code,
            reason: reason.into(),
        });
    }

    /// The close handshake or flush did not finish in time: record the deadline as the cause.
    pub(crate) fn record_dropped(&self, reason: &str) {
        self.entry.record_dropped(reason);
    }

    /// Why it ended, once known.
    pub(crate) fn close_record(&self) -> Option<CloseRecord> {
        self.entry.close_record()
    }

    /// Waits until the writer has something to do.
    pub(crate) async fn outbound_ready(&self) {
        self.entry.outbox.ready().await
    }

    /// Takes every queued message into `out`, a pending close (to be sent after them) and a due
    /// ping (to be sent first).
    pub(crate) fn drain_outbound(&self, out: &mut Vec<Message>) -> Drained {
        self.entry.outbox.drain_into(out)
    }

    /// Completes when the connection must be dropped at once (drain deadline, fatal error).
    pub(crate) async fn cancelled(&self) {
        self.entry.aborted().await
    }

    /// The connection was dropped at once ([`Connection::abort`]): what
    /// [`Connection::cancelled`] waits for, read without waiting. An abort also wakes
    /// [`Connection::outbound_ready`].
    pub(crate) fn is_aborted(&self) -> bool {
        self.entry.is_aborted()
    }

    /// Drops the connection at once: readers and writers waiting on [`Connection::cancelled`] stop.
    pub(crate) fn abort(&self) {
        self.entry.abort();
    }

    /// The registry's task tracker, for the tasks that serve this connection.
    pub(crate) fn task_tracker(&self) -> &tokio_util::task::TaskTracker {
        self.shared.tracker()
    }

    /// How long a closing connection may take to flush and finish its handshake.
    pub(crate) fn close_timeout(&self) -> Duration {
        self.shared.config().drain_timeout
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The slots first: a client that reconnects the moment this one leaves the count must
        // not find its own old slot still held.
        drop(std::mem::take(&mut self.permit));
        self.shared.remove(&self.entry);
    }
}

/// Where an engine reports the bytes it holds for one connection (its buffers, a split frame
/// header, a partly received message), shown as part of the connection's `memoryBytes` in the
/// stats and the connections API and summed in `/metrics`. Got from
/// [`Accepted::memory_gauge`](crate::Accepted::memory_gauge) before the transport is made;
/// [`MemoryGauge::detached`] reports nowhere (a transport not tracked in a registry). A
/// connection that two engines carry (a proxy's client and upstream hops) reports through a
/// [`HopGauge`] instead, which adds the two.
///
/// Setting it is one relaxed store, done by the engine only when what it holds changes (a
/// message starts spanning reads, a buffer is freed), never per message; for one of two hops it
/// also takes their shared lock, uncontended but for the moment the other hop reports.
#[derive(Clone, Debug, Default)]
pub struct MemoryGauge(Target);

/// Where a [`MemoryGauge`]'s reports go.
#[derive(Clone, Debug, Default)]
enum Target {
    /// Nowhere.
    #[default]
    Detached,
    /// The connection's only engine: the entry's `held_bytes`, replaced by each report. A
    /// pointer the entry already has, so a connection pays no allocation for its gauge.
    Entry(Arc<Entry>),
    /// One of the two engines of a [`HopGauge`]: its part of the sum.
    Hop(Arc<Hops>, Side),
}

/// Which of a [`HopGauge`]'s two engines a gauge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The engine on the connection's own socket (a proxy's client hop).
    Own,
    /// The other hop (a proxy's upstream hop), whose engine is made first.
    Other,
}

impl MemoryGauge {
    pub(crate) fn new(entry: Arc<Entry>) -> Self {
        Self(Target::Entry(entry))
    }

    /// A gauge that reports nowhere.
    pub fn detached() -> Self {
        Self(Target::Detached)
    }

    /// Reports that the engine now holds `bytes` for the connection (saturating at 4 GiB).
    pub fn set(&self, bytes: usize) {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        match &self.0 {
            Target::Detached => {}
            Target::Entry(entry) => entry.held_bytes.store(bytes, Ordering::Relaxed),
            Target::Hop(hops, side) => hops.set(*side, bytes),
        }
    }

    /// What this engine last reported (0 for a detached gauge).
    pub fn get(&self) -> usize {
        match &self.0 {
            Target::Detached => 0,
            Target::Entry(entry) => entry.held_bytes.load(Ordering::Relaxed) as usize,
            Target::Hop(hops, side) => hops.lock().held(*side) as usize,
        }
    }
}

/// A connection carried by two engines, as a proxy carries a client: its own socket's (the
/// client hop) and another (the upstream hop), whose engine is made first — before the
/// connection's entry exists, since the upstream's answer decides whether there will be one.
/// The other hop's engine reports through [`gauge`](HopGauge::gauge) from the start;
/// [`Accepted::memory_gauge_with`](crate::Accepted::memory_gauge_with) attaches this to the
/// entry once it is made and gives the gauge for the connection's own engine. From then on the
/// entry's `memoryBytes` is what both engines hold plus its queue — in its row, the process
/// total and the `memory` order — starting with what the other hop held by then.
///
/// The two reports are kept here and their sum written to the entry, so neither replaces the
/// other's; a connection with one engine pays nothing for it (its gauge stores into the entry,
/// as before). [`detach`](HopGauge::detach) takes the other hop's share out (back to 0) once that
/// hop is over, though its engine may live on a while. One connection per `HopGauge`.
///
/// ```
/// use wscope_core::{ConnectionMeta, HopGauge, Registry};
///
/// let hop = HopGauge::new();
/// // The upstream hop's engine reports before there is an entry.
/// hop.gauge().set(600 << 10);
///
/// let registry = Registry::new();
/// let accepted = registry.accept(ConnectionMeta::new("/ws")).expect("not shutting down");
/// // The gauge for the client hop's engine; the entry counts both from here.
/// let own = accepted.memory_gauge_with(&hop);
/// own.set(100);
/// assert_eq!(registry.snapshot().connections[0].memory_bytes, 100 + (600 << 10));
///
/// hop.detach();
/// assert_eq!(registry.snapshot().connections[0].memory_bytes, 100);
/// ```
#[derive(Clone, Debug, Default)]
pub struct HopGauge(Arc<Hops>);

/// The two engines' reports and the entry their sum goes to. Locked when either reports (only
/// when what it holds changes) and on attach and detach, so that the entry always gets the sum
/// of the latest two.
#[derive(Debug, Default)]
struct Hops(Mutex<HopsState>);

#[derive(Debug, Default)]
struct HopsState {
    /// What the connection's own engine last reported.
    own: u32,
    /// What the other hop's engine last reported.
    other: u32,
    /// The other hop is over: its share is no longer the connection's.
    other_detached: bool,
    /// The entry the sum goes to, once attached.
    entry: Option<Arc<Entry>>,
}

impl HopsState {
    fn held(&self, side: Side) -> u32 {
        match side {
            Side::Own => self.own,
            Side::Other => self.other,
        }
    }

    /// Writes the sum to the entry, if attached.
    fn publish(&self) {
        if let Some(entry) = &self.entry {
            let other = if self.other_detached { 0 } else { self.other };
            let sum = self.own.saturating_add(other);
            entry.held_bytes.store(sum, Ordering::Relaxed);
        }
    }
}

impl Hops {
    fn lock(&self) -> MutexGuard<'_, HopsState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, side: Side, bytes: u32) {
        let mut state = self.lock();
        match side {
            Side::Own => state.own = bytes,
            Side::Other => state.other = bytes,
        }
        state.publish();
    }
}

impl HopGauge {
    /// A gauge for two engines, attached to no connection yet: it keeps what they report.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gauge to hand to the other hop's engine (a proxy's upstream hop).
    pub fn gauge(&self) -> MemoryGauge {
        MemoryGauge(Target::Hop(self.0.clone(), Side::Other))
    }

    /// Sends the sum to `entry` from now on, starting with what the engines hold already, and
    /// gives the gauge for the connection's own engine.
    pub(crate) fn attach(&self, entry: Arc<Entry>) -> MemoryGauge {
        let mut state = self.0.lock();
        state.entry = Some(entry);
        state.publish();
        MemoryGauge(Target::Hop(self.0.clone(), Side::Own))
    }

    /// Takes the other hop's share out of the connection's figure (back to 0): that hop is over,
    /// and what its engine may hold until it is dropped is not the connection's. Its later
    /// reports are kept here only.
    pub fn detach(&self) {
        let mut state = self.0.lock();
        state.other_detached = true;
        state.publish();
    }

    /// What the other hop's engine last reported.
    pub fn get(&self) -> usize {
        self.0.lock().other as usize
    }
}
