//! The background task of each backend: probes the link (PING every
//! [`RedisOptions::ping_interval`](crate::RedisOptions::ping_interval) while up; retries with
//! backoff while down), remakes the subscriptions after an outage, and sets the link's state.

use std::sync::Arc;

use wscope_cluster::Link;

use crate::inner::Inner;
use crate::options::Backoff;

/// Starts the task; it ends soon after the last handle on `inner` is dropped.
pub(crate) fn spawn(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let wake = Arc::clone(&inner.wake);
    let options = inner.options.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(options.reconnect_min, options.reconnect_max);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let next = match inner.probe().await {
                Ok(()) => {
                    inner.link.set(Link::Connected, "probe answered");
                    backoff.reset();
                    options.ping_interval
                }
                Err(err) => {
                    tracing::debug!(error = %err, "redis probe failed");
                    inner.probe_failed(&err.message);
                    backoff.next_delay()
                }
            };
            drop(inner);
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                () = wake.notified() => {}
            }
        }
    });
}
