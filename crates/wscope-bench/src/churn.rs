//! `wscope bench churn`: C workers each loop connect → send one message → read its echo → close,
//! for a duration: completed connections per second, and how long one cycle takes.
//!
//! A worker starts a new cycle only before the end of the duration and lets a started cycle
//! finish (bounded by the connect timeout and the close timeout), so every connection the
//! server registered is either counted as completed or as an error. When every worker's cycles
//! fail from some point to the end (the server went away), the rate is taken over the time
//! before that (`activeSecs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wscope_core::units::{parse_count, parse_duration, parse_size};

use crate::connect::{self, Connector};
use crate::deadline::Deadline;
use crate::error::BenchError;
use crate::failures::Failures;
use crate::latency::{Latencies, LatencySummary, Recorder};
use crate::lost::{per_sec, Losses, Lost};
use crate::options::{defaults, CommonOptions, DURATION, ECHO_URL, PAYLOAD_SIZE};
use crate::probe::Usage;
use crate::progress::Steps;
use crate::reason::{closed_by_server, ws_reason};
use crate::report::{self, Report};
use crate::session::{Plan, Session};
use crate::ws;

/// Read buffer of a churn connection: one small echo is all it reads.
const READ_BUFFER: usize = 4096;

/// `wscope bench churn` options.
#[derive(Args, Debug)]
pub struct ChurnOptions {
    /// Echo endpoint (loopback only).
    #[arg(long, value_name = "URL", default_value = ECHO_URL)]
    pub url: String,
    /// Workers, each with one connection at a time.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "50", value_parser = parse_count)]
    pub connections: usize,
    /// How long workers start new cycles.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = DURATION, value_parser = parse_duration)]
    pub duration: Duration,
    /// Payload size of the one message echoed per connection.
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value = PAYLOAD_SIZE, value_parser = parse_size)]
    pub size: usize,
    /// Options every mode shares.
    #[command(flatten)]
    pub common: CommonOptions,
}

