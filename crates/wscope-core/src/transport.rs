//! The seam between the connection driver and a WebSocket implementation: a [`Transport`] is an
//! open WebSocket (the handshake is done), a stream of frames in and a sink of frames out — one
//! object polled for both ([`Duplex`]) or two halves — in either [`Role`]. Engines (tungstenite, tokio-websockets, … in `wscope-axum`) adapt
//! themselves to it; the driver in this crate runs every connection the same way over it.
//!
//! A transport reports failures as a [`TransportError`] whose [`TransportErrorKind`] says which
//! close the driver must send (1002, 1007, 1009, 1013) or that nothing can be sent any more, so that
//! every engine fails a connection the same way.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

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

/// An open WebSocket connection, as the driver needs it: as one object it polls for both
/// directions ([`into_duplex`](Transport::into_duplex): what the callback driver runs), or split
/// into its reading and writing halves ([`split`](Transport::split): what an async handler's
/// socket and the writer poll, from one task).
///
/// The reader yields every frame, data and control (pings, pongs, close); it ends (`None`) when
/// the connection is over, after the close handshake or when the peer vanished. The writer takes
/// frames one by one (`feed`) and writes what it buffered on `flush`, so the driver writes a batch
/// of queued messages with one flush. Engines answer pings with pongs and close frames with their
/// reply by themselves.
///
/// An engine whose connection is naturally two halves gives them to [`Halves`]; one whose
/// connection is one state object (wscope's own) gives it to [`Whole`], which lends it to both
/// halves behind a lock only when they are asked for.
pub trait Transport: Send + 'static {
    /// Frames in.
    type Reader: Stream<Item = Result<Message, TransportError>> + Send + 'static;
    /// Frames out.
    type Writer: Sink<Message, Error = TransportError> + Send + 'static;
    /// Frames in and out, as one object.
    type Duplex: Duplex;

    /// Which end this is.
    fn role(&self) -> Role;

    /// The two halves.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// Both directions as one object, polled by one driver: no lock between the directions
    /// where the engine is one object, and the halves side by side where it is two.
    fn into_duplex(self) -> Self::Duplex;

    /// The two halves, the reader boxed (the tracked socket keeps it so, whatever the engine).
    /// [`BoxTransport`] gives its box as it is, rather than boxing a box.
    fn split_boxed(self) -> (BoxReader, Self::Writer)
    where
        Self: Sized,
    {
        let (reader, writer) = self.split();
        (Box::pin(reader), writer)
    }

    /// This transport boxed: one type whatever the engine, so that choosing an engine at run
    /// time costs allocations of the engine's own size, not a future as large as the largest
    /// engine's.
    fn boxed(self) -> BoxTransport
    where
        Self: Sized,
    {
        let role = self.role();
        let (reader, writer) = self.split();
        BoxTransport {
            role,
            inner: Boxed::Halves(Box::pin(reader), Box::pin(writer)),
        }
    }
}

/// Both directions of an open WebSocket as one object: a stream of the frames in and a sink of
/// the frames out ([`Transport::into_duplex`]). Anything that is both is one.
pub trait Duplex:
    Stream<Item = Result<Message, TransportError>>
    + Sink<Message, Error = TransportError>
    + Send
    + 'static
{
}

impl<T> Duplex for T where
    T: Stream<Item = Result<Message, TransportError>>
        + Sink<Message, Error = TransportError>
        + Send
        + 'static
{
}

/// A boxed reading half.
pub type BoxReader = Pin<Box<dyn Stream<Item = Result<Message, TransportError>> + Send>>;
/// A boxed writing half.
pub type BoxWriter = Pin<Box<dyn Sink<Message, Error = TransportError> + Send>>;
/// A boxed [`Duplex`].
pub type BoxDuplex = Pin<Box<dyn Duplex>>;

/// A [`Transport`] boxed ([`Transport::boxed`]): its two halves, or its one object.
pub struct BoxTransport {
    role: Role,
    inner: Boxed,
}

/// What a [`BoxTransport`] holds.
enum Boxed {
    Halves(BoxReader, BoxWriter),
    Whole(BoxDuplex),
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
    type Duplex = BoxDuplex;

    fn role(&self) -> Role {
        self.role
    }

