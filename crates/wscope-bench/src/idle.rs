//! `wscope bench idle`: open C connections with bounded handshake concurrency and hold them idle:
//! the handshake rate, and with `--pid` what the server's memory grew by per connection.
//!
//! The load generator's and the server's CPU are read over the opening (where the work is); the
//! server's memory before the first connect and at the end of the hold.
//!
//! Past `--per-source` connections (10,000 by default) client sockets are bound to source
//! addresses 127.0.0.1, 127.0.0.2, … so runs pass the ~28k ephemeral ports one address has.
//! Open connections are held by one task that reads them all (no task per connection, which
//! keeps the load generator's own footprint small): each answers the server's pings, so a held
//! connection stays open however long the hold, and one the server ends is counted with its
//! close code and reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use wscope_core::units::{parse_count, parse_duration, parse_size};

use crate::checkpoint::Checkpoint;
use crate::connect;
use crate::error::BenchError;
use crate::keeper::Drops;
use crate::latency::LatencySummary;
use crate::lost::per_sec;
use crate::options::{defaults, CommonOptions, ECHO_URL, HANDSHAKE_CONCURRENCY};
use crate::probe::Usage;
use crate::progress::Steps;
use crate::report::{self, Report};
use crate::session::{Plan, Session};

/// Read buffer of an idle client connection: small, since nothing but a close is read.
const READ_BUFFER: usize = 1024;

/// `wscope bench idle` options.
#[derive(Args, Debug)]
pub struct IdleOptions {
    /// Endpoint to connect to (loopback only).
    #[arg(long, value_name = "URL", default_value = ECHO_URL)]
    pub url: String,
    /// Connections to open and hold.
    ///
    /// The default fits the common open-file limit of 1,024. Each connection needs an open
    /// file: the run raises its soft limit up to the hard one (`ulimit -Hn`) by itself, and when
    /// even that is too low it stops before connecting and says so, naming -c; then raise the
    /// hard limit (`ulimit -n N` as root, `LimitNOFILE=` for a systemd unit). Past --per-source
    /// connections (10,000) the client sockets are spread over 127.0.0.1, 127.0.0.2, … to pass
    /// the ~28k ephemeral ports of one address; lower --per-source if connects fail with "no
    /// free local port".
    #[arg(short = 'c', long = "connections", value_name = "N", default_value = "1000", value_parser = parse_count)]
    pub connections: usize,
    /// Handshakes under way at once.
    #[arg(long, value_name = "N", default_value_t = HANDSHAKE_CONCURRENCY, value_parser = parse_count)]
    pub handshake_concurrency: usize,
    /// How long to hold the connections open before reading the server's memory and closing.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Before the hold, each connection sends one binary message of SIZE bytes (`1MiB`) and
    /// reads its echo, --handshake-concurrency connections at a time: the memory figure is then
    /// what an idle connection keeps once a large message has passed through it. Off by
    /// default; the server must echo (`wscope serve`'s `/ws`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub message: Option<usize>,
    /// Options every mode shares (`--pid` gives bytes per connection).
    #[command(flatten)]
    pub common: CommonOptions,
    /// Where to pause while every connection is held open.
    #[arg(skip)]
    pub checkpoint: Option<Checkpoint>,
}

