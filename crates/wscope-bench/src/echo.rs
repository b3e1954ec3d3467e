//! `wscope bench echo`: C connections each keep W messages of S bytes in flight against an echo
//! endpoint for a warm-up and then a measured window; messages/s and round-trip latency.
//!
//! Every reply is checked against what its connection sent, in order (`echo/payload.rs`); a reply
//! that is not that echo is counted in `mismatches` and in `errors`, never as a message. When
//! connections fail, the rate is taken over the part of the window that still had one open
//! (`activeSecs`), and the report says how many were lost and when.

mod drive;
mod payload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant as TokioInstant;
use wscope_core::units::{parse_count, parse_duration, parse_size};

use self::drive::{Plan, Tally};
use crate::checkpoint::Checkpoint;
use crate::deadline::Deadline;
use crate::error::BenchError;
use crate::failures::Failures;
use crate::latency::{Latencies, LatencySummary};
use crate::lost::{per_sec, Losses, Lost};
use crate::options::{
    defaults, CommonOptions, DURATION, ECHO_URL, HANDSHAKE_CONCURRENCY, PAYLOAD_SIZE,
};
use crate::probe::Usage;
use crate::progress::Steps;
use crate::report::{self, Report};
use crate::session::{self, Session};
use crate::ws::Ws;

/// `wscope bench echo` options.
#[derive(Args, Debug)]
pub struct EchoOptions {
    /// Echo endpoint (loopback only); every reply must be the echo of what was sent.
    #[arg(long, value_name = "URL", default_value = ECHO_URL)]
    pub url: String,
    /// Connections.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "100", value_parser = parse_count)]
    pub connections: usize,
    /// Messages in flight on each connection.
    #[arg(short = 'w', long = "in-flight", value_name = "N", default_value = "1", value_parser = parse_count)]
    pub in_flight: usize,
    /// Payload size of each message (`64`, `1KiB`).
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value = PAYLOAD_SIZE, value_parser = parse_size)]
    pub size: usize,
    /// Measured duration (`10s`, `500ms`, `2m`, seconds).
    #[arg(short = 'd', long, value_name = "DURATION", default_value = DURATION, value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Handshakes under way at once while connecting.
    #[arg(long, value_name = "N", default_value_t = HANDSHAKE_CONCURRENCY, value_parser = parse_count)]
    pub handshake_concurrency: usize,
    /// Options every mode shares.
    #[command(flatten)]
    pub common: CommonOptions,
    /// Where to pause with every connection drained and still open.
    #[arg(skip)]
    pub checkpoint: Option<Checkpoint>,
}

impl Default for EchoOptions {
    fn default() -> Self {
        defaults()
    }
}

/// What `wscope bench echo` measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EchoReport {
    /// The URL driven.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections opened.
    pub connected: usize,
    /// Messages in flight per connection.
    pub in_flight: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Binary (true) or text messages.
    pub binary: bool,
    /// Warm-up, in seconds.
    pub warmup_secs: f64,
    /// Measured window, in seconds (shorter than asked if `--timeout` cut it).
    pub duration_secs: f64,
    /// The part of the window during which connections were still open, in seconds:
    /// `durationSecs` unless every connection was lost before its end.
    pub active_secs: f64,
    /// Echoes received inside the window that matched what was sent.
    pub messages: u64,
    /// `messages` / `activeSecs`.
    pub messages_per_sec: f64,
    /// Payload bytes per second each way, over `activeSecs`.
    pub bytes_per_sec: f64,
    /// Round-trip latency of the measured messages, in microseconds.
    pub latency: LatencySummary,
    /// Messages sent over the whole run (warm-up and drain included).
    pub messages_sent: u64,
    /// Replies received over the whole run, echoes or not; equals `messagesSent` when nothing
    /// was lost.
    pub messages_received: u64,
    /// Replies that were not the echo of what their connection sent, in order (another
    /// client's message, a reordered or changed one); counted in `errors`.
    pub mismatches: u64,
    /// The first mismatch's words.
    pub first_mismatch: Option<String>,
    /// Connections that failed after opening, and when (seconds from the start of the warm-up).
    pub lost: Lost,
    /// Failed connects, connections that failed during the run, and `mismatches`.
    pub errors: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// Connections whose close handshake did not complete.
    pub unclean_closes: u64,
    /// `--timeout` stopped the run early.
    pub timed_out: bool,
    /// CPU of the load generator and of the server (`--pid`) over the measured window.
    #[serde(flatten)]
    pub usage: Usage,
    /// Server CPU time per measured message, in microseconds (`--pid`).
    pub server_cpu_us_per_message: Option<f64>,
}

