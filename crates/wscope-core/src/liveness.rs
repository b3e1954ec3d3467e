//! Liveness: server pings, the ping timeout and the idle timeout, decided per entry here. Two
//! registry-wide periodic tasks (`background`) walk the entries — one sends a ping to each open connection every `ping_interval`, the other
//! closes those whose ping went unanswered for `ping_timeout` or that moved no message for
//! `idle_timeout` — so a connection pays no timer and no allocation for them: a ping is a flag
//! in its queue and a shared payload, its send time and round trip two atomics in its entry.
//! Timeouts are checked every quarter of the shorter one (between 10 ms and 1 s), so a
//! connection is closed within a quarter of its timeout after it passed. Each timed pong is told
//! (by the connection) to observers ([`Observer::ping_rtt`](crate::Observer::ping_rtt)), for round-trip histograms.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::close::{CloseCode, CloseFrame};
use crate::config::RegistryConfig;
use crate::entry::Entry;
use crate::state::{ConnectionState, NO_PING};

/// How often timeouts are checked, if any is on.
pub(crate) fn check_period(config: &RegistryConfig) -> Option<Duration> {
    let ping = (!config.ping_interval.is_zero()).then_some(config.ping_timeout);
    let idle = (!config.idle_timeout.is_zero()).then_some(config.idle_timeout);
    let shortest = match (ping, idle) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)))
}

/// Pings `e` if it is open and has no ping outstanding: stamps the send time and flags its
/// queue (its writer sends the ping first).
pub(crate) fn ping(e: &Entry, now: u64) {
    if e.state() != ConnectionState::Open {
        return;
    }
    let stamped = e
        .ping_sent_ms
        .compare_exchange(NO_PING, now, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok();
    if stamped && !e.outbox.request_ping() {
        e.ping_sent_ms.store(NO_PING, Ordering::Release);
    }
}

/// The ping and idle timeouts in force, in ms (`None`: off).
pub(crate) struct Timeouts {
    ping: Option<u64>,
    idle: Option<u64>,
}

impl Timeouts {
    pub(crate) fn new(config: &RegistryConfig) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            ping: (!config.ping_interval.is_zero()).then(|| ms(config.ping_timeout)),
            idle: (!config.idle_timeout.is_zero()).then(|| ms(config.idle_timeout)),
        }
    }

    /// Which timeout `e` is past as of `now`, if it is open and past one.
    pub(crate) fn expired(&self, e: &Entry, now: u64) -> Option<Expired> {
        if e.state() != ConnectionState::Open {
            return None;
        }
        let sent = e.ping_sent_ms.load(Ordering::Acquire);
        if let Some(timeout) = self.ping {
            if sent != NO_PING && now.saturating_sub(sent) >= timeout {
                return Some(Expired::Ping);
            }
        }
        let last = e.last_activity_ms.load(Ordering::Relaxed);
        self.idle
            .is_some_and(|timeout| now.saturating_sub(last) >= timeout)
            .then_some(Expired::Idle)
    }
}

/// A timeout a connection is past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Its ping went unanswered: it is failed with 1011 "ping timeout" (dropped without waiting
    /// for a reply).
    Ping,
    /// It moved no message: it is closed with 1000 "idle timeout" (a normal close handshake).
    Idle,
}

impl Expired {
    /// The close frame it gets.
    pub(crate) fn frame(self) -> CloseFrame {
        match self {
            Self::Ping => CloseFrame {
                code: CloseCode::INTERNAL_ERROR,
                reason: "ping timeout".to_owned(),
            },
            Self::Idle => CloseFrame {
                code: CloseCode::NORMAL,
                reason: "idle timeout".to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_checked_every_quarter_of_the_shortest() {
        let base = RegistryConfig::default();
        assert_eq!(
            check_period(&base),
            Some(Duration::from_millis(2500).min(Duration::from_secs(1)))
        );
        let off = base.clone().ping_interval(Duration::ZERO);
        assert_eq!(check_period(&off), None);
        let idle = off.idle_timeout(Duration::from_millis(200));
        assert_eq!(check_period(&idle), Some(Duration::from_millis(50)));
        let tiny = RegistryConfig::default().ping_timeout(Duration::from_millis(1));
        assert_eq!(check_period(&tiny), Some(Duration::from_millis(10)));
    }
}
