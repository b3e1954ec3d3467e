//! The drain on shutdown: refuse new upgrades, close every connection with 1001 "Server shutting
//! down" after flushing what was queued to it (at once, or paced), wait for the close handshakes
//! up to the drain deadline, then drop what is left. Run once per registry, whoever asks first;
//! every caller gets the same [`ShutdownReport`].

use std::sync::Arc;
use std::time::Duration;

use crate::close::{CloseFrame, Initiator};
use crate::shared::Shared;
use crate::shutdown::ShutdownReport;
use crate::state::ConnectionState;

/// Begins shutdown (the first caller starts the drain) and waits for its report.
pub(crate) async fn shutdown(shared: &Arc<Shared>) -> ShutdownReport {
    if shared.shutdown().begin() {
        // Run the drain in its own task, so it completes even if this caller is cancelled.
        let shared = shared.clone();
        tokio::spawn(async move {
            let unfinished = Unfinished::new(&shared);
            let report = drain(&shared).await;
            unfinished.finished();
            shared.shutdown().finish(report);
        });
    }
    shared.shutdown().report().await
}

/// Publishes a report if the drain never finishes — it panicked (an observer, a log write) or its
/// task was dropped with the runtime — so that callers of
/// [`Registry::shutdown`](crate::Registry::shutdown) do not wait for ever: whatever is still
/// tracked counts as dropped, and every connection task is told to stop. It only cancels and
/// sends, so it cannot panic again while unwinding.
struct Unfinished {
    shared: Option<Arc<Shared>>,
    connections: u64,
}

impl Unfinished {
    fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Some(shared.clone()),
            connections: shared.current(),
        }
    }

    fn finished(mut self) {
        self.shared = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        shared.stop_tasks();
        let report = ShutdownReport {
            connections: self.connections,
            dropped: shared.current(),
        };
        shared.shutdown().finish(report);
    }
}

async fn drain(shared: &Arc<Shared>) -> ShutdownReport {
    let config = shared.config();
    let connections = shared.current();
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    // Entries already CLOSED finished their handshake; only their handlers still hold
    // them. Sweep them now rather than wait for them and call them dropped at the deadline.
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    shared.cleanup_stale();
    // Connections dropped without a finished handshake: those whose own close timeout
    // fired during the drain, plus those still here at the deadline.
    let before = shared.aggregates().closed_by(Initiator::Deadline);
    tracing::info!(
        connections,
        rate = config.drain_rate,
        deadline = ?config.drain_timeout,
        "shutdown: closing every connection"
    );
    let closing = if config.drain_rate == 0 {
        shared.close_all(&CloseFrame::shutdown(), Initiator::Shutdown)
    } else {
        close_paced(shared, config.drain_rate).await
    };
    tracing::debug!(closing, "shutdown: every connection asked to close");
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !shared.wait_empty(left).await {
        let left = shared.current();
        tracing::warn!(left, "shutdown: drain deadline passed, dropping the rest");
        shared.for_each_entry(|entry| entry.record_dropped("drain deadline passed"));
        shared.abort_all();
        // Aborted tasks unwind promptly; give them a moment to drop their entries.
        shared.wait_empty(Duration::from_secs(1)).await;
    }
    let dropped = shared.aggregates().closed_by(Initiator::Deadline) - before + shared.current();
    shared.stop_tasks();
    tracing::info!(
        connections,
        closed_cleanly = connections.saturating_sub(dropped),
        dropped,
        "shutdown: {} of {connections} connections closed cleanly, {dropped} dropped",
        connections.saturating_sub(dropped)
    );
    ShutdownReport {
        connections,
        dropped,
    }
}

/// Closes every connection with 1001 at `rate` a second — faster if that would not finish
/// within half the drain deadline, so the last ones still have time for their handshake.
/// Returns how many were asked to close.
async fn close_paced(shared: &Shared, rate: u32) -> u64 {
    let entries = shared.entries();
    let n = entries.len() as f64;
    let window = (shared.config().drain_timeout / 2).as_secs_f64().max(0.001);
    let rate = f64::from(rate).max(n / window);
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut next, mut closing) = (0, 0);
    while next < entries.len() {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate).ceil() as usize).clamp(1, entries.len());
        for entry in &entries[next..due.max(next)] {
            if entry.state() != ConnectionState::Closed
                && entry.request_close(CloseFrame::shutdown(), Initiator::Shutdown)
            {
                closing += 1;
            }
        }
        next = due.max(next);
    }
    closing
}
