//! The WebSocket engines a tracked connection can run on, each adapted to the core's
//! [`Transport`](wscope_core::Transport) in its own file behind its own cargo feature, so the
//! engine can change without touching the tracking code:
//!
//! - `tungstenite` (feature `tungstenite`, on by default): the engine axum uses; server and
//!   client role.
//! - `tokio_websockets` (feature `tokio-websockets`): SIMD masking and UTF-8 checks.
//! - `fastwebsockets` (feature `fastwebsockets`): Deno's engine, through its split API.
//!
//! Every engine takes over a connection whose handshake is done (any `AsyncRead + AsyncWrite`,
//! not only hyper's upgraded one), converts its frames to and from wscope's [`Message`] without
//! copying data payloads (a broadcast's members share one payload, and under permessage-deflate
//! one compressed body: [`Outbound`]), and reports failures as typed [`TransportError`]s. Adding an engine is
//! a file here, a feature, a variant of [`Engine`] and its arm in `Engine::server`.
//!
//! In the server role every engine reads the client through `guard`, the frame guard, which
//! enforces masking, the frame and message size limits (across fragments), the shared budget of
//! partly received bytes and permessage-deflate (`deflate`) the same way whatever the engine.
//!
//! [`Message`]: wscope_core::Message
//! [`TransportError`]: wscope_core::TransportError

#[cfg(not(any(
    feature = "tungstenite",
    feature = "tokio-websockets",
    feature = "fastwebsockets"
)))]
compile_error!(
    "wscope-axum needs at least one engine feature: tungstenite, tokio-websockets or fastwebsockets"
);

mod deflate;
#[cfg(feature = "fastwebsockets")]
mod fastwebsockets;
mod guard;
#[cfg(feature = "tokio-websockets")]
mod tokio_websockets;
#[cfg(feature = "tungstenite")]
pub(crate) mod tungstenite;

use std::time::Duration;
use wscope_core::ClientKey;

use tokio::io::{AsyncRead, AsyncWrite};
use wscope_core::{
    BoxTransport, Bytes, CloseCode, CloseFrame, Halves, Message, MessageBudget, Transport,
    TransportError, TransportErrorKind, Utf8Bytes,
};

pub(crate) use deflate::Deflate;
use guard::{FrameGuard, Tripwire, Watched};

/// The I/O an engine runs over: an upgraded HTTP connection, a TCP stream, a test pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Which WebSocket implementation serves accepted sockets. Only the engines whose cargo feature
/// is on exist; [`Engine::NAMES`] lists every engine wscope knows, compiled in or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// `tungstenite` (through tokio-tungstenite), the engine axum uses. The default: with a small
    /// read buffer it idles in half the memory of the others (whose 8 KiB read buffers are fixed)
    /// at equal or lower CPU per message; docs/BENCHMARKS.md has the figures.
    #[cfg(feature = "tungstenite")]
    Tungstenite,
    /// `tokio-websockets`: SIMD masking and UTF-8 checks.
    #[cfg(feature = "tokio-websockets")]
    TokioWebsockets,
    /// `fastwebsockets` (Deno's), through its split API: each frame written as it is sent.
    #[cfg(feature = "fastwebsockets")]
    Fastwebsockets,
}

impl Default for Engine {
    /// tungstenite when compiled in, else the first engine that is.
    fn default() -> Self {
        Engine::ALL[0]
    }
}