impl Default for IdleOptions {
    fn default() -> Self {
        defaults()
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
    /// Bytes of the one message each connection echoed before the hold (`--message`; 0: none).
    pub message_bytes: usize,
    /// Connections whose message was not echoed (closed, reset or timed out): not held.
    pub message_failures: u64,
    /// Why the first of those was not (a close's code and reason, say).
    pub message_error: Option<String>,
    /// Connections the server closed or reset while they were held.
    pub dropped: usize,
    /// Why they were dropped, with how many for each reason: a close frame's code and reason
    /// (`1011 ping timeout`) or the error that ended the connection (at most 8 reasons, the
    /// rest counted under `other reasons`).
    pub drop_reasons: BTreeMap<String, u64>,
    /// Connections whose close handshake did not complete.
    pub unclean_closes: u64,
    /// CPU of the load generator and of the server (`--pid`) over the opening; the server's
    /// memory from before the first connect to the end of the hold.
    #[serde(flatten)]
    pub usage: Usage,
    /// The server's RSS growth divided by the connections held (`--pid`).
    pub server_bytes_per_connection: Option<f64>,
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
        if self.message_bytes > 0 {
            rows.push((
                "echoed first".to_owned(),
                format!(
                    "one message of {} each ({} not echoed{})",
                    report::bytes(self.message_bytes as f64),
                    report::int(self.message_failures),
                    match &self.message_error {
                        Some(e) => format!("; first: {e}"),
                        None => String::new(),
                    }
                ),
            ));
        }
        rows.push((
            "held".to_owned(),
            format!(
                "{} for {} ({})",
                report::int(self.held as u64),
                report::secs(self.hold_secs),
                self.dropped_words()
            ),
        ));
        rows.extend(report::usage_rows(&self.usage));
        if let Some(b) = self.server_bytes_per_connection {
            rows.push(("server bytes/conn".to_owned(), report::bytes(b)));
        }
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

impl IdleReport {
    /// `0 dropped by the server`, or with why: `3 dropped by the server: 1011 ping timeout`.
    fn dropped_words(&self) -> String {
        let count = report::int(self.dropped as u64);
        let mut drops = Drops::default();
        for (reason, n) in &self.drop_reasons {
            drops.add_many(reason, *n);
        }
        match drops.describe() {
            why if why.is_empty() => format!("{count} dropped by the server"),
            why => format!("{count} dropped by the server: {why}"),
        }
    }
}

/// Runs `wscope bench idle`.
pub async fn idle(mut opts: IdleOptions) -> Result<IdleReport, BenchError> {
    let session = Session::start(Plan {
        url: &opts.url,
        sender_url: None,
        connections: opts.connections,
        read_buffer: READ_BUFFER,
        // Opening at a pessimistic 1,000 handshakes/s, each message there and back at a
        // pessimistic 32 MiB/s, then the hold.
        planned: Duration::from_millis(opts.connections as u64)
            .saturating_add(Duration::from_secs_f64(
                (opts.message.unwrap_or(0) as f64 * 2.0 * opts.connections as f64)
                    / f64::from(32 << 20),
            ))
            .saturating_add(opts.hold),
        common: &opts.common,
    })
    .await?;
    let before = session.probe();
    let opened = session
        .open(opts.connections, opts.handshake_concurrency, "handshakes")
        .await?;
    let usage = before.usage_until(&session.probe());
    let (keeper, message_failures, message_error) = match opts.message {
        None => (opened.keeper, 0, None),
        Some(size) => echo_each(&session, opened.keeper, size, opts.handshake_concurrency).await,
    };
    let count = opened.count.saturating_sub(message_failures as usize);
    let hold = hold(&session, count, opts.hold).await;
    let held = count.saturating_sub(keeper.drops().total() as usize);
    let usage = usage.with_rss_at(&session.probe());
    // The keeper goes on reading (and answering pings) through the checkpoint.
    session.pause(opts.checkpoint.take()).await;
    let kept = keeper.stop().await;
    let unclean_closes = connect::close_all(kept.conns).await;

    let open_secs = opened.elapsed.as_secs_f64();
    Ok(IdleReport {
        url: opts.url,
        connections: opts.connections,
        opened: opened.count,
        failed: opened.failures.count,
        first_error: opened.failures.first,
        source_addresses: session.connector().source_addresses(),
        handshake_concurrency: opts.handshake_concurrency,
        open_secs,
        handshakes_per_sec: per_sec(opened.count as f64, open_secs),
        handshake_latency: LatencySummary::from(&opened.handshakes),
        hold_secs: hold.secs,
        held,
        message_bytes: opts.message.unwrap_or(0),
        message_failures,
        message_error,
        dropped: kept.drops.total() as usize,
        drop_reasons: kept.drops.reasons().clone(),
        unclean_closes,
        server_bytes_per_connection: usage
            .server
            .filter(|_| held > 0)
            .map(|s| s.rss_growth() as f64 / held as f64),
        usage,
        timed_out: opened.timed_out || session.deadline().passed(),
    })
}

/// Takes the connections from `keeper`, has each echo one binary message of `size` bytes
/// (`concurrency` at a time, behind a bar) and hands those that did to a new keeper; counts
/// those that did not (the server closed one, or the run's deadline came first), with the first
/// one's reason. Those the old keeper saw dropped count as failures too. A connection waiting
/// for its turn goes on reading, so that it answers the server's pings meanwhile.
async fn echo_each(
    session: &Session,
    keeper: crate::keeper::Keeper,
    size: usize,
    concurrency: usize,
) -> (crate::keeper::Keeper, u64, Option<String>) {
    let kept = keeper.stop().await;
    let total = kept.drops.total() + kept.conns.len() as u64;
    let mut echoed = 0;
    let mut first_error = None;
    let bar = session.bar(Steps::Count(kept.conns.len() as u64), "messages");
    let payload = tokio_tungstenite::tungstenite::Bytes::from(vec![b'x'; size]);
    let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for ws in kept.conns {
        tasks.spawn(echo_one(ws, turns.clone(), payload.clone()));
    }
    let keeper = crate::keeper::Keeper::start();
    let deadline = session.deadline();
    loop {
        let done = tokio::select! {
            done = tasks.join_next() => done,
            _ = deadline.reached() => break,
        };
        match done {
            None => break,
            Some(Ok(Ok(ws))) => {
                keeper.hold(ws);
                echoed += 1;
            }
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                first_error.get_or_insert(format!("echo task failed: {e}"));
            }
        }
        bar.inc(1);
    }
    // Those not echoed before the deadline are dropped with their tasks: failures too.
    tasks.abort_all();
    bar.finish_and_clear();
    (keeper, total - echoed, first_error)
}

/// Waits for a turn while reading `ws` (which answers pings), then sends `payload` and reads
/// until its echo comes back whole.
async fn echo_one(
    mut ws: crate::ws::Ws,
    turns: std::sync::Arc<tokio::sync::Semaphore>,
    payload: tokio_tungstenite::tungstenite::Bytes,
) -> Result<crate::ws::Ws, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;

