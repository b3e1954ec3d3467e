//! The engine-neutral WebSocket message that flows through connection queues.

use bytes::Bytes;
use std::fmt;

use crate::close::CloseFrame;

/// UTF-8 text held in shared [`Bytes`], so a message can be echoed or broadcast without copying.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Utf8Bytes(Bytes);

/// Bytes that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("text message is not valid UTF-8")]
pub struct InvalidUtf8;

impl Utf8Bytes {
    /// Text from a literal, without copying it.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The invariant (valid UTF-8) is checked at construction; without `unsafe` we re-check,
        // which only readers of the text pay for, never the echo/broadcast path.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The shared bytes (cheap).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = InvalidUtf8;
    fn try_from(bytes: Bytes) -> Result<Self, InvalidUtf8> {
        std::str::from_utf8(&bytes).map_err(|_| InvalidUtf8)?;
        Ok(Self(bytes))
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    /// Copies the text (use [`Utf8Bytes::from_static`] for a literal without a copy).
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WebSocket message, independent of the engine that puts it on the wire.
///
/// Converts from what a handler usually has, as axum's message does: `&str` and `String` make
/// text, `Vec<u8>`, `&[u8]` and [`Bytes`] make binary.
///
/// ```
/// use wscope_core::Message;
/// assert_eq!(Message::from("hi"), Message::text("hi"));
/// assert_eq!(Message::from(vec![1u8, 2]), Message::binary(vec![1u8, 2]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (the engine answers pings from the peer by itself).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame. Queue closes with [`crate::ConnectionHandle::close`], not as a message, so
    /// that what was queued before is flushed first.
    Close(Option<CloseFrame>),
}

impl Message {
    /// Builds a text message.
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
        Self::Text(s.into())
    }

    /// Builds a binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Self::Binary(b.into())
    }

    /// Payload length in bytes (what the byte counters add).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b.len(),
            Self::Close(Some(f)) => 2 + f.reason.len(),
            Self::Close(None) => 0,
        }
    }

    /// Whether this is a text or binary message (as opposed to a control frame).
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::Text(s.into())
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<&String> for Message {
    fn from(s: &String) -> Self {
        Self::Text(s.into())
    }
}

impl From<Utf8Bytes> for Message {
    fn from(t: Utf8Bytes) -> Self {
        Self::Text(t)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Self::Binary(b.into())
    }
}

impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(b))
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}
