//! `wscope bench broadcast`: C listeners on a chat endpoint (every message anyone sends goes to
//! every member) and one sender that sends N timestamped messages, one at a time: each is sent
//! once the previous one reached every listener. Reports the fan-out latency to the last
//! receiver and deliveries per second.
//!
//! The sender connects to `--sender-url` when it is given (by default to `--url`, like the
//! listeners): with two instances of a cluster, that times a message sent on one instance and
//! received on another.
//!
//! A server marks a connection open only once its handshake is through, which can be a moment
//! after the client saw the 101 response; so before measuring, the sender repeats a `sync`
//! message until every listener has received one. A listener that fails is no longer waited for,
//! by the sync or by the rounds; the report says how many were lost and when.

mod members;
mod rounds;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wscope_core::units::{parse_count, parse_duration, parse_size};

use self::members::Listener;
use self::rounds::Rounds;
use crate::checkpoint::Checkpoint;
use crate::deadline::Deadline;
use crate::error::BenchError;
use crate::failures::Failures;
use crate::latency::{self, Latencies, LatencySummary};
use crate::lost::{per_sec, Losses, Lost};
use crate::options::{defaults, CommonOptions, HANDSHAKE_CONCURRENCY, PAYLOAD_SIZE};
use crate::probe::Usage;
use crate::progress::Steps;
use crate::report::{self, Report};
use crate::session::{Plan, Session};
use crate::ws::Ws;

/// Read buffer of a listener: one small message at a time.
const READ_BUFFER: usize = 4096;
/// How often the sender repeats its sync message while listeners are still missing.
const SYNC_RETRY: Duration = Duration::from_millis(50);

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
    /// Where the sender connects (loopback only) [default: --url]: another instance of a
    /// cluster times a cross-instance fan-out.
    #[arg(long, value_name = "URL")]
    pub sender_url: Option<String>,
    /// Listeners.
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "1000", value_parser = parse_count)]
    pub connections: usize,
    /// Messages the sender sends, one at a time.
    #[arg(short = 'n', long, value_name = "N", default_value = "100", value_parser = parse_count)]
    pub messages: usize,
    /// Payload size of each message (at least what the timestamp needs, ~48 bytes).
    #[arg(short = 's', long = "size", value_name = "SIZE", default_value = PAYLOAD_SIZE, value_parser = parse_size)]
    pub size: usize,
    /// Longest wait for one message to reach every listener before moving on.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub round_timeout: Duration,
    /// Handshakes under way at once while connecting.
    #[arg(long, value_name = "N", default_value_t = HANDSHAKE_CONCURRENCY, value_parser = parse_count)]
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
        defaults()
    }
}

/// What `wscope bench broadcast` measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastReport {
    /// The URL driven: where the listeners connected.
    pub url: String,
    /// Where the sender connected (`--sender-url`, else `url`).
    pub sender_url: String,
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
    /// Deliveries expected: for each measured message, the listeners still connected when it was
    /// sent (`listeners` × `messages` when none was lost).
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
    /// Listeners that failed during the run, and when (seconds from the start of the sync).
    pub lost: Lost,
    /// Failed connects plus listeners or sender that failed during the run.
    pub errors: u64,
    /// The first failure's words.
    pub first_error: Option<String>,
    /// Connections whose close handshake did not complete.
    pub unclean_closes: u64,
    /// CPU of the load generator and of the server (`--pid`) over the measured messages.
    #[serde(flatten)]
    pub usage: Usage,
    /// `--timeout` stopped the run early.
    pub timed_out: bool,
}