    fn split(self) -> (BoxReader, BoxWriter) {
        match self.inner {
            Boxed::Halves(reader, writer) => (reader, writer),
            Boxed::Whole(duplex) => {
                let (reader, writer) = shared(duplex);
                (Box::pin(reader), Box::pin(writer))
            }
        }
    }

    fn into_duplex(self) -> BoxDuplex {
        match self.inner {
            // One allocation more than the halves had, for the engines behind the frame guard.
            Boxed::Halves(reader, writer) => Box::pin(Joined { reader, writer }),
            Boxed::Whole(duplex) => duplex,
        }
    }

    fn split_boxed(self) -> (BoxReader, BoxWriter) {
        self.split()
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
    type Duplex = Joined<R, W>;

    fn role(&self) -> Role {
        self.role
    }

    fn split(self) -> (R, W) {
        (self.reader, self.writer)
    }

    fn into_duplex(self) -> Joined<R, W> {
        Joined::new(self.reader, self.writer)
    }
}

pin_project_lite::pin_project! {
    /// Two halves side by side as one [`Duplex`]: reads go to the reader, writes to the writer.
    #[derive(Debug)]
    pub struct Joined<R, W> {
        #[pin]
        reader: R,
        #[pin]
        writer: W,
    }
}

impl<R, W> Joined<R, W> {
    /// `reader` and `writer` as one object.
    pub fn new(reader: R, writer: W) -> Self {
        Self { reader, writer }
    }
}

impl<R, W> Stream for Joined<R, W>
where
    R: Stream<Item = Result<Message, TransportError>>,
{
    type Item = Result<Message, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().reader.poll_next(cx)
    }
}

impl<R, W> Sink<Message> for Joined<R, W>
where
    W: Sink<Message, Error = TransportError>,
{
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.project().writer.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), TransportError> {
        self.project().writer.start_send(msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.project().writer.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.project().writer.poll_close(cx)
    }
}

/// A [`Transport`] that is one object polled for both directions ([`Duplex`]), as wscope's own
/// engine is: the callback driver owns and polls it with no lock; an async handler's socket and
/// the writer, which poll the directions apart, share it behind an uncontended lock
/// ([`split`](Transport::split)).
#[derive(Debug)]
pub struct Whole<D> {
    role: Role,
    duplex: D,
}

impl<D: Duplex + Unpin> Whole<D> {
    /// A transport in `role` over `duplex`.
    pub fn new(role: Role, duplex: D) -> Self {
        Self { role, duplex }
    }
}

impl<D: Duplex + Unpin> Transport for Whole<D> {
    type Reader = SharedReader<D>;
    type Writer = SharedWriter<D>;
    type Duplex = D;

    fn role(&self) -> Role {
        self.role
    }

    fn split(self) -> (SharedReader<D>, SharedWriter<D>) {
        shared(self.duplex)
    }

    fn into_duplex(self) -> D {
        self.duplex
    }

    fn boxed(self) -> BoxTransport {
        BoxTransport {
            role: self.role,
            inner: Boxed::Whole(Box::pin(self.duplex)),
        }
    }
}

/// `duplex` lent to two halves. The driver polls both from one task (the handler's last reads,
/// after it returns, from a task of their own while the writer waits for the close), so the lock
/// is not contended.
fn shared<D: Duplex + Unpin>(duplex: D) -> (SharedReader<D>, SharedWriter<D>) {
    let duplex = Arc::new(Mutex::new(duplex));
    (SharedReader(duplex.clone()), SharedWriter(duplex))
}

fn lock<D>(duplex: &Mutex<D>) -> MutexGuard<'_, D> {
    duplex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reading half of a [`Whole`] transport.
pub struct SharedReader<D>(Arc<Mutex<D>>);

/// The writing half of a [`Whole`] transport.
pub struct SharedWriter<D>(Arc<Mutex<D>>);

impl<D> std::fmt::Debug for SharedReader<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReader").finish_non_exhaustive()
    }
}

impl<D> std::fmt::Debug for SharedWriter<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWriter").finish_non_exhaustive()
    }
}

impl<D: Duplex + Unpin> Stream for SharedReader<D> {
    type Item = Result<Message, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *lock(&self.0)).poll_next(cx)
    }
}

impl<D: Duplex + Unpin> Sink<Message> for SharedWriter<D> {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut *lock(&self.0)).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), TransportError> {
        Pin::new(&mut *lock(&self.0)).start_send(msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut *lock(&self.0)).poll_close(cx)
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
