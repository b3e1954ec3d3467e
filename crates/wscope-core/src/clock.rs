//! The registry's time source: a monotonic clock, or a manual one that tests advance by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the registry reads "now" from.
///
/// Timestamps are stored as nanoseconds since the clock's origin in an `AtomicU64`, so an entry's
/// activity update is one clock read and one relaxed store.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Kind,
    /// Wall-clock time (ms since the Unix epoch) at the origin, to report `connectedAt`.
    origin_unix_ms: u64,
}

#[derive(Clone, Debug)]
enum Kind {
    /// The real monotonic clock.
    System(Instant),
    /// A clock that only moves when a [`ManualClock`] advances it (tests, simulations).
    Manual(Arc<AtomicU64>),
}

/// The controlling side of a manual [`Clock`]: advancing it moves every reader's "now".
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    /// The real monotonic clock, with its origin now.
    pub fn system() -> Self {
        Self {
            kind: Kind::System(Instant::now()),
            origin_unix_ms: unix_ms_now(),
        }
    }

    /// A clock that stands still until the returned [`ManualClock`] advances it.
    pub fn manual() -> (Self, ManualClock) {
        let nanos = Arc::new(AtomicU64::new(0));
        let clock = Self {
            kind: Kind::Manual(nanos.clone()),
            origin_unix_ms: unix_ms_now(),
        };
        (clock, ManualClock(nanos))
    }

    /// Nanoseconds since the clock's origin.
    #[inline]
    pub fn now_nanos(&self) -> u64 {
        match &self.kind {
            Kind::System(origin) => origin.elapsed().as_nanos() as u64,
            Kind::Manual(nanos) => nanos.load(Ordering::Relaxed),
        }
    }

    /// Milliseconds since the clock's origin (what entries store).
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.now_nanos() / 1_000_000
    }

    /// Wall-clock milliseconds since the Unix epoch for a reading of [`Clock::now_ms`].
    pub fn unix_ms(&self, ms: u64) -> u64 {
        self.origin_unix_ms + ms
    }
}
