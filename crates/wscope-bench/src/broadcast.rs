//! `wscope bench broadcast`: C listeners on a chat endpoint (every message anyone sends goes to
//! every member) and one sender that sends N timestamped messages, one at a time: each is sent
//! once the previous one reached every listener. Reports the fan-out latency to the last
//! receiver and deliveries per second.
//!
//! A server marks a connection open only once its handshake is through, which can be a moment
//! after the client saw the 101 response; so before measuring, the sender repeats a `sync`
//! message until every listener has received one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;

use super::connect::{self, Connector, Ws};
use super::latency::{self, Latencies, LatencySummary, Recorder};
use super::probe::{ClientCpu, Probe, ServerUse};
use super::progress::Steps;
use super::report::{self, Report};
use super::target::Target;
use super::{limits, parse_count, progress, BenchError, Checkpoint, CommonOptions, Deadline};
use wscope_core::units::{parse_duration, parse_size};

/// Read buffer of a listener: one small message at a time.
const READ_BUFFER: usize = 4096;
/// How often the sender repeats its sync message while listeners are still missing.
const SYNC_RETRY: Duration = Duration::from_millis(50);
/// Payload marker, so listeners ignore chat traffic that is not this run's.
const MARK: &str = "wscope-bench";

/// `wscope bench broadcast` options.
#[derive(Args, Debug)]
pub struct BroadcastOptions {
    /// Chat endpoint: every message sent by anyone goes to all (loopback only).
    #[arg(
        long,
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws/chat"
    )]
    pub url: String,
    /// Listeners.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "1000", value_parser = parse_count)]
    pub connections: usize,
    /// Messages the sender sends, one at a time.
    #[arg(short = 'n', long, value_name = "N", default_value = "100", value_parser = parse_count)]
    pub messages: usize,
    /// Payload size of each message (at least what the timestamp needs, ~48 bytes).
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Longest wait for one message to reach every listener before moving on.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub round_timeout: Duration,
    /// Handshakes under way at once while connecting.
    #[arg(long, value_name = "N", default_value = "200", value_parser = parse_count)]
    pub handshake_concurrency: usize,
    /// Options every mode shares.
    #[command(flatten)]
    pub common: CommonOptions,
    /// Where to pause after the last message, with every listener still open.
    #[arg(skip)]
    pub checkpoint: Option<Checkpoint>,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8080/ws/chat".to_owned(),
            connections: 1000,
            messages: 100,
            size: 64,
            round_timeout: Duration::from_secs(10),
            handshake_concurrency: 200,
            common: CommonOptions::default(),
            checkpoint: None,
        }
    }
}

/// What `wscope bench broadcast` measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastReport {
    /// The URL driven.
    pub url: String,
    /// Listeners asked for.
    pub connections: usize,
    /// Listeners opened.
    pub listeners: usize,
    /// Measured messages sent.
    pub messages: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// Measured messages received by listeners.
    pub deliveries: u64,
    /// `listeners` × `messages`.
    pub expected: u64,
    /// Deliveries that had not arrived when their round timed out.
    pub missed: u64,
    /// Seconds from the first measured send to the last delivery.
    pub elapsed_secs: f64,
    /// `deliveries` / `elapsed_secs`.
    pub deliveries_per_sec: f64,
    /// Per message: from sending until the last listener had it, in microseconds.
    pub last_receiver_latency: LatencySummary,
    /// Per delivery: from sending until that listener had it, in microseconds.
    pub delivery_latency: LatencySummary,
    /// Sync messages sent before measuring (until every listener was reachable).
    pub sync_messages: u64,
    /// Failed connects plus listeners or sender that failed during the run.
    pub errors: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// Connections whose close handshake did not complete.
    pub unclean_closes: u64,
    /// The load generator's CPU use over the measured messages.
    pub client_cpu: ClientCpu,
    /// The server's CPU and memory over the measured messages (`--pid`).
    pub server: Option<ServerUse>,
    /// `--timeout` stopped the run early.
    pub timed_out: bool,
}