impl Report for EchoReport {
    fn title(&self) -> String {
        format!(
            "wscope bench echo  {}  {} connections × {} in flight × {} B {}, {:.1} s after {:.1} s warm-up",
            self.url,
            report::int(self.connected as u64),
            self.in_flight,
            self.size,
            if self.binary { "binary" } else { "text" },
            self.duration_secs,
            self.warmup_secs,
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            report::rate_row(
                "messages/s",
                self.messages_per_sec,
                self.active_secs,
                self.duration_secs,
            ),
            ("messages".to_owned(), report::int(self.messages)),
            (
                "throughput".to_owned(),
                format!("{}/s each way", report::bytes(self.bytes_per_sec)),
            ),
        ];
        rows.extend(report::latency_rows("round trip", &self.latency));
        rows.push((
            "sent / received".to_owned(),
            format!(
                "{} / {} (warm-up and drain included)",
                report::int(self.messages_sent),
                report::int(self.messages_received)
            ),
        ));
        rows.extend(self.mismatch_row());
        rows.extend(report::lost_row("connection", &self.lost));
        rows.push(report::errors_row(self.errors, self.first_error.as_deref()));
        if self.unclean_closes > 0 {
            let unclean = report::int(self.unclean_closes);
            rows.push(("unclean closes".to_owned(), unclean));
        }
        rows.extend(report::usage_rows(&self.usage));
        if let Some(us) = self.server_cpu_us_per_message {
            rows.push(("server cpu/message".to_owned(), format!("{us:.2} µs")));
        }
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

impl EchoReport {
    /// The row saying replies were not echoes, if any were (with the first one's words, unless
    /// the errors row already shows them).
    fn mismatch_row(&self) -> Option<(String, String)> {
        (self.mismatches > 0).then(|| {
            let mut value = format!(
                "{} replies were not the echo of what was sent (counted in errors",
                report::int(self.mismatches)
            );
            match &self.first_mismatch {
                Some(m) if self.first_error.as_ref() != Some(m) => {
                    value.push_str(&format!("; first: {m})"));
                }
                _ => value.push(')'),
            }
            ("not echoes".to_owned(), value)
        })
    }
}

/// Runs `wscope bench echo`.
pub async fn echo(mut opts: EchoOptions) -> Result<EchoReport, BenchError> {
    let session = Session::start(session::Plan {
        url: &opts.url,
        sender_url: None,
        connections: opts.connections,
        // Enough to read every message in flight in one go, within tungstenite's usual bounds.
        read_buffer: opts
            .in_flight
            .saturating_mul(opts.size.saturating_add(14))
            .clamp(4096, 128 * 1024),
        planned: opts.warmup.saturating_add(opts.duration),
        common: &opts.common,
    })
    .await?;
    let opened = session
        .connect(opts.connections, opts.handshake_concurrency, "connecting")
        .await?;
    let connected = opened.conns.len();
    let mut load = Load::start(&opts, opened.conns, session.deadline());
    let bar = session.bar(Steps::Millis(opts.warmup + opts.duration), "echo");
    let watch = load.watch_progress(&bar);
    let window = load.measure(&session).await;
    let mut ended = load.join(connected).await;
    watch.abort();
    bar.finish_and_clear();
    let unclean_closes = session
        .finish(std::mem::take(&mut ended.conns), opts.checkpoint.take())
        .await;
    // Failed connects first: they happened first.
    let mut failures = opened.failures;
    failures.merge(std::mem::take(&mut ended.failures));
    ended.failures = failures;
    ended.total.timed_out |= opened.timed_out;
    Ok(EchoReport::new(
        opts,
        connected,
        window,
        ended,
        unclean_closes,
        session.deadline(),
    ))
}

/// The measured window as it ran.
struct Window {
    /// When it opened (after the warm-up, or earlier if every connection was lost).
    start: Instant,
    /// When it closed: its planned end, the deadline, or when the last connection ended.
    end: Instant,
    /// Its planned end, cut by the deadline: the window's length even when every connection
    /// was lost before it.
    planned_end: Instant,
    /// CPU over `start`..`end`.
    usage: Usage,
}

/// The connection tasks of a run.
struct Load {
    plan: Arc<Plan>,
    tasks: JoinSet<(Tally, Option<Ws>)>,
    /// Tasks that ended before the window closed.
    ended: Vec<Result<(Tally, Option<Ws>), JoinError>>,
    latencies: Arc<Latencies>,
    started: Instant,
}

/// What the connection tasks left.
struct Ended {
    total: Tally,
    failures: Failures,
    losses: Losses,
    /// Connections still healthy, to be closed.
    conns: Vec<Ws>,
    histogram: Histogram<u64>,
}

impl Load {
    /// Starts one task per connection: the warm-up begins now.
    fn start(opts: &EchoOptions, conns: Vec<Ws>, deadline: Deadline) -> Self {
        let started = Instant::now();
        let measure_start = started + opts.warmup;
        let plan = Arc::new(Plan {
            size: opts.size,
            binary: opts.binary,
            in_flight: opts.in_flight,
            measure_start,
            measure_end: measure_start + opts.duration,
            deadline,
            received: AtomicU64::new(0),
        });
        let latencies = Latencies::new();
        let mut tasks = JoinSet::new();
        for (i, ws) in conns.into_iter().enumerate() {
            tasks.spawn(drive::drive(ws, i, plan.clone(), latencies.recorder(i)));
        }
        Self {
            plan,
            tasks,
            ended: Vec::new(),
            latencies,
            started,
        }
    }

    /// Waits out the warm-up and the window, reading CPU at both ends of the window.
    async fn measure(&mut self, session: &Session) -> Window {
        // The tasks count what they receive from the planned start on: a wake-up that comes late
        // (a loaded machine) must not start the window later than that, or a run whose every
        // connection was lost in between would report no active time for counted messages.
        let start = self
            .wait_until(self.plan.measure_start)
            .await
            .min(self.plan.measure_start);
        let first = session.probe();
        let end = self.wait_until(self.plan.measure_end).await;
        let usage = first.usage_until(&session.probe());
        let planned_end = self.plan.measure_end.min(self.plan.deadline.instant());
        Window {
            start,
            end,
            planned_end,
            usage,
        }
    }

    /// Sleeps until `at` or the deadline, unless every connection task ends first; returns when
    /// it woke.
    async fn wait_until(&mut self, at: Instant) -> Instant {
        let at = TokioInstant::from_std(at.min(self.plan.deadline.instant()));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => break,
                joined = self.tasks.join_next() => match joined {
                    Some(r) => self.ended.push(r),
                    None => break, // nothing left to measure
                },
            }
        }
        Instant::now()
    }

