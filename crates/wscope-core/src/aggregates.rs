//! The registry's running totals, kept so that every figure of a summary — counts, totals,
//! counts by state, average age and idle time, removals by initiator, refusals by kind — is read
//! in O(1), without a walk of the entries. `/health`, the stats log and every observer tick read
//! them; only the per-connection list of a full snapshot walks the map.
//!
//! Averages come from sums: the mean age is `now - mean(connected_at)` and the mean idle time is
//! `now - mean(last_activity)`, so the registry keeps the sums of both over the tracked entries
//! (in milliseconds). The activity sum changes whenever a connection's last-activity millisecond
//! does, from every connection's task, so it is striped over cache-line-sized counters chosen by
//! connection: two busy connections rarely write the same line.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::admission::RefusalKind;
use crate::close::Initiator;
use crate::counts::Counts;
use crate::counts::{ClosedBy, RefusalCounts, StateCounts};
use crate::state::ConnectionState;

/// Stripes of the activity sum (a power of two).
const STRIPES: usize = 16;

/// A counter alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// The running totals of one registry.
#[derive(Debug, Default)]
pub(crate) struct Aggregates {
    /// Entries tracked now.
    pub(crate) current: AtomicU64,
    /// Entries ever registered.
    pub(crate) total_ever: AtomicU64,
    /// Entries ever removed.
    pub(crate) total_closed: AtomicU64,
    /// Removals by [`Initiator`].
    closed_by: [AtomicU64; Initiator::ALL.len()],
    /// Refusals by [`RefusalKind`].
    refused: [AtomicU64; RefusalKind::ALL.len()],
    /// Tracked entries by [`ConnectionState`].
    by_state: [AtomicU64; 4],
    /// Sum of the tracked entries' registration times (ms).
    connected_sum: AtomicU64,
    /// Sum of the tracked entries' last-activity times (ms), striped.
    activity_sum: [Padded; STRIPES],
    /// Sum and count of the tracked entries' last round-trip times (ms), over those with one.
    rtt_sum: AtomicU64,
    rtt_count: AtomicU64,
    /// Messages and bytes moved by the entries removed so far (in, out, bytes in, bytes out):
    /// added once per connection as it leaves, so that totals since start need no per-message
    /// shared counter.
    closed_traffic: [AtomicU64; 4],
}

/// The figures of a summary, read together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    pub(crate) current: u64,
    pub(crate) total_ever: u64,
    pub(crate) total_closed: u64,
    pub(crate) average_age_ms: u64,
    pub(crate) average_idle_ms: u64,
    pub(crate) by_state: StateCounts,
    pub(crate) closed_by: ClosedBy,
    pub(crate) refused: RefusalCounts,
    pub(crate) average_rtt_ms: Option<u64>,
}

impl Aggregates {
    /// A new entry, CONNECTING, registered (and last active) at `now_ms`.
    pub(crate) fn registered(&self, seq: u64, now_ms: u64) {
        self.connected_sum.fetch_add(now_ms, Ordering::Relaxed);
        self.stripe(seq).fetch_add(now_ms, Ordering::Relaxed);
        self.by_state[ConnectionState::Connecting as usize].fetch_add(1, Ordering::Relaxed);
        self.total_ever.fetch_add(1, Ordering::Relaxed);
        self.current.fetch_add(1, Ordering::AcqRel);
    }

    /// An entry's last activity moved from `from_ms` to `to_ms`.
    #[inline]
    pub(crate) fn activity_moved(&self, seq: u64, from_ms: u64, to_ms: u64) {
        // Wrapping: a manual clock never goes back, but the arithmetic must not panic if it did.
        self.stripe(seq)
            .fetch_add(to_ms.wrapping_sub(from_ms), Ordering::Relaxed);
    }

    /// An entry's round-trip time moved from `from` (maybe none yet) to `to`.
    pub(crate) fn rtt_moved(&self, from: u32, to: u32) {
        if from == crate::state::RTT_NONE {
            self.rtt_count.fetch_add(1, Ordering::Relaxed);
            self.rtt_sum.fetch_add(u64::from(to), Ordering::Relaxed);
        } else {
            self.rtt_sum.fetch_add(
                u64::from(to).wrapping_sub(u64::from(from)),
                Ordering::Relaxed,
            );
        }
    }

