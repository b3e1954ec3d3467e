//! The chat members a broadcast run drives: listeners, which record every message of this run
//! until told to stop, and the sender, which sends what the run hands it.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::rounds::{Member, Rounds};
use crate::latency::Recorder;
use crate::reason::{close_words, closed_by_server, ws_reason};
use crate::ws::Ws;

/// Why and when a listener was lost.
#[derive(Debug)]
pub(crate) struct Left {
    pub(crate) reason: String,
    pub(crate) at: Instant,
}

/// A listener's task, and its own stop signal (polling it takes no lock shared with the others).
#[derive(Debug)]
pub(crate) struct Listener {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<Ws, Left>>,
}

impl Listener {
    /// Starts listening on `ws`.
    pub(crate) fn spawn(ws: Ws, rounds: Arc<Rounds>, rec: Recorder) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(listen(ws, rounds, rec, stopped));
        Self { stop, task }
    }

    /// Tells it to stop; the task then hands the connection back, or says why it was lost.
    pub(crate) fn stop(self) -> JoinHandle<Result<Ws, Left>> {
        let _ = self.stop.send(());
        self.task
    }
}

/// A listener: records every message of this run until told to stop, then hands the connection
/// back. When the connection fails, the rounds stop waiting for it.
async fn listen(
    mut ws: Ws,
    rounds: Arc<Rounds>,
    mut rec: Recorder,
    mut stop: oneshot::Receiver<()>,
) -> Result<Ws, Left> {
    let mut member = Member::default();
    let reason = loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => msg,
            _ = &mut stop => {
                rec.flush();
                return Ok(ws);
            }
        };
        match msg {
            Some(Ok(Message::Text(t))) => rounds.on_message(t.as_str(), &mut member, &mut rec),
            Some(Ok(Message::Close(frame))) => {
                break format!(
                    "the server closed a listener ({})",
                    close_words(frame.as_ref())
                )
            }
            None => break "the server closed a listener".to_owned(),
            Some(Ok(_)) => {}
            Some(Err(e)) => break ws_reason(&e),
        }
    };
    rec.flush();
    rounds.leave(&member);
    Err(Left {
        reason,
        at: Instant::now(),
    })
}

/// The sender: sends what the run hands it and reads (and drops) its own copies coming back from
/// the chat, so they never pile up.
pub(crate) async fn send_loop(mut ws: Ws, mut rx: mpsc::Receiver<Message>) -> Result<Ws, String> {
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(msg) => ws.send(msg).await.map_err(|e| ws_reason(&e))?,
                None => return Ok(ws),
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => return Err(closed_by_server(frame.as_ref())),
                None => return Err("the server closed the connection".to_owned()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_reason(&e)),
            },
        }
    }
}
