//! The WebSocket engines a tracked connection can run on, behind one reader/writer pair of
//! wscope [`Message`]s, so the engine can change without touching the tracking code.
//!
//! Every engine takes over a connection that [`crate::handshake`] already upgraded; each
//! converts its frames to and from wscope's message type without copying data payloads.

use std::error::Error as StdError;
use std::pin::Pin;

use futures_util::{future, Sink, SinkExt, Stream, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use wscope_core::{Bytes, CloseCode, CloseFrame, Message, Utf8Bytes};

use crate::upgrade::SocketConfig;

/// Which WebSocket implementation serves accepted sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// `tungstenite` (through tokio-tungstenite), the engine axum uses. The default: with a small
    /// read buffer it idles in half the memory of tokio-websockets (whose 8 KiB read buffer is
    /// fixed) at equal or lower CPU per message; docs/BENCHMARKS.md has the figures.
    #[default]
    Tungstenite,
    /// `tokio-websockets`: SIMD masking and UTF-8 checks.
    TokioWebsockets,
    /// `fastwebsockets` (Deno's), through its split API: each frame written as it is sent.
    Fastwebsockets,
}

impl Engine {
    /// Every engine, for comparisons.
    pub const ALL: [Engine; 3] = [
        Engine::Tungstenite,
        Engine::TokioWebsockets,
        Engine::Fastwebsockets,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Tungstenite => "tungstenite",
            Engine::TokioWebsockets => "tokio-websockets",
            Engine::Fastwebsockets => "fastwebsockets",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown engine {s:?}: use tungstenite, tokio-websockets or fastwebsockets")
            })
    }
}

/// An engine error, boxed so every engine fits one type.
pub(crate) type EngineError = Box<dyn StdError + Send + Sync>;
/// The receiving half: frames in, as wscope messages (control frames included).
pub(crate) type Reader = Pin<Box<dyn Stream<Item = Result<Message, EngineError>> + Send>>;
/// The sending half: wscope messages out; `flush` writes what was fed in one go.
pub(crate) type Writer = Pin<Box<dyn Sink<Message, Error = EngineError> + Send>>;

type Io = TokioIo<Upgraded>;

/// Runs `io` (an upgraded connection) on `engine` and splits it into its two halves.
pub(crate) async fn start(engine: Engine, io: Io, cfg: &SocketConfig) -> (Reader, Writer) {
    match engine {
        Engine::Tungstenite => tungstenite::start(io, cfg).await,
        Engine::TokioWebsockets => tokio_ws::start(io, cfg),
        Engine::Fastwebsockets => fast::start(io, cfg),
    }
}

/// The close a read error calls for, when wscope must send it: 1002 for a protocol violation,
/// 1007 for invalid UTF-8, 1009 for a message over the limit. `None` when the transport is gone
/// or the engine sends its own close (tokio-websockets does).
pub(crate) fn failure_close(e: &EngineError) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error as Te;
    let (code, reason) = match e.downcast_ref::<Te>()? {
        Te::Protocol(_) => (CloseCode::PROTOCOL, "Protocol error"),
        Te::Utf8(_) => (CloseCode::INVALID_PAYLOAD, "Invalid UTF-8"),
        Te::Capacity(_) => (CloseCode::TOO_BIG, "Message too big"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.to_owned(),
    })
}

/// A close frame's parts as wscope's frame; a code that may not be sent reads as 1002.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::new(code).unwrap_or(CloseCode::PROTOCOL),
        reason: reason.to_owned(),
    }
}

mod tungstenite {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::{frame, Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message as Tm;
    use tokio_tungstenite::WebSocketStream;

