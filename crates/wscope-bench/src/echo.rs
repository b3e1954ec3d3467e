//! `wscope bench echo`: C connections each keep W messages of S bytes in flight against an echo
//! endpoint for a warm-up and then a measured duration; messages/s and round-trip latency.
//!
//! Each connection is one task that reads what is ready, then answers each echo with a new
//! message, all fed before one flush, so the load generator writes like a corking server
//! does and stays off the critical path. Echo preserves order, so the send times of the messages
//! in flight are a FIFO and the payload carries no timestamp.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::connect::{self, Connector, Ws};
use super::latency::{Latencies, LatencySummary, Recorder};
use super::probe::{ClientCpu, Probe, ServerUse};
use super::progress::Steps;
use super::report::{self, Report};
use super::target::Target;
use super::{limits, parse_count, progress, BenchError, Checkpoint, CommonOptions, Deadline};
use wscope_core::units::{parse_duration, parse_size};

/// How long, after the measured window, connections may take to receive what is still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `wscope bench echo` options.
#[derive(Args, Debug)]
pub struct EchoOptions {
    /// Echo endpoint (loopback only).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Connections.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "100", value_parser = parse_count)]
    pub connections: usize,
    /// Messages in flight on each connection.
    #[arg(short = 'w', long = "in-flight", value_name = "N", default_value = "1", value_parser = parse_count)]
    pub in_flight: usize,
    /// Payload size of each message (`64`, `1KiB`).
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Measured duration (`10s`, `500ms`, `2m`, seconds).
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Handshakes under way at once while connecting.
    #[arg(long, value_name = "N", default_value = "200", value_parser = parse_count)]
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
        Self {
            url: "ws://127.0.0.1:8080/ws".to_owned(),
            connections: 100,
            in_flight: 1,
            size: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            binary: false,
            handshake_concurrency: 200,
            common: CommonOptions::default(),
            checkpoint: None,
        }
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
    /// Echoes received inside the measured window.
    pub messages: u64,
    /// `messages` / `duration_secs`.
    pub messages_per_sec: f64,
    /// Payload bytes per second each way.
    pub bytes_per_sec: f64,
    /// Round-trip latency of the measured messages, in microseconds.
    pub latency: LatencySummary,
    /// Messages sent over the whole run (warm-up and drain included).
    pub messages_sent: u64,
    /// Echoes received over the whole run; equals `messages_sent` when nothing was lost.
    pub messages_received: u64,
    /// Failed connects plus connections that failed during the run.
    pub errors: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// Connections whose close handshake did not complete.
    pub unclean_closes: u64,
    /// `--timeout` stopped the run early.
    pub timed_out: bool,
    /// The load generator's CPU use over the measured window.
    pub client_cpu: ClientCpu,
    /// The server's CPU and memory over the measured window (`--pid`).
    pub server: Option<ServerUse>,
    /// Server CPU time per echoed message, in microseconds (`--pid`).
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
            ("messages/s".to_owned(), report::rate(self.messages_per_sec)),
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
        rows.push(report::errors_row(self.errors, self.first_error.as_deref()));
        if self.unclean_closes > 0 {
            rows.push((
                "unclean closes".to_owned(),
                report::int(self.unclean_closes),
            ));
        }
        rows.push(report::client_cpu_row(&self.client_cpu));
        if let Some(s) = &self.server {
            rows.extend(report::server_rows(s));
        }
        if let Some(us) = self.server_cpu_us_per_message {
            rows.push(("server cpu/message".to_owned(), format!("{us:.2} µs")));
        }
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

/// What every connection task shares.
struct Plan {
    payload: Message,
    in_flight: usize,
    measure_start: Instant,
    measure_end: Instant,
    deadline: Deadline,
    /// Echoes received by all tasks, for the progress bar.
    received: AtomicU64,
}

/// One connection's tally.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    measured: u64,
    error: Option<String>,
    timed_out: bool,
}

