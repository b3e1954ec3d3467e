//! A connection's registry entry: the atomics the driver updates and readers load, its outbound
//! queue, its close record and the labels the application attached. Below the registry, the
//! connection and every reader.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::admission::{check_tag, check_user, LabelError, MAX_TAGS};
use crate::close::{CloseFrame, CloseRecord, Initiator};
use crate::counts::Counts;
use crate::outbox::Outbox;
use crate::state::{ConnectionState, NO_PING, RTT_NONE, RTT_REMOVED};
use crate::strings::SharedStr;

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
    /// When it was registered (clock milliseconds).
    pub(crate) connected_ms: u64,
    /// Last text or binary message sent or received (clock milliseconds); [`REMOVED`] once the
    /// entry has left, so a late update cannot change the registry's activity sum.
    pub(crate) last_activity_ms: AtomicU64,
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
    /// [`ConnectionState`] as u8; it only moves forward.
    pub(crate) state: AtomicU8,
    /// Set when the connection is being failed (RFC 6455 §7.1.7): the writer drops it as soon as
    /// the close frame is out, without waiting for the peer's reply.
    pub(crate) fail_fast: AtomicBool,
    /// Set once the upgrade's answer (the 101) is given, while the connection may still be
    /// CONNECTING: broadcasts queue to it from then on, for its writer to send once it runs (see
    /// [`Entry::reachable`]). It sits in the padding.
    answered: AtomicBool,
    /// Set once the application attached a user id or a tag, so a walk filtering by user or tag
    /// passes unlabelled entries without taking their labels lock (it sits in padding).
    labelled: AtomicBool,
    /// Set to drop the connection at once (drain deadline passed, writer failed, a failed close
    /// that did not finish in time); [`Entry::aborted`] waits for it. A bit in the padding and
    /// the notifier below, where a cancellation token child cost 112 bytes per connection.
    abort: AtomicBool,
    /// The last ping's round-trip time in ms; [`RTT_NONE`] until a pong came, [`RTT_REMOVED`] once
    /// the entry has left (so a late pong cannot change the registry's RTT sums). Sits in the
    /// padding after the two flags.
    pub(crate) rtt_ms: AtomicU32,
    /// The bytes the engine holds for the connection now (buffers, a split header, a partly
    /// received message), as it last reported through its [`MemoryGauge`](crate::MemoryGauge);
    /// 0 for an engine that reports nothing. Saturates at `u32::MAX`.
    pub(crate) held_bytes: AtomicU32,
    /// When the outstanding ping was sent (clock ms); [`NO_PING`] when none is outstanding.
    pub(crate) ping_sent_ms: AtomicU64,
    /// Outbound queue the writer drains (its counters come first).
    pub(crate) outbox: Outbox,
    /// Wakes the connection's tasks waiting in [`Entry::aborted`] when `abort` is set.
    abort_wake: Notify,
    /// The first close event: who, code, reason. Boxed: recorded once, at the end, it would
    /// otherwise take room in every open connection.
    pub(crate) close_record: Mutex<Option<Box<CloseRecord>>>,
    /// The user id and tags the application attached; boxed and absent until it attaches one,
    /// so an unlabelled connection pays a pointer and a lock word.
    pub(crate) labels: Mutex<Option<Box<Labels>>>,
}

/// What the application attached to a connection
/// ([`ConnectionHandle::set_user`](crate::ConnectionHandle::set_user),
/// [`ConnectionHandle::tag`](crate::ConnectionHandle::tag)).
#[derive(Debug, Default, Clone)]
pub(crate) struct Labels {
    /// The user id: not interned (user ids are many and short-lived).
    pub(crate) user: Option<Arc<str>>,
    /// Tags, in the order first added, without repeats (interned: a service uses a few).
    pub(crate) tags: Vec<SharedStr>,
    /// The upstream a proxy relays the connection to (interned: a proxy has a few). Here, not in
    /// the entry, so that connections no proxy relays pay nothing for it.
    pub(crate) upstream: Option<SharedStr>,
}

impl Entry {
    pub(crate) fn new(seq: u64, now_ms: u64, meta: Stored, outbox: Outbox) -> Self {
        Self {
            seq,
            connected_ms: now_ms,
            last_activity_ms: AtomicU64::new(now_ms),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            path: meta.path,
            user_agent: meta.user_agent,
            remote_addr: meta.remote_addr,
            state: AtomicU8::new(ConnectionState::Connecting as u8),
            fail_fast: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            labelled: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            rtt_ms: AtomicU32::new(RTT_NONE),
            held_bytes: AtomicU32::new(0),
            ping_sent_ms: AtomicU64::new(NO_PING),
            outbox,
            abort_wake: Notify::new(),
            close_record: Mutex::new(None),
            labels: Mutex::new(None),
        }
    }

