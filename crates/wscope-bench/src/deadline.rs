//! When a run must stop, whatever it is doing: `--timeout`, or the run's planned length plus a
//! grace period.

use std::time::{Duration, Instant};

/// A point in time every wait of a run is bounded by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(tokio::time::Instant);

impl Deadline {
    /// How long a run may go on past its planned length before it is stopped.
    pub(crate) const GRACE: Duration = Duration::from_secs(60);

    /// `d` from now (a year from now if that overflows).
    pub(crate) fn after(d: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self(
            now.checked_add(d)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        )
    }

    /// Completes at the deadline.
    pub(crate) async fn reached(self) {
        tokio::time::sleep_until(self.0).await;
    }

    /// The deadline is behind us.
    pub(crate) fn passed(self) -> bool {
        tokio::time::Instant::now() >= self.0
    }

    /// The deadline as a std instant.
    pub(crate) fn instant(self) -> Instant {
        self.0.into_std()
    }
}