impl Engine {
    /// Every engine compiled into this build, the default first.
    pub const ALL: &'static [Engine] = &[
        #[cfg(feature = "tungstenite")]
        Engine::Tungstenite,
        #[cfg(feature = "tokio-websockets")]
        Engine::TokioWebsockets,
        #[cfg(feature = "fastwebsockets")]
        Engine::Fastwebsockets,
    ];

    /// Every engine wscope knows, by its command-line name (each is also the name of its cargo
    /// feature), whether or not this build has it.
    pub const NAMES: [&'static str; 3] = ["tungstenite", "tokio-websockets", "fastwebsockets"];

    /// The name used on the command line and as the cargo feature.
    pub fn as_str(self) -> &'static str {
        match self {
            #[cfg(feature = "tungstenite")]
            Engine::Tungstenite => "tungstenite",
            #[cfg(feature = "tokio-websockets")]
            Engine::TokioWebsockets => "tokio-websockets",
            #[cfg(feature = "fastwebsockets")]
            Engine::Fastwebsockets => "fastwebsockets",
        }
    }

    /// The names of the engines in this build, comma-separated (for help and error texts).
    pub fn compiled_names() -> String {
        Engine::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Takes over `io`, whose server handshake is done (with permessage-deflate agreed if
    /// `deflate`), with this engine behind the frame guard, charging partly received messages to
    /// `client`'s share of the budget when the address is known. Boxed: every engine's halves
    /// become one type, so the connection's task is as large as the driver needs, not as the
    /// largest engine's state (that is what an idle connection costs).
    pub(crate) async fn server(
        self,
        io: impl Io,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        client: Option<ClientKey>,
    ) -> BoxTransport {
        let wire = Tripwire::default();
        let window_bits = deflate.and_then(|d| d.compress_window_bits());
        let io = FrameGuard::server(io, cfg, deflate, client, wire.clone());
        match self {
            #[cfg(feature = "tungstenite")]
            Engine::Tungstenite => watched(tungstenite::server(io, cfg, window_bits).await, wire),
            #[cfg(feature = "tokio-websockets")]
            Engine::TokioWebsockets => {
                watched(tokio_websockets::server(io, cfg, window_bits), wire)
            }
            #[cfg(feature = "fastwebsockets")]
            Engine::Fastwebsockets => watched(fastwebsockets::server(io, cfg, window_bits), wire),
        }
    }
}

/// `transport`, boxed, whose reader fails with the guard's violation once the engine waits for
/// the bytes the guard held back.
fn watched<T: Transport>(transport: T, wire: Tripwire) -> BoxTransport {
    let role = transport.role();
    let (reader, writer) = transport.split();
    Halves::new(role, Watched::new(reader, wire), writer).boxed()
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an engine of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownEngine {
    /// wscope has no engine of that name.
    #[error("unknown engine {0:?}: use {list}", list = Engine::compiled_names())]
    Unknown(String),
    /// wscope knows the engine, but this build was made without its cargo feature.
    #[error("engine {0:?} is not in this build (it has {list}): rebuild with `--features {0}`", list = Engine::compiled_names())]
    NotCompiled(String),
}

impl std::str::FromStr for Engine {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        if let Some(e) = Engine::ALL.iter().find(|e| e.as_str() == s) {
            return Ok(*e);
        }
        if Engine::NAMES.contains(&s) {
            Err(UnknownEngine::NotCompiled(s.to_owned()))
        } else {
            Err(UnknownEngine::Unknown(s.to_owned()))
        }
    }
}

/// Engine settings for accepted sockets. Start from the default and set what you need:
/// `SocketConfig::default().max_message_size(1 << 20)`.
///
/// The limits are enforced by the frame guard in front of every engine, before the payload they
/// refuse is read: a frame declaring more than `max_frame_size`, or a message whose frames add
/// up to more than `max_message_size`, closes the connection with 1009; a message the
/// [`message_budget`](SocketConfig::message_budget) cannot hold closes it with 1013.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SocketConfig {
    /// The WebSocket implementation.
    pub engine: Engine,
    /// Bytes read from the socket at a time (the engine's read buffer; tungstenite only).
    pub read_buffer_size: usize,
    /// Bytes buffered before a write goes to the socket (frames batch up to this).
    pub write_buffer_size: usize,
    /// Largest message accepted (bytes), fragments added up, and after inflating when
    /// compressed.
    pub max_message_size: usize,
    /// Largest frame accepted (bytes); `None` (the default): the message limit, whatever it is
    /// set to. A frame limit above the message limit is the message limit.
    pub max_frame_size: Option<usize>,
    /// The bytes that partly received messages may hold, shared by every connection accepted
    /// with this configuration (and its clones); see [`MessageBudget`].
    pub message_budget: MessageBudget,
    /// Whether to agree to permessage-deflate (RFC 7692) when a client offers it.
    pub permessage_deflate: bool,
    /// How long a message may take to arrive in full, counted from the first time the server
    /// waits for the rest of it; past it the connection is closed with 1008 "Message timeout".
    /// `None`: no deadline (a client may then hold its share of the
    /// [`message_budget`](SocketConfig::message_budget) for as long as it answers pings).
    pub message_timeout: Option<Duration>,
}