    /// Waits for every task (each drains or gives up within a bound) and adds up their tallies.
    async fn join(mut self, connected: usize) -> Ended {
        while let Some(r) = self.tasks.join_next().await {
            self.ended.push(r);
        }
        let mut ended = Ended {
            total: Tally::default(),
            failures: Failures::default(),
            losses: Losses::new(self.started),
            conns: Vec::with_capacity(connected),
            histogram: self.latencies.merged(),
        };
        for r in self.ended {
            match r {
                Ok((tally, ws)) => ended.add(tally, ws),
                Err(e) => {
                    ended
                        .failures
                        .add(|| format!("connection task failed: {e}"));
                    ended.losses.record(Instant::now());
                }
            }
        }
        ended
    }

    /// Moves the bar with the clock and shows the current rate.
    fn watch_progress(&self, bar: &indicatif::ProgressBar) -> tokio::task::JoinHandle<()> {
        let (plan, bar, started) = (self.plan.clone(), bar.clone(), self.started);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut last = (Instant::now(), plan.received.load(Ordering::Relaxed));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let received = plan.received.load(Ordering::Relaxed);
                let secs = now.saturating_duration_since(last.0).as_secs_f64();
                let rate = received.saturating_sub(last.1) as f64 / secs.max(1e-3);
                last = (now, received);
                let phase = if now < plan.measure_start {
                    "warm-up"
                } else {
                    "measuring"
                };
                let elapsed = now.saturating_duration_since(started).as_millis();
                bar.set_position(u64::try_from(elapsed).unwrap_or(u64::MAX));
                bar.set_message(format!("{phase}: {} msg/s", report::rate(rate)));
            }
        })
    }
}

impl Ended {
    fn add(&mut self, t: Tally, ws: Option<Ws>) {
        self.total.sent += t.sent;
        self.total.received += t.received;
        self.total.measured += t.measured;
        self.total.mismatches += t.mismatches;
        self.total.timed_out |= t.timed_out;
        if let Some(e) = t.error {
            self.failures.add(|| e);
        }
        if let Some(at) = t.lost_at {
            self.losses.record(at);
        }
        if self.total.first_mismatch.is_none() {
            self.total.first_mismatch = t.first_mismatch;
        }
        self.conns.extend(ws);
    }
}

impl EchoReport {
    fn new(
        opts: EchoOptions,
        connected: usize,
        window: Window,
        mut ended: Ended,
        unclean_closes: u64,
        deadline: Deadline,
    ) -> Self {
        let total = ended.total;
        let mismatch = total.first_mismatch.clone();
        ended
            .failures
            .add_many(total.mismatches, || mismatch.unwrap_or_default());
        let active_end = ended.losses.active_until(connected, window.end);
        let active = active_end
            .saturating_duration_since(window.start)
            .as_secs_f64();
        let measured = total.measured as f64;
        let server = window.usage.server;
        Self {
            connections: opts.connections,
            connected,
            in_flight: opts.in_flight,
            size: opts.size,
            binary: opts.binary,
            warmup_secs: opts.warmup.as_secs_f64(),
            duration_secs: (window.end.max(window.planned_end))
                .saturating_duration_since(window.start)
                .as_secs_f64(),
            active_secs: active,
            messages: total.measured,
            messages_per_sec: per_sec(measured, active),
            bytes_per_sec: per_sec(measured * opts.size as f64, active),
            latency: LatencySummary::from(&ended.histogram),
            messages_sent: total.sent,
            messages_received: total.received,
            mismatches: total.mismatches,
            first_mismatch: total.first_mismatch,
            lost: ended.losses.summary(connected),
            errors: ended.failures.count,
            first_error: ended.failures.first,
            unclean_closes,
            timed_out: total.timed_out || deadline.passed(),
            usage: window.usage,
            server_cpu_us_per_message: server
                .filter(|_| total.measured > 0)
                .map(|s| s.cpu.total_secs() * 1e6 / measured),
            url: opts.url,
        }
    }
}
