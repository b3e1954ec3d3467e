//! The tracked socket a handler gets: reading and sending through it update the registry entry;
//! a writer drains the connection's queue in batches (one flush per batch); dropping it, however
//! the handler ends, closes the connection and removes the entry.
//!
//! One task serves a connection: the handler and the writer run joined in it, so a message the
//! handler sends wakes the writer without a cross-task hop, and an idle connection costs one task.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::{future, FutureExt, SinkExt, StreamExt};
use sync_wrapper::SyncWrapper;
use wscope_core::{
    CloseCode, CloseFrame, CloseRecord, Connection, ConnectionHandle, ConnectionId,
    ConnectionState, Initiator, Message, ReasonTooLong, SendError,
};

use crate::engine::{self, EngineError, Reader, Writer};

/// A WebSocket accepted through wscope and tracked in its registry.
///
/// `recv` yields text and binary messages and returns `None` once the connection is over (closed
/// by either side, failed, or dropped by a drain); control frames are answered and counted but not
/// surfaced. `send` queues behind anything already queued (broadcasts, admin closes), waiting while
/// the queue is full.
pub struct TrackedSocket {
    conn: Arc<Connection>,
    /// The receiving half. Only `recv` (with `&mut self`) touches it, so the wrapper makes the
    /// socket `Sync` (handlers hold `&socket` across `send(..).await`) at no cost.
    stream: SyncWrapper<Option<Reader>>,
}

impl std::fmt::Debug for TrackedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedSocket")
            .field("id", &self.conn.id())
            .field("state", &self.conn.state())
            .finish_non_exhaustive()
    }
}

impl TrackedSocket {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.conn.id()
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.conn.state()
    }

    /// A handle that other tasks can keep to send to or close this connection.
    pub fn handle(&self) -> ConnectionHandle {
        self.conn.handle()
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
            match next {
                // Aborted: the drain deadline passed or the writer failed.
                None => break,
                Some(Some(Ok(msg))) => {
                    self.conn.record_received(msg.payload_len());
                    match msg {
                        Message::Text(_) | Message::Binary(_) => return Some(msg),
                        Message::Ping(_) | Message::Pong(_) => {}
                        Message::Close(frame) => {
                            let (code, reason) = match frame {
                                Some(f) => (Some(f.code.as_u16()), f.reason),
                                None => (None, String::new()),
                            };
                            self.conn.record_close(Initiator::Client, code, reason);
                            self.conn.mark_closing();
                            // Keep reading: the engine sends the close reply as it reads on,
                            // and the stream ends once the handshake is complete.
                        }
                    }
                }
                Some(Some(Err(e))) => {
                    let text = error_text(&e);
                    if let Some(frame) = engine::failure_close(&e) {
                        // Fail the connection (RFC 6455 §7.1.7): what was already queued, then
                        // the close naming the violation; the writer drops it once that is out.
                        let code = Some(frame.code.as_u16());
                        self.conn.record_close(Initiator::Error, code, text);
                        if self.conn.fail_after_flush(frame) {
                            *self.stream.get_mut() = None;
                            self.conn.mark_closing();
                            return None;
                        }
                    } else {
                        self.conn.record_close(Initiator::Error, None, text);
                    }
                    break;
                }
                Some(None) => {
                    self.conn.record_close(
                        Initiator::Error,
                        Some(1006),
                        "connection ended without a close frame",
                    );
                    break;
                }
            }
        }
        self.finish();
        None
    }

    /// Sends a message after those already queued, waiting while the queue is full.
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
        *self.stream.get_mut() = None;
        self.conn.mark_closed();
        self.conn.abort();
    }
}

impl Drop for TrackedSocket {
    fn drop(&mut self) {
        let Some(stream) = self.stream.get_mut().take() else {
            return; // recv already saw the end
        };
        let frame = if std::thread::panicking() {
            (
                CloseFrame::new(CloseCode::INTERNAL_ERROR, "Internal error"),
                Initiator::Panic,
            )
        } else {
            (CloseFrame::new(CloseCode::NORMAL, ""), Initiator::Server)
        };
        if let (Ok(frame), initiator) = frame {
            self.conn.request_close(frame, initiator);
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
            conn.mark_closed();
            conn.abort();
        }
    }
}

