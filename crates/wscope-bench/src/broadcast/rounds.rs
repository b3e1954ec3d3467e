//! The state the broadcast sender and its listeners share: which round (measured message) is
//! under way and how many listeners still have to receive it, changed with one compare-and-swap;
//! the sync before measuring; and the wording of this run's messages.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::latency::Recorder;

/// Payload marker, so listeners ignore chat traffic that is not this run's.
const MARK: &str = "wscope-bench";
/// The low half of [`Rounds::state`]: listeners still to receive the current round.
const ROUND_MASK: u64 = 0xffff_ffff;

/// What the sender and listeners share.
#[derive(Debug)]
pub(crate) struct Rounds {
    /// Identifies this run's messages among other chat traffic.
    run: u64,
    /// Timestamps in messages are nanoseconds since this instant.
    base: Instant,
    /// The current round: sequence number in the high 32 bits, listeners still to receive it
    /// in the low 32, changed together with one compare-and-swap.
    state: AtomicU64,
    /// Largest latency seen in the current round, in nanoseconds.
    pub(crate) max_ns: AtomicU64,
    /// Fired by the listener that completes a round.
    pub(crate) done: Notify,
    /// Listeners still connected: each round waits for these.
    alive: AtomicUsize,
    /// Listeners that have neither received a sync message nor been lost.
    unsynced: AtomicUsize,
    /// Fired when the last listener syncs (or is lost unsynced).
    pub(crate) all_synced: Notify,
    /// Measured deliveries, late ones included.
    pub(crate) deliveries: AtomicU64,
    /// Time of the last delivery, in nanoseconds since `base`.
    pub(crate) last_delivery_ns: AtomicU64,
}

/// One listener's view of the run.
#[derive(Debug, Default)]
pub(crate) struct Member {
    synced: bool,
    /// The last round this listener received.
    last_seq: Option<u64>,
}

impl Rounds {
    /// Rounds for `listeners` listeners of run number `run`.
    pub(crate) fn new(run: u64, listeners: usize) -> Self {
        Self {
            run,
            base: Instant::now(),
            state: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            done: Notify::new(),
            alive: AtomicUsize::new(listeners),
            unsynced: AtomicUsize::new(listeners),
            all_synced: Notify::new(),
            deliveries: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
        }
    }

    /// Now, in nanoseconds since `base`.
    pub(crate) fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Every listener still connected has received a sync message.
    pub(crate) fn synced(&self) -> bool {
        self.unsynced.load(Ordering::Acquire) == 0
    }

    /// Opens round `seq` for the listeners still connected; returns how many (0: none left).
    pub(crate) fn open(&self, seq: u64) -> u64 {
        let alive = self.alive.load(Ordering::Acquire) as u64;
        self.max_ns.store(0, Ordering::Release);
        self.state.store(seq << 32 | alive, Ordering::Release);
        alive
    }

    /// Round `seq` reached every listener it waits for.
    pub(crate) fn complete(&self, seq: u64) -> bool {
        self.state.load(Ordering::Acquire) == seq << 32
    }

    /// Closes round `seq` (done or timed out); returns how many listeners never received it.
    pub(crate) fn close(&self, seq: u64) -> u64 {
        let state = self.state.swap(0, Ordering::AcqRel);
        if state >> 32 == seq {
            state & ROUND_MASK
        } else {
            0
        }
    }

    /// `<mark> <run> sync <k>` or `<mark> <run> msg <seq> <ns>`, padded with `.` to `size`.
    pub(crate) fn payload(&self, kind: &str, seq: u64, ns: u64, size: usize) -> Message {
        let mut text = format!("{MARK} {} {kind} {seq} {ns} ", self.run);
        if text.len() < size {
            text.extend(std::iter::repeat_n('.', size - text.len()));
        }
        Message::text(text)
    }

