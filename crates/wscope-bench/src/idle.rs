//! `wscope bench idle`: open C connections with bounded handshake concurrency and hold them idle:
//! the handshake rate, and with `--pid` what the server's memory grew by per connection.
//!
//! Client sockets are bound to source addresses 127.0.0.1, 127.0.0.2, … (about 20k each) so runs
//! pass the ~28k ephemeral ports one address has. Open connections are held without a task each
//! (nothing is read from an idle connection), which keeps the load generator's own footprint
//! small; a non-blocking look before the checkpoint counts the ones the server dropped.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::connect::{self, Connector};
use super::latency::LatencySummary;
use super::probe::{ClientCpu, Probe, ServerUse};
use super::progress::Steps;
use super::report::{self, Report};
use super::target::Target;
use super::{limits, parse_count, progress, BenchError, Checkpoint, CommonOptions};
use wscope_core::units::parse_duration;

/// Read buffer of an idle client connection: small, since nothing but a close is read.
const READ_BUFFER: usize = 1024;

/// `wscope bench idle` options.
#[derive(Args, Debug)]
pub struct IdleOptions {
    /// Endpoint to connect to (loopback only).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Connections to open and hold.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "10000", value_parser = parse_count)]
    pub connections: usize,
    /// Handshakes under way at once.
    #[arg(long, value_name = "N", default_value = "200", value_parser = parse_count)]
    pub handshake_concurrency: usize,
    /// How long to hold the connections open before reading the server's memory and closing.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Options every mode shares (`--pid` gives bytes per connection).
    #[command(flatten)]
    pub common: CommonOptions,
    /// Where to pause while every connection is held open.
    #[arg(skip)]
    pub checkpoint: Option<Checkpoint>,
}

impl Default for IdleOptions {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/ws".to_owned(),
            connections: 10_000,
            handshake_concurrency: 200,
            hold: Duration::from_secs(5),
            common: CommonOptions::default(),
            checkpoint: None,
        }
    }
}

/// What `wscope bench idle` measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    /// The URL driven.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Handshakes that succeeded.
    pub opened: usize,
    /// Connects or handshakes that failed.
    pub failed: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// Source addresses the client sockets were spread over.
    pub source_addresses: usize,
    /// Handshakes in flight at once.
    pub handshake_concurrency: usize,
    /// Seconds from the first connect to the last handshake.
    pub open_secs: f64,
    /// `opened` / `open_secs`.
    pub handshakes_per_sec: f64,
    /// Time each connect + handshake took, in microseconds.
    pub handshake_latency: LatencySummary,
    /// Seconds the connections were held.
    pub hold_secs: f64,
    /// Connections still open at the end of the hold.
    pub held: usize,
    /// Connections the server closed or reset during the hold.
    pub dropped: usize,
    /// Connections whose close handshake did not complete.
    pub unclean_closes: u64,
    /// The server's CPU and memory from before the first connect to the end of the hold (`--pid`).
    pub server: Option<ServerUse>,
    /// The server's RSS growth divided by the connections held (`--pid`).
    pub server_bytes_per_connection: Option<f64>,
    /// The load generator's CPU use while opening.
    pub client_cpu: ClientCpu,
    /// `--timeout` stopped the run early.
    pub timed_out: bool,
}

