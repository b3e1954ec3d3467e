//! What one echo connection sends, and the check of what comes back: every message starts with
//! its connection's number and its own sequence number (`<conn>.<seq> ` in hex, then `x` up to
//! the size), so a reply that is not the echo of what this connection sent, in order, is caught:
//! a chat endpoint's fan-out of other clients' messages, a dropped or reordered echo, an answer
//! that is not an echo at all.

use std::fmt::Write as _;

use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// The messages of one connection.
#[derive(Debug)]
pub(crate) struct Payloads {
    /// `x` repeated to the message size: what follows the stamp.
    filler: String,
    binary: bool,
    conn: usize,
    next_seq: u64,
}

impl Payloads {
    /// Messages of `size` bytes for connection number `conn`, text unless `binary`.
    pub(crate) fn new(size: usize, binary: bool, conn: usize) -> Self {
        Self {
            filler: "x".repeat(size),
            binary,
            conn,
            next_seq: 0,
        }
    }

    /// The next message to send, and its bytes to compare the reply with. A message too small
    /// for the whole stamp carries as much of it as fits.
    pub(crate) fn next(&mut self) -> (Message, Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let size = self.filler.len();
        let mut text = String::with_capacity(size.max(24));
        // Writing to a String cannot fail.
        let _ = write!(text, "{:x}.{seq:x} ", self.conn);
        text.truncate(size); // ASCII: any length is a char boundary
        text.push_str(self.filler.get(text.len()..).unwrap_or_default());
        if self.binary {
            let bytes = Bytes::from(text.into_bytes());
            (Message::Binary(bytes.clone()), bytes)
        } else {
            let text = Utf8Bytes::from(text);
            (Message::Text(text.clone()), Bytes::from(text))
        }
    }

    /// Whether `reply` is the echo of `sent`: the same kind of message with the same bytes.
    pub(crate) fn is_echo(&self, reply: &Message, sent: &Bytes) -> bool {
        match reply {
            Message::Text(t) if !self.binary => AsRef::<[u8]>::as_ref(t) == sent.as_ref(),
            Message::Binary(b) if self.binary => b == sent,
            _ => false,
        }
    }
}

/// A mismatch in a few words, for the report's first error.
pub(crate) fn mismatch(reply: &Message, sent: &Bytes) -> String {
    let (kind, got) = kind_and_bytes(reply);
    format!(
        "a reply was not the echo of what its connection sent: sent {} B {}, got {kind} {} B {}",
        sent.len(),
        excerpt(sent),
        got.len(),
        excerpt(got)
    )
}

/// A reply that came with nothing in flight, in a few words.
pub(crate) fn unsolicited(reply: &Message) -> String {
    let (kind, got) = kind_and_bytes(reply);
    format!(
        "a reply came with nothing in flight on its connection: got {kind} {} B {}",
        got.len(),
        excerpt(got)
    )
}

fn kind_and_bytes(msg: &Message) -> (&'static str, &[u8]) {
    match msg {
        Message::Text(t) => ("text", t.as_ref()),
        Message::Binary(b) => ("binary", b.as_ref()),
        _ => ("control", &[]),
    }
}

/// The first bytes, quoted.
fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 16;
    let head = String::from_utf8_lossy(bytes.get(..SHOWN).unwrap_or(bytes));
    let more = if bytes.len() > SHOWN { "…" } else { "" };
    format!("{:?}{more}", head.as_ref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_carry_connection_and_sequence() {
        let mut p = Payloads::new(16, false, 0x2a);
        let (m0, b0) = p.next();
        let (m1, b1) = p.next();
        assert_eq!(&b0[..], b"2a.0 xxxxxxxxxxx");
        assert_eq!(&b1[..], b"2a.1 xxxxxxxxxxx");
        assert!(p.is_echo(&m0, &b0));
        assert!(
            !p.is_echo(&m1, &b0),
            "another message of the same connection"
        );
        let mut other = Payloads::new(16, false, 0x2b);
        let (theirs, _) = other.next();
        assert!(!p.is_echo(&theirs, &b0), "another connection's message");
        assert!(
            !p.is_echo(&Message::Binary(b0.clone()), &b0),
            "binary for text"
        );
        assert_eq!(
            mismatch(&theirs, &b0),
            "a reply was not the echo of what its connection sent: sent 16 B \"2a.0 xxxxxxxxxxx\", \
             got text 16 B \"2b.0 xxxxxxxxxxx\""
        );
    }

    #[test]
    fn sizes_are_kept_exactly() {
        for size in [0, 1, 3, 64, 1000] {
            let mut p = Payloads::new(size, true, 123_456);
            let (m, b) = p.next();
            assert_eq!(b.len(), size);
            assert!(p.is_echo(&m, &b));
        }
    }
}
