//! The entries' sequence numbers in order, beside the unordered map, so that a page in
//! registration order (the connections API's default sort) is read in time proportional to the
//! page, not to the registry.
//!
//! Sharded like the map (a shard per sequence number modulo the shard count, so registrations
//! from several threads take different locks); each shard is a `BTreeSet` behind its own mutex,
//! held only to insert, remove or copy out one bounded run of numbers — never two at once, never
//! with a map shard or an outbox lock. A reader merges the shards' runs: the merged order is
//! certain up to the lowest last number among the shards whose run was cut (the "frontier").

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Mutex;

/// Sequence numbers of the live entries, in order.
#[derive(Debug)]
pub(crate) struct OrderIndex {
    shards: Box<[Mutex<BTreeSet<u64>>]>,
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

    fn shard(&self, seq: u64) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        let i = (seq % self.shards.len() as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, seq: u64) {
        self.shard(seq).insert(seq);
    }

    pub(crate) fn remove(&self, seq: u64) {
        self.shard(seq).remove(&seq);
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
                if descending {
                    let upper = after.map_or(Bound::Unbounded, Bound::Excluded);
                    merged.extend(set.range((Bound::Unbounded, upper)).rev().take(batch));
                } else {
                    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                    merged.extend(set.range((lower, Bound::Unbounded)).take(batch));
                }
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
