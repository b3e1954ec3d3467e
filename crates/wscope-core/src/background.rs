//! The registry's periodic work: the stale-entry sweep (which also drops expired bans, rate
//! buckets and empty path entries), pings and timeouts (`liveness`), and the observers' ticks (the
//! stats logger is one). They need a tokio runtime, so they start with the first registration (or
//! [`crate::Registry::start_background_tasks`]), and stop when the registry is dropped or shut
//! down.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

/// Starts the periodic tasks `shared`'s configuration asks for, once, if a runtime is there.
pub(crate) fn start(shared: &Arc<Shared>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return; // no runtime yet: the first registration inside one starts them
    }
    if !shared.claim_background() {
        return;
    }
    let config = shared.config();
    let cleanup = config.cleanup_interval;
    if !cleanup.is_zero() {
        spawn_every(shared, cleanup, |shared| {
            shared.sweep_admission();
            let cleaned = shared.cleanup_stale();
            if cleaned > 0 {
                tracing::debug!(cleaned, "swept stale connections");
            }
            shared.drop_empty_paths();
        });
    }
    let ping = config.ping_interval;
    if !ping.is_zero() {
        spawn_every(shared, ping, Shared::ping_all);
    }
    if let Some(period) = crate::liveness::check_period(config) {
        spawn_every(shared, period, |shared| {
            let closed = shared.check_timeouts();
            if closed > 0 {
                tracing::debug!(closed, "closed connections past a timeout");
            }
        });
    }
    start_ticks(shared);
}

/// Starts the ticks of the observers added since the last call (if a runtime is there).
pub(crate) fn start_ticks(shared: &Arc<Shared>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    for observer in shared.observers().take_pending_ticks() {
        let Some(period) = observer.tick_interval() else {
            continue;
        };
        spawn_every(shared, period, move |shared| {
            observer.tick(&shared.snapshot(false))
        });
    }
}

fn spawn_every(shared: &Arc<Shared>, period: Duration, tick: impl Fn(&Shared) + Send + 'static) {
    let stop = shared.stop_token();
    let weak = Arc::downgrade(shared);
    shared.tracker().spawn(every(period, stop, weak, tick));
}

async fn every(
    period: Duration,
    stop: CancellationToken,
    shared: Weak<Shared>,
    tick: impl Fn(&Shared),
) {
    // A period too long to add to the clock (`Duration::MAX`) would panic this task; such a
    // tick never comes, so wait for the stop alone.
    let Some(first) = tokio::time::Instant::now().checked_add(period) else {
        stop.cancelled().await;
        return;
    };
    let mut interval = tokio::time::interval_at(first, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match shared.upgrade() {
            Some(shared) => tick(&shared),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_period_too_long_for_the_clock_never_ticks_and_does_not_panic() {
        for period in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let stop = CancellationToken::new();
            let task = tokio::spawn(every(period, stop.clone(), Weak::new(), |_| {
                panic!("ticked")
            }));
            tokio::task::yield_now().await;
            stop.cancel();
            let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
            assert!(
                ended.expect("stops when told").is_ok(),
                "the task panicked for {period:?}"
            );
        }
    }
}
