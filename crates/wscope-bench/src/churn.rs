//! `wscope bench churn`: C workers each loop connect → send one message → read its echo → close,
//! for a duration: completed connections per second, and how long one cycle takes.
//!
//! A worker starts a new cycle only before the end of the duration and lets a started cycle
//! finish (bounded by the connect timeout and the close timeout), so every connection the
//! server registered is either counted as completed or as an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::connect::{self, Connector, Failures};
use super::latency::{Latencies, LatencySummary};
use super::probe::{ClientCpu, Probe, ServerUse};
use super::progress::Steps;
use super::report::{self, Report};
use super::target::Target;
use super::{limits, parse_count, progress, BenchError, CommonOptions};
use wscope_core::units::{parse_duration, parse_size};

/// Read buffer of a churn connection: one small echo is all it reads.
const READ_BUFFER: usize = 4096;

/// `wscope bench churn` options.
#[derive(Args, Debug)]
pub struct ChurnOptions {
    /// Echo endpoint (loopback only).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Workers, each with one connection at a time.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "50", value_parser = parse_count)]
    pub connections: usize,
    /// How long workers start new cycles.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Payload size of the one message echoed per connection.
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Options every mode shares.
    #[command(flatten)]
    pub common: CommonOptions,
}

impl Default for ChurnOptions {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/ws".to_owned(),
            connections: 50,
            duration: Duration::from_secs(10),
            size: 64,
            common: CommonOptions::default(),
        }
    }
}

/// What `wscope bench churn` measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChurnReport {
    /// The URL driven.
    pub url: String,
    /// Workers.
    pub connections: usize,
    /// Payload bytes of the echoed message.
    pub size: usize,
    /// Seconds from the start until the last worker finished.
    pub elapsed_secs: f64,
    /// Cycles that connected, echoed and closed cleanly.
    pub completed: u64,
    /// `completed` / `elapsed_secs`.
    pub connections_per_sec: f64,
    /// Time of one whole cycle (connect, handshake, echo, close), in microseconds.
    pub cycle_latency: LatencySummary,
    /// Cycles that failed at any step.
    pub errors: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// The load generator's CPU use over the run.
    pub client_cpu: ClientCpu,
    /// The server's CPU and memory over the run (`--pid`).
    pub server: Option<ServerUse>,
    /// `--timeout` stopped the run early.
    pub timed_out: bool,
}

impl Report for ChurnReport {
    fn title(&self) -> String {
        format!(
            "wscope bench churn  {}  {} workers × (connect, echo {} B, close)",
            self.url,
            report::int(self.connections as u64),
            self.size
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "connections/s".to_owned(),
                report::rate(self.connections_per_sec),
            ),
            (
                "completed".to_owned(),
                format!(
                    "{} in {}",
                    report::int(self.completed),
                    report::secs(self.elapsed_secs)
                ),
            ),
        ];
        rows.extend(report::latency_rows("cycle", &self.cycle_latency));
        rows.push(report::errors_row(self.errors, self.first_error.as_deref()));
        rows.push(report::client_cpu_row(&self.client_cpu));
        if let Some(s) = &self.server {
            rows.extend(report::server_rows(s));
        }
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    completed: u64,
    failures: Failures,
    timed_out: bool,
}

/// Runs `wscope bench churn`.
pub async fn churn(opts: ChurnOptions) -> Result<ChurnReport, BenchError> {
    let target = Target::parse(&opts.url)?;
    limits::ensure_open_files(opts.connections, "-c")?;
    let deadline = opts.common.deadline(opts.duration);
    let connector = Arc::new(Connector::new(
        target,
        opts.connections,
        READ_BUFFER,
        &opts.common,
    ));
    connector.preflight().await?;

    let before = Probe::start(opts.common.pid)?;
    let start = Instant::now();
    let end = start + opts.duration;
    let payload = Message::text("x".repeat(opts.size));
    let latencies = Latencies::new();
    let completed = Arc::new(AtomicU64::new(0));
    let bar = progress::bar(opts.common.progress, Steps::Millis(opts.duration), "churn");
    let workers: Vec<_> = (0..opts.connections)
        .map(|i| {
            let connector = connector.clone();
            let payload = payload.clone();
            let mut rec = latencies.recorder(i);
            let completed = completed.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < end {
                    let t = Instant::now();
                    let cycle = tokio::select! {
                        r = cycle(&connector, &payload) => r,
                        _ = deadline.reached() => {
                            tally.timed_out = true;
                            break;
                        }
                    };
                    match cycle {
                        Ok(()) => {
                            rec.record(t.elapsed());
                            tally.completed += 1;
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tally.failures.add(|| e);
                            // A dead server fails every cycle at once: don't spin.
                            if tally.failures.count % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let watch = watch_progress(&bar, start, completed.clone());

    let mut total = Tally::default();
    for w in workers {
        match w.await {
            Ok(t) => {
                total.completed += t.completed;
                total.timed_out |= t.timed_out;
                total.failures.merge(t.failures);
            }
            Err(e) => total.failures.add(|| format!("worker task failed: {e}")),
        }
    }
    watch.abort();
    bar.finish_and_clear();
    let after = before.again();
    let elapsed = before.wall_until(&after).as_secs_f64();
    if total.completed == 0 && total.failures.count > 0 {
        // Nothing ever worked: the server is not the echo server the URL should name.
        return Err(BenchError::Unreachable {
            url: opts.url,
            reason: total.failures.first.unwrap_or_default(),
        });
    }
    Ok(ChurnReport {
        url: opts.url,
        connections: opts.connections,
        size: opts.size,
        elapsed_secs: elapsed,
        completed: total.completed,
        connections_per_sec: if elapsed > 0.0 {
            total.completed as f64 / elapsed
        } else {
            0.0
        },
        cycle_latency: LatencySummary::from(&latencies.merged()),
        errors: total.failures.count,
        first_error: total.failures.first,
        client_cpu: ClientCpu::new(before.own_cpu_until(&after)),
        server: before.server_until(&after),
        timed_out: total.timed_out || deadline.passed(),
    })
}

/// One cycle: connect, echo `payload` once, close with a complete close handshake.
async fn cycle(connector: &Connector, payload: &Message) -> Result<(), String> {
    let mut ws = connector.connect().await.map_err(|e| e.to_string())?;
    let reason = |e: tokio_tungstenite::tungstenite::Error| connect::ws_reason(&e);
    let echoed = async {
        ws.send(payload.clone()).await.map_err(reason)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
                Some(Ok(Message::Close(_))) | None => {
                    return Err("the server closed the connection".to_owned())
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(reason(e)),
            }
        }
    };
    match tokio::time::timeout(connect::CLOSE_TIMEOUT, echoed).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("no echo within {:?}", connect::CLOSE_TIMEOUT)),
    }
    connect::close(ws).await
}

/// Moves the bar with the clock and shows the rate so far.
fn watch_progress(
    bar: &indicatif::ProgressBar,
    start: Instant,
    completed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            let done = completed.load(Ordering::Relaxed);
            bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            bar.set_message(format!(
                "{} connections/s",
                report::rate(done as f64 / elapsed.as_secs_f64().max(1e-3))
            ));
        }
    })
}
