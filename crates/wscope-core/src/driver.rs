//! The connection driver: the one state machine every tracked connection runs, whatever engine
//! carries it and whichever end it is. [`Accepted::run`] marks the connection OPEN and runs the
//! handler with its [`TrackedSocket`] and the writer — which drains the connection's queue in
//! batches, one flush per batch — joined in the calling task, until both are done; reading and
//! writing through it update the entry; the close handshake, failing a connection that broke the
//! protocol (RFC 6455 §7.1.7), the close timeout and the drain's abort are handled here, once.
//!
//! One task serves a connection: the handler and the writer run joined in it, so a message the
//! handler sends wakes the writer without a cross-task hop, and an idle connection costs one task.
//! [`Accepted::run_callback`] (in `callback`) runs instead one hand-written loop over the
//! transport as one object ([`Transport::into_duplex`]), reading and calling a callback, writing
//! what is queued; both account for what they read through [`account`] and write a batch through
//! [`Progress`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;

use futures_util::{future, FutureExt, Sink, SinkExt, StreamExt};
use sync_wrapper::SyncWrapper;

use crate::admission::LabelError;
use crate::close::{
    CloseCode, CloseFrame, CloseRecord, Initiator, ReasonTooLong, ABNORMAL_CLOSURE,
};
use crate::connection::{Connection, ConnectionHandle};
use crate::id::ConnectionId;
use crate::message::Message;
use crate::outbox::Closing;
use crate::outbox::SendError;
use crate::readout;
use crate::state::ConnectionState;
use crate::state::PING_PAYLOAD;
use crate::transport::{BoxReader, Role, Transport, TransportError, TransportErrorKind};

/// The reading half as the socket keeps it: boxed, so [`TrackedSocket`] is one type whatever the
/// engine.
type Reader = BoxReader;

/// An admitted and registered connection (state CONNECTING), waiting for its transport.
/// [`run`](Accepted::run) it once the handshake is done; dropping it instead removes the entry
/// (call [`fail`](Accepted::fail) first to record why).
#[derive(Debug)]
#[must_use = "an accepted connection is removed when dropped; run it"]
pub struct Accepted {
    conn: Connection,
    /// The subprotocol the handshake agreed on.
    protocol: Option<Box<str>>,
}

