//! Holding connections that nothing else reads: one task reads all of them, so that each answers
//! the server's pings and a connection the server ends is noticed, with why.
//!
//! tungstenite answers a ping only when the connection is read again (it queues the pong on the
//! read that returns the ping and writes it on the next one), so a connection that is merely kept
//! in a `Vec` never answers, and the server's ping timeout closes it (1011 "ping timeout", 40 s
//! with `wscope serve`'s defaults). One task polls every held connection through a
//! `FuturesUnordered` and only those the kernel wakes, so holding costs no task per connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream::{FuturesUnordered, StreamFuture};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::reason::{close_words, ws_reason};
use crate::ws::{Ws, CLOSE_TIMEOUT};

/// Distinct reasons kept by [`Drops`]; past them, connections are counted under [`OTHER`].
const MAX_REASONS: usize = 8;

/// Where drops past [`MAX_REASONS`] distinct reasons are counted.
const OTHER: &str = "other reasons";

/// Connections the server ended while they were held, counted by why: `1011 ping timeout` (a
/// close frame's code and reason) or the error that ended the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Drops {
    /// Count per reason, at most [`MAX_REASONS`] of them plus [`OTHER`].
    reasons: BTreeMap<String, u64>,
    total: u64,
}

impl Drops {
    /// One connection dropped for `reason`.
    pub(crate) fn add(&mut self, reason: String) {
        self.add_many(&reason, 1);
    }

    /// `n` connections dropped for `reason` (a report's counts read back).
    pub(crate) fn add_many(&mut self, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        let key = if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(reason) {
            reason
        } else {
            OTHER
        };
        *self.reasons.entry(key.to_owned()).or_default() += n;
    }

    /// How many connections were dropped.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The count per reason, for the JSON report.
    pub(crate) fn reasons(&self) -> &BTreeMap<String, u64> {
        &self.reasons
    }

