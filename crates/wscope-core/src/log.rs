//! The reference's three stats lines, logged through `tracing` — on demand with
//! [`log_connection_stats`], or periodically by the [`StatsLogger`] observer that a registry with a
//! non-zero `stats_interval` starts with.

use std::time::Duration;

use crate::observer::Observer;
use crate::snapshot::Snapshot;

/// The `tracing` target the stats lines are logged under.
pub const STATS_TARGET: &str = "wscope::stats";

/// Milliseconds to whole seconds, rounded like JavaScript's `Math.round`.
fn secs(ms: u64) -> u64 {
    (ms + 500) / 1000
}

/// The three lines, exactly as the reference prints them.
pub fn stats_lines(s: &Snapshot) -> [String; 3] {
    let st = &s.connections_by_state;
    [
        format!(
            "[WebSocket Stats] Active: {}, Total: {}, Closed: {}",
            s.total_connections, s.total_connections_ever, s.total_connections_closed
        ),
        format!(
            "[WebSocket Stats] Avg Age: {}s, Avg Idle: {}s",
            secs(s.average_age),
            secs(s.average_idle_time)
        ),
        format!(
            "[WebSocket Stats] By State - Open: {}, Connecting: {}, Closing: {}",
            st.open, st.connecting, st.closing
        ),
    ]
}

pub(crate) fn log_snapshot(s: &Snapshot) {
    for line in stats_lines(s) {
        tracing::info!(target: STATS_TARGET, "{line}");
    }
}

/// The reference's `createStatsMiddleware()`: an observer that logs the three lines every
/// `interval`. A registry adds one by itself when its `stats_interval` is not zero.
#[derive(Debug, Clone, Copy)]
pub struct StatsLogger {
    interval: Duration,
}

impl StatsLogger {
    /// Logs every `interval`.
    pub fn every(interval: Duration) -> Self {
        Self { interval }
    }
}

impl Observer for StatsLogger {
    fn wants_events(&self) -> bool {
        false
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn tick(&self, summary: &Snapshot) {
        log_snapshot(summary);
    }
}
