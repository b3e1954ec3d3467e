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
        shared.shutdown_started.cancel();
        if first {
            // Run the drain in its own task, so it completes even if this caller is cancelled.
            let shared = shared.clone();
            tokio::spawn(async move {
                let unfinished = Unfinished::new(&shared);
                let report = shared.drain().await;
                unfinished.finished();
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

impl Registry {
    /// Completes once shutdown has begun (at once if it has), without starting it: for what must
    /// end then rather than hold the server up, such as a live stream (a graceful HTTP stop waits
    /// for responses in flight, and a stream's response never finishes on its own).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = wscope_core::Registry::new();
    /// let started = registry.shutdown_started();
    /// registry.shutdown().await;
    /// started.await; // already complete
    /// # }
    /// ```
    pub fn shutdown_started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared().shutdown_started.clone().cancelled_owned()
    }
}

/// Publishes a report if the drain never finishes — it panicked (an observer, a log write) or its
/// task was dropped with the runtime — so that callers of [`Registry::shutdown`] do not wait for
/// ever: whatever is still tracked counts as dropped, and every connection task is told to stop.
/// It only cancels and sends, so it cannot panic again while unwinding.
struct Unfinished {
    shared: Option<Arc<Shared>>,
    connections: u64,
}

impl Unfinished {
    fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Some(shared.clone()),
            connections: shared.aggregates.current.load(Ordering::Acquire),
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
        shared.root.cancel();
        shared.tracker.close();
        let report = ShutdownReport {
            connections: self.connections,
            dropped: shared.aggregates.current.load(Ordering::Acquire),
        };
        shared.shutdown_done.send_replace(Some(report));
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
                if entry.state() != crate::state::ConnectionState::Closed
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
///
/// The handlers stay installed afterwards, so a second signal no longer kills the process; use
/// [`StopSignals`] to act on it.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
    let mut signals = StopSignals::install()?;
    Ok(async move {
        let signal = signals.recv().await;
        tracing::info!("{signal}: shutting down");
    })
}

/// A signal that asks the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    /// The status a process killed by this signal exits with, as shells report it: 128 + the
    /// signal's number (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// SIGINT and SIGTERM, handled from [`StopSignals::install`] on; each [`StopSignals::recv`] waits
/// for the next one. A server drains on the first and can exit at once on the second:
///
/// ```no_run
/// # async fn demo(registry: wscope_core::Registry) -> std::io::Result<()> {
/// let mut signals = wscope_core::StopSignals::install()?;
/// signals.recv().await;
/// tokio::spawn(async move {
///     let again = signals.recv().await;
///     std::process::exit(again.exit_code().into()); // the operator does not want to wait
/// });
/// registry.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers now (a signal from here on is not lost).
    #[cfg(unix)]
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Ctrl-C, where there are no Unix signals.
    #[cfg(not(unix))]
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// The next signal.
    #[cfg(unix)]
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }

    /// The next Ctrl-C.
    #[cfg(not(unix))]
    pub async fn recv(&mut self) -> StopSignal {
        let _ = tokio::signal::ctrl_c().await;
        StopSignal::Interrupt
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// A layer that panics on the drain's first log line, as the fmt layer did on a closed stderr.
    struct PanicInDrain;

    impl<S: tracing::Subscriber> Layer<S> for PanicInDrain {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == "wscope_core::shutdown" {
                panic!("cannot write the log line");
            }
        }
    }

    // On a current-thread runtime the drain task runs on this thread, under this subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn a_drain_that_panics_still_publishes_its_report() {
        let subscriber = tracing_subscriber::registry().with(PanicInDrain);
        let _default = tracing::subscriber::set_default(subscriber);
        let registry = Registry::with_config(
            crate::RegistryConfig::default()
                .stats_interval(Duration::ZERO)
                .cleanup_interval(Duration::ZERO),
        );
        let report = tokio::time::timeout(Duration::from_secs(5), registry.shutdown())
            .await
            .expect("the report arrives although the drain panicked");
        assert_eq!(report, ShutdownReport::default());
        // Later callers get the same report, at once.
        assert_eq!(registry.shutdown().await, report);
        assert!(registry.is_shut_down());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_started_completes_when_shutdown_begins_not_before() {
        let registry = Registry::with_config(
            crate::RegistryConfig::default()
                .stats_interval(Duration::ZERO)
                .cleanup_interval(Duration::ZERO),
        );
        let started = registry.shutdown_started();
        tokio::pin!(started);
        assert!(futures_util::FutureExt::now_or_never(started.as_mut()).is_none());
        assert!(!registry.is_shut_down());
        let drain = tokio::spawn({
            let registry = registry.clone();
            async move { registry.shutdown().await }
        });
        tokio::time::timeout(Duration::from_secs(5), started)
            .await
            .expect("completes once shutdown begins");
        assert!(registry.is_shut_down());
        drain.await.unwrap();
        // A reader that arrives later finds it complete at once.
        tokio::time::timeout(Duration::from_secs(5), registry.shutdown_started())
            .await
            .unwrap();
    }

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(StopSignal::Interrupt.exit_code(), 130);
        assert_eq!(StopSignal::Terminate.exit_code(), 143);
        assert_eq!(StopSignal::Terminate.to_string(), "SIGTERM");
    }
}
