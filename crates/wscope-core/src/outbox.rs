//! A connection's bounded outbound queue, drained in batches by the connection's writer.
//!
//! Written by hand rather than with `tokio::sync::mpsc` for two reasons: an mpsc channel allocates
//! a block of 32 slots per connection up front (about 1.3 KB idle), while an empty `VecDeque`
//! allocates nothing; and the writer wants to take *everything* queued at once so it can write the
//! batch with a single flush (corking). The mutex is a std one and is never held across `.await`.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::close::CloseFrame;
use crate::message::Message;

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue holds its most messages or bytes already (a slow consumer).
    #[error("outbound queue full")]
    QueueFull,
    /// The connection is closing or closed: nothing more can be sent.
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Default)]
struct State {
    /// Messages waiting for the writer.
    items: VecDeque<Message>,
    /// A requested close: the writer sends it after the items queued before it. Boxed: asked
    /// for once in a connection's life, it would otherwise take room in every idle one.
    close: Option<Box<Closing>>,
    /// Set once a close was requested or the writer is gone: pushes fail with `Closed`.
    closed: bool,
    /// A ping is due: the writer sends one (with a shared payload, so asking costs nothing).
    ping: bool,
    /// A push found the queue full since the last drain: the drain wakes waiting senders.
    blocked: bool,
}

/// What the writer takes from the queue at once.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// A requested close, to go after the messages.
    pub(crate) close: Option<Closing>,
    /// Whether to send a ping first.
    pub(crate) ping: bool,
}

/// How the writer ends the connection once a close is requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Send what is queued, then this close frame.
    Send(CloseFrame),
    /// The engine has already queued its own close (it failed the connection itself): write
    /// nothing more, flush what the engine holds, and drop the connection.
    Flush,
}