impl Accepted {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn,
            protocol: None,
        }
    }

    /// Records the subprotocol the handshake agreed on, for [`TrackedSocket::protocol`].
    pub fn with_protocol(mut self, protocol: Option<String>) -> Self {
        self.protocol = protocol.map(String::into_boxed_str);
        self
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.conn.id()
    }

    /// A handle to send to or close the connection (what is queued before it runs is sent first).
    pub fn handle(&self) -> ConnectionHandle {
        self.conn.handle()
    }

    /// Where the engine reports the bytes it holds for this connection (its `memoryBytes`, with
    /// the queue): hand it to the engine that will carry the connection.
    pub fn memory_gauge(&self) -> crate::connection::MemoryGauge {
        self.conn.memory_gauge()
    }

    /// As [`memory_gauge`](Self::memory_gauge), for a connection that a second engine carries
    /// on (a proxy's upstream hop) and that reports through `hop`: the gauge for this
    /// connection's own engine. From now on the connection's `memoryBytes` counts both engines,
    /// starting with what `hop`'s already holds.
    pub fn memory_gauge_with(
        &self,
        hop: &crate::connection::HopGauge,
    ) -> crate::connection::MemoryGauge {
        hop.attach(self.conn.entry.clone())
    }

    /// The registry's task tracker: spawn the task that runs this connection on it, so that a
    /// server can wait for every connection task on shutdown.
    pub fn task_tracker(&self) -> &tokio_util::task::TaskTracker {
        self.conn.task_tracker()
    }

    /// The upgrade's answer (the 101) is given, or about to be: call it right before it leaves.
    /// From then on, though the connection stays CONNECTING until it [`run`](Accepted::run)s,
    /// [`Registry::broadcast`](crate::Registry::broadcast) and the handles to open connections
    /// ([`Registry::connections_on`](crate::Registry::connections_on), …) reach it, queuing what
    /// they send for its writer to send first: a client that has its 101 gets every broadcast
    /// queued after it. If the upgrade then fails ([`fail`](Accepted::fail), or dropping this),
    /// what was queued is dropped with the entry.
    pub fn mark_answered(&self) {
        self.conn.entry.mark_answered();
    }

    /// What the running connection keeps: the connection, shared by its reader and writer, and
    /// the agreed subprotocol.
    pub(crate) fn into_parts(self) -> (Arc<Connection>, Option<Box<str>>) {
        (Arc::new(self.conn), self.protocol)
    }

    /// The upgrade failed before a transport existed: records `reason` as a transport error and
    /// removes the entry.
    pub fn fail(self, reason: impl Into<String>) {
        self.conn.record_close(Initiator::Error, None, reason);
    }

    /// Runs the connection over `transport`: marks it OPEN, then runs `handler` with its tracked
    /// socket and the writer together in the calling task until both are done. A panicking
    /// handler is contained here: its socket, dropped while unwinding, queues a 1011 close that
    /// the writer still sends.
    ///
    /// A connection the driver fails (over its message rate, a slow consumer, a timeout, a frame
    /// the engine refused) is read out once its close frame is out, as the callback driver's is:
    /// what the peer still sends is read and dropped (for at most the close timeout, at most 2 s)
    /// by a tracked task that keeps the socket's reading half and nothing of the connection, so
    /// its entry goes as it would without it. Dropped at once, a socket with unread bytes is
    /// reset, and the reset can overtake the close frame: a client still sending would not learn
    /// why it was closed.
    ///
    /// Not an `async fn`: the future keeps only what the connection needs from here on (not
    /// `self` and the transport beside their parts), which is what an idle connection costs.
    pub fn run<T, F, Fut>(self, transport: T, handler: F) -> impl Future<Output = ()>
    where
        T: Transport,
        F: FnOnce(TrackedSocket) -> Fut,
        Fut: Future<Output = ()>,
    {
        let role = transport.role();
        let (reader, writer) = transport.split_boxed();
        let (conn, protocol) = self.into_parts();
        let socket = TrackedSocket {
            conn: conn.clone(),
            stream: SyncWrapper::new(Some(reader)),
            role,
            protocol,
            rate: MessageRate::new(conn.message_rate_limit(), conn.now_ms()),
        };
        async move {
            conn.mark_open();
            let handled = AssertUnwindSafe(handler(socket)).catch_unwind();
            let (outcome, ()) = future::join(handled, write_loop(conn.clone(), writer)).await;
            if outcome.is_err() {
                tracing::error!(id = %conn.id(), "connection handler panicked; closed it with 1011");
            }
        }
    }
}

#[cfg(feature = "bench-internals")]
impl Accepted {
    /// For wscope's own micro-benchmarks only: what the driver records per message received.
    #[doc(hidden)]
    pub fn bench_record_received(&self, len: usize) {
        self.conn.record_received(len);
    }
}

/// A WebSocket tracked in a wscope registry, as its handler sees it.
///
/// `recv` yields text and binary messages and returns `None` once the connection is over (closed
/// by either side, failed, or dropped by a drain); control frames are answered by the engine and
/// count as activity but are not surfaced. `send` queues behind anything already queued
/// (broadcasts, admin closes), waiting while the queue is full.
pub struct TrackedSocket {
    conn: Arc<Connection>,
    /// The receiving half. Only `recv` (with `&mut self`) touches it, so the wrapper makes the
    /// socket `Sync` (handlers hold `&socket` across `send(..).await`) at no cost.
    stream: SyncWrapper<Option<Reader>>,
    role: Role,
    protocol: Option<Box<str>>,
    /// The client's message rate, when limited.
    rate: MessageRate,
}

/// A token bucket over the messages a client sends: `limit` a second, with a burst of one
/// second's worth; tokens are counted in thousandths so whole milliseconds refill exactly.
#[derive(Debug)]
pub(crate) struct MessageRate {
    limit: u32,
    tokens: u64,
    last_ms: u64,
}