    /// The reasons as one phrase, most frequent first: `1011 ping timeout`, or
    /// `1011 ping timeout (3), connection reset by the server (1)` when there are several.
    pub(crate) fn describe(&self) -> String {
        let mut by_count: Vec<_> = self.reasons.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        match by_count.as_slice() {
            [] => String::new(),
            [(reason, _)] => (*reason).clone(),
            many => many
                .iter()
                .map(|(reason, n)| format!("{reason} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// What a held connection's next read gave.
enum Read {
    /// Still open (a ping, a pong or a message, read and dropped).
    Open,
    /// The server ended it, for this reason.
    Ended(String),
}

fn classify(item: Option<Result<Message, WsError>>) -> Read {
    match item {
        Some(Ok(Message::Close(frame))) => Read::Ended(close_words(frame.as_ref())),
        Some(Ok(_)) => Read::Open,
        Some(Err(e)) => Read::Ended(ws_reason(&e)),
        None => Read::Ended("the connection ended".to_owned()),
    }
}

/// The task that reads every held connection, and what to ask of it.
#[derive(Debug)]
pub(crate) struct Keeper {
    incoming: mpsc::UnboundedSender<Ws>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Ws>>,
    drops: Arc<Mutex<Drops>>,
}

/// What a stopped [`Keeper`] hands back.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The connections still open.
    pub(crate) conns: Vec<Ws>,
    /// The ones the server ended meanwhile.
    pub(crate) drops: Drops,
}

impl Keeper {
    /// Starts the reading task, holding nothing yet.
    pub(crate) fn start() -> Self {
        let (incoming, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let drops = Arc::new(Mutex::new(Drops::default()));
        let task = tokio::spawn(keep(rx, stopped, drops.clone()));
        Self {
            incoming,
            stop,
            task,
            drops,
        }
    }

    /// Holds `ws` from now on.
    pub(crate) fn hold(&self, ws: Ws) {
        // The task only ends when told to stop, which takes `self`: it is there to receive.
        let _ = self.incoming.send(ws);
    }

    /// The connections the server ended so far.
    pub(crate) fn drops(&self) -> Drops {
        self.drops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops reading and hands back the connections still open, and what was dropped.
    pub(crate) async fn stop(self) -> Kept {
        let _ = self.stop.send(());
        let conns = match self.task.await {
            Ok(conns) => conns,
            Err(e) => {
                // The task does not panic; should it, its connections are gone and say so.
                self.drops
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .add(format!("keeper task failed: {e}"));
                Vec::new()
            }
        };
        let drops = Arc::try_unwrap(self.drops)
            .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
            .unwrap_or_else(|shared| {
                shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            });
        Kept { conns, drops }
    }
}

/// Reads every connection handed over until told to stop; then hands back those still open.
async fn keep(
    mut incoming: mpsc::UnboundedReceiver<Ws>,
    mut stop: oneshot::Receiver<()>,
    drops: Arc<Mutex<Drops>>,
) -> Vec<Ws> {
    let mut held: FuturesUnordered<StreamFuture<Ws>> = FuturesUnordered::new();
    let mut receiving = true;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            ws = incoming.recv(), if receiving => match ws {
                Some(ws) => held.push(ws.into_future()),
                None => receiving = false,
            },
            Some((item, ws)) = held.next(), if !held.is_empty() => match classify(item) {
                // Polled again on the next turn: that read writes the pong tungstenite queued.
                Read::Open => held.push(ws.into_future()),
                Read::Ended(reason) => {
                    drops.lock().unwrap_or_else(PoisonError::into_inner).add(reason);
                    tokio::spawn(finish_close(ws));
                }
            },
        }
    }
    // Connections handed over but not yet taken in are held all the same.
    incoming.close();
    let mut conns: Vec<Ws> = held
        .into_iter()
        .filter_map(StreamFuture::into_inner)
        .collect();
    while let Ok(ws) = incoming.try_recv() {
        conns.push(ws);
    }
    conns
}

/// Lets an ended connection write the reply to the server's close frame (tungstenite queued it)
/// and read to its end, within [`CLOSE_TIMEOUT`].
async fn finish_close(mut ws: Ws) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async { while ws.next().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    #[test]
    fn drops_are_counted_by_reason_and_worded_most_frequent_first() {
        let mut drops = Drops::default();
        assert_eq!(drops.describe(), "");
        drops.add("1011 ping timeout".to_owned());
        assert_eq!(drops.describe(), "1011 ping timeout");
        drops.add("connection reset by the server".to_owned());
        drops.add("1011 ping timeout".to_owned());
        assert_eq!(drops.total(), 3);
        assert_eq!(
            drops.describe(),
            "1011 ping timeout (2), connection reset by the server (1)"
        );
        for i in 0..20 {
            drops.add(format!("reason {i}"));
        }
        assert_eq!(drops.total(), 23);
        assert_eq!(
            drops.reasons().len(),
            MAX_REASONS + 1,
            "capped, plus `other`"
        );
        assert_eq!(drops.reasons()[OTHER], 14);
    }

    /// How long the tests wait for a keeper to notice something.
    const TEST_WAIT: Duration = Duration::from_secs(10);

    /// A server on loopback that pings each client once, then closes it with `code` after the
    /// pong comes back; its handle yields whether every pong arrived.
    async fn pinging_server(
        clients: usize,
        code: u16,
    ) -> (std::net::SocketAddr, JoinHandle<usize>) {
        use futures_util::SinkExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut pongs = 0;
            for _ in 0..clients {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                ws.send(Message::Ping("p".into())).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Message::Pong(_)) {
                        pongs += 1;
                        break;
                    }
                }
                ws.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: "bye".into(),
                })))
                .await
                .unwrap();
            }
            pongs
        });
        (addr, task)
    }

    #[tokio::test]
    async fn held_connections_answer_pings_and_their_close_is_counted_with_its_code() {
        let (addr, server) = pinging_server(2, 4000).await;
        let keeper = Keeper::start();
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
                .await
                .unwrap();
            keeper.hold(ws);
        }
        let pongs = tokio::time::timeout(TEST_WAIT, server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pongs, 2, "every held connection answered its ping");
        tokio::time::timeout(TEST_WAIT, async {
            while keeper.drops().total() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let kept = keeper.stop().await;
        assert!(kept.conns.is_empty());
        assert_eq!(kept.drops.describe(), "4000 bye");
    }
}