    let size = payload.len();
    let unexpected =
        |read: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>| -> String {
            match read {
                Some(Ok(Message::Close(Some(frame)))) => {
                    format!("closed: {} {}", u16::from(frame.code), frame.reason)
                }
                Some(Ok(other)) => format!("not the echo: {other:?}"),
                Some(Err(e)) => e.to_string(),
                None => "the server closed the stream".to_owned(),
            }
        };
    let _turn = loop {
        tokio::select! {
            turn = turns.clone().acquire_owned() => break turn.map_err(|e| e.to_string())?,
            read = ws.next() => match read {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => return Err(unexpected(other)),
            },
        }
    };
    // Sent in frames of 64 KiB, each flushed: the client's write buffer grows to a frame, not
    // to the message, and keeps that (a buffer of the whole message kept by each of 19,000
    // connections ran the load generator out of memory on a 24 GiB machine).
    const FRAME: usize = 64 << 10;
    for start in (0..size).step_by(FRAME) {
        let end = (start + FRAME).min(size);
        let opcode = match start {
            0 => OpCode::Data(Data::Binary),
            _ => OpCode::Data(Data::Continue),
        };
        let frame = Frame::message(payload.slice(start..end), opcode, end == size);
        ws.send(Message::Frame(frame))
            .await
            .map_err(|e| e.to_string())?;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(echo))) if echo.len() == size => return Ok(ws),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(unexpected(other)),
        }
    }
}

/// What the hold took.
struct Hold {
    secs: f64,
}

/// Holds the `count` connections the keeper reads for `length` (or until the deadline).
async fn hold(session: &Session, count: usize, length: Duration) -> Hold {
    let bar = session.bar(Steps::Spinner, "holding");
    bar.set_message(format!("{} connections", report::int(count as u64)));
    let start = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(length) => {}
        _ = session.deadline().reached() => {}
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Hold { secs }
}
