//! One echo connection's task: keep W messages in flight until the measured window ends, check
//! every reply against what this connection sent, record the round trips that end inside the
//! window, then wait (bounded) for the last echoes.
//!
//! The task reads what is ready, then answers each reply with a new message, all fed before one
//! flush, so the load generator writes like a corking server does and stays off the critical
//! path. Echo preserves order, so what is in flight is a FIFO of (send time, bytes) and the
//! payload needs no timestamp.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use super::payload::{self, Payloads};
use crate::deadline::Deadline;
use crate::latency::Recorder;
use crate::reason::{closed_by_server, ws_reason};
use crate::ws::Ws;

/// How long, after the measured window, connections may take to receive what is still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Payload bytes per message.
    pub(crate) size: usize,
    /// Binary rather than text messages.
    pub(crate) binary: bool,
    /// Messages each connection keeps in flight.
    pub(crate) in_flight: usize,
    /// Round trips ending from here on are measured...
    pub(crate) measure_start: Instant,
    /// ...until here, where sending stops.
    pub(crate) measure_end: Instant,
    pub(crate) deadline: Deadline,
    /// Replies received by all tasks, for the progress bar.
    pub(crate) received: AtomicU64,
}

/// One connection's tally.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    /// Every data message that came back, echo or not.
    pub(crate) received: u64,
    /// Echoes that matched and arrived inside the window.
    pub(crate) measured: u64,
    /// Replies that were not the echo of what was sent, in order.
    pub(crate) mismatches: u64,
    pub(crate) first_mismatch: Option<String>,
    /// Why the connection failed, if it did.
    pub(crate) error: Option<String>,
    /// When it failed.
    pub(crate) lost_at: Option<Instant>,
    /// The run's deadline stopped it.
    pub(crate) timed_out: bool,
}

/// Drives connection number `conn`. Returns its tally, and the connection if it is still healthy
/// (to be closed with a handshake).
pub(crate) async fn drive(
    ws: Ws,
    conn: usize,
    plan: Arc<Plan>,
    rec: Recorder,
) -> (Tally, Option<Ws>) {
    let mut c = Conn {
        payloads: Payloads::new(plan.size, plan.binary, conn),
        pending: VecDeque::with_capacity(plan.in_flight),
        ws,
        plan,
        rec,
        tally: Tally::default(),
        sending: true,
    };
    let result = c.exchange().await;
    c.rec.flush();
    match result {
        Ok(()) => (c.tally, Some(c.ws)),
        Err(e) => {
            c.tally.error = Some(e);
            c.tally.lost_at = Some(Instant::now());
            (c.tally, None)
        }
    }
}

/// What woke the task.
enum Event {
    /// The end of the window, then the end of the drain.
    Timer,
    Read(Option<Result<Message, WsError>>),
}

struct Conn {
    ws: Ws,
    plan: Arc<Plan>,
    rec: Recorder,
    payloads: Payloads,
    /// Send time and bytes of each message in flight, oldest first.
    pending: VecDeque<(Instant, Bytes)>,
    tally: Tally,
    /// Cleared at the end of the window, by the timer or by a reply arriving after it.
    sending: bool,
}

impl Conn {
    async fn exchange(&mut self) -> Result<(), String> {
        self.send(self.plan.in_flight as u64).await?;
        let end = self.plan.measure_end.min(self.plan.deadline.instant());
        let mut timer = Box::pin(tokio::time::sleep_until(TokioInstant::from_std(end)));
        let mut draining = false;
        loop {
            if !self.sending && self.pending.is_empty() {
                return Ok(());
            }
            let event = tokio::select! {
                biased;
                _ = &mut timer => Event::Timer,
                msg = self.ws.next() => Event::Read(msg),
            };
            match event {
                Event::Timer if self.plan.deadline.passed() => {
                    self.tally.timed_out = true;
                    return Ok(());
                }
                Event::Timer if draining => {
                    return Err(format!(
                        "{} echoes still missing {DRAIN_TIMEOUT:?} after the end",
                        self.pending.len()
                    ));
                }
                Event::Timer => {
                    self.sending = false;
                    draining = true;
                    let drain_end =
                        (Instant::now() + DRAIN_TIMEOUT).min(self.plan.deadline.instant());
                    timer.as_mut().reset(TokioInstant::from_std(drain_end));
                }
                Event::Read(first) => {
                    let replies = self.read_ready(first)?;
                    self.send(replies).await?;
                }
            }
        }
    }

    /// Sends `n` new messages with one flush.
    async fn send(&mut self, n: u64) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        let t = Instant::now();
        for _ in 0..n {
            let (msg, bytes) = self.payloads.next();
            self.ws.feed(msg).await.map_err(|e| ws_reason(&e))?;
            self.pending.push_back((t, bytes));
        }
        self.ws.flush().await.map_err(|e| ws_reason(&e))?;
        self.tally.sent += n;
        Ok(())
    }

    /// Takes `first` and whatever else is already buffered (up to a window's worth). Returns how
    /// many new messages to send.
    fn read_ready(&mut self, first: Option<Result<Message, WsError>>) -> Result<u64, String> {
        let mut replies = 0u64;
        let mut got = 0u64;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    got += 1;
                    self.tally.received += 1;
                    replies += u64::from(self.on_reply(&m));
                }
                Some(Ok(Message::Close(frame))) => return Err(closed_by_server(frame.as_ref())),
                None => return Err("the server closed the connection".to_owned()),
                Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
                Some(Err(e)) => return Err(ws_reason(&e)),
            }
            if got < self.plan.in_flight as u64 {
                next = self.ws.next().now_or_never();
            }
        }
        self.plan.received.fetch_add(got, Ordering::Relaxed);
        Ok(replies)
    }

    /// Checks one reply against the oldest message in flight and records it. Returns whether to
    /// send another in its place (only inside the window, and only for a message in flight).
    fn on_reply(&mut self, reply: &Message) -> bool {
        let now = Instant::now();
        let Some((sent_at, sent)) = self.pending.pop_front() else {
            // More replies than messages sent: not an echo server (a chat endpoint's fan-out).
            self.mismatch(|| payload::unsolicited(reply));
            return false;
        };
        if !self.payloads.is_echo(reply, &sent) {
            self.mismatch(|| payload::mismatch(reply, &sent));
        } else if now >= self.plan.measure_start && now < self.plan.measure_end {
            self.rec.record(now.saturating_duration_since(sent_at));
            self.tally.measured += 1;
        }
        if now >= self.plan.measure_end {
            self.sending = false;
        }
        self.sending
    }

    fn mismatch(&mut self, words: impl FnOnce() -> String) {
        self.tally.mismatches += 1;
        if self.tally.first_mismatch.is_none() {
            self.tally.first_mismatch = Some(words());
        }
    }
}