/// Runs `wscope bench echo`.
pub async fn echo(opts: EchoOptions) -> Result<EchoReport, BenchError> {
    let target = Target::parse(&opts.url)?;
    limits::ensure_open_files(opts.connections, "-c")?;
    let deadline = opts
        .common
        .deadline(opts.warmup.saturating_add(opts.duration));
    // Enough to read every message in flight in one go, within tungstenite's usual bounds.
    let read_buffer = opts
        .in_flight
        .saturating_mul(opts.size.saturating_add(14))
        .clamp(4096, 128 * 1024);
    let connector = Arc::new(Connector::new(
        target,
        opts.connections,
        read_buffer,
        &opts.common,
    ));
    connector.preflight().await?;
    // Check --pid before opening anything.
    let probe = Probe::start(opts.common.pid)?;

    let bar = progress::bar(
        opts.common.progress,
        Steps::Count(opts.connections as u64),
        "connecting",
    );
    let opened = connect::open_all(
        &connector,
        opts.connections,
        opts.handshake_concurrency,
        deadline,
        &bar,
    )
    .await;
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
    let connected = opened.conns.len();
    let mut failures = opened.failures;

    let payload = if opts.binary {
        Message::Binary(Bytes::from(vec![b'x'; opts.size]))
    } else {
        Message::text("x".repeat(opts.size))
    };
    let start = Instant::now();
    let measure_start = start + opts.warmup;
    let plan = Arc::new(Plan {
        payload,
        in_flight: opts.in_flight,
        measure_start,
        measure_end: measure_start + opts.duration,
        deadline,
        received: AtomicU64::new(0),
    });
    let latencies = Latencies::new();
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(drive(ws, plan.clone(), latencies.recorder(i))))
        .collect();

    let bar = progress::bar(
        opts.common.progress,
        Steps::Millis(opts.warmup + opts.duration),
        "echo",
    );
    let watch = watch_progress(&plan, &bar, start);
    // CPU readings bracket the measured window (cut short at the deadline).
    let window_start = wait_until(plan.measure_start, deadline).await;
    let first = probe.again();
    let window_end = wait_until(plan.measure_end, deadline).await;
    let second = first.again();
    let window = window_end.saturating_duration_since(window_start);

    let mut conns = Vec::with_capacity(connected);
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok((t, ws)) => {
                tally.sent += t.sent;
                tally.received += t.received;
                tally.measured += t.measured;
                tally.timed_out |= t.timed_out;
                if let Some(e) = t.error {
                    failures.add(|| e);
                }
                conns.extend(ws);
            }
            Err(e) => failures.add(|| format!("connection task failed: {e}")),
        }
    }
    watch.abort();
    bar.finish_and_clear();
    let histogram = latencies.merged();

    if let Some(checkpoint) = opts.checkpoint {
        checkpoint.pass(deadline).await;
    }
    let unclean_closes = connect::close_all(conns).await;

    let secs = window.as_secs_f64();
    let per_sec = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let server = first.server_until(&second);
    Ok(EchoReport {
        url: opts.url,
        connections: opts.connections,
        connected,
        in_flight: opts.in_flight,
        size: opts.size,
        binary: opts.binary,
        warmup_secs: opts.warmup.as_secs_f64(),
        duration_secs: secs,
        messages: tally.measured,
        messages_per_sec: per_sec(tally.measured as f64),
        bytes_per_sec: per_sec(tally.measured as f64 * opts.size as f64),
        latency: LatencySummary::from(&histogram),
        messages_sent: tally.sent,
        messages_received: tally.received,
        errors: failures.count,
        first_error: failures.first,
        unclean_closes,
        timed_out: tally.timed_out || opened.timed_out || deadline.passed(),
        client_cpu: ClientCpu::new(first.own_cpu_until(&second)),
        server_cpu_us_per_message: server
            .as_ref()
            .filter(|_| tally.measured > 0)
            .map(|s| s.cpu.total_secs() * 1e6 / tally.measured as f64),
        server,
    })
}

