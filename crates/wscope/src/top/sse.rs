//! Server-Sent Events, parsed as bytes arrive: fields `event`, `id` and `data` of each event
//! (blocks end with a blank line; `\n`, `\r\n` and `\r` all end lines; comments are skipped).

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (empty when not given, which the spec calls "message").
    pub event: String,
    /// `id:` (empty when not given).
    pub id: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Bytes in, events out.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes not yet split into lines (a line, or a UTF-8 character, may span two reads).
    pending: Vec<u8>,
    /// The event being read.
    current: SseEvent,
    /// Whether the event being read has any field (a block of comments is no event).
    has_fields: bool,
    /// The last read ended with `\r`: a `\n` first in the next read belongs to it.
    after_cr: bool,
    /// Complete events not yet taken.
    ready: std::collections::VecDeque<SseEvent>,
}

impl SseParser {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        let mut i = 0;
        while i < self.pending.len() {
            let b = self.pending[i];
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&self.pending[start..i]).into_owned();
                self.line(&line);
                if b == b'\r' {
                    match self.pending.get(i + 1) {
                        Some(b'\n') => i += 1,
                        None => self.after_cr = true,
                        Some(_) => {}
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.pending.drain(..start);
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if std::mem::take(&mut self.has_fields) {
                self.ready.push_back(std::mem::take(&mut self.current));
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        self.has_fields = true;
        match name {
            "event" => self.current.event = value.to_owned(),
            "id" => self.current.id = value.to_owned(),
            "data" => {
                if !self.current.data.is_empty() {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all(p: &mut SseParser) -> Vec<SseEvent> {
        std::iter::from_fn(|| p.next_event()).collect()
    }

    #[test]
    fn events_split_anywhere_are_put_back_together() {
        let text = ": keep-alive\n\nevent: stats\nid: 7\ndata: {\"a\":\ndata:1}\n\nid:8\r\ndata: é\r\n\r\n";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut p = SseParser::default();
            p.push(&bytes[..cut]);
            p.push(&bytes[cut..]);
            let events = all(&mut p);
            assert_eq!(events.len(), 2, "cut at {cut}");
            assert_eq!(events[0].event, "stats");
            assert_eq!(events[0].id, "7");
            assert_eq!(events[0].data, "{\"a\":\n1}");
            assert_eq!(events[1].id, "8");
            assert_eq!(events[1].data, "é");
        }
    }

    #[test]
    fn a_lone_cr_ends_a_line_and_comments_alone_are_no_event() {
        let mut p = SseParser::default();
        p.push(b":one\n:two\n\n");
        assert!(all(&mut p).is_empty());
        p.push(b"data: x\r");
        p.push(b"\r");
        let events = all(&mut p);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "x");
    }
}
