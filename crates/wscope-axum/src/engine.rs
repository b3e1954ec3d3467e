//! The WebSocket engines a tracked connection can run on, behind one reader/writer pair of
//! wscope [`Message`]s, so the engine can change without touching the tracking code.
//!
//! Both engines take over a connection that [`crate::handshake`] already upgraded; each
//! converts its frames to and from wscope's message type without copying payloads.

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
}

impl Engine {
    /// Every engine, for comparisons.
    pub const ALL: [Engine; 2] = [Engine::Tungstenite, Engine::TokioWebsockets];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Tungstenite => "tungstenite",
            Engine::TokioWebsockets => "tokio-websockets",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown engine {s:?}: use tungstenite or tokio-websockets"))
    }
}

/// An engine error, boxed so every engine fits one type.
pub(crate) type EngineError = Box<dyn StdError + Send + Sync>;
/// The receiving half: frames in, as wscope messages (control frames included).
pub(crate) type Reader = Pin<Box<dyn Stream<Item = Result<Message, EngineError>> + Send + Sync>>;
/// The sending half: wscope messages out; `flush` writes what was fed in one go.
pub(crate) type Writer = Pin<Box<dyn Sink<Message, Error = EngineError> + Send>>;

type Io = TokioIo<Upgraded>;

/// Runs `io` (an upgraded connection) on `engine` and splits it into its two halves.
pub(crate) async fn start(engine: Engine, io: Io, cfg: &SocketConfig) -> (Reader, Writer) {
    match engine {
        Engine::Tungstenite => tungstenite::start(io, cfg).await,
        Engine::TokioWebsockets => tokio_ws::start(io, cfg),
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
