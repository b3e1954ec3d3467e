//! The entries' sequence numbers in order, beside the unordered map, so that a page in
//! registration order (the connections API's default sort) is read in time proportional to the
//! page, not to the registry.
//!
//! Sharded like the map (a shard per sequence number modulo the shard count, so registrations
//! from several threads take different locks); each shard is a sorted run of numbers behind its
//! own mutex, held only to insert, remove or copy out one bounded run — never two at once, never
//! with a map shard or an outbox lock. A reader merges the shards' runs: the merged order is
//! certain up to the lowest last number among the shards whose run was cut (the "frontier").
//!
//! Why a sorted `Vec` with tombstones and not a `BTreeSet`: numbers are handed out in increasing
//! order, so an insert is almost always a push at the end, and a removal is a binary search and a
//! mark (a pop, for the newest); the marks are swept out once they are half the run, so each
//! removal pays O(1) amortized for the sweep. Counted with `examples/register_cycle.rs` under
//! cachegrind (beside 10,000 held entries), a register + unregister took 4,393 instructions
//! without an index, 5,726 with a `BTreeSet` one (its last leaf split and merged on every cycle)
//! and 4,690 with this one (+293 in `insert` and `remove`, the binary search and two uncontended
//! locks).

use std::sync::Mutex;

/// Marks a removed number in place (sequence numbers never reach 2^63).
const DEAD: u64 = 1 << 63;

/// One shard: its numbers in ascending order, the removed ones marked with [`DEAD`].
#[derive(Debug, Default)]
struct Run {
    seqs: Vec<u64>,
    /// How many are marked.
    dead: usize,
}

impl Run {
    fn insert(&mut self, seq: u64) {
        match self.seqs.last() {
            Some(&last) if last & !DEAD > seq => {
                // A registration that took its number before another but got here after it.
                let at = self.seqs.partition_point(|&s| s & !DEAD < seq);
                self.seqs.insert(at, seq);
            }
            _ => self.seqs.push(seq),
        }
    }

    fn remove(&mut self, seq: u64) {
        let at = self.seqs.partition_point(|&s| s & !DEAD < seq);
        if self.seqs.get(at) != Some(&seq) {
            return;
        }
        if at + 1 == self.seqs.len() {
            self.seqs.pop();
            while self.seqs.last().is_some_and(|&s| s & DEAD != 0) {
                self.seqs.pop();
                self.dead -= 1;
            }
            return;
        }
        self.seqs[at] |= DEAD;
        self.dead += 1;
        if self.dead * 2 > self.seqs.len() {
            self.seqs.retain(|&s| s & DEAD == 0);
            self.dead = 0;
            if self.seqs.capacity() > 4 * self.seqs.len().max(16) {
                self.seqs.shrink_to(2 * self.seqs.len());
            }
        }
    }