impl MessageRate {
    pub(crate) fn new(limit: u32, now_ms: u64) -> Self {
        Self {
            limit,
            tokens: u64::from(limit) * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes a token for one message; false when the client is over its rate.
    fn allow(&mut self, now_ms: u64) -> bool {
        let limit = u64::from(self.limit);
        let refill = now_ms.saturating_sub(self.last_ms) * limit;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + refill).min(limit * 1000);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// What both handlers' sockets ([`TrackedSocket`], [`CallbackSocket`](crate::CallbackSocket))
/// answer the same way, from their `conn`, `role` and `protocol` fields: `Debug`, `id`, `state`,
/// `role`, `protocol`, `handle` and the crate's `connection`.
macro_rules! socket_basics {
    ($socket:ident) => {
        impl std::fmt::Debug for $socket {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($socket))
                    .field("id", &self.conn.id())
                    .field("state", &self.conn.state())
                    .field("role", &self.role)
                    .finish_non_exhaustive()
            }
        }

        impl $socket {
            /// The connection's id.
            pub fn id(&self) -> $crate::ConnectionId {
                self.conn.id()
            }

            /// The current state.
            pub fn state(&self) -> $crate::ConnectionState {
                self.conn.state()
            }

            /// Which end of the connection this socket is.
            pub fn role(&self) -> $crate::Role {
                self.role
            }

            /// The subprotocol agreed in the handshake (`Sec-WebSocket-Protocol`), if any.
            pub fn protocol(&self) -> Option<&str> {
                self.protocol.as_deref()
            }

            /// A handle that other tasks can keep to send to, label or close this connection.
            pub fn handle(&self) -> $crate::ConnectionHandle {
                self.conn.handle()
            }

            /// The driver's connection (its registry is reached through it).
            pub(crate) fn connection(&self) -> &$crate::connection::Connection {
                &self.conn
            }
        }
    };
}
pub(crate) use socket_basics;

socket_basics!(TrackedSocket);

impl TrackedSocket {
    /// Attaches a user id (replacing any): shown as `user` in the stats and the connections API,
    /// which can filter and close by it ([`ConnectionHandle::set_user`]; one longer than
    /// [`MAX_USER_LEN`](crate::MAX_USER_LEN) bytes is refused).
    pub fn set_user(&self, user: impl AsRef<str>) -> Result<(), LabelError> {
        self.conn.entry.set_user(Some(user.as_ref()))
    }

    /// Removes the user id.
    pub fn clear_user(&self) {
        // Clearing checks nothing: it cannot fail.
        let _ = self.conn.entry.set_user(None);
    }

    /// The user id, if one is attached.
    pub fn user(&self) -> Option<String> {
        self.conn.entry.user().map(|u| u.to_string())
    }

    /// Adds a tag (shown in `tags`, filterable, closable by); false if the connection had it
    /// already ([`ConnectionHandle::tag`]; past the caps on tags, refused).
    pub fn tag(&self, tag: impl AsRef<str>) -> Result<bool, LabelError> {
        self.conn.entry.tag(tag.as_ref())
    }

    /// Removes a tag; false if the connection did not have it.
    pub fn untag(&self, tag: impl AsRef<str>) -> bool {
        self.conn.entry.untag(tag.as_ref())
    }

    /// The tags, in the order first added.
    pub fn tags(&self) -> Vec<String> {
        self.conn
            .entry
            .tags()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// Why the connection ended, once it has.
    pub fn close_record(&self) -> Option<CloseRecord> {
        self.conn.close_record()
    }

    /// The next text or binary message; `None` when the connection is over.
    pub async fn recv(&mut self) -> Option<Message> {
        let stream = self.stream.get_mut().as_mut()?;
        loop {
            // The stream first: when a frame is already there, the cancellation future is never
            // polled, so it is never registered (and unregistered) with its notifier.
            let next = tokio::select! {
                biased;
                next = stream.next() => Some(next),
                _ = self.conn.cancelled() => None,
            };
            match account(&self.conn, &mut self.rate, next) {
                Read::Message(msg) => return Some(msg),
                Read::Again => continue,
                Read::Ended(Ended::Finish) => break,
                Read::Ended(Ended::Failing) => {
                    // The writer sends the close and drops the connection; the peer is read out
                    // once the close is out.
                    self.let_go();
                    return None;
                }
            }
        }
        self.finish();
        None
    }

    /// Sends a message after those already queued, waiting while the queue is full: `"text"`, a
    /// `String`, `Vec<u8>`, [`bytes::Bytes`] or a [`Message`].
    pub async fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.send(msg.into()).await
    }

    /// Starts the close handshake after flushing what is queued. Keep calling [`recv`] until it
    /// returns `None` to see the handshake through (or drop the socket: it finishes it for you).
    ///
    /// [`recv`]: TrackedSocket::recv
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<bool, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        Ok(self.conn.request_close(frame, Initiator::Server))
    }

    /// The connection is over: mark it CLOSED and stop its writer.
    fn finish(&mut self) {
        self.conn.end();
        self.conn.abort();
        // A connection failed from outside its task (a slow consumer, a timeout) ends here once
        // its writer has sent the close.
        self.let_go();
    }

