//! tungstenite (through tokio-tungstenite) as a wscope transport, in either role.

use futures_util::{future, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::{frame, Role as TRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as Te, Message as Tm};
use tokio_tungstenite::WebSocketStream;
use wscope_core::{Bytes, Halves, Message, Role, Transport, TransportError, TransportErrorKind};

use super::{close_frame, text, Io, Outbound, SocketConfig};

/// The engine's settings from wscope's.
pub(crate) fn config(cfg: &SocketConfig) -> WebSocketConfig {
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

/// The server side over `io`, whose handshake is done; data messages compressed with a
/// `window_bits` window when given.
pub(crate) async fn server(
    io: impl Io,
    cfg: &SocketConfig,
    window_bits: Option<u8>,
) -> impl Transport {
    let ws = WebSocketStream::from_raw_socket(io, TRole::Server, Some(config(cfg))).await;
    transport(ws, Role::Server, window_bits)
}

/// Either side over an engine stream whose handshake is done.
pub(crate) fn transport<S: Io>(
    ws: WebSocketStream<S>,
    role: Role,
    window_bits: Option<u8>,
) -> impl Transport {
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
        .with_flat_map(move |msg: Message| {
            futures_util::stream::iter(Frames::new(Outbound::new(msg, window_bits)))
        });
    Halves::new(role, reader, writer)
}

/// The frames one message goes out in: a data message in frames of at most [`OUT_PIECE`], the
/// first of its opcode, the rest continuations.
enum Frames {
    Failed(Option<TransportError>),
    Control(Option<Tm>),
    Data {
        text: bool,
        rest: Bytes,
        first: bool,
        done: bool,
    },
}

impl Frames {
    fn new(out: Result<Outbound, TransportError>) -> Self {
        let data = |text, payload| Self::Data {
            text,
            rest: payload,
            first: true,
            done: false,
        };
        match out {
            Err(e) => Self::Failed(Some(e)),
            Ok(Outbound::Text(payload)) => data(true, payload),
            Ok(Outbound::Binary(payload)) => data(false, payload),
            Ok(Outbound::Ping(b)) => Self::Control(Some(Tm::Ping(b))),
            Ok(Outbound::Pong(b)) => Self::Control(Some(Tm::Pong(b))),
            Ok(Outbound::Close(f)) => {
                Self::Control(Some(Tm::Close(f.map(|f| frame::CloseFrame {
                    code: f.code.as_u16().into(),
                    reason: f.reason.into(),
                }))))
            }
        }
    }
}

impl Iterator for Frames {
    type Item = Result<Tm, TransportError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Failed(e) => e.take().map(Err),
            Self::Control(msg) => msg.take().map(Ok),
            Self::Data {
                text,
                rest,
                first,
                done,
            } => {
                if *done {
                    return None;
                }
                let piece = rest.split_to(rest.len().min(OUT_PIECE));
                let opcode = match (*first, *text) {
                    (false, _) => OpData::Continue,
                    (true, true) => OpData::Text,
                    (true, false) => OpData::Binary,
                };
                *first = false;
                *done = rest.is_empty();
                Some(Ok(Tm::Frame(frame::Frame::message(
                    piece,
                    OpCode::Data(opcode),
                    *done,
                ))))
            }
        }
    }
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
