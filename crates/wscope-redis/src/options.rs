//! [`RedisOptions`]: how long a command may take, how often the link is probed, how fast a lost
//! link is retried.

use std::time::Duration;

/// How a [`RedisBackend`](crate::RedisBackend) talks to Redis.
///
/// Every field has a default ([`RedisOptions::default`]); change the ones you need:
///
/// ```
/// use std::time::Duration;
/// use wscope_redis::RedisOptions;
///
/// let options = RedisOptions {
///     command_timeout: Duration::from_millis(500),
///     ..RedisOptions::default()
/// };
/// assert_eq!(options.ping_interval, Duration::from_millis(500));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// The longest any one call (publish, subscribe, lease, release, …) waits for Redis, waiting
    /// for a connection included; past it the call fails with
    /// [`BackendErrorKind::Timeout`](wscope_cluster::BackendErrorKind::Timeout). Also bounds
    /// each connection attempt. Default: 1 s.
    pub command_timeout: Duration,
    /// How often the background task PINGs Redis while the link is up, to notice a dead server
    /// when nothing else is being sent (the link turns `Disconnected` within about this interval
    /// plus the command timeout). Each probe is one PING per connection (two once subscribed).
    /// Default: 500 ms.
    pub ping_interval: Duration,
    /// The first delay between reconnect attempts once the link is down; it doubles after each
    /// failed attempt up to [`RedisOptions::reconnect_max`]. Default: 100 ms.
    pub reconnect_min: Duration,
    /// The longest delay between reconnect attempts. Default: 5 s.
    pub reconnect_max: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl RedisOptions {
    /// Why these options cannot be used, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        let named = [
            ("command_timeout", self.command_timeout),
            ("ping_interval", self.ping_interval),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
        ];
        if let Some((name, _)) = named.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be more than zero"));
        }
        if self.reconnect_min > self.reconnect_max {
            return Err(format!(
                "reconnect_min ({:?}) is more than reconnect_max ({:?})",
                self.reconnect_min, self.reconnect_max
            ));
        }
        Ok(())
    }
}

/// The delays between reconnect attempts: `min`, doubling, capped at `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt (and doubles the one after).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min` (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(RedisOptions::default().check(), Ok(()));
    }

    #[test]
    fn zero_and_inverted_bounds_are_refused() {
        let zero = RedisOptions {
            command_timeout: Duration::ZERO,
            ..RedisOptions::default()
        };
        assert!(zero.check().unwrap_err().contains("command_timeout"));
        let inverted = RedisOptions {
            reconnect_min: Duration::from_secs(10),
            ..RedisOptions::default()
        };
        assert!(inverted.check().unwrap_err().contains("reconnect_min"));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