/// Serves one upgraded connection: marks it OPEN, then runs `handler` with its tracked socket
/// and the writer over `sink` together in the calling task until both are done. A panicking
/// handler is contained here: its socket, dropped while unwinding, queues a 1011 close that the
/// writer still sends.
pub(crate) async fn serve<F, Fut>(stream: Reader, sink: Writer, conn: Connection, handler: F)
where
    F: FnOnce(TrackedSocket) -> Fut,
    Fut: Future<Output = ()>,
{
    let conn = Arc::new(conn);
    conn.mark_open();
    let socket = TrackedSocket {
        conn: conn.clone(),
        stream: SyncWrapper::new(Some(stream)),
    };
    let handled = AssertUnwindSafe(async move { handler(socket).await }).catch_unwind();
    let (outcome, ()) = future::join(handled, write_loop(conn.clone(), sink)).await;
    if outcome.is_err() {
        tracing::error!(id = %conn.id(), "connection handler panicked; closed it with 1011");
    }
}

/// Reads what is left of a connection whose handler has gone, until the close handshake ends.
async fn finish_close(conn: Arc<Connection>, mut stream: Reader) {
    let read_to_end = async {
        while let Some(Ok(msg)) = stream.next().await {
            conn.record_received(msg.payload_len());
        }
    };
    tokio::select! {
        _ = conn.cancelled() => {}
        _ = tokio::time::timeout(conn.close_timeout(), read_to_end) => {}
    }
    conn.mark_closed();
    conn.abort();
}

/// Drains the connection's queue to the wire, a batch per wake-up and one flush per batch.
async fn write_loop(conn: Arc<Connection>, mut sink: Writer) {
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
        if let Some(frame) = conn.drain_outbound(&mut batch) {
            // Once per connection: boxed, so its timers do not enlarge every idle task.
            return Box::pin(close_after(&conn, &mut sink, &mut batch, frame)).await;
        }
        let written = tokio::select! {
            biased;
            r = write_batch(&conn, &mut sink, &mut batch, None) => r,
            _ = &mut cancelled => return,
        };
        if let Err(e) = written {
            if conn.state() < ConnectionState::Closing {
                fail(&conn, &e);
            }
            // Else the peer closed first: the reader completes the handshake.
            return;
        }
    }
}

/// Writes `batch`, then `close` if given, with one flush.
async fn write_batch(
    conn: &Connection,
    sink: &mut Writer,
    batch: &mut Vec<Message>,
    close: Option<CloseFrame>,
) -> Result<(), EngineError> {
    if !batch.is_empty() {
        let (count, bytes) = (batch.len(), batch.iter().map(Message::payload_len).sum());
        for msg in batch.drain(..) {
            sink.feed(msg).await?;
        }
        conn.record_sent(count, bytes);
    }
    if let Some(frame) = close {
        conn.mark_closing();
        sink.feed(Message::Close(Some(frame))).await?;
        conn.record_sent(1, 0);
    }
    sink.flush().await
}

/// Flushes what was queued and the close frame, then gives the peer the close timeout to answer
/// (the reader ends the connection when the handshake completes; else it is dropped here).
async fn close_after(
    conn: &Connection,
    sink: &mut Writer,
    batch: &mut Vec<Message>,
    frame: CloseFrame,
) {
    let timeout = conn.close_timeout();
    match tokio::time::timeout(timeout, write_batch(conn, sink, batch, Some(frame))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return fail(conn, &e),
        Err(_) => {
            conn.record_dropped("close flush timed out");
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

/// The peer is gone or the protocol broke: record it and stop both halves.
fn fail(conn: &Connection, e: &EngineError) {
    conn.record_close(Initiator::Error, None, error_text(e));
    conn.mark_closed();
    conn.abort();
}

/// The innermost cause's text (the engine's wrapper adds nothing a reader needs).
fn error_text(e: &EngineError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}
