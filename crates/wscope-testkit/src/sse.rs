//! A Server-Sent Events client over a raw TCP stream: it sends one `GET`, reads the head, then
//! decodes the chunked body as it arrives into events (`event`, `id`, `data`; comment lines are
//! counted, not returned), so a test sees each event when the server sends it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::wait::WAIT;

/// One event of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (empty if none).
    pub event: String,
    /// The `id:` field (empty if none).
    pub id: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data read as `T` (a wire type); panics if it does not parse.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not the JSON wanted ({e}): {}", self.data))
    }
}

/// An open stream: the response head, then events as they come.
#[derive(Debug)]
pub struct SseStream {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    tcp: TcpStream,
    /// Raw bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body text not yet split into events.
    text: String,
    /// Whether the terminating chunk (or the end of the connection) has been read.
    ended: bool,
    /// Comment lines (`: ...`, keep-alives) seen so far.
    pub comments: usize,
}

/// Opens `GET path` on `addr` with extra request headers and reads the response head.
pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            assert!(
                fill(&mut tcp, &mut raw).await > 0,
                "connection closed in headers"
            );
        };
        let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
        raw.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response head {head:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        SseStream {
            status,
            headers,
            tcp,
            raw,
            text: String::new(),
            ended: false,
            comments: 0,
        }
    })
    .await
    .expect("response head in time")
}

impl SseStream {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::find_header(&self.headers, name)
    }

    /// The whole body of a response that is not a stream (an error answer, sent with a
    /// `Content-Length`), as text.
    pub async fn body(mut self) -> String {
        let len: usize = self
            .header("content-length")
            .expect("a body with a Content-Length")
            .parse()
            .unwrap();
        timeout(WAIT, async {
            while self.raw.len() < len {
                assert!(
                    fill(&mut self.tcp, &mut self.raw).await > 0,
                    "connection closed in body"
                );
            }
        })
        .await
        .expect("body in time");
        String::from_utf8_lossy(&self.raw[..len]).into_owned()
    }

    /// The next event, or `None` once the stream has ended; panics after [`WAIT`].
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        timeout(WAIT, async {
            loop {
                if let Some(event) = self.take_event() {
                    return Some(event);
                }
                if self.ended {
                    return None;
                }
                self.read_more().await;
            }
        })
        .await
        .expect("an event (or the end of the stream) in time")
    }

    /// The next event for which `want` holds (others are skipped); panics if the stream ends
    /// first.
    pub async fn next_event_where(&mut self, mut want: impl FnMut(&SseEvent) -> bool) -> SseEvent {
        for _ in 0..10_000 {
            let event = self.next_event().await.expect("the stream ended");
            if want(&event) {
                return event;
            }
        }
        panic!("no wanted event in 10,000")
    }

    /// Splits one complete event (up to a blank line) off the text read, if there is one.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.text.find("\n\n")?;
            let block: String = self.text.drain(..end + 2).collect();
            let mut event = SseEvent::default();
            let mut data = Vec::new();
            let mut fields = 0;
            for line in block.lines().filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                fields += 1;
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "event" => event.event = value.to_owned(),
                    "id" => event.id = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if fields > 0 {
                event.data = data.join("\n");
                return Some(event);
            }
        }
    }

    /// De-chunks what is complete of the bytes read, or else reads more.
    async fn read_more(&mut self) {
        if !self.dechunk() && fill(&mut self.tcp, &mut self.raw).await == 0 {
            self.ended = true;
        }
    }

    /// Moves the complete chunks read into the text; whether there was any.
    fn dechunk(&mut self) -> bool {
        let mut any = false;
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return any;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            if self.raw.len() < line_end + 2 + size + 2 {
                return any;
            }
            let chunk = &self.raw[line_end + 2..line_end + 2 + size];
            self.text.push_str(std::str::from_utf8(chunk).unwrap());
            self.raw.drain(..line_end + 2 + size + 2);
            any = true;
            if size == 0 {
                self.ended = true;
                return any;
            }
        }
    }
}

async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    // A reset after the last chunk counts as the end, as a closed connection does.
    let n = tcp.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
