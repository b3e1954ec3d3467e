//! The registry's running totals, kept so that every figure of a summary — counts, totals,
//! counts by state, average age and idle time, removals by initiator, refusals by kind — is read
//! in O(1), without a walk of the entries. `/health`, the stats log and every observer tick read
//! them; only the per-connection list of a full snapshot walks the map.
//!
//! Averages come from sums: the mean age is `now - mean(connected_at)` and the mean idle time is
//! `now - mean(last_activity)`, so the registry keeps the sums of both over the tracked entries
//! (in milliseconds).
//!
//! Every connection's open, state changes, activity and close write these totals, from whichever
//! thread runs it. So that threads do not fight over shared cache lines, the totals are sharded:
//! each thread writes a shard of its own (`wscope_axum::PerCore`'s runtimes name theirs with
//! [`set_shard`]; other threads take one in turn) and readers sum the shards.
//!
//! A connection opened on one thread may close on another, so no shard holds a meaningful
//! "tracked now" of its own. Each figure that goes down as well as up (tracked entries, entries
//! by state, the sums behind the averages) is therefore kept as two counters that only rise — what
//! came in and what went out — and read as their difference: every "out" of every shard first,
//! then every "in". A connection's out happens after its in, so a reader that sees the out also
//! sees the in: a figure read mid-update never goes below zero, and never below its true value
//! at the moment the outs were read (so a read of zero entries means the registry was empty).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::admission::RefusalKind;
use crate::close::Initiator;
use crate::counts::Counts;
use crate::counts::{ClosedBy, RefusalCounts, StateCounts};
use crate::state::ConnectionState;

/// Shards of the totals (a power of two).
const SHARDS: usize = 16;

/// The figures kept as an in and an out (indexes into [`Shard::ins`] and [`Shard::outs`]):
/// entries (in: registered, out: removed)…
const ENTRIES: usize = 0;
/// …entries by [`ConnectionState`] (four, from this index)…
const BY_STATE: usize = 1;
/// …the sum of the tracked entries' registration times (ms)…
const CONNECTED: usize = BY_STATE + 4;
/// …the sum of their last-activity times (ms)…
const ACTIVITY: usize = CONNECTED + 1;
/// …and the sum and count of their last round-trip times (ms), over those with one.
const RTT_SUM: usize = ACTIVITY + 1;
const RTT_COUNT: usize = RTT_SUM + 1;
/// How many.
const LEVELS: usize = RTT_COUNT + 1;

/// The ordering of the ins and outs: sequentially consistent, so that of two removals on two
/// threads at least one reads the other's out (the one that empties the registry sees zero).
const SC: Ordering = Ordering::SeqCst;

/// What one thread writes, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    /// What came into each figure of [`LEVELS`].
    ins: [AtomicU64; LEVELS],
    /// What went out of each.
    outs: [AtomicU64; LEVELS],
    /// Removals by [`Initiator`].
    closed_by: [AtomicU64; Initiator::ALL.len()],
    /// Refusals by [`RefusalKind`].
    refused: [AtomicU64; RefusalKind::ALL.len()],
    /// Messages and bytes moved by the entries removed so far (in, out, bytes in, bytes out):
    /// added once per connection as it leaves, so that totals since start need no per-message
    /// shared counter.
    closed_traffic: [AtomicU64; 4],
}

impl Shard {
    /// `to - from` into figure `level` (its in if it rose, its out if it fell).
    #[inline]
    fn moved(&self, level: usize, from: u64, to: u64) {
        if to >= from {
            self.ins[level].fetch_add(to - from, SC);
        } else {
            self.outs[level].fetch_add(from - to, SC);
        }
    }
}