    /// Appends to `out` at most `batch` live numbers after `after` (below it, `descending`).
    fn copy(&self, after: Option<u64>, descending: bool, batch: usize, out: &mut Vec<u64>) {
        let live = |s: &&u64| **s & DEAD == 0;
        if descending {
            let end = after.map_or(self.seqs.len(), |a| {
                self.seqs.partition_point(|&s| s & !DEAD < a)
            });
            out.extend(self.seqs[..end].iter().rev().filter(live).take(batch));
        } else {
            let start = after.map_or(0, |a| self.seqs.partition_point(|&s| s & !DEAD <= a));
            out.extend(self.seqs[start..].iter().filter(live).take(batch));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seqs.len() - self.dead
    }
}

/// Sequence numbers of the live entries, in order.
#[derive(Debug)]
pub(crate) struct OrderIndex {
    shards: Box<[Mutex<Run>]>,
}

impl Default for OrderIndex {
    fn default() -> Self {
        // As many shards as dashmap takes for the map beside it (four per core, a power of two).
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_shards((cores * 4).next_power_of_two())
    }
}

impl OrderIndex {
    pub(crate) fn with_shards(n: usize) -> Self {
        Self {
            shards: (0..n.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, seq: u64) -> std::sync::MutexGuard<'_, Run> {
        let i = (seq % self.shards.len() as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, seq: u64) {
        self.shard(seq).insert(seq);
    }

    pub(crate) fn remove(&self, seq: u64) {
        self.shard(seq).remove(seq);
    }

    /// Calls `visit` with the numbers after `after` (exclusive; from the first with `None`), in
    /// ascending order, or descending with `descending` (then "after" means below), until it
    /// returns false or the numbers run out. Each round copies at most `batch` numbers from
    /// each shard, one shard lock at a time; `visit` runs with no lock held.
    pub(crate) fn walk(
        &self,
        after: Option<u64>,
        descending: bool,
        batch: usize,
        mut visit: impl FnMut(u64) -> bool,
    ) {
        let batch = batch.max(1);
        let mut after = after;
        let mut merged = Vec::new();
        loop {
            merged.clear();
            // The last number of each shard whose run was cut: beyond the nearest of them, a
            // shard may hold numbers this round did not copy.
            let mut frontier: Option<u64> = None;
            for shard in self.shards.iter() {
                let set = shard.lock().unwrap_or_else(|e| e.into_inner());
                let before = merged.len();
                set.copy(after, descending, batch, &mut merged);
                drop(set);
                if merged.len() - before == batch {
                    let last = merged[merged.len() - 1];
                    frontier = Some(match frontier {
                        Some(f) if descending => f.max(last),
                        Some(f) => f.min(last),
                        None => last,
                    });
                }
            }
            if descending {
                merged.sort_unstable_by(|a, b| b.cmp(a));
            } else {
                merged.sort_unstable();
            }
            for &seq in &merged {
                let beyond = frontier.is_some_and(|f| if descending { seq < f } else { seq > f });
                if beyond {
                    break;
                }
                if !visit(seq) {
                    return;
                }
                after = Some(seq);
            }
            if frontier.is_none() {
                return;
            }
        }
    }

    /// How many numbers are held (a walk of every shard; for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(index: &OrderIndex, after: Option<u64>, desc: bool, batch: usize) -> Vec<u64> {
        let mut out = Vec::new();
        index.walk(after, desc, batch, |s| {
            out.push(s);
            true
        });
        out
    }

    #[test]
    fn walks_in_order_from_any_point_whatever_the_batch() {
        let index = OrderIndex::with_shards(4);
        let live: Vec<u64> = (1..=200).filter(|s| s % 7 != 0 && s % 13 != 3).collect();
        for &s in live.iter().rev() {
            index.insert(s);
        }
        index.insert(7);
        index.remove(7);
        assert_eq!(index.len(), live.len());
        for batch in [1, 2, 3, 5, 64, 1000] {
            assert_eq!(collect(&index, None, false, batch), live, "batch {batch}");
            let mut rev = live.clone();
            rev.reverse();
            assert_eq!(collect(&index, None, true, batch), rev, "batch {batch}");
            for after in [1u64, 6, 7, 100, 199, 200, 500] {
                let asc: Vec<u64> = live.iter().copied().filter(|&s| s > after).collect();
                assert_eq!(collect(&index, Some(after), false, batch), asc);
                let desc: Vec<u64> = rev.iter().copied().filter(|&s| s < after).collect();
                assert_eq!(collect(&index, Some(after), true, batch), desc);
            }
        }
    }

    /// Out-of-order inserts, removals anywhere (the newest, marks, sweeps), in one shard.
    #[test]
    fn a_run_keeps_order_through_marks_and_sweeps() {
        let index = OrderIndex::with_shards(1);
        let mut model = std::collections::BTreeSet::new();
        let mut x = 7u64;
        for step in 0..5_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seq = step + 1;
            // Mostly in order, sometimes a little late.
            let seq = if x.is_multiple_of(5) {
                seq.saturating_sub(3).max(1)
            } else {
                seq
            };
            if !model.contains(&seq) {
                index.insert(seq);
                model.insert(seq);
            }
            if x.is_multiple_of(3) {
                let victim = *model
                    .iter()
                    .nth((x >> 8) as usize % model.len())
                    .unwrap_or(&0);
                index.remove(victim);
                model.remove(&victim);
            }
            if step % 500 == 0 {
                assert_eq!(
                    collect(&index, None, false, 7),
                    model.iter().copied().collect::<Vec<_>>()
                );
            }
        }
        index.remove(u64::MAX >> 2); // absent: nothing happens
        assert_eq!(index.len(), model.len());
        assert_eq!(
            collect(&index, None, false, 3),
            model.iter().copied().collect::<Vec<_>>()
        );
        let mid = *model.iter().nth(model.len() / 2).unwrap();
        let desc: Vec<u64> = model.range(..mid).rev().copied().collect();
        assert_eq!(collect(&index, Some(mid), true, 4), desc);
    }

    #[test]
    fn a_walk_stops_when_told() {
        let index = OrderIndex::with_shards(3);
        (1..=50).for_each(|s| index.insert(s));
        let mut seen = Vec::new();
        index.walk(Some(10), false, 2, |s| {
            seen.push(s);
            seen.len() < 5
        });
        assert_eq!(seen, vec![11, 12, 13, 14, 15]);
    }
}
