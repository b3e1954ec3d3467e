//! Latency histograms shared by many connection tasks: a few shards behind std mutexes, each
//! task buffering its samples and taking a shard's lock once per batch, so neither memory (one
//! HDR histogram per connection would be ~100 KB) nor locking grows with the connection count.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value tracked, in microseconds (larger samples are clamped to it): one minute.
const MAX_US: u64 = 60_000_000;
/// Significant figures kept: 0.1 % resolution.
const SIGFIG: u8 = 3;
/// Samples a task buffers before taking a shard's lock.
const BATCH: usize = 256;

/// A new empty histogram of microseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_US, SIGFIG) {
        Ok(h) => h,
        // Constant bounds that hdrhistogram documents as valid (1 ≤ low, 2·low ≤ high, sigfig ≤ 5).
        Err(e) => unreachable!("hdrhistogram bounds: {e:?}"),
    }
}

/// Records `d` in microseconds into `h`.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
}

/// The shards every task of a run records into.
#[derive(Debug)]
pub(crate) struct Latencies {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl Latencies {
    /// Shards enough for the runtime's threads to rarely meet on one lock.
    pub(crate) fn new() -> Arc<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shards = (0..threads * 4).map(|_| Mutex::new(histogram())).collect();
        Arc::new(Self { shards })
    }

    /// A buffering recorder for the `index`th task.
    pub(crate) fn recorder(self: &Arc<Self>, index: usize) -> Recorder {
        Recorder {
            latencies: self.clone(),
            shard: index % self.shards.len(),
            buf: Vec::new(),
        }
    }

    /// Every shard added up (call after the recorders are dropped).
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in self.shards.iter() {
            let h = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// One task's buffer in front of a shard; flushes when full and when dropped.
#[derive(Debug)]
pub(crate) struct Recorder {
    latencies: Arc<Latencies>,
    shard: usize,
    buf: Vec<u64>,
}

impl Recorder {
    /// Adds a sample.
    pub(crate) fn record(&mut self, d: Duration) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(BATCH);
        }
        self.buf
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        if self.buf.len() >= BATCH {
            self.flush();
        }
    }

    /// Moves the buffered samples into the shard.
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(shard) = self.latencies.shards.get(self.shard) {
            let mut h = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for v in self.buf.drain(..) {
                h.saturating_record(v);
            }
        }
        self.buf.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl From<&Histogram<u64>> for LatencySummary {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_flush_into_shards() {
        let l = Latencies::new();
        for i in 0..10 {
            let mut r = l.recorder(i);
            for us in 1..=100u64 {
                r.record(Duration::from_micros(us));
            }
        }
        let s = LatencySummary::from(&l.merged());
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, 100);
        assert_eq!(s.p50, 50);
        assert!(s.p99 >= 99);
    }
}
