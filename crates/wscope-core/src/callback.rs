//! The callback-style handler: instead of an async handler that loops over
//! [`TrackedSocket::recv`](crate::TrackedSocket::recv), an [`OnMessage`] called with each text or
//! binary message, in the driver's own read loop ([`Accepted::run_callback`]). There is no handler
//! future: no `recv` future and no `send` future are polled per message, and an idle
//! connection's task keeps no handler state beyond the callback itself.
//!
//! The driver is one loop over the transport as one object ([`Transport::into_duplex`]): it
//! polls the reading and the writing direction itself, with no join of two futures and, on an
//! engine that is one object (wscope's own), no lock between the directions.
//!
//! The callback cannot wait, so [`CallbackSocket::send`] never does: it queues past the queue's
//! bounds if need be, and the driver, before reading the next message, waits until the queue is
//! back under them. A client that sends faster than it reads is held up by its own TCP window —
//! the backpressure a waiting `send` gives — and the callback's sends fail only once the
//! connection is closing.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future;

use crate::close::{CloseCode, CloseFrame, Initiator, ReasonTooLong};
use crate::connection::Connection;
use crate::driver::{account, close_for_panic, gone, Accepted, Ended, MessageRate, Progress, Read};
use crate::message::Message;
use crate::outbox::{Closing, SendError};
use crate::readout;
use crate::state::{ConnectionState, PING_PAYLOAD};
use crate::transport::{Duplex, Role, Transport, TransportError};

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
    /// The handler queued something: the driver takes the queue once it returns (the queue
    /// does not wake the driver for what its own handler sends).
    sent: AtomicBool,
}

crate::driver::socket_basics!(CallbackSocket);

impl CallbackSocket {
    /// Queues a message after those already queued, without waiting: `"text"`, a `String`,
    /// `Vec<u8>`, [`bytes::Bytes`] or a [`Message`]. A full queue takes it all the same (the
    /// driver reads no further message until the queue has room again); the only error is
    /// [`SendError::Closed`], once the connection is closing or closed.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.send_unbounded(msg.into())?;
        self.sent.store(true, Ordering::Relaxed);
        Ok(())
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
        let duplex = transport.into_duplex();
        let (conn, protocol) = self.into_parts();
        let rate = MessageRate::new(conn.message_rate_limit(), conn.now_ms());
        let socket = CallbackSocket {
            conn: conn.clone(),
            role,
            protocol,
            sent: AtomicBool::new(false),
        };
        drive(conn, socket, duplex, handler, rate)
    }
}

/// Rounds (reads, then a batch written) one wake-up of the driver makes at most before it
/// yields, and reads per round.
const ROUNDS: usize = 32;
const READS_PER_ROUND: usize = 64;

/// How the open connection's loop ended.
enum Open {
    /// The connection is over (read to its end, aborted, or gone while writing).
    Over,
    /// A close is to be written: the closing loop takes over.
    Close(Closing),
}

/// What one step of reading did.
enum Step {
    /// Something was read (or the reader stopped while the writer goes on): poll again.
    Again,
    /// The connection is over: it was marked CLOSED and stopped.
    Over,
}

