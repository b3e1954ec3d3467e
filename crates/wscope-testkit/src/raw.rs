//! A raw WebSocket client for tests that must send what a real client would not: hand-built
//! handshakes (bad keys, wrong versions, oversized headers, one byte at a time) and hand-built
//! frames (unmasked, reserved bits, huge declared lengths, split UTF-8), and that read the
//! server's frames back as they are.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::WAIT;

/// A valid `Sec-WebSocket-Key` (16 bytes, base64).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request for `path` on `addr` with `extra` header lines (each without CRLF).
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// An opened raw connection.
#[derive(Debug)]
pub struct Raw {
    /// The TCP stream, for tests that write bytes themselves.
    pub tcp: TcpStream,
    /// Bytes read past the last frame or response.
    buf: Vec<u8>,
}

/// A frame as read: opcode, FIN, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong, 0 continuation).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame.
    pub fn close(&self) -> Option<(u16, String)> {
        (self.opcode == 8 && self.payload.len() >= 2).then(|| {
            let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
            (
                code,
                String::from_utf8_lossy(&self.payload[2..]).into_owned(),
            )
        })
    }
}

impl Raw {
    /// Connects and upgrades `path` with a valid handshake; panics unless the answer is 101.
    pub async fn open(addr: SocketAddr, path: &str) -> Self {
        let mut raw = Self::connect(addr).await;
        raw.send_bytes(upgrade_request(addr, path, &[]).as_bytes())
            .await;
        let (status, _) = raw.response_head().await;
        assert_eq!(status, 101, "upgrade refused");
        raw
    }

    /// Wraps a TCP stream the caller connected (with its own socket options).
    pub fn from_tcp(tcp: TcpStream) -> Self {
        Self {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Connects without sending anything.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Self {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// Writes `bytes`; false if the server has closed the connection (reset, broken pipe).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).await.is_ok()
    }

    /// Reads an HTTP response head: its status and head text (headers, lowercase names).
    pub async fn response_head(&mut self) -> (u16, String) {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line in {head:?}"));
                return (status, head.to_ascii_lowercase());
            }
            assert!(self.fill().await > 0, "closed before a response head");
        }
    }

    /// Sends a masked frame (what a client must send).
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = encode(fin, 0, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload);
        self.send_bytes(&bytes).await;
    }

    /// Reads the next frame; `None` when the server closed the TCP connection.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = decode(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Reads frames until a close frame, skipping pings and data; its code and reason. Panics if
    /// the connection ends first or none comes within [`WAIT`].
    pub async fn expect_close(&mut self) -> (u16, String) {
        timeout(WAIT, async {
            while let Some(frame) = self.read_frame().await {
                if frame.opcode == 8 {
                    return frame.close().unwrap_or((1005, String::new()));
                }
            }
            panic!("the connection ended without a close frame");
        })
        .await
        .expect("a close frame in time")
    }

    /// Whether the server ends the TCP connection within `within` (reading and dropping what it
    /// sends meanwhile).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        timeout(within, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("read in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }
}

/// A frame's bytes: `rsv` is the three reserved bits (0..=7) shifted into place; `mask` masks it
/// (clients must); the length is encoded as given by the payload.
pub fn encode(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    encode_with_len(fin, rsv, opcode, mask, payload.len() as u64, payload)
}

/// Like [`encode`], but declaring `len` bytes whatever the payload (a frame that lies).
pub fn encode_with_len(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame's payload: code, then reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Decodes one (server, so unmasked) frame at the front of `buf`: the frame and its length.
fn decode(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0f);
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key = if masked {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let data = buf.get(at..at.checked_add(len)?)?;
    let payload = match key {
        Some(k) => data.iter().enumerate().map(|(i, b)| b ^ k[i % 4]).collect(),
        None => data.to_vec(),
    };
    Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![7u8; len];
            let bytes = encode(true, 0, 2, None, &payload);
            let (frame, used) = decode(&bytes).unwrap();
            assert_eq!(
                (frame.opcode, frame.payload.len(), used),
                (2, len, bytes.len())
            );
            let masked = encode(false, 0, 1, Some([1, 2, 3, 4]), &payload);
            let (frame, _) = decode(&masked).unwrap();
            assert_eq!((frame.fin, frame.payload), (false, payload));
        }
        let close = encode(true, 0, 8, None, &close_payload(1002, b"bad"));
        assert_eq!(
            decode(&close).unwrap().0.close(),
            Some((1002, "bad".into()))
        );
    }
}