    pub(super) async fn start(io: Io, cfg: &SocketConfig) -> (Reader, Writer) {
        let config = WebSocketConfig::default()
            .read_buffer_size(cfg.read_buffer_size)
            .write_buffer_size(cfg.write_buffer_size)
            .max_message_size(Some(cfg.max_message_size))
            .max_frame_size(Some(cfg.max_frame_size));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (sink, stream) = ws.split();
        let reader = stream.filter_map(|item| {
            future::ready(match item {
                Ok(Tm::Frame(_)) => None, // raw frames are never yielded when reading
                Ok(msg) => Some(Ok(from_engine(msg))),
                Err(e) => Some(Err(EngineError::from(e))),
            })
        });
        let writer = sink
            .sink_map_err(EngineError::from)
            .with(|msg: Message| future::ready(Ok::<_, EngineError>(to_engine(msg))));
        (Box::pin(reader), Box::pin(writer))
    }

    fn from_engine(msg: Tm) -> Message {
        match msg {
            Tm::Text(t) => Message::Text(Utf8Bytes::try_from(Bytes::from(t)).unwrap_or_default()),
            Tm::Binary(b) => Message::Binary(b),
            Tm::Ping(b) => Message::Ping(b),
            Tm::Pong(b) => Message::Pong(b),
            Tm::Close(f) => {
                Message::Close(f.map(|f| close_frame(f.code.into(), f.reason.as_str())))
            }
            Tm::Frame(_) => Message::Binary(Bytes::new()),
        }
    }

    fn to_engine(msg: Message) -> Tm {
        match msg {
            Message::Text(t) => Tm::Text(t.into_bytes().try_into().unwrap_or_default()),
            Message::Binary(b) => Tm::Binary(b),
            Message::Ping(b) => Tm::Ping(b),
            Message::Pong(b) => Tm::Pong(b),
            Message::Close(f) => Tm::Close(f.map(|f| frame::CloseFrame {
                code: f.code.as_u16().into(),
                reason: f.reason.into(),
            })),
        }
    }
}

mod tokio_ws {
    use super::*;
    use tokio_websockets::{Config, Limits, Message as Tw, ServerBuilder};

    pub(super) fn start(io: Io, cfg: &SocketConfig) -> (Reader, Writer) {
        let ws = ServerBuilder::new()
            .config(Config::default().flush_threshold(cfg.write_buffer_size))
            .limits(Limits::default().max_payload_len(Some(cfg.max_message_size)))
            .serve(io);
        let (sink, stream) = ws.split();
        let reader = stream.map(|item| item.map(from_engine).map_err(EngineError::from));
        let writer = sink
            .sink_map_err(EngineError::from)
            .with(|msg: Message| future::ready(Ok::<_, EngineError>(to_engine(msg))));
        (Box::pin(reader), Box::pin(writer))
    }

    fn from_engine(msg: Tw) -> Message {
        if let Some((code, reason)) = msg.as_close() {
            let code = u16::from(code);
            // 1005 "no status received" stands for a close frame without a code.
            return Message::Close((code != 1005).then(|| close_frame(code, reason)));
        }
        let kind = (msg.is_text(), msg.is_binary(), msg.is_ping());
        let payload = Bytes::from(msg.into_payload());
        match kind {
            // The engine validated the text; the check here is the only extra cost.
            (true, _, _) => Message::Text(Utf8Bytes::try_from(payload).unwrap_or_default()),
            (_, true, _) => Message::Binary(payload),
            (_, _, true) => Message::Ping(payload),
            _ => Message::Pong(payload),
        }
    }

    fn to_engine(msg: Message) -> Tw {
        match msg {
            Message::Text(t) => Tw::text(t.into_bytes()),
            Message::Binary(b) => Tw::binary(b),
            Message::Ping(b) => Tw::ping(b),
            Message::Pong(b) => Tw::pong(b),
            Message::Close(None) => Tw::close(None, ""),
            Message::Close(Some(f)) => Tw::close(
                tokio_websockets::CloseCode::try_from(f.code.as_u16()).ok(),
                &f.reason,
            ),
        }
    }
}

mod fast {
    //! fastwebsockets has no `Stream`/`Sink`: its reader hands the frames it must answer (pongs,
    //! close replies) to a callback, so both halves share the write half behind a lock.

