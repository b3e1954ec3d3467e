//! An in-process [`Transport`]: a WebSocket whose other end is a [`MemoryPeer`] in the same
//! process, over channels. It behaves like an engine where the driver can tell — it answers pings
//! with pongs and a peer's close with a close reply, and ends after the close handshake — so
//! handlers, observers and the driver itself can be tested without sockets or HTTP.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use wscope_core::{memory, ConnectionMeta, Message, Registry};
//!
//! let registry = Registry::new();
//! let accepted = registry.accept(ConnectionMeta::new("/ws")).unwrap();
//! let (transport, mut peer) = memory::pair();
//! tokio::spawn(accepted.run(transport, |mut socket| async move {
//!     while let Some(msg) = socket.recv().await {
//!         let _ = socket.send(msg).await; // echo
//!     }
//! }));
//! peer.send("hello").unwrap();
//! assert_eq!(peer.recv().await, Some(Message::text("hello")));
//! # }
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

use crate::close::CloseFrame;
use crate::message::Message;
use crate::transport::{Joined, Role, Transport, TransportError, TransportErrorKind};

/// A connected in-process transport (the server's end) and its peer (the client's end).
pub fn pair() -> (MemoryTransport, MemoryPeer) {
    let (to_transport, from_peer) = mpsc::unbounded_channel();
    let (to_peer, from_transport) = mpsc::unbounded_channel();
    let close_sent = Arc::new(AtomicBool::new(false));
    let transport = MemoryTransport {
        reader: MemoryReader {
            rx: from_peer,
            answers: to_peer.clone(),
            close_sent: close_sent.clone(),
            done: false,
        },
        writer: MemoryWriter {
            tx: to_peer,
            close_sent,
        },
    };
    let peer = MemoryPeer {
        tx: to_transport,
        rx: from_transport,
    };
    (transport, peer)
}

/// The server's end of [`pair`].
#[derive(Debug)]
pub struct MemoryTransport {
    reader: MemoryReader,
    writer: MemoryWriter,
}

impl Transport for MemoryTransport {
    type Reader = MemoryReader;
    type Writer = MemoryWriter;
    type Duplex = Joined<MemoryReader, MemoryWriter>;

    fn role(&self) -> Role {
        Role::Server
    }

    fn split(self) -> (MemoryReader, MemoryWriter) {
        (self.reader, self.writer)
    }

    fn into_duplex(self) -> Self::Duplex {
        Joined::new(self.reader, self.writer)
    }
}

/// Frames from the peer.
#[derive(Debug)]
pub struct MemoryReader {
    rx: mpsc::UnboundedReceiver<Message>,
    /// For the automatic answers (pongs, close replies), as engines send them while reading.
    answers: mpsc::UnboundedSender<Message>,
    close_sent: Arc<AtomicBool>,
    /// The close handshake is over: the stream has ended.
    done: bool,
}

impl Stream for MemoryReader {
    type Item = Result<Message, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(msg) = std::task::ready!(self.rx.poll_recv(cx)) else {
            return Poll::Ready(None); // the peer vanished without a close
        };
        match &msg {
            Message::Ping(payload) => {
                let _ = self.answers.send(Message::Pong(payload.clone()));
            }
            Message::Close(frame) => {
                if !self.close_sent.swap(true, Ordering::AcqRel) {
                    let _ = self.answers.send(Message::Close(frame.clone()));
                }
                self.done = true;
            }
            _ => {}
        }
        Poll::Ready(Some(Ok(msg)))
    }
}

/// Frames to the peer.
#[derive(Debug)]
pub struct MemoryWriter {
    tx: mpsc::UnboundedSender<Message>,
    close_sent: Arc<AtomicBool>,
}

impl Sink<Message> for MemoryWriter {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), TransportError> {
        if matches!(msg, Message::Close(_)) && self.close_sent.swap(true, Ordering::AcqRel) {
            return Ok(()); // a close reply already went out: one close per side
        }
        self.tx
            .send(msg)
            .map_err(|_| TransportError::new(TransportErrorKind::Gone, "peer gone"))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
}

/// The other end of a [`MemoryTransport`]: what a client would send and see.
#[derive(Debug)]
pub struct MemoryPeer {
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
}

/// The transport's side has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is gone")]
pub struct PeerGone;

impl MemoryPeer {
    /// Sends a frame (`"text"`, bytes, or any [`Message`], control frames included).
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), PeerGone> {
        self.tx.send(msg.into()).map_err(|_| PeerGone)
    }

    /// Sends a close frame (answering the server's, or starting the handshake).
    pub fn close(&self, frame: Option<CloseFrame>) -> Result<(), PeerGone> {
        self.send(Message::Close(frame))
    }

    /// The next frame the transport sent; `None` once it is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }
}