    /// Stops reading: the reader is dropped, or, if the connection was failed, read out.
    fn let_go(&mut self) {
        if let Some(reader) = self.stream.get_mut().take() {
            if self.conn.fails_fast() {
                read_out_after_close(&self.conn, reader);
            }
        }
    }
}

/// Reads out the peer of a failed connection ([`readout`]) in a tracked task of its own, which
/// keeps the reading half (and so the socket) but not the connection: the handler may keep its
/// socket for as long as it likes, and the entry goes when the driver and the handler let go of
/// it, as any other's does. The read-out starts once the connection is aborted — the writer
/// aborts a failed connection when its close is flushed (or the close timeout ends the flush):
/// reading on while the close is not out would only let the linger run out first.
fn read_out_after_close(conn: &Connection, mut reader: Reader) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return; // no runtime to read on: dropped now
    };
    let entry = conn.entry.clone();
    let (timeout, within) = (conn.close_timeout(), readout::linger_for(conn));
    rt.spawn(conn.task_tracker().track_future(async move {
        let _ = tokio::time::timeout(timeout, entry.aborted()).await;
        drop(entry);
        readout::read_out(reader.as_mut(), within).await;
    }));
}

/// What one read means for whoever reads the connection ([`TrackedSocket::recv`], the callback
/// driver).
pub(crate) enum Read {
    /// A text or binary message for the handler, accounted for.
    Message(Message),
    /// A control frame, accounted for: read on.
    Again,
    /// Reading is over.
    Ended(Ended),
}

/// Accounts for one read — `None` when the connection was aborted while waiting for it, else what
/// the stream yielded — as every reader of a connection must: messages received, the client's
/// message rate (over it, the connection is failed with 1008), pongs, close frames, transport
/// failures and a stream that ends without a close.
pub(crate) fn account(
    conn: &Connection,
    rate: &mut MessageRate,
    next: Option<Option<Result<Message, TransportError>>>,
) -> Read {
    let ended = match next {
        // Aborted: the drain deadline passed or the writer failed.
        None => Ended::Finish,
        Some(Some(Ok(msg))) => match received(conn, msg) {
            Some(data) if within_rate(rate, conn) => return Read::Message(data),
            Some(_) => {
                let frame = CloseFrame {
                    code: CloseCode::POLICY,
                    reason: "message rate exceeded".to_owned(),
                };
                if conn.fail_for_limit(frame) {
                    conn.mark_closing();
                    Ended::Failing
                } else {
                    Ended::Finish
                }
            }
            None => return Read::Again,
        },
        Some(Some(Err(e))) => failed(conn, &e),
        Some(None) => {
            let reason = "connection ended without a close frame";
            conn.record_close(Initiator::Error, Some(ABNORMAL_CLOSURE), reason);
            Ended::Finish
        }
    };
    Read::Ended(ended)
}

/// How a read that did not yield a message ends reading.
pub(crate) enum Ended {
    /// The connection is over: mark it CLOSED.
    Finish,
    /// The connection is being failed: the writer flushes, sends the close and drops it.
    Failing,
}

/// Whether the client is within its message rate (always, when unlimited).
fn within_rate(rate: &mut MessageRate, conn: &Connection) -> bool {
    rate.limit == 0 || rate.allow(conn.now_ms())
}

/// Accounts for a frame read; gives it back if the handler should see it (text or binary).
fn received(conn: &Connection, msg: Message) -> Option<Message> {
    match msg {
        Message::Text(_) | Message::Binary(_) => {
            conn.record_received(msg.payload_len());
            Some(msg)
        }
        // Neither messages nor activity: the engine answers pings; a pong times our ping.
        Message::Ping(_) => None,
        Message::Pong(_) => {
            conn.pong();
            None
        }
        // Not activity: the idle time at close says how long the connection idled before it.
        Message::Close(frame) => {
            let (code, reason) = match frame {
                Some(f) => (Some(f.code.as_u16()), f.reason),
                None => (None, String::new()),
            };
            conn.record_close(Initiator::Client, code, reason);
            conn.mark_closing();
            // Keep reading: the engine sends the close reply as it reads on, and the stream ends
            // once the handshake is complete.
            None
        }
    }
}

