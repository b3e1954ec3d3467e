//! The tracked socket a handler gets: reading and sending through it update the registry entry;
//! a writer task drains the connection's queue in batches (one flush per batch); dropping it,
//! however the handler ends, closes the connection and removes the entry.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use wscope_core::{
    CloseCode, CloseFrame, CloseRecord, Connection, ConnectionHandle, ConnectionId,
    ConnectionState, Initiator, Message, ReasonTooLong, SendError,
};

use crate::engine::{EngineError, Reader, Writer};

/// A WebSocket accepted through wscope and tracked in its registry.
///
/// `recv` yields text and binary messages and returns `None` once the connection is over (closed
/// by either side, failed, or dropped by a drain); control frames are answered and counted but not
/// surfaced. `send` queues behind anything already queued (broadcasts, admin closes), waiting while
/// the queue is full.
pub struct TrackedSocket {
    conn: Arc<Connection>,
    stream: Option<Reader>,
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
    /// Starts the writer task over `sink` and marks the connection OPEN.
    pub(crate) fn start(stream: Reader, sink: Writer, conn: Connection) -> Self {
        let conn = Arc::new(conn);
        conn.mark_open();
        let writer = write_loop(conn.clone(), sink);
        // The registry's tracker lets a server wait for every writer on shutdown.
        tokio::spawn(conn.task_tracker().track_future(writer));
        Self {
            conn,
            stream: Some(stream),
        }
    }

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
        let stream = self.stream.as_mut()?;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.conn.cancelled() => None,
                next = stream.next() => Some(next),
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
                    self.conn
                        .record_close(Initiator::Error, None, error_text(&e));
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
        self.stream = None;
        self.conn.mark_closed();
        self.conn.abort();
    }
}

impl Drop for TrackedSocket {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
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
    loop {
        tokio::select! {
            biased;
            _ = conn.cancelled() => return,
            _ = conn.outbound_ready() => {}
        }
        let close = conn.drain_outbound(&mut batch);
        let closing = close.is_some();
        let write = async {
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
        };
        let result = if closing {
            match tokio::time::timeout(conn.close_timeout(), write).await {
                Ok(r) => r,
                Err(_) => {
                    conn.record_dropped("close flush timed out");
                    conn.abort();
                    return;
                }
            }
        } else {
            tokio::select! {
                biased;
                _ = conn.cancelled() => return,
                r = write => r,
            }
        };
        batch.clear();
        if let Err(e) = result {
            if conn.state() >= ConnectionState::Closing && !closing {
                // The peer closed first: the reader completes the handshake.
                return;
            }
            // The peer is gone or the protocol broke: stop both halves.
            conn.record_close(Initiator::Error, None, error_text(&e));
            conn.mark_closed();
            conn.abort();
            return;
        }
        if closing {
            // Give the peer the close timeout to answer; the reader stops the connection when
            // the handshake completes, else we do.
            let timeout = conn.close_timeout();
            if tokio::time::timeout(timeout, conn.cancelled())
                .await
                .is_err()
            {
                conn.record_dropped("close handshake timed out");
                conn.abort();
            }
            return;
        }
    }
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
