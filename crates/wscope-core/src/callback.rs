//! The callback-style handler: instead of an async handler that loops over
//! [`TrackedSocket::recv`](crate::TrackedSocket::recv), an [`OnMessage`] called with each text or
//! binary message, in the driver's own read loop ([`Accepted::run_callback`]). There is no handler
//! future: no `recv` future and no `send` future are polled per message, and an idle
//! connection's task keeps no handler state beyond the callback itself.
//!
//! The callback cannot wait, so [`CallbackSocket::send`] never does: it queues past the queue's
//! bounds if need be, and the driver, before reading the next message, waits until the queue is
//! back under them. A client that sends faster than it reads is held up by its own TCP window —
//! the backpressure a waiting `send` gives — and the callback's sends fail only once the
//! connection is closing.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures_util::{future, Stream};

use crate::close::{CloseCode, CloseFrame, Initiator, ReasonTooLong};
use crate::connection::Connection;
use crate::driver::{account, close_for_panic, write_loop, Accepted, Ended, MessageRate, Read};
use crate::message::Message;
use crate::outbox::SendError;
use crate::transport::{Role, Transport, TransportError};

/// A handler called with each text or binary message of a connection
/// ([`Accepted::run_callback`]); any `FnMut(&CallbackSocket, Message) + Send + 'static` closure is
/// one.
///
/// It is called from the connection's task, between reads: it must not block (queue with
/// [`CallbackSocket::send`], which never waits; spawn a task for slow work). A panic is
/// contained: the connection is closed with 1011, as a panicking async handler's is, and the
/// handler is not called again.
pub trait OnMessage: Send + 'static {
    /// Handles one text or binary message received on `socket`.
    fn on_message(&mut self, socket: &CallbackSocket, msg: Message);
}

impl<F> OnMessage for F
where
    F: FnMut(&CallbackSocket, Message) + Send + 'static,
{
    fn on_message(&mut self, socket: &CallbackSocket, msg: Message) {
        self(socket, msg)
    }
}

/// A tracked connection as an [`OnMessage`] handler sees it.
pub struct CallbackSocket {
    conn: Arc<Connection>,
    role: Role,
    protocol: Option<Box<str>>,
}

crate::driver::socket_basics!(CallbackSocket);

impl CallbackSocket {
    /// Queues a message after those already queued, without waiting: `"text"`, a `String`,
    /// `Vec<u8>`, [`bytes::Bytes`] or a [`Message`]. A full queue takes it all the same (the
    /// driver reads no further message until the queue has room again); the only error is
    /// [`SendError::Closed`], once the connection is closing or closed.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.send_unbounded(msg.into())
    }

    /// Starts the close handshake after flushing what is queued; the driver reads on until the
    /// peer answers (or the close timeout passes), still calling the handler with what comes
    /// meanwhile. Returns false when the connection was already closing.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<bool, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        Ok(self.conn.request_close(frame, Initiator::Server))
    }
}

impl Accepted {
    /// Runs the connection over `transport` with a callback handler: marks it OPEN, then reads,
    /// calling `handler` with each text or binary message, and writes what it queues, in the
    /// calling task until the connection is over. Everything else is as with
    /// [`run`](Accepted::run): the counts, the message rate limit, pongs, close frames from either
    /// side and their records, failing the connection on a transport error, the close timeout
    /// and the drain.
    ///
    /// ```
    /// use wscope_core::{memory, CallbackSocket, ConnectionMeta, Message, Registry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new();
    /// let accepted = registry.accept(ConnectionMeta::new("/ws")).unwrap();
    /// let (transport, mut peer) = memory::pair();
    /// // An echo: each message is queued straight back.
    /// tokio::spawn(accepted.run_callback(transport, |socket: &CallbackSocket, msg: Message| {
    ///     let _ = socket.send(msg);
    /// }));
    /// peer.send("hello").unwrap();
    /// assert_eq!(peer.recv().await, Some(Message::text("hello")));
    /// # }
    /// ```
    pub fn run_callback<T, H>(self, transport: T, handler: H) -> impl Future<Output = ()>
    where
        T: Transport,
        H: OnMessage,
    {
        let role = transport.role();
        let (reader, writer) = transport.split();
        let (conn, protocol) = self.into_parts();
        let rate = MessageRate::new(conn.message_rate_limit(), conn.now_ms());
        let socket = CallbackSocket {
            conn: conn.clone(),
            role,
            protocol,
        };
        async move {
            // Set once the connection is aborted. Only the writer's side waits on the abort
            // notifier (one waiter for the connection, where `run` has one per half); an abort
            // wakes the task, and the reader, polled first, finds the flag.
            let aborted = AtomicBool::new(false);
            let reading = read_loop(socket, reader, handler, rate, &aborted);
            let writing = async {
                write_loop(conn.clone(), writer).await;
                // The writer may end before the abort (the peer closed first and a write
                // failed): the reader is told only once it comes.
                conn.cancelled().await;
                aborted.store(true, Ordering::Relaxed);
                // The reader was polled before this, in the same poll: have it polled again.
                future::poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    Poll::Ready(())
                })
                .await;
            };
            future::join(reading, writing).await;
        }
    }
}

/// Reads the connection to its end, calling `handler` with each message; before each read, waits
/// while the queue is over its bounds. `aborted` is the writer's word that the connection was
/// aborted.
async fn read_loop<R, H>(
    socket: CallbackSocket,
    reader: R,
    handler: H,
    mut rate: MessageRate,
    aborted: &AtomicBool,
) where
    R: Stream<Item = Result<Message, TransportError>>,
    H: OnMessage,
{
    let conn = &*socket.conn;
    conn.mark_open();
    let mut reader = pin!(reader);
    // `None` once it panicked: it is not called again.
    let mut handler = Some(handler);
    loop {
        if !conn.has_room() {
            // Boxed: rare, and every idle task would otherwise keep room for it.
            let mut room = Box::pin(conn.room());
            let room = future::poll_fn(|cx| {
                if aborted.load(Ordering::Relaxed) {
                    return Poll::Ready(false);
                }
                room.as_mut().poll(cx).map(|()| true)
            })
            .await;
            if !room {
                break;
            }
        }
        let next = future::poll_fn(|cx| {
            if aborted.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            reader.as_mut().poll_next(cx).map(Some)
        })
        .await;
        match account(conn, &mut rate, next) {
            Read::Message(msg) => {
                let Some(h) = handler.as_mut() else { continue };
                let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    h.on_message(&socket, msg);
                }));
                if called.is_err() {
                    handler = None;
                    close_for_panic(conn);
                    tracing::error!(id = %conn.id(), "connection handler panicked; closed it with 1011");
                }
            }
            Read::Again => {}
            Read::Ended(Ended::Finish) => break,
            // The writer sends the close and drops the connection.
            Read::Ended(Ended::Failing) => return,
        }
    }
    conn.end();
    conn.abort();
}