impl Report for BroadcastReport {
    fn title(&self) -> String {
        format!(
            "wscope bench broadcast  {}  1 sender → {} listeners, {} messages of {} B",
            self.url,
            report::int(self.listeners as u64),
            report::int(self.messages),
            self.size
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "deliveries/s".to_owned(),
                report::rate(self.deliveries_per_sec),
            ),
            (
                "deliveries".to_owned(),
                format!(
                    "{} of {} in {}",
                    report::int(self.deliveries),
                    report::int(self.expected),
                    report::secs(self.elapsed_secs)
                ),
            ),
        ];
        rows.extend(report::latency_rows(
            "last receiver",
            &self.last_receiver_latency,
        ));
        rows.extend(report::latency_rows("any receiver", &self.delivery_latency));
        if self.missed > 0 {
            rows.push(("missed".to_owned(), report::int(self.missed)));
        }
        rows.push(report::errors_row(self.errors, self.first_error.as_deref()));
        rows.push(report::client_cpu_row(&self.client_cpu));
        if let Some(s) = &self.server {
            rows.extend(report::server_rows(s));
        }
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

/// What the sender and listeners share.
struct Rounds {
    /// Identifies this run's messages among other chat traffic.
    run: u64,
    /// Timestamps in messages are nanoseconds since this instant.
    base: Instant,
    /// The current round: sequence number in the high 32 bits, listeners still to receive it
    /// in the low 32, changed together with one compare-and-swap.
    state: AtomicU64,
    /// Largest latency seen in the current round, in nanoseconds.
    max_ns: AtomicU64,
    /// Fired by the listener that completes a round.
    done: Notify,
    /// Listeners that have received a sync message.
    synced: AtomicUsize,
    /// Fired when the last listener syncs.
    all_synced: Notify,
    /// Measured deliveries, late ones included.
    deliveries: AtomicU64,
    /// Time of the last delivery, in nanoseconds since `base`.
    last_delivery_ns: AtomicU64,
    listeners: usize,
}

const ROUND_MASK: u64 = 0xffff_ffff;

impl Rounds {
    fn new(run: u64, listeners: usize) -> Self {
        Self {
            run,
            base: Instant::now(),
            state: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            done: Notify::new(),
            synced: AtomicUsize::new(0),
            all_synced: Notify::new(),
            deliveries: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            listeners,
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `<mark> <run> sync <k>` or `<mark> <run> msg <seq> <ns>`, padded with `.` to `size`.
    fn payload(&self, kind: &str, seq: u64, ns: u64, size: usize) -> Message {
        let mut text = format!("{MARK} {} {kind} {seq} {ns} ", self.run);
        if text.len() < size {
            text.extend(std::iter::repeat_n('.', size - text.len()));
        }
        Message::text(text)
    }

    /// A listener received `text`.
    fn on_message(&self, text: &str, synced: &mut bool, rec: &mut Recorder) {
        let now = self.nanos();
        let mut parts = text.split_ascii_whitespace();
        if parts.next() != Some(MARK) || parts.next() != Some(&self.run.to_string()) {
            return; // someone else's chat
        }
        match (
            parts.next(),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) {
            (Some("sync"), Some(_)) if !*synced => {
                *synced = true;
                if self.synced.fetch_add(1, Ordering::AcqRel) + 1 == self.listeners {
                    self.all_synced.notify_one();
                }
            }
            (Some("msg"), Some(seq)) => {
                let Some(sent) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
                    return;
                };
                let lat = now.saturating_sub(sent);
                rec.record(Duration::from_nanos(lat));
                self.deliveries.fetch_add(1, Ordering::Relaxed);
                self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                self.count_in_round(seq, lat);
            }
            _ => {}
        }
    }

    /// Counts a delivery towards round `seq` if it is the current one.
    fn count_in_round(&self, seq: u64, lat: u64) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state >> 32 != seq || state & ROUND_MASK == 0 {
                return; // a late delivery of a round that timed out
            }
            self.max_ns.fetch_max(lat, Ordering::AcqRel);
            match self.state.compare_exchange_weak(
                state,
                state - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if (state - 1) & ROUND_MASK == 0 {
                        self.done.notify_one();
                    }
                    return;
                }
                Err(now) => state = now,
            }
        }
    }
}