/// A read failed: fail the connection with the close its kind calls for (what was already
/// queued first, RFC 6455 §7.1.7), or record that it is gone — 1006, as a peer that vanished
/// without a close frame is, however the engine put it (an I/O error, a reset).
fn failed(conn: &Connection, e: &TransportError) -> Ended {
    let failing = match e.kind().close_frame() {
        Some(frame) => {
            let by = match e.kind() {
                TransportErrorKind::TimedOut => Initiator::Timeout,
                _ => Initiator::Error,
            };
            conn.record_close(by, Some(frame.code.as_u16()), e.message());
            conn.fail_after_flush(frame)
        }
        None if e.kind() == TransportErrorKind::FailedByEngine => {
            conn.record_close(Initiator::Error, None, e.message());
            conn.fail_by_engine()
        }
        None => {
            conn.record_close(Initiator::Error, Some(ABNORMAL_CLOSURE), e.message());
            false
        }
    };
    if failing {
        conn.mark_closing();
        Ended::Failing
    } else {
        Ended::Finish
    }
}

impl Drop for TrackedSocket {
    fn drop(&mut self) {
        let Some(stream) = self.stream.get_mut().take() else {
            return; // recv already saw the end
        };
        if std::thread::panicking() {
            close_for_panic(&self.conn);
        } else if let Ok(frame) = CloseFrame::new(CloseCode::NORMAL, "") {
            self.conn.request_close(frame, Initiator::Server);
        }
        // Read on until the peer answers the close (or the close timeout passes), so the
        // handshake completes even though the handler has gone.
        let conn = self.conn.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(
                conn.task_tracker()
                    .track_future(finish_close(conn.clone(), stream)),
            );
        } else {
            conn.end();
            conn.abort();
        }
    }
}

/// The handler panicked: close with 1011 (after what is queued), recorded as a panic.
pub(crate) fn close_for_panic(conn: &Connection) {
    if let Ok(frame) = CloseFrame::new(CloseCode::INTERNAL_ERROR, "Internal error") {
        conn.request_close(frame, Initiator::Panic);
    }
}

/// Reads what is left of a connection whose handler has gone, until the close handshake ends;
/// then, if the connection was failed meanwhile, reads its peer out ([`readout`]) with the
/// connection let go of.
async fn finish_close(conn: Arc<Connection>, mut stream: Reader) {
    let read_to_end = async {
        while let Some(Ok(msg)) = stream.next().await {
            received(&conn, msg);
        }
    };
    tokio::select! {
        _ = conn.cancelled() => {}
        _ = tokio::time::timeout(conn.close_timeout(), read_to_end) => {}
    }
    conn.end();
    conn.abort();
    if conn.fails_fast() {
        let within = readout::linger_for(&conn);
        drop(conn);
        readout::read_out(stream.as_mut(), within).await;
    }
}

/// Drains the connection's queue to the wire, a batch per wake-up and one flush per batch.
async fn write_loop<W>(conn: Arc<Connection>, sink: W)
where
    W: Sink<Message, Error = TransportError>,
{
    let mut sink = pin!(sink);
    let mut batch: Vec<Message> = Vec::new();
    // One cancellation future for the connection's life: registered once with its notifier
    // rather than once per batch.
    let cancelled = conn.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => return,
            _ = conn.outbound_ready() => {}
        }
        let drained = conn.drain_outbound(&mut batch);
        if drained.ping {
            // Fed straight to the engine: a ping allocates nothing here.
            let ping = Message::Ping(bytes::Bytes::from_static(PING_PAYLOAD));
            if let Err(e) = sink.as_mut().feed(ping).await {
                return gone(&conn, &e);
            }
            if batch.is_empty() && drained.close.is_none() {
                if let Err(e) = sink.as_mut().flush().await {
                    return gone(&conn, &e);
                }
                continue;
            }
        }
        if let Some(closing) = drained.close {
            // Once per connection: boxed, so its timers do not enlarge every idle task.
            return Box::pin(close_after(&conn, sink.as_mut(), &mut batch, closing)).await;
        }
        let written = tokio::select! {
            biased;
            r = write_batch(&conn, sink.as_mut(), &mut batch, None) => r,
            _ = &mut cancelled => return,
        };
        if let Err(e) = written {
            if conn.state() < ConnectionState::Closing {
                gone(&conn, &e);
            }
            // Else the peer closed first: the reader completes the handshake.
            return;
        }
    }
}

/// Writes `batch`, then `close` if given, with one flush.
///
/// A hand-written future rather than an `async fn`: the writer's task keeps room for the largest
/// state its loop can be in, and an `async fn` here kept a drain iterator, the message in hand
/// and the sink's `feed` future beside it (296 B, against some 100 for this), in every idle
/// connection's task.
fn write_batch<'a, W>(
    conn: &'a Connection,
    sink: Pin<&'a mut W>,
    batch: &'a mut Vec<Message>,
    close: Option<CloseFrame>,
) -> WriteBatch<'a, W>
where
    W: Sink<Message, Error = TransportError>,
{
    WriteBatch {
        conn,
        sink,
        batch,
        close,
        progress: Progress::default(),
    }
}