    fn labels(&self) -> std::sync::MutexGuard<'_, Option<Box<Labels>>> {
        self.labels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (or with `None` clears) the user id; one longer than its cap is refused.
    pub(crate) fn set_user(&self, user: Option<&str>) -> Result<(), LabelError> {
        user.map_or(Ok(()), check_user)?;
        self.labelled.store(true, Ordering::Release);
        let mut labels = self.labels();
        let slot = labels.get_or_insert_with(Default::default);
        slot.user = user.map(Arc::from);
        Ok(())
    }

    /// Adds a tag; false if it was there already. A tag longer than its cap, or one past
    /// [`MAX_TAGS`], is refused (the scan for a repeat is at most that long).
    pub(crate) fn tag(&self, tag: &str) -> Result<bool, LabelError> {
        check_tag(tag)?;
        self.labelled.store(true, Ordering::Release);
        let mut labels = self.labels();
        let slot = labels.get_or_insert_with(Default::default);
        if slot.tags.iter().any(|t| &**t == tag) {
            return Ok(false);
        }
        if slot.tags.len() >= MAX_TAGS {
            return Err(LabelError::TooManyTags { max: MAX_TAGS });
        }
        slot.tags.push(SharedStr::new(tag));
        Ok(true)
    }

    /// Attaches the labels an upgrade came with, admission having checked their caps: repeats
    /// dropped in one pass with a set.
    pub(crate) fn set_labels(&self, user: Option<&str>, tags: &[String], upstream: Option<&str>) {
        if user.is_none() && tags.is_empty() && upstream.is_none() {
            return;
        }
        let labels = Labels {
            user: user.map(Arc::from),
            tags: crate::admission::distinct_tags(tags)
                .map(SharedStr::new)
                .collect(),
            upstream: upstream.map(SharedStr::new),
        };
        self.labelled.store(true, Ordering::Release);
        *self.labels() = Some(Box::new(labels));
    }

    /// Removes a tag; false if it was not there.
    pub(crate) fn untag(&self, tag: &str) -> bool {
        let mut labels = self.labels();
        let Some(slot) = labels.as_mut() else {
            return false;
        };
        let before = slot.tags.len();
        slot.tags.retain(|t| &**t != tag);
        slot.tags.len() != before
    }

    /// The user id, if set.
    pub(crate) fn user(&self) -> Option<Arc<str>> {
        self.labels().as_ref().and_then(|l| l.user.clone())
    }

    /// The tags.
    pub(crate) fn tags(&self) -> Vec<SharedStr> {
        self.labels()
            .as_ref()
            .map(|l| l.tags.clone())
            .unwrap_or_default()
    }

    /// Runs `f` on the labels, locked while it runs (`None` when the connection has none): the
    /// stats read them in place, without copying them out.
    pub(crate) fn with_labels<R>(&self, f: impl FnOnce(Option<&Labels>) -> R) -> R {
        if !self.labelled.load(Ordering::Acquire) {
            return f(None);
        }
        f(self.labels().as_deref())
    }

    /// Whether the connection is relayed to `upstream`.
    pub(crate) fn has_upstream(&self, upstream: &str) -> bool {
        if !self.labelled.load(Ordering::Acquire) {
            return false;
        }
        self.labels()
            .as_ref()
            .and_then(|l| l.upstream.as_deref())
            .is_some_and(|u| u == upstream)
    }

    /// Whether the user id is `user`.
    pub(crate) fn has_user(&self, user: &str) -> bool {
        if !self.labelled.load(Ordering::Acquire) {
            return false;
        }
        self.labels()
            .as_ref()
            .and_then(|l| l.user.as_deref())
            .is_some_and(|u| u == user)
    }

