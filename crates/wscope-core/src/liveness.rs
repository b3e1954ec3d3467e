//! Liveness: server pings, the ping timeout and the idle timeout. Two registry-wide periodic tasks
//! walk the entries — one sends a ping to each open connection every `ping_interval`, the other
//! closes those whose ping went unanswered for `ping_timeout` or that moved no message for
//! `idle_timeout` — so a connection pays no timer and no allocation for them: a ping is a flag
//! in its queue and a shared payload, its send time and round trip two atomics in its entry.
//! Timeouts are checked every quarter of the shorter one (between 10 ms and 1 s), so a
//! connection is closed within a quarter of its timeout after it passed. Each timed pong is told
//! to observers ([`Observer::ping_rtt`](crate::Observer::ping_rtt)), for round-trip histograms.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::close::{CloseCode, CloseFrame, Initiator};
use crate::config::RegistryConfig;
use crate::observer::RttEvent;
use crate::registry::Shared;
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

impl Shared {
    /// A pong timed one of our pings at `rtt_ms`: tells the observers, if any (one atomic load
    /// when there are none).
    #[inline]
    pub(crate) fn rtt_measured(&self, rtt_ms: u32) {
        if let Some(observers) = self.observers.current() {
            let event = RttEvent {
                rtt: Duration::from_millis(u64::from(rtt_ms)),
            };
            observers.iter().for_each(|o| o.ping_rtt(&event));
        }
    }

    /// Asks every open connection with no ping outstanding to send one.
    pub(crate) fn ping_all(&self) {
        let now = self.clock.now_ms();
        for item in self.entries.iter() {
            let e = item.value();
            if e.state() != ConnectionState::Open {
                continue;
            }
            let stamped = e
                .ping_sent_ms
                .compare_exchange(NO_PING, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            if stamped && !e.outbox.request_ping() {
                e.ping_sent_ms.store(NO_PING, Ordering::Release);
            }
        }
    }

    /// Closes the open connections whose ping went unanswered for the ping timeout (1011, without
    /// waiting for a reply: the peer is not answering) and those that moved no message for the
    /// idle timeout (1000, with the handshake). Returns how many it closed.
    pub(crate) fn check_timeouts(&self) -> u64 {
        let now = self.clock.now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ping_timeout =
            (!self.config.ping_interval.is_zero()).then(|| ms(self.config.ping_timeout));
        let idle_timeout =
            (!self.config.idle_timeout.is_zero()).then(|| ms(self.config.idle_timeout));
        let mut closed = 0;
        for item in self.entries.iter() {
            let e = item.value();
            if e.state() != ConnectionState::Open {
                continue;
            }
            let sent = e.ping_sent_ms.load(Ordering::Acquire);
            if let Some(timeout) = ping_timeout {
                if sent != NO_PING && now.saturating_sub(sent) >= timeout {
                    let frame = CloseFrame {
                        code: CloseCode::INTERNAL_ERROR,
                        reason: "ping timeout".to_owned(),
                    };
                    if e.fail(frame, Initiator::Timeout, self.config.drain_timeout) {
                        closed += 1;
                    }
                    continue;
                }
            }
            if let Some(timeout) = idle_timeout {
                let last = e.last_activity_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= timeout {
                    let frame = CloseFrame {
                        code: CloseCode::NORMAL,
                        reason: "idle timeout".to_owned(),
                    };
                    if e.request_close(frame, Initiator::Timeout) {
                        closed += 1;
                    }
                }
            }
        }
        closed
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