impl Report for BroadcastReport {
    fn title(&self) -> String {
        let sender = if self.sender_url == self.url {
            "1 sender".to_owned()
        } else {
            format!("1 sender on {}", self.sender_url)
        };
        format!(
            "wscope bench broadcast  {}  {sender} → {} listeners, {} messages of {} B",
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
        rows.extend(report::lost_row("listener", &self.lost));
        rows.push(report::errors_row(self.errors, self.first_error.as_deref()));
        if self.unclean_closes > 0 {
            let unclean = report::int(self.unclean_closes);
            rows.push(("unclean closes".to_owned(), unclean));
        }
        rows.extend(report::usage_rows(&self.usage));
        rows.extend(report::timed_out_row(self.timed_out));
        rows
    }
}

/// Runs `wscope bench broadcast`.
pub async fn broadcast(mut opts: BroadcastOptions) -> Result<BroadcastReport, BenchError> {
    if opts.connections >= u32::MAX as usize || opts.messages >= u32::MAX as usize {
        return Err(BenchError::Invalid {
            flag: "-c/--messages",
            reason: "at most 4294967294".to_owned(),
        });
    }
    let session = Session::start(Plan {
        url: &opts.url,
        sender_url: opts.sender_url.as_deref(),
        connections: opts.connections + 1,
        read_buffer: READ_BUFFER,
        // Connecting, then the rounds at a pessimistic 100 ms each.
        planned: Duration::from_millis(opts.connections as u64)
            .saturating_add(Duration::from_millis(100).saturating_mul(opts.messages as u32)),
        common: &opts.common,
    })
    .await?;
    let opened = session
        .connect(opts.connections, opts.handshake_concurrency, "connecting")
        .await?;
    let sender = match session.open_sender().await {
        Ok(ws) => ws,
        Err(e) => {
            session.finish(opened.conns, None).await;
            return Err(e);
        }
    };
    let listeners = opened.conns.len();
    let chat = Chat::start(sender, opened.conns);
    let (sync_messages, sync_timed_out) = chat.sync(opts.size, session.deadline()).await;
    let first = session.probe();
    let measured = chat.measure(&opts, &session, sync_timed_out).await;
    let usage = first.usage_until(&session.probe());
    let mut ended = chat.stop(opened.failures).await;
    let conns = std::mem::take(&mut ended.conns);
    let unclean_closes = session.finish(conns, opts.checkpoint.take()).await;
    let elapsed_secs = measured.elapsed_ns as f64 / 1e9;
    Ok(BroadcastReport {
        sender_url: opts.sender_url.unwrap_or_else(|| opts.url.clone()),
        url: opts.url,
        connections: opts.connections,
        listeners,
        messages: measured.sent,
        size: opts.size,
        deliveries: measured.deliveries,
        expected: measured.expected,
        missed: measured.missed,
        elapsed_secs,
        deliveries_per_sec: per_sec(measured.deliveries as f64, elapsed_secs),
        last_receiver_latency: LatencySummary::from(&measured.last),
        delivery_latency: ended.delivery,
        sync_messages,
        lost: ended.losses.summary(listeners),
        errors: ended.failures.count,
        first_error: ended.failures.first,
        unclean_closes,
        usage,
        timed_out: sync_timed_out || measured.timed_out || session.deadline().passed(),
    })
}

/// The sender and the listeners, each in its own task.
struct Chat {
    rounds: Arc<Rounds>,
    latencies: Arc<Latencies>,
    listeners: Vec<Listener>,
    /// What the sender is to send.
    send_tx: mpsc::Sender<Message>,
    sender: JoinHandle<Result<Ws, String>>,
    /// Losses are reported in seconds from here.
    started: Instant,
}

/// What the measured messages gave.
struct Measured {
    sent: u64,
    expected: u64,
    missed: u64,
    /// Measured deliveries, late ones included.
    deliveries: u64,
    /// From the first measured send to the last delivery.
    elapsed_ns: u64,
    /// Per message, the latency to its last receiver.
    last: Histogram<u64>,
    timed_out: bool,
}

/// What the members left.
struct Ended {
    /// Still healthy, to be closed.
    conns: Vec<Ws>,
    failures: Failures,
    losses: Losses,
    delivery: LatencySummary,
}

impl Chat {
    /// Starts the listeners and the sender on `conns` and `sender`.
    fn start(sender: Ws, conns: Vec<Ws>) -> Self {
        let run = u64::from(std::process::id()) << 32
            | u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos()),
            );
        let rounds = Arc::new(Rounds::new(run, conns.len()));
        let latencies = Latencies::new();
        let listeners = conns
            .into_iter()
            .enumerate()
            .map(|(i, ws)| Listener::spawn(ws, rounds.clone(), latencies.recorder(i)))
            .collect();
        let (send_tx, send_rx) = mpsc::channel::<Message>(1);
        Self {
            sender: tokio::spawn(members::send_loop(sender, send_rx)),
            rounds,
            latencies,
            listeners,
            send_tx,
            started: Instant::now(),
        }
    }

    /// Repeats a sync message until every listener is a chat member. Returns how many were sent
    /// and whether the deadline cut it short.
    async fn sync(&self, size: usize, deadline: Deadline) -> (u64, bool) {
        let mut sent = 0u64;
        while !self.rounds.synced() {
            if deadline.passed() || self.send_tx.is_closed() {
                return (sent, deadline.passed());
            }
            let notified = self.rounds.all_synced.notified();
            let msg = self.rounds.payload("sync", sent, 0, size);
            if self.send_tx.send(msg).await.is_err() {
                break;
            }
            sent += 1;
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(SYNC_RETRY) => {}
                _ = deadline.reached() => {}
            }
        }
        (sent, false)
    }

    /// Sends the measured messages one round at a time (none when `skip`: the sync did not
    /// finish).
    async fn measure(&self, opts: &BroadcastOptions, session: &Session, skip: bool) -> Measured {
        let deadline = session.deadline();
        let bar = session.bar(Steps::Count(opts.messages as u64), "broadcast");
        let first_send_ns = self.rounds.nanos();
        let mut m = Measured {
            sent: 0,
            expected: 0,
            missed: 0,
            deliveries: 0,
            elapsed_ns: 0,
            last: latency::histogram(),
            timed_out: false,
        };
        for seq in (0..opts.messages as u64).take_while(|_| !skip) {
            if deadline.passed() {
                m.timed_out = true;
                break;
            }
            if !self.round(seq, opts, deadline, &mut m).await {
                break;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        m.deliveries = self.rounds.deliveries.load(Ordering::Acquire);
        m.elapsed_ns = (self.rounds.last_delivery_ns)
            .load(Ordering::Acquire)
            .saturating_sub(first_send_ns);
        m
    }

    /// Round `seq`: sends one message and waits until it reached every listener still
    /// connected (or the round timed out). `false` when the run cannot go on: no listener left,
    /// or the sender failed (its error is reported when it is joined).
    async fn round(
        &self,
        seq: u64,
        opts: &BroadcastOptions,
        deadline: Deadline,
        m: &mut Measured,
    ) -> bool {
        let waiting = self.rounds.open(seq);
        if waiting == 0 {
            return false;
        }
        let done = self.rounds.done.notified();
        let msg = self
            .rounds
            .payload("msg", seq, self.rounds.nanos(), opts.size);
        if self.send_tx.send(msg).await.is_err() {
            self.rounds.close(seq);
            return false;
        }
        m.sent += 1;
        m.expected += waiting;
        if !wait_round(&self.rounds, seq, done, opts.round_timeout, deadline).await {
            m.timed_out |= deadline.passed();
        }
        // Whatever did not arrive in time is missed; late deliveries find the round closed.
        m.missed += self.rounds.close(seq);
        let max_ns = self.rounds.max_ns.load(Ordering::Acquire);
        latency::record(&mut m.last, Duration::from_nanos(max_ns));
        true
    }

    /// Stops every member and takes the healthy connections back, for the checkpoint and the
    /// close; `failures` are the run's so far (failed connects).
    async fn stop(self, mut failures: Failures) -> Ended {
        drop(self.send_tx);
        let mut conns = Vec::with_capacity(self.listeners.len() + 1);
        let mut losses = Losses::new(self.started);
        // All told at once, then joined: they stop together.
        let tasks: Vec<_> = self.listeners.into_iter().map(Listener::stop).collect();
        for task in tasks {
            match task.await {
                Ok(Ok(ws)) => conns.push(ws),
                Ok(Err(left)) => {
                    failures.add(|| left.reason);
                    losses.record(left.at);
                }
                Err(e) => failures.add(|| format!("listener task failed: {e}")),
            }
        }
        match self.sender.await {
            Ok(Ok(ws)) => conns.push(ws),
            Ok(Err(e)) => failures.add(|| format!("sender: {e}")),
            Err(e) => failures.add(|| format!("sender task failed: {e}")),
        }
        Ended {
            conns,
            failures,
            losses,
            delivery: LatencySummary::from(&self.latencies.merged()),
        }
    }
}

/// Waits until round `seq` reached every listener; `false` on timeout.
async fn wait_round(
    rounds: &Rounds,
    seq: u64,
    done: tokio::sync::futures::Notified<'_>,
    timeout: Duration,
    deadline: Deadline,
) -> bool {
    let wait = async {
        let mut done = std::pin::pin!(done);
        loop {
            done.as_mut().await;
            if rounds.complete(seq) {
                return;
            }
            // A stale wake-up from a round that completed as it timed out: wait again.
            done.set(rounds.done.notified());
        }
    };
    tokio::select! {
        _ = wait => true,
        _ = tokio::time::sleep(timeout) => rounds.complete(seq),
        _ = deadline.reached() => rounds.complete(seq),
    }
}