    use std::sync::Arc;

    use fastwebsockets::{
        FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocket, WebSocketError,
        WebSocketWrite,
    };
    use futures_util::{sink, stream};
    use tokio::io::WriteHalf;
    use tokio::sync::Mutex;

    use super::*;

    type Write = Arc<Mutex<WebSocketWrite<WriteHalf<Io>>>>;

    pub(super) fn start(io: Io, cfg: &SocketConfig) -> (Reader, Writer) {
        let mut ws = WebSocket::after_handshake(io, Role::Server);
        ws.set_max_message_size(cfg.max_message_size);
        ws.set_auto_pong(false); // pings are surfaced (they are activity), answered below
        let (rx, tx) = ws.split(tokio::io::split);
        let tx: Write = Arc::new(Mutex::new(tx));
        let rx = FragmentCollectorRead::new(rx);
        let reader = stream::unfold(Some((rx, tx.clone())), |state| async move {
            let (mut rx, tx) = state?;
            let answer = tx.clone();
            let mut obligated = move |frame: Frame<'static>| {
                let answer = answer.clone();
                async move { answer.lock().await.write_frame(frame).await }
            };
            match rx.read_frame(&mut obligated).await {
                Ok(frame) => {
                    let closing = frame.opcode == OpCode::Close;
                    let msg = from_engine(frame);
                    if let Message::Ping(payload) = &msg {
                        let pong = Frame::pong(Payload::Owned(payload.to_vec()));
                        if let Err(e) = tx.lock().await.write_frame(pong).await {
                            return Some((Err(EngineError::from(e)), None));
                        }
                    }
                    // After a close (answered by the engine) the stream ends.
                    let next = (!closing).then_some((rx, tx));
                    Some((Ok(msg), next))
                }
                Err(WebSocketError::UnexpectedEOF) => None,
                Err(e) => Some((Err(EngineError::from(e)), None)),
            }
        });
        let writer = sink::unfold(tx, |tx, msg: Message| async move {
            tx.lock().await.write_frame(to_engine(msg)).await?;
            Ok::<_, EngineError>(tx)
        });
        (Box::pin(reader), Box::pin(writer))
    }

    fn bytes(payload: Payload<'_>) -> Bytes {
        match payload {
            Payload::Bytes(b) => b.freeze(),
            Payload::Owned(v) => Bytes::from(v),
            other => Bytes::copy_from_slice(&other),
        }
    }

    fn from_engine(frame: Frame<'_>) -> Message {
        match frame.opcode {
            OpCode::Text => {
                Message::Text(Utf8Bytes::try_from(bytes(frame.payload)).unwrap_or_default())
            }
            OpCode::Ping => Message::Ping(bytes(frame.payload)),
            OpCode::Pong => Message::Pong(bytes(frame.payload)),
            OpCode::Close => {
                let p = &frame.payload;
                Message::Close((p.len() >= 2).then(|| {
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    close_frame(code, std::str::from_utf8(&p[2..]).unwrap_or_default())
                }))
            }
            _ => Message::Binary(bytes(frame.payload)),
        }
    }

    fn to_engine(msg: Message) -> Frame<'static> {
        let owned = |b: Bytes| Payload::Bytes(b.into());
        match msg {
            Message::Text(t) => Frame::text(owned(t.into_bytes())),
            Message::Binary(b) => Frame::binary(owned(b)),
            Message::Ping(b) => Frame::new(true, OpCode::Ping, None, owned(b)),
            Message::Pong(b) => Frame::pong(owned(b)),
            Message::Close(None) => {
                Frame::new(true, OpCode::Close, None, Payload::Owned(Vec::new()))
            }
            Message::Close(Some(f)) => Frame::close(f.code.as_u16(), f.reason.as_bytes()),
        }
    }
}
