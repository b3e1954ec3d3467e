//! The options every mode shares (`--timeout`, `--pid`, `--connect-timeout`, `--per-source`), the
//! defaults more than one mode states (each stated once, here), and where every mode's defaults
//! come from: its own `#[arg(default_value …)]` attributes, read by parsing an empty command
//! line, so that `Default` and `wscope bench` cannot disagree.

use std::time::Duration;

use clap::{Args, Command, FromArgMatches};
use wscope_core::units::{parse_count, parse_duration};

use crate::addrs::PER_SOURCE;
use crate::deadline::Deadline;

/// The default `--url` of the modes that echo or hold connections: the echo endpoint of a
/// `wscope serve` at its default address.
pub(crate) const ECHO_URL: &str = "ws://127.0.0.1:8080/ws";
/// The default `--handshake-concurrency` of every mode that opens its connections up front.
pub(crate) const HANDSHAKE_CONCURRENCY: usize = 200;
/// The default `--size` of every mode's messages.
pub(crate) const PAYLOAD_SIZE: &str = "64";
/// The default `--duration` of the modes that run for a time.
pub(crate) const DURATION: &str = "10s";

/// Options every mode shares.
#[derive(Args, Debug, Clone)]
pub struct CommonOptions {
    /// Stop and report what was measured after this long [default: the run's length + 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Also report this server process's CPU time and RSS (read from /proc/PID), over the same
    /// window as the load generator's own CPU.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Longest one connect + WebSocket handshake may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connections per source address: past this many, client sockets are spread over
    /// 127.0.0.1, 127.0.0.2, … to pass the ephemeral-port limit of one address.
    #[arg(long, value_name = "N", default_value_t = PER_SOURCE, value_parser = parse_count)]
    pub per_source: usize,
    /// Draw progress bars on stderr (the command line sets it when stderr is a terminal).
    #[arg(skip)]
    pub progress: bool,
}

impl Default for CommonOptions {
    fn default() -> Self {
        defaults()
    }
}

impl CommonOptions {
    /// The run's deadline: `--timeout`, else `planned` plus a minute.
    pub(crate) fn deadline(&self, planned: Duration) -> Deadline {
        Deadline::after(
            self.timeout
                .unwrap_or(planned.saturating_add(Deadline::GRACE)),
        )
    }
}

/// The options an empty command line gives: each mode's `Default`.
pub(crate) fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults").no_binary_name(true));
    let parsed = command
        .try_get_matches_from(std::iter::empty::<String>())
        .and_then(|matches| T::from_arg_matches(&matches));
    match parsed {
        Ok(options) => options,
        // Only a default that does not parse gets here, and then `wscope bench` itself fails on
        // every run: the tests of each mode's defaults catch it first.
        Err(e) => unreachable!("a default flag value does not parse: {e}"),
    }
}