/// The queue between senders (the handler, broadcast handles, admin closes) and the writer.
///
/// `repr(C)` keeps the two counters a snapshot reads first, beside the entry's other hot fields.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Outbox {
    /// Messages waiting; written under the lock, read without it (by snapshots).
    queued_messages: AtomicUsize,
    /// Payload bytes waiting; likewise.
    queued_bytes: AtomicUsize,
    state: Mutex<State>,
    /// Wakes the writer: something was queued or a close requested.
    ready: Notify,
    /// Wakes senders waiting for room.
    space: Notify,
    /// Most messages held at once.
    capacity: u32,
    /// Most payload bytes held at once (a single larger message is taken when the queue is empty).
    max_bytes: u32,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            queued_messages: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            space: Notify::new(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` inconsistent (every update is a
        // single push/pop/flag), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues without waiting.
    pub(crate) fn try_push(&self, msg: Message) -> Result<(), SendError> {
        self.offer(msg, true, true).map_err(|(e, _)| e)
    }

    /// Queues without waiting, past the bounds if need be, and without waking the writer: what a
    /// callback handler sends, from inside its driver's poll, which takes the queue once the
    /// handler returns (a wake-up would only poll the driver once more for nothing). The driver
    /// reads no further message until [`Outbox::room`] says the queue is back under its bounds,
    /// so this overshoots them by what one message's callback sends at most. Fails only once the
    /// connection is closing.
    pub(crate) fn push_unbounded(&self, msg: Message) -> Result<(), SendError> {
        self.offer(msg, false, false).map_err(|(e, _)| e)
    }

    /// Whether the queue is under both its bounds, read without the lock: the fast path of a
    /// callback driver's check before each read.
    pub(crate) fn has_room(&self) -> bool {
        self.queued_messages.load(Ordering::Relaxed) < self.capacity as usize
            && self.queued_bytes.load(Ordering::Relaxed) < self.max_bytes as usize
    }

    /// Completes once the queue is under both its bounds again, or the connection is closing
    /// (nothing more will be queued then, but the close handshake must still be read).
    pub(crate) async fn room(&self) {
        loop {
            // Registered before looking, so a drain in between is not missed.
            let mut room = pin!(self.space.notified());
            room.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed || self.has_room() {
                    return;
                }
                // The next drain wakes the waiters.
                st.blocked = true;
            }
            room.await;
        }
    }

    /// Queues if there is room (or `bounded` is false), waking the writer if `wake`; else gives
    /// the message back with the reason.
    fn offer(&self, msg: Message, bounded: bool, wake: bool) -> Result<(), (SendError, Message)> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err((SendError::Closed, msg));
            }
            let len = msg.payload_len();
            let bytes = self.queued_bytes.load(Ordering::Relaxed);
            if bounded
                && (st.items.len() >= self.capacity as usize
                    || (!st.items.is_empty() && bytes + len > self.max_bytes as usize))
            {
                st.blocked = true;
                return Err((SendError::QueueFull, msg));
            }
            self.count(1, len);
            if st.items.capacity() == 0 {
                // Room for one: a connection that sent a message and went idle keeps one slot,
                // not the four a first push would take.
                st.items.reserve_exact(1);
            }
            st.items.push_back(msg);
        }
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues, waiting for room while the queue is full.
    pub(crate) async fn push(&self, msg: Message) -> Result<(), SendError> {
        // Fast path: there is room (nearly always), and no waiter is registered with `space`.
        match self.offer(msg, true, true) {
            Ok(()) => Ok(()),
            Err((SendError::Closed, _)) => Err(SendError::Closed),
            // Boxed: the waiting state is large and rare, and every connection's task would
            // otherwise carry room for it while idle.
            Err((SendError::QueueFull, msg)) => Box::pin(self.wait_for_room(msg)).await,
        }
    }

    /// The slow path of [`Outbox::push`]: waits for the writer to make room.
    async fn wait_for_room(&self, mut msg: Message) -> Result<(), SendError> {
        loop {
            // Register for room before looking again, so a drain in between is not missed.
            let mut room = pin!(self.space.notified());
            room.as_mut().enable();
            msg = match self.offer(msg, true, true) {
                Ok(()) => return Ok(()),
                Err((SendError::Closed, _)) => return Err(SendError::Closed),
                Err((SendError::QueueFull, msg)) => msg,
            };
            room.await;
        }
    }

    /// Asks the writer to close after flushing what is queued. Returns false if a close was
    /// already requested (the first one wins).
    pub(crate) fn request_close(&self, frame: CloseFrame) -> bool {
        self.request(Closing::Send(frame))
    }

    /// Asks the writer to flush the engine's own close and drop the connection; false if a close
    /// was already requested.
    pub(crate) fn request_flush(&self) -> bool {
        self.request(Closing::Flush)
    }

    fn request(&self, closing: Closing) -> bool {
        let first = {
            let mut st = self.lock();
            if st.closed {
                false
            } else {
                st.closed = true;
                st.close = Some(Box::new(closing));
                true
            }
        };
        if first {
            self.ready.notify_one();
            self.space.notify_waiters();
        }
        first
    }

    /// Wakes the writer as a queued message would, with nothing queued: the connection was
    /// aborted, and the callback driver, which waits on this alone, must see it.
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Asks the writer to send a ping; false if the connection is closing.
    pub(crate) fn request_ping(&self) -> bool {
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            st.ping = true;
        }
        self.ready.notify_one();
        true
    }

    /// Drops what is queued (a slow consumer about to be closed: the close goes out next).
    pub(crate) fn discard(&self) {
        {
            let mut st = self.lock();
            st.items.clear();
            self.reset_counts();
        }
        self.space.notify_waiters();
    }

    /// Waits until there is something for the writer.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Moves everything queued into `out`, and takes a pending close (which goes after them) and
    /// a due ping (which goes first).
    pub(crate) fn drain_into(&self, out: &mut Vec<Message>) -> Drained {
        let (drained, was_full) = {
            let mut st = self.lock();
            if out.capacity() == 0 {
                // As the queue: no more room than what is taken the first time, with the due
                // ping the writer puts first (an idle connection's first ping takes one slot,
                // not four).
                out.reserve_exact(st.items.len() + usize::from(st.ping));
            }
            out.extend(st.items.drain(..));
            self.reset_counts();
            if st.items.capacity() > 64 {
                // A burst grew the queue: give the memory back while the connection idles.
                st.items.shrink_to(0);
            }
            let drained = Drained {
                close: st.close.take().map(|closing| *closing),
                ping: std::mem::take(&mut st.ping),
            };
            (drained, std::mem::take(&mut st.blocked))
        };
        // Senders wait for room only when the queue was full.
        if was_full {
            self.space.notify_waiters();
        }
        drained
    }

    /// The writer is gone: refuse further pushes and drop what was queued.
    pub(crate) fn shut(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
            st.items.clear();
            st.items.shrink_to(0);
            self.reset_counts();
        }
        self.space.notify_waiters();
    }

    /// Called with the lock held: one more message of `bytes` queued.
    fn count(&self, messages: usize, bytes: usize) {
        self.queued_messages.fetch_add(messages, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Called with the lock held: the queue is empty.
    fn reset_counts(&self) {
        self.queued_messages.store(0, Ordering::Relaxed);
        self.queued_bytes.store(0, Ordering::Relaxed);
    }

    /// Messages and payload bytes waiting (without taking the lock).
    pub(crate) fn queued(&self) -> (usize, usize) {
        (
            self.queued_messages.load(Ordering::Relaxed),
            self.queued_bytes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;

    #[test]
    fn full_queue_refuses_then_drains() {
        let ob = Outbox::new(2, 1 << 20);
        ob.try_push(Message::text("a")).unwrap();
        ob.try_push(Message::text("b")).unwrap();
        assert_eq!(ob.try_push(Message::text("c")), Err(SendError::QueueFull));
        let mut out = Vec::new();
        let drained = ob.drain_into(&mut out);
        assert_eq!(out.len(), 2);
        assert!(drained.close.is_none() && !drained.ping);
        assert_eq!(ob.queued(), (0, 0));
    }

    #[test]
    fn bytes_bound_the_queue_but_one_large_message_fits_alone() {
        let ob = Outbox::new(100, 10);
        ob.try_push(Message::text("123456")).unwrap();
        assert_eq!(
            ob.try_push(Message::text("12345")),
            Err(SendError::QueueFull)
        );
        ob.try_push(Message::text("1234")).unwrap();
        let mut out = Vec::new();
        ob.drain_into(&mut out);
        // Alone, a message over the bound is taken (else it could never be sent).
        ob.try_push(Message::text("a message of more than ten bytes"))
            .unwrap();
        assert_eq!(ob.queued(), (1, 32));
    }

    #[test]
    fn a_ping_request_allocates_nothing_and_is_drained_once() {
        let ob = Outbox::new(8, 1024);
        assert!(ob.request_ping());
        let mut out = Vec::new();
        assert!(ob.drain_into(&mut out).ping);
        // Room for the ping the writer puts first, and no more.
        assert!(out.is_empty() && out.capacity() == 1);
        assert!(!ob.drain_into(&mut out).ping);
    }

    /// A connection that sent one message (and answered one ping) and went idle keeps one slot
    /// in its queue and in its writer's batch, not the four a first push takes (4 x 40 B each).
    #[test]
    fn one_message_leaves_room_for_one() {
        let ob = Outbox::new(8, 1024);
        ob.try_push(Message::text("one")).unwrap();
        let mut out = Vec::new();
        ob.drain_into(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((ob.lock().items.capacity(), out.capacity()), (1, 1));
        out.clear();
        ob.try_push(Message::text("two")).unwrap();
        assert!(ob.request_ping());
        let mut fresh = Vec::new();
        ob.drain_into(&mut fresh);
        assert_eq!((ob.lock().items.capacity(), fresh.capacity()), (1, 2));
    }

    #[test]
    fn close_comes_after_queued_and_refuses_more() {
        let ob = Outbox::new(8, 1024);
        ob.try_push(Message::text("last words")).unwrap();
        assert!(ob.request_close(CloseFrame::new(CloseCode::NORMAL, "bye").unwrap()));
        assert!(!ob.request_close(CloseFrame::shutdown()));
        assert_eq!(ob.try_push(Message::text("late")), Err(SendError::Closed));
        let mut out = Vec::new();
        let close = ob.drain_into(&mut out).close;
        assert_eq!(out, vec![Message::text("last words")]);
        assert_eq!(
            close,
            Some(Closing::Send(
                CloseFrame::new(CloseCode::NORMAL, "bye").unwrap()
            ))
        );
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let ob = std::sync::Arc::new(Outbox::new(1, 1024));
        ob.push(Message::text("1")).await.unwrap();
        let ob2 = ob.clone();
        let waiter = tokio::spawn(async move { ob2.push(Message::text("2")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut out = Vec::new();
        ob.drain_into(&mut out);
        waiter.await.unwrap().unwrap();
        assert_eq!(ob.queued().0, 1);
    }

    #[tokio::test]
    async fn an_unbounded_push_overshoots_and_room_waits_for_the_drain() {
        let ob = std::sync::Arc::new(Outbox::new(1, 1024));
        assert!(ob.has_room());
        ob.push_unbounded(Message::text("1")).unwrap();
        ob.push_unbounded(Message::text("2")).unwrap();
        assert!(!ob.has_room());
        assert_eq!(ob.queued().0, 2);
        let ob2 = ob.clone();
        let waiter = tokio::spawn(async move { ob2.room().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut out = Vec::new();
        ob.drain_into(&mut out);
        waiter.await.unwrap();
        assert_eq!(out.len(), 2);
        // Closing: refused, and no one waits for room any more.
        ob.push_unbounded(Message::text("3")).unwrap();
        assert!(ob.request_close(CloseFrame::shutdown()));
        assert_eq!(
            ob.push_unbounded(Message::text("4")),
            Err(SendError::Closed)
        );
        ob.room().await;
    }

    #[tokio::test]
    async fn shut_wakes_blocked_pushers() {
        let ob = std::sync::Arc::new(Outbox::new(1, 1024));
        ob.push(Message::text("1")).await.unwrap();
        let ob2 = ob.clone();
        let waiter = tokio::spawn(async move { ob2.push(Message::text("2")).await });
        tokio::task::yield_now().await;
        ob.shut();
        assert_eq!(waiter.await.unwrap(), Err(SendError::Closed));
    }
}
