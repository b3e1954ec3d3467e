//! The path every mode shares: the checks that can refuse a run before it opens anything (the
//! URLs, the open-file limit, a bare TCP connect, `--pid`), opening connections behind a progress
//! bar, the measurement window over which this process's and the server's CPU are read, and the
//! end (the checkpoint, then the close handshakes).

use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;

use crate::checkpoint::Checkpoint;
use crate::connect::{self, Connector, Opened};
use crate::deadline::Deadline;
use crate::error::BenchError;
use crate::failures::Failures;
use crate::limits;
use crate::options::CommonOptions;
use crate::probe::Probe;
use crate::progress::{self, Steps};
use crate::target::Target;
use crate::ws::Ws;

/// What a mode asks of the shared set-up.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// `--url`.
    pub(crate) url: &'a str,
    /// `--sender-url` (broadcast): where [`Session::open_sender`] connects, checked like `--url`;
    /// `None` for `--url` itself.
    pub(crate) sender_url: Option<&'a str>,
    /// The most connections open at once: sizes the open-file check and the source addresses.
    pub(crate) connections: usize,
    /// Read buffer of each client connection (small for idle ones, larger for busy ones).
    pub(crate) read_buffer: usize,
    /// How long the run should take; the deadline is a minute past it unless `--timeout`.
    pub(crate) planned: Duration,
    /// The shared flags.
    pub(crate) common: &'a CommonOptions,
}

/// Connections a mode drives, taken from the keeper once all were opened.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The ones still open.
    pub(crate) conns: Vec<Ws>,
    /// Failed connects and handshakes, and connections the server ended while others opened.
    pub(crate) failures: Failures,
    /// The deadline cut the opening short.
    pub(crate) timed_out: bool,
}

/// A run that passed its checks: where to connect, until when, and what to read.
#[derive(Debug)]
pub(crate) struct Session {
    url: String,
    connector: Arc<Connector>,
    /// `--sender-url` and its connector, when it was given.
    sender: Option<(String, Connector)>,
    deadline: Deadline,
    /// The first reading, taken during the checks so that a bad `--pid` fails before any load.
    probe: Probe,
    progress: bool,
}

impl Session {
    /// Checks everything that can refuse the run before a single WebSocket is opened.
    pub(crate) async fn start(plan: Plan<'_>) -> Result<Self, BenchError> {
        let target = Target::parse("--url", plan.url)?;
        let sender_target = match plan.sender_url {
            Some(url) => Some(Target::parse("--sender-url", url)?),
            None => None,
        };
        limits::ensure_open_files(plan.connections, "-c")?;
        let deadline = plan.common.deadline(plan.planned);
        let connector = Connector::new(target, plan.connections, plan.read_buffer, plan.common);
        connector.preflight().await?;
        let sender = match sender_target {
            Some(target) => {
                let url = target.url.clone();
                let connector = Connector::new(target, 1, plan.read_buffer, plan.common);
                connector.preflight().await?;
                Some((url, connector))
            }
            None => None,
        };
        let probe = Probe::start(plan.common.pid)?;
        Ok(Self {
            url: plan.url.to_owned(),
            connector: Arc::new(connector),
            sender,
            deadline,
            probe,
            progress: plan.common.progress,
        })
    }

    /// When the run must stop.
    pub(crate) fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Opens connections one at a time (`churn`).
    pub(crate) fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    /// A progress bar, drawn only when the command line asked for it.
    pub(crate) fn bar(&self, steps: Steps, prefix: &str) -> ProgressBar {
        progress::bar(self.progress, steps, prefix)
    }

    /// Opens `count` connections, at most `concurrency` handshakes at once, behind a bar named
    /// `prefix`, and holds them (each answering the server's pings) until the mode takes them.
    /// Refused when not one opened.
    pub(crate) async fn open(
        &self,
        count: usize,
        concurrency: usize,
        prefix: &str,
    ) -> Result<Opened, BenchError> {
        let bar = self.bar(Steps::Count(count as u64), prefix);
        let opened =
            connect::open_all(&self.connector, count, concurrency, self.deadline, &bar).await;
        bar.finish_and_clear();
        if opened.count == 0 {
            let reason = opened.failures.first;
            return Err(self.unreachable(reason, "no connection opened before --timeout"));
        }
        Ok(opened)
    }

    /// Opens connections as [`Session::open`] does and takes them from the keeper to be
    /// driven; those the server ended meanwhile count as failures, with why.
    pub(crate) async fn connect(
        &self,
        count: usize,
        concurrency: usize,
        prefix: &str,
    ) -> Result<Connected, BenchError> {
        let opened = self.open(count, concurrency, prefix).await?;
        let kept = opened.keeper.stop().await;
        let mut failures = opened.failures;
        for (reason, n) in kept.drops.reasons() {
            failures.add_many(*n, || format!("dropped while the others opened: {reason}"));
        }
        Ok(Connected {
            conns: kept.conns,
            failures,
            timed_out: opened.timed_out,
        })
    }

    /// Opens the one sending connection of a broadcast run: to `--sender-url` when it was
    /// given, else to `--url`. Refused, naming that URL, when it does not open.
    pub(crate) async fn open_sender(&self) -> Result<Ws, BenchError> {
        let (url, connector) = match &self.sender {
            Some((url, connector)) => (url, connector),
            None => (&self.url, &*self.connector),
        };
        connector
            .connect()
            .await
            .map_err(|e| BenchError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })
    }

    /// The run cannot go on: `reason` (the first failure), else `otherwise`.
    pub(crate) fn unreachable(&self, reason: Option<String>, otherwise: &str) -> BenchError {
        BenchError::Unreachable {
            url: self.url.clone(),
            reason: reason.unwrap_or_else(|| otherwise.to_owned()),
        }
    }

    /// Reads this process and the server now: the start or the end of a window.
    pub(crate) fn probe(&self) -> Probe {
        self.probe.again()
    }

    /// Ends the run: waits at the checkpoint if there is one, then closes `conns` with close
    /// handshakes. Returns how many did not close cleanly.
    pub(crate) async fn finish(&self, conns: Vec<Ws>, checkpoint: Option<Checkpoint>) -> u64 {
        self.pause(checkpoint).await;
        connect::close_all(conns).await
    }

    /// Waits at the checkpoint, if there is one, at most until the deadline.
    pub(crate) async fn pause(&self, checkpoint: Option<Checkpoint>) {
        if let Some(checkpoint) = checkpoint {
            checkpoint.pass(self.deadline).await;
        }
    }
}
