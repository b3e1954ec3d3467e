//! Connections lost during a run (after they opened), and when: how long the run was really under
//! load, so that its rates are taken over that time, not over a window that went on idle after
//! the last connection died.

use std::time::Instant;

use serde::Serialize;

/// Connections that failed after they opened, and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lost {
    /// How many.
    pub count: u64,
    /// Seconds from the start of the load to the first loss.
    pub first_secs: Option<f64>,
    /// Seconds from the start of the load to the last loss.
    pub last_secs: Option<f64>,
    /// Every connection was lost: the load stopped at `lastSecs`.
    pub all: bool,
}

/// Loss times, collected as connection tasks end.
#[derive(Debug)]
pub(crate) struct Losses {
    /// When the load started: losses are reported in seconds from here.
    start: Instant,
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Losses {
    /// No loss yet, for a load that started at `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            count: 0,
            first: None,
            last: None,
        }
    }

    /// A connection was lost at `at`.
    pub(crate) fn record(&mut self, at: Instant) {
        self.count += 1;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// When the load stopped: `end`, or the last loss if every one of `connections` was lost
    /// before it.
    pub(crate) fn active_until(&self, connections: usize, end: Instant) -> Instant {
        match self.last {
            Some(last) if self.all_lost(connections) => last.min(end),
            _ => end,
        }
    }

    /// The report's view, with `connections` the number that were open.
    pub(crate) fn summary(&self, connections: usize) -> Lost {
        let secs = |t: Instant| t.saturating_duration_since(self.start).as_secs_f64();
        Lost {
            count: self.count,
            first_secs: self.first.map(secs),
            last_secs: self.last.map(secs),
            all: self.all_lost(connections),
        }
    }

    fn all_lost(&self, connections: usize) -> bool {
        self.count > 0 && self.count >= connections as u64
    }
}

/// `n` per second of `secs` (0 when no time passed).
pub(crate) fn per_sec(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_load_stops_at_the_last_loss_only_when_every_connection_was_lost() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let end = at(10_000);
        let mut losses = Losses::new(start);
        assert_eq!(losses.active_until(2, end), end);
        assert_eq!(losses.summary(2), Lost::default());
        losses.record(at(8_000));
        assert_eq!(losses.active_until(2, end), end, "one of two still up");
        losses.record(at(7_500));
        assert_eq!(losses.active_until(2, end), at(8_000));
        let lost = losses.summary(2);
        assert_eq!((lost.count, lost.all), (2, true));
        assert_eq!((lost.first_secs, lost.last_secs), (Some(7.5), Some(8.0)));
        assert_eq!(per_sec(41.0, 0.5), 82.0);
        assert_eq!(per_sec(41.0, 0.0), 0.0);
    }
}
