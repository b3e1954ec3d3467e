//! tungstenite (through tokio-tungstenite) as a wscope transport, in either role.

use futures_util::{future, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::{frame, Role as TRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as Te, Message as Tm};
use tokio_tungstenite::WebSocketStream;
use wscope_core::{Bytes, Halves, Message, Role, Transport, TransportError, TransportErrorKind};

use super::{close_frame, text, Io, SocketConfig};

/// The engine's settings from wscope's.
pub(crate) fn config(cfg: &SocketConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        .write_buffer_size(cfg.write_buffer_size)
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.frame_limit()))
}

/// The server side over `io`, whose handshake is done.
pub(crate) async fn server(io: impl Io, cfg: &SocketConfig) -> impl Transport {
    let ws = WebSocketStream::from_raw_socket(io, TRole::Server, Some(config(cfg))).await;
    transport(ws, Role::Server)
}

/// Either side over an engine stream whose handshake is done.
pub(crate) fn transport<S: Io>(ws: WebSocketStream<S>, role: Role) -> impl Transport {
    let (sink, stream) = ws.split();
    let reader = stream.filter_map(|item| {
        future::ready(match item {
            Ok(Tm::Frame(_)) => None, // raw frames are never yielded when reading
            Ok(msg) => Some(from_engine(msg)),
            Err(e) => Some(Err(error(&e))),
        })
    });
    let writer = sink
        .sink_map_err(|e| error(&e))
        .with(|msg: Message| future::ready(Ok::<_, TransportError>(to_engine(msg))));
    Halves::new(role, reader, writer)
}

/// What a tungstenite error means for the connection.
fn error(e: &Te) -> TransportError {
    let kind = match e {
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