    /// Whether `tag` is among the tags.
    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        if !self.labelled.load(Ordering::Acquire) {
            return false;
        }
        self.labels()
            .as_ref()
            .is_some_and(|l| l.tags.iter().any(|t| &**t == tag))
    }

    pub(crate) fn state(&self) -> ConnectionState {
        ConnectionState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The upgrade's answer (the 101) is given: see [`Entry::reachable`].
    pub(crate) fn mark_answered(&self) {
        self.answered.store(true, Ordering::Release);
    }

    /// Whether broadcasts and the handles to "open" connections reach it: it is OPEN, or still
    /// CONNECTING with its 101 given (its client may have read it already), in which case what
    /// is queued waits for the writer, which sends it first once the connection runs; an
    /// upgrade that fails after all drops it with the entry.
    pub(crate) fn reachable(&self) -> bool {
        match self.state() {
            ConnectionState::Open => true,
            ConnectionState::Connecting => self.answered.load(Ordering::Acquire),
            ConnectionState::Closing | ConnectionState::Closed => false,
        }
    }

    /// What the connection holds now: the bytes its engine reported and the payloads waiting
    /// in its outbound queue (`memoryBytes`).
    pub(crate) fn memory_bytes(&self) -> u64 {
        u64::from(self.held_bytes.load(Ordering::Relaxed)) + self.outbox.queued().1 as u64
    }

    /// The lifetime counters.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Keeps the first close record; later ones are ignored.
    pub(crate) fn record_close(&self, record: CloseRecord) {
        let mut slot = self.close_record.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Box::new(record));
        }
    }

    /// The connection is dropped without a finished close handshake: whatever started the close,
    /// the record now says the deadline ended it (keeping the code that was sent, if any).
    pub(crate) fn record_dropped(&self, reason: &str) {
        let mut slot = self.close_record.lock().unwrap_or_else(|e| e.into_inner());
        let code = slot.as_ref().and_then(|r| r.code);
        *slot = Some(Box::new(CloseRecord {
            initiator: Initiator::Deadline,
            code,
            reason: reason.to_owned(),
        }));
    }

    pub(crate) fn close_record(&self) -> Option<CloseRecord> {
        self.close_record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .cloned()
    }

    /// The last round-trip time, if a pong has come.
    pub(crate) fn rtt(&self) -> Option<u32> {
        let rtt = self.rtt_ms.load(Ordering::Relaxed);
        (rtt < RTT_REMOVED).then_some(rtt)
    }

    /// Fails the connection from outside its task (a timeout, a slow consumer): the writer sends
    /// `frame` after what is queued and drops the connection without waiting for a reply. Returns
    /// false if a close was already under way. The registry drops it if its writer is stuck
    /// (`Shared::fail`).
    pub(crate) fn fail(&self, frame: CloseFrame, initiator: Initiator) -> bool {
        self.fail_fast.store(true, Ordering::Release);
        self.request_close(frame, initiator)
    }

    /// Drops the connection at once: its tasks waiting in [`Entry::aborted`] stop.
    pub(crate) fn abort(&self) {
        if !self.abort.swap(true, Ordering::AcqRel) {
            self.abort_wake.notify_waiters();
            // The callback driver waits for its queue and its abort with one waiter.
            self.outbox.wake();
        }
    }

    /// The connection was aborted ([`abort`](Self::abort)).
    pub(crate) fn is_aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Completes once the connection is aborted (at once if it is).
    pub(crate) async fn aborted(&self) {
        loop {
            let woken = self.abort_wake.notified();
            tokio::pin!(woken);
            // Registered before the bit is read: an abort after the read wakes this waiter.
            woken.as_mut().enable();
            if self.abort.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// Drops the connection after `within` unless it ends first: for a failed connection whose
    /// writer may be stuck on a peer that reads nothing.
    pub(crate) async fn abort_after(&self, within: Duration) {
        tokio::select! {
            _ = self.aborted() => {}
            _ = tokio::time::sleep(within) => self.abort(),
        }
    }

    /// Requests a close on behalf of `initiator`; the first request wins.
    pub(crate) fn request_close(&self, frame: CloseFrame, initiator: Initiator) -> bool {
        let record = CloseRecord {
            initiator,
            code: Some(frame.code.as_u16()),
            reason: frame.reason.clone(),
        };
        // The record is held while the close is requested: the writer, woken on another
        // thread (a runtime per core), may send the close and the reader record the peer's
        // answer before this thread goes on, and the first cause must stay this one.
        let mut slot = self.close_record.lock().unwrap_or_else(|e| e.into_inner());
        if !self.outbox.request_close(frame) {
            return false;
        }
        if slot.is_none() {
            *slot = Some(Box::new(record));
        }
        true
    }
}

/// What an entry keeps of its [`crate::ConnectionMeta`], in its shared form.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) path: SharedStr,
    pub(crate) user_agent: Option<SharedStr>,
    pub(crate) remote_addr: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every connection's entry takes (64-bit): what is set once in a connection's life
    /// (its close record, a requested close) or only by some (labels) is boxed, not kept
    /// inline (400 bytes before).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn an_entry_is_small() {
        let size = std::mem::size_of::<Entry>();
        assert!(size <= 352, "Entry takes {size} bytes");
    }

    #[test]
    fn the_first_close_record_is_kept_and_a_drop_overrides_it() {
        let meta = Stored {
            path: SharedStr::new("/ws"),
            user_agent: None,
            remote_addr: None,
        };
        let entry = Entry::new(1, 0, meta, Outbox::new(8, 1 << 20));
        assert_eq!(entry.close_record(), None);
        let frame = CloseFrame {
            code: crate::CloseCode::new(1001).unwrap(),
            reason: "bye".to_owned(),
        };
        assert!(entry.request_close(frame.clone(), Initiator::Server));
        assert!(!entry.request_close(frame, Initiator::Client), "one close");
        entry.record_close(CloseRecord {
            initiator: Initiator::Client,
            code: None,
            reason: String::new(),
        });
        let first = entry.close_record().unwrap();
        assert_eq!(
            (first.initiator, first.code),
            (Initiator::Server, Some(1001))
        );
        entry.record_dropped("deadline passed");
        let dropped = entry.close_record().unwrap();
        assert_eq!(
            (dropped.initiator, dropped.code, dropped.reason.as_str()),
            (Initiator::Deadline, Some(1001), "deadline passed")
        );
    }
}