    /// A listener received `text`.
    pub(crate) fn on_message(&self, text: &str, member: &mut Member, rec: &mut Recorder) {
        let now = self.nanos();
        let mut parts = text.split_ascii_whitespace();
        if parts.next() != Some(MARK) || parts.next() != Some(&self.run.to_string()) {
            return; // someone else's chat
        }
        match (
            parts.next(),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) {
            (Some("sync"), Some(_)) if !member.synced => {
                member.synced = true;
                self.one_less_unsynced();
            }
            (Some("msg"), Some(seq)) => {
                let Some(sent) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
                    return;
                };
                let lat = now.saturating_sub(sent);
                rec.record(Duration::from_nanos(lat));
                self.deliveries.fetch_add(1, Ordering::Relaxed);
                self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                member.last_seq = Some(seq);
                self.take_one(|current| current == seq, Some(lat));
            }
            _ => {}
        }
    }

    /// A listener was lost: later rounds no longer wait for it, nor does the current one if it
    /// had not received it yet, nor the sync.
    pub(crate) fn leave(&self, member: &Member) {
        self.alive.fetch_sub(1, Ordering::AcqRel);
        if !member.synced {
            self.one_less_unsynced();
        }
        self.take_one(|current| Some(current) != member.last_seq, None);
    }

    fn one_less_unsynced(&self) {
        if self.unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_synced.notify_one();
        }
    }

    /// Takes one listener off the current round's count if `counts(round)` and the round still
    /// waits for someone (a late delivery of a round that timed out finds it closed), with the
    /// latency of its delivery if it received it.
    fn take_one(&self, counts: impl Fn(u64) -> bool, latency_ns: Option<u64>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if !counts(state >> 32) || state & ROUND_MASK == 0 {
                return;
            }
            if let Some(lat) = latency_ns {
                // Before the count goes down, so the round's waiter sees it when it completes.
                self.max_ns.fetch_max(lat, Ordering::AcqRel);
            }
            match self.state.compare_exchange_weak(
                state,
                state - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if (state - 1) & ROUND_MASK == 0 {
                        self.done.notify_one();
                    }
                    return;
                }
                Err(now) => state = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::latency::Latencies;

    fn text(m: Message) -> String {
        let Message::Text(t) = m else { panic!("text") };
        t.as_str().to_owned()
    }

    #[test]
    fn rounds_count_only_their_own_messages() {
        let r = Rounds::new(7, 2);
        let l = Latencies::new();
        let mut rec = l.recorder(0);
        assert_eq!(r.open(3), 2);
        let m = text(r.payload("msg", 3, 0, 64));
        assert_eq!(m.len(), 64);
        let mut member = Member::default();
        r.on_message(&m, &mut member, &mut rec);
        r.on_message("wscope-bench 8 msg 3 0", &mut member, &mut rec); // another run
        r.on_message("hello", &mut member, &mut rec);
        assert_eq!(r.state.load(Ordering::Acquire), 3 << 32 | 1);
        r.on_message(&m, &mut member, &mut rec);
        assert!(r.complete(3));
        r.on_message(&m, &mut member, &mut rec); // late: no underflow
        assert!(r.complete(3));
        assert_eq!(r.deliveries.load(Ordering::Acquire), 3);
        let s = text(r.payload("sync", 0, 0, 8));
        r.on_message(&s, &mut member, &mut rec);
        r.on_message(&s, &mut member, &mut rec);
        assert_eq!(r.unsynced.load(Ordering::Acquire), 1);
        assert!(!r.synced());
    }

    #[test]
    fn a_lost_listener_is_no_longer_waited_for() {
        let r = Rounds::new(7, 3);
        let l = Latencies::new();
        let mut rec = l.recorder(0);
        let (mut a, b, c) = (Member::default(), Member::default(), Member::default());
        r.on_message(&text(r.payload("sync", 0, 0, 8)), &mut a, &mut rec);
        assert_eq!(r.open(0), 3);
        r.on_message(&text(r.payload("msg", 0, 0, 8)), &mut a, &mut rec);
        r.leave(&a); // had round 0 already: still two to go
        assert_eq!(r.state.load(Ordering::Acquire), 2);
        r.leave(&b); // never got it: one to go, and it no longer blocks the sync
        assert_eq!(r.state.load(Ordering::Acquire), 1);
        assert!(!r.synced());
        r.leave(&c);
        assert!(r.complete(0));
        assert!(r.synced());
        assert_eq!(r.open(1), 0, "nobody left");
    }
}