/// Runs `wscope bench broadcast`.
pub async fn broadcast(opts: BroadcastOptions) -> Result<BroadcastReport, BenchError> {
    let target = Target::parse(&opts.url)?;
    limits::ensure_open_files(opts.connections.saturating_add(1), "-c")?;
    let listeners_max = u32::MAX as usize;
    if opts.connections >= listeners_max || opts.messages >= listeners_max {
        return Err(BenchError::Invalid {
            flag: "-c/--messages",
            reason: "at most 4294967294".to_owned(),
        });
    }
    // Connecting, then the rounds at a pessimistic 100 ms each.
    let planned = Duration::from_millis(opts.connections as u64)
        .saturating_add(Duration::from_millis(100).saturating_mul(opts.messages as u32));
    let deadline = opts.common.deadline(planned);
    let connector = Arc::new(Connector::new(
        target,
        opts.connections + 1,
        READ_BUFFER,
        &opts.common,
    ));
    connector.preflight().await?;
    // Read now so a bad --pid fails before anything is opened.
    let probe = Probe::start(opts.common.pid)?;

    let bar = progress::bar(
        opts.common.progress,
        Steps::Count(opts.connections as u64 + 1),
        "connecting",
    );
    let mut opened = connect::open_all(
        &connector,
        opts.connections + 1,
        opts.handshake_concurrency,
        deadline,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    let mut failures = opened.failures;
    let Some(sender) = opened.conns.pop() else {
        return Err(BenchError::Unreachable {
            url: opts.url,
            reason: failures
                .first
                .unwrap_or_else(|| "no connection opened before --timeout".to_owned()),
        });
    };
    let listeners = opened.conns.len();
    if listeners == 0 {
        return Err(BenchError::Unreachable {
            url: opts.url,
            reason: failures
                .first
                .unwrap_or_else(|| "no listener opened before --timeout".to_owned()),
        });
    }
    let run = u64::from(std::process::id()) << 32
        | u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        );
    let rounds = Arc::new(Rounds::new(run, listeners));
    let latencies = Latencies::new();
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            // One stop signal per listener: polling it takes no lock shared with the others.
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(listen(ws, rounds.clone(), latencies.recorder(i), stopped));
            (stop, task)
        })
        .collect();
    let (send_tx, send_rx) = mpsc::channel::<Message>(1);
    let sender_task = tokio::spawn(send_loop(sender, send_rx));

    // Sync: every listener must be a chat member before the first measured message.
    let mut sync_messages = 0u64;
    let mut timed_out = false;
    while rounds.synced.load(Ordering::Acquire) < listeners {
        if deadline.passed() || send_tx.is_closed() {
            timed_out = deadline.passed();
            break;
        }
        let notified = rounds.all_synced.notified();
        if send_tx
            .send(rounds.payload("sync", sync_messages, 0, opts.size))
            .await
            .is_err()
        {
            break;
        }
        sync_messages += 1;
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(SYNC_RETRY) => {}
            _ = deadline.reached() => {}
        }
    }

    let bar = progress::bar(
        opts.common.progress,
        Steps::Count(opts.messages as u64),
        "broadcast",
    );
    let mut last = latency::histogram();
    let mut missed = 0u64;
    let mut sent = 0u64;
    let first = probe.again();
    let first_send_ns = rounds.nanos();
    if !timed_out {
        for seq in 0..opts.messages as u64 {
            if deadline.passed() {
                timed_out = true;
                break;
            }
            rounds.max_ns.store(0, Ordering::Release);
            rounds
                .state
                .store(seq << 32 | listeners as u64, Ordering::Release);
            let done = rounds.done.notified();
            let msg = rounds.payload("msg", seq, rounds.nanos(), opts.size);
            if send_tx.send(msg).await.is_err() {
                break; // the sender failed: its error is reported below
            }
            sent += 1;
            if !wait_round(&rounds, seq, done, opts.round_timeout, deadline).await {
                let state = rounds.state.swap(0, Ordering::AcqRel);
                if state >> 32 == seq {
                    missed += state & ROUND_MASK;
                }
                timed_out |= deadline.passed();
            }
            latency::record(
                &mut last,
                Duration::from_nanos(rounds.max_ns.load(Ordering::Acquire)),
            );
            bar.inc(1);
        }
    }
    rounds.state.store(0, Ordering::Release);
    let second = first.again();
    bar.finish_and_clear();

    // Hand the connections back for the checkpoint and the close.
    drop(send_tx);
    let mut conns = Vec::with_capacity(listeners + 1);
    let tasks: Vec<_> = tasks
        .into_iter()
        .map(|(stop, task)| {
            let _ = stop.send(());
            task
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok(ws)) => conns.push(ws),
            Ok(Err(e)) => failures.add(|| e),
            Err(e) => failures.add(|| format!("listener task failed: {e}")),
        }
    }
    match sender_task.await {
        Ok(Ok(ws)) => conns.push(ws),
        Ok(Err(e)) => failures.add(|| format!("sender: {e}")),
        Err(e) => failures.add(|| format!("sender task failed: {e}")),
    }
    let delivery = LatencySummary::from(&latencies.merged());
    if let Some(checkpoint) = opts.checkpoint {
        checkpoint.pass(deadline).await;
    }
    let unclean_closes = connect::close_all(conns).await;

    let deliveries = rounds.deliveries.load(Ordering::Acquire);
    let elapsed_ns = rounds
        .last_delivery_ns
        .load(Ordering::Acquire)
        .saturating_sub(first_send_ns);
    let elapsed_secs = elapsed_ns as f64 / 1e9;
    Ok(BroadcastReport {
        url: opts.url,
        connections: opts.connections,
        listeners,
        messages: sent,
        size: opts.size,
        deliveries,
        expected: sent * listeners as u64,
        missed,
        elapsed_secs,
        deliveries_per_sec: if elapsed_secs > 0.0 {
            deliveries as f64 / elapsed_secs
        } else {
            0.0
        },
        last_receiver_latency: LatencySummary::from(&last),
        delivery_latency: delivery,
        sync_messages,
        errors: failures.count,
        first_error: failures.first,
        unclean_closes,
        client_cpu: ClientCpu::new(first.own_cpu_until(&second)),
        server: first.server_until(&second),
        timed_out: timed_out || deadline.passed(),
    })
}

