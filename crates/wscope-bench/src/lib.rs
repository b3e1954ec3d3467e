//! `wscope bench`: a load generator that drives a WebSocket server on this machine by URL.
//!
//! Four modes, each a plain `async fn` taking an options struct and returning a report that
//! serialises to JSON, so that tests and wrappers run them in-process; the command line only
//! parses flags into those structs and prints the reports:
//! - [`echo()`]: C connections × W messages in flight × S bytes for T after a warm-up: messages/s
//!   and round-trip latency.
//! - [`idle()`]: open C connections with bounded handshake concurrency and hold them: handshakes/s
//!   and, with `--pid`, the server's bytes per connection.
//! - [`churn()`]: C workers each looping connect → echo one message → close: connections/s.
//! - [`broadcast()`]: C listeners on a chat endpoint and one sender: fan-out latency to the last
//!   receiver.
//!
//! Only loopback targets are driven. Every run is bounded by `--timeout` and reports what it has
//! when that passes. Each report carries the load generator's own CPU use, to show it was not
//! the bottleneck.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wscope_bench::BenchError> {
//! use std::time::Duration;
//! use wscope_bench::{echo, EchoOptions};
//!
//! let report = echo(EchoOptions {
//!     url: "ws://127.0.0.1:8080/ws".into(),
//!     connections: 10,
//!     duration: Duration::from_secs(1),
//!     ..Default::default()
//! })
//! .await?;
//! println!("{} messages/s, p99 {} µs", report.messages_per_sec, report.latency.p99);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `echo`, `idle`, `churn`, `broadcast`: the modes, each with its options and report.
//! - `target`: the `--url`, parsed and checked to be loopback.
//! - `addrs`: source addresses 127.0.0.1, .2, … to pass the ephemeral-port limit.
//! - `connect`: opening connections under a concurrency bound, closing them.
//! - `limits`: the open-file limit, checked and raised before a run.
//! - `latency`: sharded HDR histograms the connection tasks record into.
//! - `cpu`, `rss`, `probe`: CPU time and memory of this process and of the server (`--pid`).
//! - `progress`, `report`: progress bars on stderr; the table or JSON on stdout.

mod addrs;
mod broadcast;
mod churn;
mod connect;
mod cpu;
mod echo;
mod error;
mod idle;
mod latency;
mod limits;
mod probe;
mod progress;
pub mod report;
mod rss;
mod target;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tokio::sync::oneshot;

use wscope_core::units::parse_duration;

pub use broadcast::{broadcast, BroadcastOptions, BroadcastReport};
pub use churn::{churn, ChurnOptions, ChurnReport};
pub use cpu::CpuUse;
pub use echo::{echo, EchoOptions, EchoReport};
pub use error::BenchError;
pub use idle::{idle, IdleOptions, IdleReport};
pub use latency::LatencySummary;
pub use probe::{ClientCpu, ServerUse};
pub use report::Report;

/// How long a run may go on past its planned length before `--timeout` stops it.
const GRACE: Duration = Duration::from_secs(60);
/// Default bound on one connect + handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `wscope bench` flags: a mode and its options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What load to drive.
    #[command(subcommand)]
    pub mode: Mode,
    /// Print one JSON object instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The modes of `wscope bench`.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// C connections × W messages in flight × S bytes for T: messages/s and round-trip latency.
    Echo(EchoOptions),
    /// Open C connections and hold them: handshakes/s and (with --pid) server bytes per connection.
    Idle(IdleOptions),
    /// C workers each looping connect → echo one message → close: connections/s.
    Churn(ChurnOptions),
    /// C listeners on a chat endpoint, one sender: fan-out latency to the last receiver.
    Broadcast(BroadcastOptions),
}

/// Options every mode shares.
#[derive(Args, Debug, Clone)]
pub struct CommonOptions {
    /// Stop and report what was measured after this long [default: the run's length + 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Also report this server process's CPU time and RSS (read from /proc/PID).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Longest one connect + WebSocket handshake may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connections per source address: past this many, client sockets are spread over
    /// 127.0.0.1, 127.0.0.2, … to pass the ephemeral-port limit of one address.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = parse_count)]
    pub per_source: usize,
    /// Draw progress bars on stderr (the command line sets it when stderr is a terminal).
    #[arg(skip)]
    pub progress: bool,
}

impl Default for CommonOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            pid: None,
            connect_timeout: CONNECT_TIMEOUT,
            per_source: addrs::PER_SOURCE,
            progress: false,
        }
    }
}

impl CommonOptions {
    /// The run's deadline: `--timeout`, else `planned` plus a minute.
    pub(crate) fn deadline(&self, planned: Duration) -> Deadline {
        Deadline::after(self.timeout.unwrap_or(planned.saturating_add(GRACE)))
    }
}

