//! Graceful shutdown: refuse new upgrades, close every connection with 1001 "Server shutting
//! down" after flushing what was queued to it, wait for the close handshakes up to the drain
//! deadline, then drop what is left. Run once per registry, whoever asks first; every caller
//! gets the same [`ShutdownReport`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::close::{CloseFrame, Initiator};
use crate::registry::{Registry, Shared};

/// What a shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownReport {
    /// Connections tracked when shutdown began.
    pub connections: u64,
    /// Those still tracked at the drain deadline, dropped without a finished handshake.
    pub dropped: u64,
}

impl Registry {
    /// Graceful shutdown, idempotent: refuses new upgrades, closes every connection with 1001
    /// "Server shutting down" after flushing what was queued to it, waits for the close handshakes
    /// up to the drain deadline, then drops the rest. Every caller gets the same report.
    pub async fn shutdown(&self) -> ShutdownReport {
        let shared = self.shared();
        let mut done = shared.shutdown_done.subscribe();
        let first = {
            let _serial = shared
                .shutdown_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            !shared.shutting_down.swap(true, Ordering::AcqRel)
        };
        if first {
            // Run the drain in its own task, so it completes even if this caller is cancelled.
            let shared = shared.clone();
            tokio::spawn(async move {
                let report = shared.drain().await;
                shared.shutdown_done.send_replace(Some(report));
            });
        }
        loop {
            if let Some(report) = *done.borrow_and_update() {
                return report;
            }
            if done.changed().await.is_err() {
                return ShutdownReport::default();
            }
        }
    }
}

impl Shared {
    /// Waits until no entry is left, or `deadline` passes; true if emptied.
    async fn wait_empty(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let emptied = self.emptied.notified();
                tokio::pin!(emptied);
                emptied.as_mut().enable();
                if self.aggregates.current.load(Ordering::Acquire) == 0 {
                    return;
                }
                emptied.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    async fn drain(self: &Arc<Self>) -> ShutdownReport {
        let connections = self.aggregates.current.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        // Entries already CLOSED finished their handshake; only their handlers still hold
        // them. Sweep them now rather than wait for them and call them dropped at the deadline.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.cleanup_stale();
        // Connections dropped without a finished handshake: those whose own close timeout
        // fired during the drain, plus those still here at the deadline.
        let before = self.aggregates.closed_by(Initiator::Deadline);
        tracing::info!(
            connections,
            rate = self.config.drain_rate,
            deadline = ?self.config.drain_timeout,
            "shutdown: closing every connection"
        );
        let closing = if self.config.drain_rate == 0 {
            self.close_all(&CloseFrame::shutdown(), Initiator::Shutdown)
        } else {
            self.close_paced(self.config.drain_rate).await
        };
        tracing::debug!(closing, "shutdown: every connection asked to close");
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.wait_empty(left).await {
            let left = self.aggregates.current.load(Ordering::Acquire);
            tracing::warn!(left, "shutdown: drain deadline passed, dropping the rest");
            for item in self.entries.iter() {
                item.value().record_dropped("drain deadline passed");
            }
            self.root.cancel();
            // Aborted tasks unwind promptly; give them a moment to drop their entries.
            self.wait_empty(Duration::from_secs(1)).await;
        }
        let dropped = self.aggregates.closed_by(Initiator::Deadline) - before
            + self.aggregates.current.load(Ordering::Acquire);
        self.root.cancel();
        self.tracker.close();
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
    async fn close_paced(&self, rate: u32) -> u64 {
        let entries: Vec<Arc<crate::connection::Entry>> =
            self.entries.iter().map(|e| e.value().clone()).collect();
        let n = entries.len() as f64;
        let window = (self.config.drain_timeout / 2).as_secs_f64().max(0.001);
        let rate = f64::from(rate).max(n / window);
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let (mut next, mut closing) = (0, 0);
        while next < entries.len() {
            tick.tick().await;
            let due =
                ((start.elapsed().as_secs_f64() * rate).ceil() as usize).clamp(1, entries.len());
            for entry in &entries[next..due.max(next)] {
                if entry.state() != crate::connection::ConnectionState::Closed
                    && entry.request_close(CloseFrame::shutdown(), Initiator::Shutdown)
                {
                    closing += 1;
                }
            }
            next = due.max(next);
        }
        closing
    }
}

/// Installs SIGINT and SIGTERM handlers now — so a signal that arrives before the future is
/// polled is not lost to the default disposition, which would kill the process without a drain —
/// and returns a future that completes on either. Pair it with [`Registry::shutdown`]:
///
/// ```no_run
/// # async fn demo(registry: wscope_core::Registry) -> std::io::Result<()> {
/// let signal = wscope_core::shutdown_signal()?;
/// signal.await;
/// registry.shutdown().await; // 1001 to every client, after flushing their queues
/// # Ok(()) }
/// ```
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}

/// Ctrl-C, where there are no Unix signals.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    })
}