/// Waits until round `seq` reached every listener; `false` on timeout.
async fn wait_round(
    rounds: &Rounds,
    seq: u64,
    done: tokio::sync::futures::Notified<'_>,
    timeout: Duration,
    deadline: Deadline,
) -> bool {
    let complete = || rounds.state.load(Ordering::Acquire) == seq << 32;
    let wait = async {
        let mut done = std::pin::pin!(done);
        loop {
            done.as_mut().await;
            if complete() {
                return;
            }
            // A stale wake-up from a round that completed as it timed out: wait again.
            done.set(rounds.done.notified());
        }
    };
    tokio::select! {
        _ = wait => true,
        _ = tokio::time::sleep(timeout) => complete(),
        _ = deadline.reached() => complete(),
    }
}

/// A listener: record every message of this run until told to stop, then hand the connection
/// back.
async fn listen(
    mut ws: Ws,
    rounds: Arc<Rounds>,
    mut rec: Recorder,
    mut stop: oneshot::Receiver<()>,
) -> Result<Ws, String> {
    let mut synced = false;
    loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => msg,
            _ = &mut stop => {
                rec.flush();
                return Ok(ws);
            }
        };
        match msg {
            Some(Ok(Message::Text(t))) => rounds.on_message(t.as_str(), &mut synced, &mut rec),
            Some(Ok(Message::Close(_))) | None => {
                return Err("the server closed a listener".to_owned())
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(connect::ws_reason(&e)),
        }
    }
}

/// The sender: sends what the main task hands it and reads (and drops) its own copies coming
/// back from the chat, so they never pile up.
async fn send_loop(mut ws: Ws, mut rx: mpsc::Receiver<Message>) -> Result<Ws, String> {
    let reason = |e: tokio_tungstenite::tungstenite::Error| connect::ws_reason(&e);
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(msg) => ws.send(msg).await.map_err(reason)?,
                None => return Ok(ws),
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(_))) | None => {
                    return Err("the server closed the connection".to_owned())
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(reason(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rounds(listeners: usize) -> Rounds {
        Rounds::new(7, listeners)
    }

    #[test]
    fn rounds_count_only_their_own_messages() {
        let r = rounds(2);
        let l = Latencies::new();
        let mut rec = l.recorder(0);
        r.state.store(3 << 32 | 2, Ordering::Release);
        let Message::Text(m) = r.payload("msg", 3, 0, 64) else {
            panic!("text")
        };
        assert_eq!(m.len(), 64);
        let mut synced = false;
        r.on_message(m.as_str(), &mut synced, &mut rec);
        r.on_message("wscope-bench 8 msg 3 0", &mut synced, &mut rec); // another run
        r.on_message("hello", &mut synced, &mut rec);
        assert_eq!(r.state.load(Ordering::Acquire), 3 << 32 | 1);
        r.on_message(m.as_str(), &mut synced, &mut rec);
        assert_eq!(r.state.load(Ordering::Acquire), 3 << 32);
        r.on_message(m.as_str(), &mut synced, &mut rec); // late: no underflow
        assert_eq!(r.state.load(Ordering::Acquire), 3 << 32);
        assert_eq!(r.deliveries.load(Ordering::Acquire), 3);
        let Message::Text(s) = r.payload("sync", 0, 0, 8) else {
            panic!("text")
        };
        r.on_message(s.as_str(), &mut synced, &mut rec);
        r.on_message(s.as_str(), &mut synced, &mut rec);
        assert_eq!(r.synced.load(Ordering::Acquire), 1);
    }
}
