//! tungstenite (through tokio-tungstenite) as a wscope transport, in either role.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::{future, Sink, StreamExt};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::{frame, Role as TRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as Te, Message as Tm};
use tokio_tungstenite::WebSocketStream;
use wscope_core::{Bytes, Halves, Message, Role, Transport, TransportError, TransportErrorKind};

use super::message::{close_frame, text, Outbound};
use crate::config::SocketConfig;
use crate::io::Io;

/// The engine's settings from wscope's.
fn config(cfg: &SocketConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        .write_buffer_size(cfg.write_buffer_size)
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.frame_limit()))
}

/// The largest frame tungstenite is handed to send: it copies each frame into its write buffer,
/// which keeps its largest size for the connection's life, so a larger message goes out in
/// frames of this size (one 1 MB echo made every connection keep 1 MB).
const OUT_PIECE: usize = 4 << 10;

/// Either side over `io`, whose handshake is done; data messages compressed with a
/// `window_bits` window when given.
pub(super) async fn take_over(
    io: impl Io,
    role: Role,
    cfg: &SocketConfig,
    window_bits: Option<u8>,
) -> impl Transport {
    let engine_role = match role {
        Role::Server => TRole::Server,
        Role::Client => TRole::Client,
    };
    let ws = WebSocketStream::from_raw_socket(io, engine_role, Some(config(cfg))).await;
    transport(ws, role, window_bits)
}

/// Either side over an engine stream whose handshake is done.
fn transport<S: Io>(ws: WebSocketStream<S>, role: Role, window_bits: Option<u8>) -> impl Transport {
    let (sink, stream) = ws.split();
    let reader = stream.filter_map(|item| {
        future::ready(match item {
            Ok(Tm::Frame(_)) => None, // raw frames are never yielded when reading
            Ok(msg) => Some(from_engine(msg)),
            Err(e) => Some(Err(error(&e))),
        })
    });
    let writer = Pieces {
        sink,
        window_bits,
        rest: None,
    };
    Halves::new(role, reader, writer)
}

pin_project_lite::pin_project! {
    /// The writer: each data message goes to the engine in frames of at most [`OUT_PIECE`]
    /// bytes, the first of the message's opcode, the rest continuations. What is kept between
    /// frames is the rest of the message (shared bytes, no copy); nothing between messages.
    struct Pieces<K> {
        #[pin]
        sink: K,
        window_bits: Option<u8>,
        rest: Option<Rest>,
    }
}

/// What is left to send of a data message cut into frames.
struct Rest {
    bytes: Bytes,
    text: bool,
    first: bool,
}

impl Rest {
    /// The next frame, and whether it was the last.
    fn next_frame(&mut self) -> (Tm, bool) {
        let piece = self.bytes.split_to(self.bytes.len().min(OUT_PIECE));
        let opcode = match (self.first, self.text) {
            (false, _) => OpData::Continue,
            (true, true) => OpData::Text,
            (true, false) => OpData::Binary,
        };
        self.first = false;
        let last = self.bytes.is_empty();
        let frame = frame::Frame::message(piece, OpCode::Data(opcode), last);
        (Tm::Frame(frame), last)
    }
}

impl<K> Pieces<K>
where
    K: Sink<Tm, Error = Te>,
{
    /// Hands the engine the rest of the message being cut, as it takes them.
    fn poll_rest(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let mut this = self.project();
        while let Some(rest) = this.rest.as_mut() {
            ready!(this.sink.as_mut().poll_ready(cx)).map_err(|e| error(&e))?;
            let (frame, last) = rest.next_frame();
            if last {
                *this.rest = None;
            }
            this.sink
                .as_mut()
                .start_send(frame)
                .map_err(|e| error(&e))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<K> Sink<Message> for Pieces<K>
where
    K: Sink<Tm, Error = Te>,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_rest(cx))?;
        self.project().sink.poll_ready(cx).map_err(|e| error(&e))
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Self::Error> {
        let this = self.project();
        let (bytes, text) = match Outbound::new(msg, *this.window_bits)? {
            Outbound::Text(b) => (b, true),
            Outbound::Binary(b) => (b, false),
            Outbound::Ping(b) => return this.sink.start_send(Tm::Ping(b)).map_err(|e| error(&e)),
            Outbound::Pong(b) => return this.sink.start_send(Tm::Pong(b)).map_err(|e| error(&e)),
            Outbound::Close(f) => {
                let f = f.map(|f| frame::CloseFrame {
                    code: f.code.as_u16().into(),
                    reason: f.reason.into(),
                });
                return this.sink.start_send(Tm::Close(f)).map_err(|e| error(&e));
            }
        };
        let mut rest = Rest {
            bytes,
            text,
            first: true,
        };
        // The engine is ready for one frame (poll_ready said so); the rest go as it takes them.
        let (frame, last) = rest.next_frame();
        if !last {
            *this.rest = Some(rest);
        }
        this.sink.start_send(frame).map_err(|e| error(&e))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_rest(cx))?;
        self.project().sink.poll_flush(cx).map_err(|e| error(&e))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_rest(cx))?;
        self.project().sink.poll_close(cx).map_err(|e| error(&e))
    }
}

/// What a tungstenite error means for the connection.
fn error(e: &Te) -> TransportError {
    let kind = match e {
        // The peer went away without a close frame: not a protocol error to answer with 1002,
        // a lost connection (recorded as 1006, as by every other engine).
        Te::Protocol(ProtocolError::ResetWithoutClosingHandshake) => TransportErrorKind::Gone,
        Te::Protocol(_) => TransportErrorKind::Protocol,
        Te::Utf8(_) => TransportErrorKind::InvalidUtf8,
        Te::Capacity(_) => TransportErrorKind::TooBig,
        _ => TransportErrorKind::Gone,
    };
    TransportError::from_cause(kind, e)
}

fn from_engine(msg: Tm) -> Result<Message, TransportError> {
    Ok(match msg {
        Tm::Text(t) => return text(Bytes::from(t)),
        Tm::Binary(b) => Message::Binary(b),
        Tm::Ping(b) => Message::Ping(b),
        Tm::Pong(b) => Message::Pong(b),
        Tm::Close(f) => Message::Close(f.map(|f| close_frame(f.code.into(), f.reason.as_str()))),
        Tm::Frame(_) => {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                "the engine yielded a raw frame",
            ))
        }
    })
}