/// Runs the connection: one loop that polls `duplex` for both directions — reading and calling
/// the handler, writing what is queued a batch at a time with one flush — until a close is to be
/// written, then a closing loop that writes it and reads on until the peer's reply ends the
/// connection, or the close timeout does.
async fn drive<D, H>(
    conn: Arc<Connection>,
    socket: CallbackSocket,
    duplex: D,
    handler: H,
    rate: MessageRate,
) where
    D: Duplex,
    H: OnMessage,
{
    let mut duplex = pin!(duplex);
    // Everything that holds the connection lives in this block, and the driver's own hold goes
    // right after it: a failed connection's entry is gone before it is read out.
    let linger = {
        conn.mark_open();
        let mut me = Driver {
            conn: &conn,
            socket,
            handler: Some(handler),
            rate,
            room: None,
            reading: true,
            writer_up: true,
            woken: false,
            batch: Vec::new(),
            progress: None,
        };
        // One waiter for the connection's life, registered with its notifier once, not per
        // message: a message queued by another task and an abort both wake it (the abort bit is
        // read every round). It is polled in every round, a write in progress or not, so that
        // an abort reaches a connection whose peer reads nothing.
        let mut ready = pin!(conn.outbound_ready());
        let open = future::poll_fn(|cx| {
            for _ in 0..ROUNDS {
                if conn.is_aborted() {
                    me.aborted();
                    return Poll::Ready(Open::Over);
                }
                let mut moved = false;
                // Every frame already read first (a bounded number), so that the replies they
                // queue leave in one batch, with one flush.
                for _ in 0..READS_PER_ROUND {
                    match me.poll_read(cx, duplex.as_mut()) {
                        Poll::Ready(Step::Again) => moved = true,
                        Poll::Ready(Step::Over) => return Poll::Ready(Open::Over),
                        Poll::Pending => break,
                    }
                }
                if ready.as_mut().poll(cx).is_ready() {
                    // Woken by another sender (or an abort, seen next round). The next waiter
                    // must be polled (registered) before this poll ends, even when nothing was
                    // queued after all (a wake-up whose messages an earlier drain took): the
                    // round goes on.
                    ready.set(conn.outbound_ready());
                    me.woken = true;
                    moved = true;
                }
                if me.writer_up {
                    // Something was queued by another sender, or by the handler (which wakes
                    // no one): taken once the batch in hand is written.
                    if me.progress.is_none()
                        && (std::mem::take(&mut me.woken)
                            | me.socket.sent.swap(false, Ordering::Relaxed))
                    {
                        if let Some(closing) = me.take_outbound() {
                            return Poll::Ready(Open::Close(closing));
                        }
                    }
                    match me.poll_write(cx, duplex.as_mut()) {
                        Poll::Ready(Ok(())) => moved = true,
                        Poll::Ready(Err(e)) => {
                            if conn.state() < ConnectionState::Closing {
                                gone(&conn, &e);
                                return Poll::Ready(Open::Over);
                            }
                            // The peer closed first: reading completes the handshake.
                            me.writer_up = false;
                        }
                        Poll::Pending => {}
                    }
                }
                if !moved {
                    return Poll::Pending;
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        match open {
            // Once per connection: boxed, so its timers do not enlarge every idle task.
            Open::Close(closing) => Box::pin(me.close(closing, duplex.as_mut())).await,
            Open::Over => false,
        }
    };
    // Read before the hold goes: for as long as a closing connection waits for its peer, at
    // most LINGER.
    let linger_for = linger.then(|| readout::linger_for(&conn));
    drop(conn);
    if let Some(within) = linger_for {
        Box::pin(readout::read_out(duplex, within)).await;
    }
}

/// The callback driver's state between polls.
struct Driver<'c, H> {
    conn: &'c Connection,
    socket: CallbackSocket,
    /// `None` once it panicked: it is not called again.
    handler: Option<H>,
    rate: MessageRate,
    /// Waits for the queue to be under its bounds again before the next read. Boxed: rare, and
    /// every idle task would otherwise keep room for it.
    room: Option<Pin<Box<dyn Future<Output = ()> + Send + 'c>>>,
    /// The peer is still read (not once the connection is being failed: the writer closes it).
    reading: bool,
    /// Writes still go out (not once one failed after the peer's close).
    writer_up: bool,
    /// The waiter fired: something may be queued, to take once the batch in hand is written.
    woken: bool,
    /// What is being written, and how far it has come (`None`: nothing).
    batch: Vec<Message>,
    progress: Option<Progress>,
}

impl<H: OnMessage> Driver<'_, H> {
    /// Takes what is queued into the batch (a due ping first); gives the close to write after
    /// it, if one is requested.
    fn take_outbound(&mut self) -> Option<Closing> {
        let drained = self.conn.drain_outbound(&mut self.batch);
        if drained.ping {
            // A static payload: a ping allocates nothing here.
            let ping = Message::Ping(bytes::Bytes::from_static(PING_PAYLOAD));
            self.batch.insert(0, ping);
        }
        if !self.batch.is_empty() {
            self.progress = Some(Progress::default());
        }
        drained.close
    }

    /// Writes the batch in hand, if any: ready once it is flushed (or a write failed).
    fn poll_write<D: Duplex>(
        &mut self,
        cx: &mut Context<'_>,
        duplex: Pin<&mut D>,
    ) -> Poll<Result<(), TransportError>> {
        let Some(progress) = self.progress.as_mut() else {
            return Poll::Pending;
        };
        let written = ready!(progress.poll(cx, self.conn, duplex, &mut self.batch, &mut None));
        self.progress = None;
        self.batch.clear();
        Poll::Ready(written)
    }

    /// Reads one frame, if the queue has room, and handles it: a message goes to the handler.
    fn poll_read<D: Duplex>(&mut self, cx: &mut Context<'_>, duplex: Pin<&mut D>) -> Poll<Step> {
        if !self.reading {
            return Poll::Pending;
        }
        let conn = self.conn;
        if let Some(room) = self.room.as_mut() {
            ready!(room.as_mut().poll(cx));
            self.room = None;
        } else if !conn.has_room() {
            let mut room = Box::pin(conn.room());
            if room.as_mut().poll(cx).is_pending() {
                self.room = Some(room);
                return Poll::Pending;
            }
        }
        let next = ready!(duplex.poll_next(cx));
        match account(conn, &mut self.rate, Some(next)) {
            Read::Message(msg) => self.call(msg),
            Read::Again => {}
            Read::Ended(Ended::Finish) => {
                conn.end();
                conn.abort();
                return Poll::Ready(Step::Over);
            }
            // The writer sends the close and drops the connection.
            Read::Ended(Ended::Failing) => self.reading = false,
        }
        Poll::Ready(Step::Again)
    }

    /// Calls the handler with `msg`; a panic closes the connection with 1011.
    fn call(&mut self, msg: Message) {
        let Some(h) = self.handler.as_mut() else {
            return;
        };
        let socket = &self.socket;
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| h.on_message(socket, msg)));
        if called.is_err() {
            self.handler = None;
            close_for_panic(self.conn);
            tracing::error!(id = %self.conn.id(), "connection handler panicked; closed it with 1011");
        }
    }

    /// The connection was aborted (the drain deadline passed, or it failed): a reader still
    /// reading marks it CLOSED.
    fn aborted(&mut self) {
        if self.reading {
            self.conn.end();
            self.conn.abort();
        }
    }

    /// Writes what is queued and the close frame (or flushes only what the engine holds, when it
    /// closed itself), then gives the peer the close timeout to answer, reading on meanwhile and
    /// calling the handler with what comes: the reply ends the stream, and the connection.
    ///
    /// True when the connection was failed (no handshake awaited) and should be read out.
    async fn close<D: Duplex>(mut self, closing: Closing, mut duplex: Pin<&mut D>) -> bool {
        let conn = self.conn;
        // Once per connection, in this boxed future: the open loop's waiter is gone.
        let mut cancelled = pin!(conn.cancelled());
        let timeout = conn.close_timeout();
        let mut close = match closing {
            Closing::Send(frame) => Some(frame),
            Closing::Flush => {
                self.batch.clear();
                None
            }
        };
        let mut progress = Some(Progress::default());
        let mut deadline = Box::pin(tokio::time::sleep(timeout));
        future::poll_fn(|cx| {
            for _ in 0..ROUNDS {
                if cancelled.as_mut().poll(cx).is_ready() {
                    self.aborted();
                    return Poll::Ready(false);
                }
                let mut moved = false;
                if let Some(p) = progress.as_mut() {
                    match p.poll(cx, conn, duplex.as_mut(), &mut self.batch, &mut close) {
                        Poll::Ready(Ok(())) => {
                            self.batch.clear();
                            progress = None;
                            if conn.fails_fast() {
                                conn.abort(); // a failed connection gets no handshake
                                return Poll::Ready(true);
                            }
                            deadline
                                .as_mut()
                                .reset(tokio::time::Instant::now() + timeout);
                            moved = true;
                        }
                        Poll::Ready(Err(e)) => {
                            gone(conn, &e);
                            return Poll::Ready(false);
                        }
                        Poll::Pending => {}
                    }
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    if progress.is_some() {
                        // A failed connection (a timeout, a slow consumer) keeps its cause: no
                        // handshake was awaited, only the flush of a peer that reads nothing.
                        if !conn.fails_fast() {
                            conn.record_dropped("close flush timed out");
                        }
                    } else {
                        conn.record_dropped("close handshake timed out");
                    }
                    conn.abort();
                    return Poll::Ready(false);
                }
                match self.poll_read(cx, duplex.as_mut()) {
                    Poll::Ready(Step::Again) => moved = true,
                    Poll::Ready(Step::Over) => return Poll::Ready(false),
                    Poll::Pending => {}
                }
                if !moved {
                    return Poll::Pending;
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }
}
