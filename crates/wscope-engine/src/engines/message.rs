//! What every engine converts on its way in and out: [`Outbound`] (a message as it goes on the
//! wire, compressed once under permessage-deflate), checked text, close frames.

use wscope_core::{
    Bytes, CloseCode, CloseFrame, Message, TransportError, TransportErrorKind, Utf8Bytes,
};

use crate::deflate;

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
    fn text_that_is_not_utf8_fails_with_1007_instead_of_becoming_empty() {
        let error = text(Bytes::from_static(&[b'a', 0xff, 0xfe])).unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::InvalidUtf8);
        assert_eq!(error.kind().close_frame().unwrap().code.as_u16(), 1007);
        assert_eq!(
            text(Bytes::from_static("é".as_bytes())).unwrap(),
            Message::text("é")
        );
    }
}