    /// An entry with round-trip time `rtt` left.
    pub(crate) fn rtt_removed(&self, rtt: u32) {
        self.rtt_count.fetch_sub(1, Ordering::Relaxed);
        self.rtt_sum.fetch_sub(u64::from(rtt), Ordering::Relaxed);
    }

    /// An entry moved from state `from` to `to`.
    pub(crate) fn state_moved(&self, from: ConnectionState, to: ConnectionState) {
        self.by_state[to as usize].fetch_add(1, Ordering::Relaxed);
        self.by_state[from as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// An entry left: its state, registration and last-activity times leave the sums. Returns the
    /// number of entries still tracked.
    pub(crate) fn removed(
        &self,
        seq: u64,
        state: ConnectionState,
        connected_ms: u64,
        last_ms: u64,
        initiator: Initiator,
        counts: Counts,
    ) -> u64 {
        let [m_in, m_out, b_in, b_out] = &self.closed_traffic;
        m_in.fetch_add(counts.messages_in, Ordering::Relaxed);
        m_out.fetch_add(counts.messages_out, Ordering::Relaxed);
        b_in.fetch_add(counts.bytes_in, Ordering::Relaxed);
        b_out.fetch_add(counts.bytes_out, Ordering::Relaxed);
        self.by_state[state as usize].fetch_sub(1, Ordering::Relaxed);
        self.connected_sum
            .fetch_sub(connected_ms, Ordering::Relaxed);
        self.stripe(seq).fetch_sub(last_ms, Ordering::Relaxed);
        self.closed_by[initiator.index()].fetch_add(1, Ordering::Relaxed);
        self.total_closed.fetch_add(1, Ordering::Relaxed);
        self.current.fetch_sub(1, Ordering::AcqRel) - 1
    }

    /// An upgrade was refused.
    pub(crate) fn refused(&self, kind: RefusalKind) {
        self.refused[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// What the removed entries moved in their lives.
    pub(crate) fn closed_traffic(&self) -> Counts {
        let [m_in, m_out, b_in, b_out] = self
            .closed_traffic
            .each_ref()
            .map(|a| a.load(Ordering::Acquire));
        Counts {
            messages_in: m_in,
            messages_out: m_out,
            bytes_in: b_in,
            bytes_out: b_out,
        }
    }

    /// Removals by `initiator` so far.
    pub(crate) fn closed_by(&self, initiator: Initiator) -> u64 {
        self.closed_by[initiator.index()].load(Ordering::Relaxed)
    }

    /// Every figure, as of `now_ms`. The counters are read one after another, so under churn they
    /// may disagree by the connections that came or went meanwhile; averages are clamped to be
    /// meaningful even then.
    pub(crate) fn figures(&self, now_ms: u64) -> Figures {
        let current = self.current.load(Ordering::Acquire);
        let connected_sum = self.connected_sum.load(Ordering::Relaxed);
        let activity_sum = self
            .activity_sum
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)));
        // mean(now - t) = now - sum(t) / n
        let average = |sum: u64| {
            sum.checked_div(current)
                .map_or(0, |mean| now_ms.saturating_sub(mean))
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rtt_count = load(&self.rtt_count);
        let average_rtt_ms = load(&self.rtt_sum).checked_div(rtt_count);
        let [connecting, open, closing, closed] = self.by_state.each_ref().map(load);
        Figures {
            current,
            total_ever: load(&self.total_ever),
            total_closed: load(&self.total_closed),
            average_age_ms: average(connected_sum),
            average_idle_ms: average(activity_sum),
            by_state: StateCounts {
                connecting,
                open,
                closing,
                closed,
            },
            closed_by: ClosedBy::from_counts(self.closed_by.each_ref().map(load)),
            refused: RefusalCounts::from_counts(self.refused.each_ref().map(load)),
            average_rtt_ms,
        }
    }

    #[inline]
    fn stripe(&self, seq: u64) -> &AtomicU64 {
        &self.activity_sum[seq as usize & (STRIPES - 1)].0
    }
}