/// When a run must stop, whatever it is doing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(tokio::time::Instant);

impl Deadline {
    pub(crate) fn after(d: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self(
            now.checked_add(d)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        )
    }

    /// Completes at the deadline.
    pub(crate) async fn reached(self) {
        tokio::time::sleep_until(self.0).await;
    }

    pub(crate) fn passed(self) -> bool {
        tokio::time::Instant::now() >= self.0
    }

    pub(crate) fn instant(self) -> Instant {
        self.0.into_std()
    }
}

/// A pause between the end of the load and the closing of the connections, for a caller (a
/// test, a wrapper script) to look at the server while every connection is still open.
///
/// The run signals [`CheckpointHandle::reached`] and waits until the handle is resumed or
/// dropped (or the run's deadline passes).
#[derive(Debug)]
pub struct Checkpoint {
    reached: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

/// The caller's side of a [`Checkpoint`].
#[derive(Debug)]
pub struct CheckpointHandle {
    reached: oneshot::Receiver<()>,
    resume: oneshot::Sender<()>,
}

impl Checkpoint {
    /// A checkpoint to put in a mode's options, and the handle to wait on it.
    pub fn new() -> (Checkpoint, CheckpointHandle) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        (
            Checkpoint {
                reached: reached_tx,
                resume: resume_rx,
            },
            CheckpointHandle {
                reached: reached_rx,
                resume: resume_tx,
            },
        )
    }

    /// Signals the caller and waits for it, at most until `deadline`.
    pub(crate) async fn pass(self, deadline: Deadline) {
        if self.reached.send(()).is_err() {
            return; // nobody is looking
        }
        tokio::select! {
            _ = self.resume => {}
            _ = deadline.reached() => {}
        }
    }
}

impl CheckpointHandle {
    /// Waits until the run reaches its checkpoint; `false` if it ended without reaching it.
    pub async fn reached(&mut self) -> bool {
        (&mut self.reached).await.is_ok()
    }

    /// Lets the run go on and close its connections (dropping the handle does too).
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}

pub(crate) use wscope_core::units::parse_count;

/// Runs the mode `args` names and prints its report on stdout.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let progress = std::io::stderr().is_terminal();
    let json = args.json;
    let text = match args.mode {
        Mode::Echo(mut o) => {
            o.common.progress = progress;
            show(&echo(o).await?, json)
        }
        Mode::Idle(mut o) => {
            o.common.progress = progress;
            show(&idle(o).await?, json)
        }
        Mode::Churn(mut o) => {
            o.common.progress = progress;
            show(&churn(o).await?, json)
        }
        Mode::Broadcast(mut o) => {
            o.common.progress = progress;
            show(&broadcast(o).await?, json)
        }
    };
    println!("{text}");
    Ok(())
}

fn show<R: Report>(report: &R, json: bool) -> String {
    if json {
        report::json(report)
    } else {
        report::table(report).trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Mode {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().bench.mode
    }

    /// The defaults tests and wrappers get from `Default` are the command line's.
    #[test]
    fn defaults_match_the_command_line() {
        let dbg = |m: Mode| match m {
            Mode::Echo(o) => format!("{o:?}"),
            Mode::Idle(o) => format!("{o:?}"),
            Mode::Churn(o) => format!("{o:?}"),
            Mode::Broadcast(o) => format!("{o:?}"),
        };
        assert_eq!(
            dbg(parse(&["echo"])),
            format!("{:?}", EchoOptions::default())
        );
        assert_eq!(
            dbg(parse(&["idle"])),
            format!("{:?}", IdleOptions::default())
        );
        assert_eq!(
            dbg(parse(&["churn"])),
            format!("{:?}", ChurnOptions::default())
        );
        assert_eq!(
            dbg(parse(&["broadcast"])),
            format!("{:?}", BroadcastOptions::default())
        );
    }

    #[test]
    fn flags_parse_like_serve_flags() {
        let Mode::Echo(o) = parse(&[
            "echo",
            "-c",
            "7",
            "-w",
            "3",
            "-s",
            "1KiB",
            "-d",
            "500ms",
            "--warmup",
            "2m",
            "--timeout",
            "90",
            "--per-source",
            "5",
        ]) else {
            panic!("echo")
        };
        assert_eq!((o.connections, o.in_flight, o.size), (7, 3, 1024));
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.warmup, Duration::from_secs(120));
        assert_eq!(o.common.timeout, Some(Duration::from_secs(90)));
        assert_eq!(o.common.per_source, 5);
        assert!(Cli::try_parse_from(["bench", "echo", "-c", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "idle", "--hold", "soon"]).is_err());
    }
}