/// Sleeps until `at` or the deadline, whichever is first; returns when it woke.
async fn wait_until(at: Instant, deadline: Deadline) -> Instant {
    let at = at.min(deadline.instant());
    tokio::time::sleep_until(TokioInstant::from_std(at)).await;
    Instant::now()
}

/// Moves the bar with the clock and shows the current rate.
fn watch_progress(
    plan: &Arc<Plan>,
    bar: &indicatif::ProgressBar,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let plan = plan.clone();
    let bar = bar.clone();
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

/// One connection: keep `in_flight` messages in flight until the window ends, then wait for the
/// last echoes. Returns the tally, and the connection if it is still healthy (to be closed).
async fn drive(mut ws: Ws, plan: Arc<Plan>, mut rec: Recorder) -> (Tally, Option<Ws>) {
    let mut tally = Tally::default();
    let result = exchange(&mut ws, &plan, &mut rec, &mut tally).await;
    rec.flush();
    match result {
        Ok(()) => (tally, Some(ws)),
        Err(e) => {
            tally.error = Some(e);
            (tally, None)
        }
    }
}

async fn exchange(
    ws: &mut Ws,
    plan: &Plan,
    rec: &mut Recorder,
    tally: &mut Tally,
) -> Result<(), String> {
    let reason = |e: tokio_tungstenite::tungstenite::Error| connect::ws_reason(&e);
    let mut pending: VecDeque<Instant> = VecDeque::with_capacity(plan.in_flight);

    // Fill the window: W messages, one flush.
    let t = Instant::now();
    for _ in 0..plan.in_flight {
        ws.feed(plan.payload.clone()).await.map_err(reason)?;
        pending.push_back(t);
    }
    ws.flush().await.map_err(reason)?;
    tally.sent += plan.in_flight as u64;

    // The timer first marks the end of the window, then bounds the drain.
    let end = plan.measure_end.min(plan.deadline.instant());
    let mut timer = pin!(tokio::time::sleep_until(TokioInstant::from_std(end)));
    let mut timer_bounds_drain = false;
    // Cleared at the end of the window, by the timer or by an echo arriving after it.
    let mut sending = true;
    loop {
        if !sending && pending.is_empty() {
            return Ok(());
        }
        let first = tokio::select! {
            biased;
            _ = &mut timer => {
                if plan.deadline.passed() {
                    tally.timed_out = true;
                    return Ok(());
                }
                if timer_bounds_drain {
                    return Err(format!(
                        "{} echoes still missing {DRAIN_TIMEOUT:?} after the end",
                        pending.len()
                    ));
                }
                sending = false;
                timer_bounds_drain = true;
                let drain_end = (Instant::now() + DRAIN_TIMEOUT).min(plan.deadline.instant());
                timer.as_mut().reset(TokioInstant::from_std(drain_end));
                continue;
            }
            msg = ws.next() => msg,
        };
        // Take the first message and whatever else is already buffered, then answer them all.
        let mut replies = 0u64;
        let mut got = 0u64;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    let now = Instant::now();
                    let sent_at = pending.pop_front().ok_or("an echo nobody asked for")?;
                    got += 1;
                    if now >= plan.measure_start && now < plan.measure_end {
                        rec.record(now.saturating_duration_since(sent_at));
                        tally.measured += 1;
                    }
                    if now < plan.measure_end {
                        replies += 1;
                    } else {
                        sending = false;
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err("the server closed the connection".to_owned())
                }
                Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
                Some(Err(e)) => return Err(reason(e)),
            }
            if got < plan.in_flight as u64 {
                next = ws.next().now_or_never();
            }
        }
        tally.received += got;
        plan.received.fetch_add(got, Ordering::Relaxed);
        if replies > 0 {
            let t = Instant::now();
            for _ in 0..replies {
                ws.feed(plan.payload.clone()).await.map_err(reason)?;
                pending.push_back(t);
            }
            ws.flush().await.map_err(reason)?;
            tally.sent += replies;
        }
    }
}