impl SocketConfig {
    /// The default [`SocketConfig::read_buffer_size`]. axum's default is 128 KiB, held by every
    /// connection even when idle; the read buffer is what an idle connection mostly costs
    /// (tungstenite fills it on every read), and 512 B still takes a small message, or a batch of
    /// them, in one read.
    pub const DEFAULT_READ_BUFFER_SIZE: usize = 512;
    /// The default [`SocketConfig::write_buffer_size`].
    pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 16 * 1024;
    /// The default [`SocketConfig::max_message_size`]: 1 MiB. Each connection may make the
    /// server hold this much before its message is refused; a few hundred clients sending the
    /// largest message allowed hold a few hundred MiB (64 MiB, the engines' default, would let
    /// 100 clients take 6.4 GiB). Raise it for a route that needs more (see
    /// [`WebSocketUpgrade::max_message_size`](crate::WebSocketUpgrade::max_message_size)).
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
    /// The default limit of [`SocketConfig::message_budget`]: 256 MiB, room for 256 messages of
    /// the default largest size in flight at once; past it large messages get 1013 "try again
    /// later" while small ones (up to [`MessageBudget::SMALL_MESSAGE`]) still pass.
    pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;
    /// The default [`SocketConfig::message_timeout`]: 30 s, time for a 1 MiB message at
    /// 35 KB/s, while a client that holds part of a large message (and its bytes in the
    /// budget) must send the rest within it.
    pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Sets [`SocketConfig::engine`].
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Sets [`SocketConfig::read_buffer_size`].
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// Sets [`SocketConfig::write_buffer_size`].
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Sets [`SocketConfig::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`SocketConfig::max_frame_size`]. Unset, the frame limit is the message limit,
    /// because clients (browsers included) send each message as one frame: a lower frame limit
    /// would refuse messages the message limit allows, and what a frame may hold is bounded by
    /// the message limit anyway.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = Some(bytes);
        self
    }

    /// The frame limit in force: [`SocketConfig::max_frame_size`] when set, never above the
    /// message limit.
    pub fn frame_limit(&self) -> usize {
        self.max_frame_size
            .unwrap_or(self.max_message_size)
            .min(self.max_message_size)
    }

    /// Bounds the bytes held in partly received messages by every connection accepted with this
    /// configuration at `bytes` (0: no bound), in a new [`MessageBudget`] of which one client
    /// address may hold a quarter.
    pub fn max_buffered_bytes(self, bytes: usize) -> Self {
        self.message_budget(MessageBudget::new(bytes))
    }

    /// Bounds what the connections of one client address may hold of the
    /// [`message_budget`](SocketConfig::message_budget) at `bytes` (0: only the budget's limit),
    /// in a new budget of the same limit (set [`max_buffered_bytes`](Self::max_buffered_bytes)
    /// first).
    pub fn max_buffered_bytes_per_address(mut self, bytes: usize) -> Self {
        self.message_budget = self.message_budget.per_address(bytes);
        self
    }

    /// Sets [`SocketConfig::message_budget`] (to share one budget between configurations).
    pub fn message_budget(mut self, budget: MessageBudget) -> Self {
        self.message_budget = budget;
        self
    }

    /// Sets [`SocketConfig::permessage_deflate`].
    pub fn permessage_deflate(mut self, on: bool) -> Self {
        self.permessage_deflate = on;
        self
    }

    /// Sets [`SocketConfig::message_timeout`]; zero turns the deadline off.
    pub fn message_timeout(mut self, timeout: Duration) -> Self {
        self.message_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            engine: Engine::default(),
            read_buffer_size: Self::DEFAULT_READ_BUFFER_SIZE,
            write_buffer_size: Self::DEFAULT_WRITE_BUFFER_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: None,
            message_budget: MessageBudget::new(Self::DEFAULT_MAX_BUFFERED_BYTES),
            permessage_deflate: false,
            message_timeout: Some(Self::DEFAULT_MESSAGE_TIMEOUT),
        }
    }
}

/// A message on its way to an engine: a [`Message`] whose data payload is as it goes on the
/// wire — compressed when permessage-deflate is agreed (the guard then marks the message's
/// first frame with RSV1), so text need not be UTF-8 here.
pub(crate) enum Outbound {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseFrame>),
}

impl Outbound {
    /// `msg` as the engine is to send it: with a `window_bits` window, its payload compressed
    /// (once for all the connections that send the same payload, as a broadcast's members do).
    pub(crate) fn new(msg: Message, window_bits: Option<u8>) -> Result<Self, TransportError> {
        let compressed = |payload: Bytes| match window_bits {
            Some(bits) => deflate::compress_message(payload, bits).ok_or_else(|| {
                TransportError::new(TransportErrorKind::Gone, "compressing a message failed")
            }),
            None => Ok(payload),
        };
        Ok(match msg {
            Message::Text(t) => Self::Text(compressed(t.into_bytes())?),
            Message::Binary(b) => Self::Binary(compressed(b)?),
            Message::Ping(b) => Self::Ping(b),
            Message::Pong(b) => Self::Pong(b),
            Message::Close(f) => Self::Close(f),
        })
    }
}

/// A text message from the payload an engine read, checked once more: text that is not UTF-8
/// fails the connection with 1007 rather than reaching the handler as something else (the
/// engines and the guard check it first, so this is a guarantee, not a path taken).
pub(crate) fn text(payload: Bytes) -> Result<Message, TransportError> {
    Utf8Bytes::try_from(payload)
        .map(Message::Text)
        .map_err(|e| TransportError::new(TransportErrorKind::InvalidUtf8, e.to_string()))
}

/// A close frame's parts as wscope's frame; a code that may not be sent reads as 1002.
pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::new(code).unwrap_or(CloseCode::PROTOCOL),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_named() {
        for e in Engine::ALL {
            assert_eq!(e.as_str().parse::<Engine>(), Ok(*e));
        }
        let err = "quick".parse::<Engine>().unwrap_err().to_string();
        assert!(err.contains("unknown engine \"quick\""), "{err}");
        assert!(err.contains(&Engine::compiled_names()), "{err}");
        assert_eq!(Engine::default(), Engine::ALL[0]);
    }

    #[test]
    fn text_that_is_not_utf8_fails_with_1007_instead_of_becoming_empty() {
        let error = text(Bytes::from_static(&[b'a', 0xff, 0xfe])).unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::InvalidUtf8);
        assert_eq!(error.kind().close_frame().unwrap().code.as_u16(), 1007);
        assert_eq!(
            text(Bytes::from_static("é".as_bytes())).unwrap(),
            Message::text("é")
        );
    }

    #[test]
    fn an_unset_frame_limit_follows_the_message_limit() {
        let cfg = SocketConfig::default();
        assert_eq!(cfg.frame_limit(), SocketConfig::DEFAULT_MAX_MESSAGE_SIZE);
        let cfg = cfg.max_message_size(64 << 20);
        assert_eq!(cfg.frame_limit(), 64 << 20);
        assert_eq!(cfg.clone().max_frame_size(1 << 20).frame_limit(), 1 << 20);
        assert_eq!(cfg.max_frame_size(1 << 30).frame_limit(), 64 << 20);
    }
}
