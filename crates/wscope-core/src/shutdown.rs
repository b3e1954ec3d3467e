//! Shutdown's state and outcome: whether it began (upgrades are refused from then on), the
//! [`ShutdownReport`] every caller gets, and the signal helpers ([`shutdown_signal`],
//! [`StopSignals`]) that start it. The drain itself is in `drain`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownReport {
    /// Connections tracked when shutdown began.
    pub connections: u64,
    /// Those still tracked at the drain deadline, dropped without a finished handshake.
    pub dropped: u64,
}

/// Whether shutdown has begun, who waits for it, and its report once known: the state behind
/// [`Registry::shutdown`](crate::Registry::shutdown), which the drain (`drain`) fills in.
#[derive(Debug)]
pub(crate) struct Shutdown {
    /// Set when shutdown begins; upgrades are refused from then on.
    begun: AtomicBool,
    /// Cancelled when shutdown begins, for readers that wait on it
    /// ([`Registry::shutdown_started`](crate::Registry::shutdown_started)).
    started: CancellationToken,
    /// The shutdown's outcome, once known; later callers wait on it.
    done: watch::Sender<Option<ShutdownReport>>,
    /// Serialises shutdown's start (so exactly one caller drives it).
    lock: Mutex<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            begun: AtomicBool::new(false),
            started: CancellationToken::new(),
            done: watch::channel(None).0,
            lock: Mutex::new(()),
        }
    }
}

impl Shutdown {
    /// Whether shutdown has begun.
    pub(crate) fn is_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Whether shutdown has begun, for a connection that has just become CLOSED. The fence pairs
    /// with the one in the drain: a connection ending as the drain starts either sees the flag
    /// and removes itself, or is seen CLOSED by the drain's sweep.
    pub(crate) fn is_begun_fenced(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.is_begun()
    }

    /// Begins shutdown (again, harmlessly); true for exactly one caller, who drives the drain.
    pub(crate) fn begin(&self) -> bool {
        let first = {
            let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            !self.begun.swap(true, Ordering::AcqRel)
        };
        self.started.cancel();
        first
    }

    /// Completes once shutdown has begun.
    pub(crate) fn started(&self) -> impl Future<Output = ()> + Send + 'static {
        self.started.clone().cancelled_owned()
    }

    /// Publishes the report every caller gets.
    pub(crate) fn finish(&self, report: ShutdownReport) {
        self.done.send_replace(Some(report));
    }

    /// Waits for the report.
    pub(crate) async fn report(&self) -> ShutdownReport {
        let mut done = self.done.subscribe();
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

/// Installs SIGINT and SIGTERM handlers now — so a signal that arrives before the future is
/// polled is not lost to the default disposition, which would kill the process without a drain —
/// and returns a future that completes on either. Pair it with
/// [`Registry::shutdown`](crate::Registry::shutdown):
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
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(StopSignal::Interrupt.exit_code(), 130);
        assert_eq!(StopSignal::Terminate.exit_code(), 143);
        assert_eq!(StopSignal::Terminate.to_string(), "SIGTERM");
    }
}