impl Default for ChurnOptions {
    fn default() -> Self {
        defaults()
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
    /// Seconds from the start until the last completed cycle when every worker's cycles failed
    /// from some point to the end; else `elapsedSecs`.
    pub active_secs: f64,
    /// Cycles that connected, echoed and closed cleanly.
    pub completed: u64,
    /// `completed` / `activeSecs`.
    pub connections_per_sec: f64,
    /// Time of one whole cycle (connect, handshake, echo, close), in microseconds.
    pub cycle_latency: LatencySummary,
    /// Workers whose cycles kept failing until the end, and since when (seconds from the start).
    pub lost: Lost,
    /// Cycles that failed at any step.
    pub errors: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// CPU of the load generator and of the server (`--pid`) over the whole run.
    #[serde(flatten)]
    pub usage: Usage,
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
            report::rate_row(
                "connections/s",
                self.connections_per_sec,
                self.active_secs,
                self.elapsed_secs,
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
        rows.extend(report::lost_row("worker", &self.lost));
        rows.push(report::errors_row(self.errors, self.first_error.as_deref()));
        rows.extend(report::usage_rows(&self.usage));
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

/// What every worker shares.
struct Shared {
    connector: Arc<Connector>,
    payload: Message,
    /// No cycle starts after this.
    end: Instant,
    deadline: Deadline,
    /// Cycles completed by all workers, for the progress bar.
    completed: AtomicU64,
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    completed: u64,
    failures: Failures,
    /// Since when every cycle failed, if the last one did.
    failing_since: Option<Instant>,
    timed_out: bool,
}

/// Runs `wscope bench churn`.
pub async fn churn(opts: ChurnOptions) -> Result<ChurnReport, BenchError> {
    let session = Session::start(Plan {
        url: &opts.url,
        sender_url: None,
        connections: opts.connections,
        read_buffer: READ_BUFFER,
        planned: opts.duration,
        common: &opts.common,
    })
    .await?;
    let before = session.probe();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        connector: session.connector().clone(),
        payload: Message::text("x".repeat(opts.size)),
        end: start + opts.duration,
        deadline: session.deadline(),
        completed: AtomicU64::new(0),
    });
    let latencies = Latencies::new();
    let workers: Vec<_> = (0..opts.connections)
        .map(|i| tokio::spawn(worker(shared.clone(), latencies.recorder(i))))
        .collect();
    let bar = session.bar(Steps::Millis(opts.duration), "churn");
    let watch = watch_progress(&bar, start, shared.clone());

    let (total, losses) = join(workers, start).await;
    watch.abort();
    bar.finish_and_clear();
    let end = Instant::now();
    let usage = before.usage_until(&session.probe());
    if total.completed == 0 && total.failures.count > 0 {
        // Nothing ever worked: the server is not the echo server the URL should name.
        return Err(session.unreachable(total.failures.first, ""));
    }
    let elapsed = end.saturating_duration_since(start).as_secs_f64();
    let active = (losses.active_until(opts.connections, end))
        .saturating_duration_since(start)
        .as_secs_f64();
    Ok(ChurnReport {
        url: opts.url,
        connections: opts.connections,
        size: opts.size,
        elapsed_secs: elapsed,
        active_secs: active,
        completed: total.completed,
        connections_per_sec: per_sec(total.completed as f64, active),
        cycle_latency: LatencySummary::from(&latencies.merged()),
        lost: losses.summary(opts.connections),
        errors: total.failures.count,
        first_error: total.failures.first,
        usage,
        timed_out: total.timed_out || session.deadline().passed(),
    })
}

/// Waits for every worker and adds up their tallies; a worker whose cycles failed until the end
/// counts as lost since its first failure of that stretch.
async fn join(workers: Vec<JoinHandle<Tally>>, start: Instant) -> (Tally, Losses) {
    let mut total = Tally::default();
    let mut losses = Losses::new(start);
    for w in workers {
        match w.await {
            Ok(t) => {
                total.completed += t.completed;
                total.timed_out |= t.timed_out;
                total.failures.merge(t.failures);
                if let Some(at) = t.failing_since {
                    losses.record(at);
                }
            }
            Err(e) => total.failures.add(|| format!("worker task failed: {e}")),
        }
    }
    (total, losses)
}

/// One worker: cycles until the end of the duration, each bounded by the deadline.
async fn worker(shared: Arc<Shared>, mut rec: Recorder) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < shared.end {
        let t = Instant::now();
        let cycle = tokio::select! {
            r = cycle(&shared.connector, &shared.payload) => r,
            _ = shared.deadline.reached() => {
                tally.timed_out = true;
                break;
            }
        };
        match cycle {
            Ok(()) => {
                rec.record(t.elapsed());
                tally.completed += 1;
                tally.failing_since = None;
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.failures.add(|| e);
                tally.failing_since.get_or_insert(t);
                // A dead server fails every cycle at once: don't spin.
                if tally.failures.count % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    tally
}

/// One cycle: connect, echo `payload` once, close with a complete close handshake.
async fn cycle(connector: &Connector, payload: &Message) -> Result<(), String> {
    let mut ws = connector.connect().await.map_err(|e| e.to_string())?;
    let echoed = async {
        ws.send(payload.clone()).await.map_err(|e| ws_reason(&e))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
                Some(Ok(Message::Close(frame))) => return Err(closed_by_server(frame.as_ref())),
                None => return Err("the server closed the connection".to_owned()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_reason(&e)),
            }
        }
    };
    match tokio::time::timeout(ws::CLOSE_TIMEOUT, echoed).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("no echo within {:?}", ws::CLOSE_TIMEOUT)),
    }
    connect::close(ws).await
}

/// Moves the bar with the clock and shows the rate so far.
fn watch_progress(
    bar: &indicatif::ProgressBar,
    start: Instant,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            let done = shared.completed.load(Ordering::Relaxed);
            bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            bar.set_message(format!(
                "{} connections/s",
                report::rate(done as f64 / elapsed.as_secs_f64().max(1e-3))
            ));
        }
    })
}
