//! The seam between the connection driver and a WebSocket implementation: a [`Transport`] is an
//! open WebSocket (the handshake is done) split into a stream of frames in and a sink of frames
//! out, in either [`Role`]. Engines (tungstenite, tokio-websockets, … in `wscope-axum`) adapt
//! themselves to it; the driver in this crate runs every connection the same way over it.
//!
//! A transport reports failures as a [`TransportError`] whose [`TransportErrorKind`] says which
//! close the driver must send (1002, 1007, 1009, 1013) or that nothing can be sent any more, so that
//! every engine fails a connection the same way.

use std::pin::Pin;

use futures_util::{Sink, Stream};

use crate::close::{CloseCode, CloseFrame};
use crate::message::Message;

/// Which end of the connection this side is (RFC 6455: a client masks its frames, a server
/// does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepted from a client: what `wscope serve` and the axum extractor run.
    Server,
    /// Opened to a server: what a proxy's upstream and a wscope client run.
    Client,
}

/// An open WebSocket connection, as the driver needs it: split into its reading and writing
/// halves, which the driver polls concurrently from one task.
///
/// The reader yields every frame, data and control (pings, pongs, close); it ends (`None`) when
/// the connection is over, after the close handshake or when the peer vanished. The writer takes
/// frames one by one (`feed`) and writes what it buffered on `flush`, so the driver writes a batch
/// of queued messages with one flush. Engines answer pings with pongs and close frames with their
/// reply by themselves.
pub trait Transport: Send + 'static {
    /// Frames in.
    type Reader: Stream<Item = Result<Message, TransportError>> + Send + 'static;
    /// Frames out.
    type Writer: Sink<Message, Error = TransportError> + Send + 'static;

    /// Which end this is.
    fn role(&self) -> Role;

    /// The two halves.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// The two halves, the reader boxed (the tracked socket keeps it so, whatever the engine).
    /// [`BoxTransport`] gives its box as it is, rather than boxing a box.
    fn split_boxed(self) -> (BoxReader, Self::Writer)
    where
        Self: Sized,
    {
        let (reader, writer) = self.split();
        (Box::pin(reader), writer)
    }

    /// This transport with both halves boxed: one type whatever the engine, so that choosing an
    /// engine at run time costs two allocations of the engine's own size, not a future as large as
    /// the largest engine's.
    fn boxed(self) -> BoxTransport
    where
        Self: Sized,
    {
        let role = self.role();
        let (reader, writer) = self.split();
        BoxTransport {
            role,
            reader: Box::pin(reader),
            writer: Box::pin(writer),
        }
    }
}

/// A boxed reading half.
pub type BoxReader = Pin<Box<dyn Stream<Item = Result<Message, TransportError>> + Send>>;
/// A boxed writing half.
pub type BoxWriter = Pin<Box<dyn Sink<Message, Error = TransportError> + Send>>;

/// A [`Transport`] with both halves boxed ([`Transport::boxed`]).
pub struct BoxTransport {
    role: Role,
    reader: BoxReader,
    writer: BoxWriter,
}

impl std::fmt::Debug for BoxTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxTransport")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Transport for BoxTransport {
    type Reader = BoxReader;
    type Writer = BoxWriter;

    fn role(&self) -> Role {
        self.role
    }

    fn split(self) -> (BoxReader, BoxWriter) {
        (self.reader, self.writer)
    }

    fn split_boxed(self) -> (BoxReader, BoxWriter) {
        (self.reader, self.writer)
    }

    fn boxed(self) -> BoxTransport {
        self
    }
}

/// A [`Transport`] made of two halves an engine already has (a `Stream` and a `Sink` of wscope
/// messages).
#[derive(Debug)]
pub struct Halves<R, W> {
    role: Role,
    reader: R,
    writer: W,
}

impl<R, W> Halves<R, W>
where
    R: Stream<Item = Result<Message, TransportError>> + Send + 'static,
    W: Sink<Message, Error = TransportError> + Send + 'static,
{
    /// A transport in `role` over `reader` and `writer`.
    pub fn new(role: Role, reader: R, writer: W) -> Self {
        Self {
            role,
            reader,
            writer,
        }
    }
}

impl<R, W> Transport for Halves<R, W>
where
    R: Stream<Item = Result<Message, TransportError>> + Send + 'static,
    W: Sink<Message, Error = TransportError> + Send + 'static,
{
    type Reader = R;
    type Writer = W;

    fn role(&self) -> Role {
        self.role
    }

    fn split(self) -> (R, W) {
        (self.reader, self.writer)
    }
}

/// What went wrong on a transport, as far as the driver must know to end the connection right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The peer broke the protocol (bad opcode, reserved bits, bad masking, bad fragmentation):
    /// fail the connection with 1002.
    Protocol,
    /// A text message, or a close reason, was not valid UTF-8: fail with 1007.
    InvalidUtf8,
    /// A message or frame over the configured limit: fail with 1009.
    TooBig,
    /// The server cannot take the message now (a shared [`MessageBudget`] is spent): fail with
    /// 1013 "Try again later".
    ///
    /// [`MessageBudget`]: crate::MessageBudget
    Overloaded,
    /// A message did not arrive in full in the time allowed: fail with 1008 "Message timeout"
    /// (the close is recorded as a timeout).
    TimedOut,
    /// The engine failed the connection itself and has sent its own close frame; sending
    /// another would break the protocol.
    FailedByEngine,
    /// The connection is gone (reset, end of stream, I/O error): nothing more can be sent.
    Gone,
}

impl TransportErrorKind {
    /// The close frame the driver sends to fail the connection, if it must send one.
    pub fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Self::Protocol => (CloseCode::PROTOCOL, "Protocol error"),
            Self::InvalidUtf8 => (CloseCode::INVALID_PAYLOAD, "Invalid UTF-8"),
            Self::TooBig => (CloseCode::TOO_BIG, "Message too big"),
            Self::Overloaded => (CloseCode::TRY_AGAIN_LATER, "Try again later"),
            Self::TimedOut => (CloseCode::POLICY, "Message timeout"),
            Self::FailedByEngine | Self::Gone => return None,
        };
        Some(CloseFrame {
            code,
            reason: reason.to_owned(),
        })
    }
}

/// A transport failure: its kind and the engine's own words for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
}

impl TransportError {
    /// An error of `kind`, described by `message` (recorded as the close reason).
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An error of `kind` described by the innermost cause of `error` (an engine's wrapper
    /// errors add nothing a reader of the close record needs).
    pub fn from_cause(kind: TransportErrorKind, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            text = s.to_string();
            source = s.source();
        }
        Self::new(kind, text)
    }

    /// What kind of failure.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_fails_with_its_code() {
        let code = |k: TransportErrorKind| k.close_frame().map(|f| f.code.as_u16());
        assert_eq!(code(TransportErrorKind::Protocol), Some(1002));
        assert_eq!(code(TransportErrorKind::InvalidUtf8), Some(1007));
        assert_eq!(code(TransportErrorKind::TooBig), Some(1009));
        assert_eq!(code(TransportErrorKind::Overloaded), Some(1013));
        assert_eq!(code(TransportErrorKind::FailedByEngine), None);
        assert_eq!(code(TransportErrorKind::Gone), None);
    }

    #[test]
    fn from_cause_keeps_the_innermost_text() {
        let io = std::io::Error::other("connection reset by peer");
        let e = TransportError::from_cause(TransportErrorKind::Gone, &io);
        assert_eq!(e.to_string(), "connection reset by peer");
    }
}