impl Report for IdleReport {
    fn title(&self) -> String {
        format!(
            "wscope bench idle  {}  {} connections, {} handshakes at once, {} source address{}",
            self.url,
            report::int(self.connections as u64),
            self.handshake_concurrency,
            self.source_addresses,
            if self.source_addresses == 1 { "" } else { "es" },
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "handshakes/s".to_owned(),
                report::rate(self.handshakes_per_sec),
            ),
            (
                "opened".to_owned(),
                format!(
                    "{} in {}",
                    report::int(self.opened as u64),
                    report::secs(self.open_secs)
                ),
            ),
        ];
        rows.extend(report::latency_rows("handshake", &self.handshake_latency));
        rows.push((
            "failed".to_owned(),
            match &self.first_error {
                Some(e) => format!("{} (first: {e})", report::int(self.failed)),
                None => report::int(self.failed),
            },
        ));
        rows.push((
            "held".to_owned(),
            format!(
                "{} for {} ({} dropped by the server)",
                report::int(self.held as u64),
                report::secs(self.hold_secs),
                report::int(self.dropped as u64)
            ),
        ));
        if let Some(s) = &self.server {
            rows.extend(report::server_rows(s));
        }
        if let Some(b) = self.server_bytes_per_connection {
            rows.push(("server bytes/conn".to_owned(), report::bytes(b)));
        }
        rows.push(report::client_cpu_row(&self.client_cpu));
        if self.unclean_closes > 0 {
            rows.push((
                "unclean closes".to_owned(),
                report::int(self.unclean_closes),
            ));
        }
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

/// Runs `wscope bench idle`.
pub async fn idle(opts: IdleOptions) -> Result<IdleReport, BenchError> {
    let target = Target::parse(&opts.url)?;
    limits::ensure_open_files(opts.connections, "-c")?;
    // Opening at a pessimistic 1,000 handshakes/s, then the hold.
    let planned = Duration::from_millis(opts.connections as u64).saturating_add(opts.hold);
    let deadline = opts.common.deadline(planned);
    let connector = Arc::new(Connector::new(
        target,
        opts.connections,
        READ_BUFFER,
        &opts.common,
    ));
    connector.preflight().await?;
    let source_addresses = connector.source_addresses();

    let before = Probe::start(opts.common.pid)?;
    let bar = progress::bar(
        opts.common.progress,
        Steps::Count(opts.connections as u64),
        "handshakes",
    );
    let mut opened = connect::open_all(
        &connector,
        opts.connections,
        opts.handshake_concurrency,
        deadline,
        &bar,
    )
    .await;
    let after_open = before.again();
    bar.finish_and_clear();
    if opened.conns.is_empty() {
        return Err(BenchError::Unreachable {
            url: opts.url,
            reason: opened
                .failures
                .first
                .unwrap_or_else(|| "no connection opened before --timeout".to_owned()),
        });
    }
    let count = opened.conns.len();

    let hold_bar = progress::bar(opts.common.progress, Steps::Spinner, "holding");
    hold_bar.set_message(format!("{} connections", report::int(count as u64)));
    let hold_start = std::time::Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(opts.hold) => {}
        _ = deadline.reached() => {}
    }
    let hold_secs = hold_start.elapsed().as_secs_f64();
    hold_bar.finish_and_clear();
    let dropped = connect::keep_alive(&mut opened.conns);
    let held = opened.conns.len();
    let after_hold = before.again();

    if let Some(checkpoint) = opts.checkpoint {
        checkpoint.pass(deadline).await;
    }
    let unclean_closes = connect::close_all(opened.conns).await;

    let open_secs = opened.elapsed.as_secs_f64();
    let server = before.server_until(&after_hold);
    Ok(IdleReport {
        url: opts.url,
        connections: opts.connections,
        opened: count,
        failed: opened.failures.count,
        first_error: opened.failures.first,
        source_addresses,
        handshake_concurrency: opts.handshake_concurrency,
        open_secs,
        handshakes_per_sec: if open_secs > 0.0 {
            count as f64 / open_secs
        } else {
            0.0
        },
        handshake_latency: LatencySummary::from(&opened.handshakes),
        hold_secs,
        held,
        dropped,
        unclean_closes,
        server_bytes_per_connection: server
            .filter(|_| held > 0)
            .map(|s| s.rss_growth() as f64 / held as f64),
        server,
        client_cpu: ClientCpu::new(before.own_cpu_until(&after_open)),
        timed_out: opened.timed_out || deadline.passed(),
    })
}