thread_local! {
    /// The shard this thread writes; `usize::MAX` until it first writes one.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Shards handed out in turn to threads [`set_shard`] did not name, from the last down (the
/// runtimes that name theirs count from the first up).
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// Names the shard of the registry's totals this thread writes (taken modulo the number of
/// shards): a runtime per core gives its thread `i` shard `i`, so that no two of them share one.
/// Threads that never call it take one in turn. Any shard gives the same figures; the choice only
/// decides which threads write the same cache lines.
#[doc(hidden)]
pub fn set_shard(index: usize) {
    SHARD.with(|shard| shard.set(index & (SHARDS - 1)));
}

/// The shard this thread writes.
#[inline]
fn shard_index() -> usize {
    SHARD.with(|shard| {
        let index = shard.get();
        if index < SHARDS {
            return index;
        }
        let index = (SHARDS - 1) - (NEXT_SHARD.fetch_add(1, Ordering::Relaxed) & (SHARDS - 1));
        shard.set(index);
        index
    })
}

/// The running totals of one registry.
#[derive(Debug, Default)]
pub(crate) struct Aggregates {
    shards: [Shard; SHARDS],
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
    /// The shard of the calling thread.
    #[inline]
    fn shard(&self) -> &Shard {
        &self.shards[shard_index() & (SHARDS - 1)]
    }

    /// The sum over the shards of the counter `pick` names.
    fn sum(&self, pick: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, shard| sum.wrapping_add(pick(shard).load(SC)))
    }

    /// The sums over the shards of the counters `pick` names.
    fn sums<const N: usize>(&self, pick: impl Fn(&Shard) -> &[AtomicU64; N]) -> [u64; N] {
        let mut sums = [0u64; N];
        for shard in &self.shards {
            for (sum, counter) in sums.iter_mut().zip(pick(shard)) {
                *sum = sum.wrapping_add(counter.load(SC));
            }
        }
        sums
    }

    /// Registrations and removals so far, the removals read first (see the module's doc).
    fn registered_and_removed(&self) -> (u64, u64) {
        let removed = self.sum(|s| &s.outs[ENTRIES]);
        let registered = self.sum(|s| &s.ins[ENTRIES]);
        (registered, removed)
    }

    /// Entries tracked now, in O(shards).
    pub(crate) fn current(&self) -> u64 {
        let (registered, removed) = self.registered_and_removed();
        // Never below zero (see the module's doc); saturating all the same, for an entry removed
        // by a sweep before its registration was counted.
        registered.saturating_sub(removed)
    }

    /// A new entry, CONNECTING, registered (and last active) at `now_ms`.
    pub(crate) fn registered(&self, now_ms: u64) {
        let ins = &self.shard().ins;
        ins[CONNECTED].fetch_add(now_ms, SC);
        ins[ACTIVITY].fetch_add(now_ms, SC);
        ins[BY_STATE + ConnectionState::Connecting as usize].fetch_add(1, SC);
        ins[ENTRIES].fetch_add(1, SC);
    }

    /// An entry's last activity moved from `from_ms` to `to_ms`.
    #[inline]
    pub(crate) fn activity_moved(&self, from_ms: u64, to_ms: u64) {
        self.shard().moved(ACTIVITY, from_ms, to_ms);
    }

    /// An entry's round-trip time moved from `from` (maybe none yet) to `to`.
    pub(crate) fn rtt_moved(&self, from: u32, to: u32) {
        let shard = self.shard();
        if from == crate::state::RTT_NONE {
            shard.ins[RTT_COUNT].fetch_add(1, SC);
            shard.ins[RTT_SUM].fetch_add(u64::from(to), SC);
        } else {
            shard.moved(RTT_SUM, u64::from(from), u64::from(to));
        }
    }

    /// An entry with round-trip time `rtt` left.
    pub(crate) fn rtt_removed(&self, rtt: u32) {
        let outs = &self.shard().outs;
        outs[RTT_COUNT].fetch_add(1, SC);
        outs[RTT_SUM].fetch_add(u64::from(rtt), SC);
    }

    /// An entry moved from state `from` to `to`.
    pub(crate) fn state_moved(&self, from: ConnectionState, to: ConnectionState) {
        let shard = self.shard();
        shard.ins[BY_STATE + to as usize].fetch_add(1, SC);
        shard.outs[BY_STATE + from as usize].fetch_add(1, SC);
    }

    /// An entry left: its state, registration and last-activity times leave the sums. Of two
    /// removals at once followed by a [`Aggregates::current`] each, at least one reads the
    /// other's: the one that empties the registry reads zero.
    pub(crate) fn removed(
        &self,
        state: ConnectionState,
        connected_ms: u64,
        last_ms: u64,
        initiator: Initiator,
        counts: Counts,
    ) {
        let shard = self.shard();
        let [m_in, m_out, b_in, b_out] = &shard.closed_traffic;
        m_in.fetch_add(counts.messages_in, Ordering::Relaxed);
        m_out.fetch_add(counts.messages_out, Ordering::Relaxed);
        b_in.fetch_add(counts.bytes_in, Ordering::Relaxed);
        b_out.fetch_add(counts.bytes_out, Ordering::Relaxed);
        shard.closed_by[initiator.index()].fetch_add(1, Ordering::Relaxed);
        let outs = &shard.outs;
        outs[BY_STATE + state as usize].fetch_add(1, SC);
        outs[CONNECTED].fetch_add(connected_ms, SC);
        outs[ACTIVITY].fetch_add(last_ms, SC);
        outs[ENTRIES].fetch_add(1, SC);
    }

    /// An upgrade was refused.
    pub(crate) fn refused(&self, kind: RefusalKind) {
        self.shard().refused[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// What the removed entries moved in their lives.
    pub(crate) fn closed_traffic(&self) -> Counts {
        let [m_in, m_out, b_in, b_out] = self.sums(|s| &s.closed_traffic);
        Counts {
            messages_in: m_in,
            messages_out: m_out,
            bytes_in: b_in,
            bytes_out: b_out,
        }
    }

    /// Removals by `initiator` so far.
    pub(crate) fn closed_by(&self, initiator: Initiator) -> u64 {
        self.sum(|s| &s.closed_by[initiator.index()])
    }

    /// Every figure, as of `now_ms`. The counters are read one after another, so under churn they
    /// may disagree by the connections that came or went meanwhile; averages are clamped to be
    /// meaningful even then.
    pub(crate) fn figures(&self, now_ms: u64) -> Figures {
        // The outs first (see the module's doc); saturating as in `current`.
        let outs = self.sums(|s| &s.outs);
        let ins = self.sums(|s| &s.ins);
        let levels: [u64; LEVELS] = std::array::from_fn(|i| ins[i].saturating_sub(outs[i]));
        let current = levels[ENTRIES];
        // mean(now - t) = now - sum(t) / n
        let average = |sum: u64| {
            sum.checked_div(current)
                .map_or(0, |mean| now_ms.saturating_sub(mean))
        };
        let average_rtt_ms = levels[RTT_SUM].checked_div(levels[RTT_COUNT]);
        let [connecting, open, closing, closed] = std::array::from_fn(|i| levels[BY_STATE + i]);
        Figures {
            current,
            total_ever: ins[ENTRIES],
            total_closed: outs[ENTRIES],
            average_age_ms: average(levels[CONNECTED]),
            average_idle_ms: average(levels[ACTIVITY]),
            by_state: StateCounts {
                connecting,
                open,
                closing,
                closed,
            },
            closed_by: ClosedBy::from_counts(self.sums(|s| &s.closed_by)),
            refused: RefusalCounts::from_counts(self.sums(|s| &s.refused)),
            average_rtt_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Barrier};

    use super::*;

    const TRAFFIC: Counts = Counts {
        messages_in: 1,
        messages_out: 2,
        bytes_in: 30,
        bytes_out: 40,
    };

    /// Runs `f` on a new thread that writes shard `shard`, and returns what it returned.
    fn on_shard<T: Send + 'static>(shard: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            set_shard(shard);
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn sums_are_exact_when_entries_open_on_one_shard_and_close_on_another() {
        let totals = Arc::new(Aggregates::default());
        let opener = totals.clone();
        on_shard(0, move || {
            for _ in 0..10 {
                opener.registered(100);
                opener.state_moved(ConnectionState::Connecting, ConnectionState::Open);
                opener.rtt_moved(crate::state::RTT_NONE, 8);
            }
            opener.activity_moved(100, 150);
            opener.refused(RefusalKind::ALL[0]);
        });
        let figures = totals.figures(200);
        assert_eq!(figures.current, 10);
        assert_eq!(figures.total_ever, 10);
        assert_eq!(figures.by_state.open, 10);
        assert_eq!(figures.average_age_ms, 100);
        assert_eq!(figures.average_idle_ms, 95); // (9 × 100 + 150) / 10 = 105
        assert_eq!(figures.average_rtt_ms, Some(8));
        assert_eq!(figures.refused.get(RefusalKind::ALL[0]), 1);

        // Seven close on two other threads: those shards' counts go below zero on their own.
        let closer = totals.clone();
        let left = on_shard(1, move || {
            closer.state_moved(ConnectionState::Open, ConnectionState::Closing);
            closer.rtt_removed(8);
            closer.removed(
                ConnectionState::Closing,
                100,
                150,
                Initiator::Client,
                TRAFFIC,
            );
            for _ in 0..5 {
                closer.rtt_removed(8);
                closer.removed(ConnectionState::Open, 100, 100, Initiator::Admin, TRAFFIC);
            }
            closer.current()
        });
        assert_eq!(left, 4);
        let closer = totals.clone();
        let left = on_shard(2, move || {
            closer.rtt_moved(8, 2);
            closer.rtt_removed(2);
            closer.removed(ConnectionState::Open, 100, 100, Initiator::Admin, TRAFFIC);
            closer.current()
        });
        assert_eq!(left, 3);

        let figures = totals.figures(300);
        assert_eq!(figures.current, 3);
        assert_eq!(totals.current(), 3);
        assert_eq!(figures.total_ever, 10);
        assert_eq!(figures.total_closed, 7);
        assert_eq!(figures.by_state.get(ConnectionState::Connecting), 0);
        assert_eq!(figures.by_state.open, 3);
        assert_eq!(figures.by_state.closing, 0);
        assert_eq!(figures.average_age_ms, 200);
        assert_eq!(figures.average_idle_ms, 200);
        assert_eq!(figures.average_rtt_ms, Some(8));
        assert_eq!(figures.closed_by.client, 1);
        assert_eq!(figures.closed_by.admin, 6);
        assert_eq!(totals.closed_by(Initiator::Admin), 6);
        let traffic = totals.closed_traffic();
        assert_eq!(
            (traffic.messages_in, traffic.messages_out),
            (7, 14),
            "{traffic:?}"
        );
        assert_eq!((traffic.bytes_in, traffic.bytes_out), (210, 280));
        assert_eq!(figures.refused.get(RefusalKind::ALL[0]), 1);
    }

    #[test]
    fn a_read_mid_churn_never_counts_more_removals_than_registrations() {
        const ROUNDS: u64 = 20_000;
        let totals = Arc::new(Aggregates::default());
        let (handed, received) = mpsc::sync_channel::<()>(64);
        let opener = totals.clone();
        let open = std::thread::spawn(move || {
            set_shard(0);
            for _ in 0..ROUNDS {
                opener.registered(1);
                handed.send(()).unwrap();
            }
        });
        let closer = totals.clone();
        let close = std::thread::spawn(move || {
            set_shard(1);
            for () in received {
                closer.removed(
                    ConnectionState::Connecting,
                    1,
                    1,
                    Initiator::Client,
                    TRAFFIC,
                );
            }
        });
        // What `current` reads, before it saturates.
        let mut reads = 0u64;
        while !close.is_finished() && reads < 10 * ROUNDS {
            let (registered, removed) = totals.registered_and_removed();
            assert!(
                removed <= registered,
                "{removed} removals read, {registered} registrations"
            );
            reads += 1;
        }
        open.join().unwrap();
        close.join().unwrap();
        assert_eq!(totals.current(), 0);
        assert_eq!(totals.figures(1).total_closed, ROUNDS);
    }

    #[test]
    fn of_two_removals_on_two_shards_the_one_that_empties_reads_zero() {
        let totals = Arc::new(Aggregates::default());
        for _ in 0..500 {
            totals.registered(1);
            totals.registered(1);
            let both = Arc::new(Barrier::new(2));
            let removals: Vec<_> = (1..=2)
                .map(|shard| {
                    let (totals, both) = (totals.clone(), both.clone());
                    std::thread::spawn(move || {
                        set_shard(shard);
                        both.wait();
                        totals.removed(
                            ConnectionState::Connecting,
                            1,
                            1,
                            Initiator::Client,
                            TRAFFIC,
                        );
                        totals.current()
                    })
                })
                .collect();
            let left: Vec<u64> = removals.into_iter().map(|t| t.join().unwrap()).collect();
            assert!(
                left.contains(&0),
                "neither removal saw the registry empty: {left:?}"
            );
        }
    }

    #[test]
    fn threads_that_name_no_shard_take_one_in_turn() {
        let shards: Vec<usize> = (0..2)
            .map(|_| std::thread::spawn(shard_index).join().unwrap())
            .collect();
        assert!(shards.iter().all(|&s| s < SHARDS));
        assert_eq!(on_shard(SHARDS + 3, shard_index), 3);
    }
}