/// The future [`write_batch`] returns. Whatever it has not written when it ends (an error, or
/// dropped) is dropped from the batch.
struct WriteBatch<'a, W> {
    conn: &'a Connection,
    sink: Pin<&'a mut W>,
    batch: &'a mut Vec<Message>,
    close: Option<CloseFrame>,
    progress: Progress,
}

impl<W> Future for WriteBatch<'_, W>
where
    W: Sink<Message, Error = TransportError>,
{
    type Output = Result<(), TransportError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        this.progress.poll(
            cx,
            this.conn,
            this.sink.as_mut(),
            this.batch,
            &mut this.close,
        )
    }
}

impl<W> Drop for WriteBatch<'_, W> {
    fn drop(&mut self) {
        self.batch.clear();
    }
}

/// How far the writing of one batch has come: what [`write_batch`]'s future and the callback
/// driver (which writes from its own poll loop) keep between polls.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The next message of the batch to write (those before it are taken).
    next: usize,
    /// Data messages and their payload bytes written so far.
    count: usize,
    bytes: usize,
    /// The connection was marked CLOSING for the close frame.
    closing: bool,
}

impl Progress {
    /// Writes `batch`, then `close` if given (taking it), with one flush; the batch is empty once
    /// every message is handed to the sink. Ready once the flush is done: start the next batch
    /// with a fresh `Progress`.
    pub(crate) fn poll<W>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        conn: &Connection,
        mut sink: Pin<&mut W>,
        batch: &mut Vec<Message>,
        close: &mut Option<CloseFrame>,
    ) -> std::task::Poll<Result<(), TransportError>>
    where
        W: Sink<Message, Error = TransportError> + ?Sized,
    {
        use std::task::ready;
        if self.next < batch.len() {
            while self.next < batch.len() {
                ready!(sink.as_mut().poll_ready(cx))?;
                // Taken with a placeholder that owns nothing; the batch is cleared at the end.
                let msg =
                    std::mem::replace(&mut batch[self.next], Message::Ping(bytes::Bytes::new()));
                self.next += 1;
                if msg.is_data() {
                    self.count += 1;
                    self.bytes += msg.payload_len();
                }
                sink.as_mut().start_send(msg)?;
            }
            batch.clear();
            conn.record_sent(self.count, self.bytes);
        }
        if close.is_some() {
            if !self.closing {
                self.closing = true;
                conn.mark_closing();
            }
            ready!(sink.as_mut().poll_ready(cx))?;
            sink.as_mut().start_send(Message::Close(close.take()))?;
        }
        sink.poll_flush(cx)
    }
}

/// Flushes what was queued and the close frame (or only what the engine holds, when it closed
/// itself), then gives the peer the close timeout to answer (the reader ends the connection when
/// the handshake completes; else it is dropped here).
async fn close_after<W>(
    conn: &Connection,
    mut sink: Pin<&mut W>,
    batch: &mut Vec<Message>,
    closing: Closing,
) where
    W: Sink<Message, Error = TransportError>,
{
    let timeout = conn.close_timeout();
    let flushed = match closing {
        Closing::Send(frame) => {
            tokio::time::timeout(timeout, write_batch(conn, sink, batch, Some(frame))).await
        }
        Closing::Flush => {
            batch.clear();
            tokio::time::timeout(timeout, sink.flush()).await
        }
    };
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return gone(conn, &e),
        Err(_) => {
            // A failed connection (a timeout, a slow consumer) keeps its cause: no handshake was
            // awaited, only the flush of a peer that reads nothing.
            if !conn.fails_fast() {
                conn.record_dropped("close flush timed out");
            }
            return conn.abort();
        }
    }
    if conn.fails_fast() {
        return conn.abort(); // a failed connection gets no handshake
    }
    if tokio::time::timeout(timeout, conn.cancelled())
        .await
        .is_err()
    {
        conn.record_dropped("close handshake timed out");
        conn.abort();
    }
}

/// The peer is gone or the protocol broke while writing: record it (1006: no close frame came)
/// and stop both halves.
pub(crate) fn gone(conn: &Connection, e: &TransportError) {
    conn.record_close(Initiator::Error, Some(ABNORMAL_CLOSURE), e.message());
    conn.end();
    conn.abort();
}
