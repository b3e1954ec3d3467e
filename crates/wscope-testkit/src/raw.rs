//! A WebSocket client written by hand over raw TCP, for what a real client never sends:
//! malformed handshakes (bad keys, wrong versions, oversized heads, a byte at a time), unmasked
//! frames, reserved bits and opcodes, lengths declared but never sent, fragments by the thousand,
//! compressed payloads made by the test itself; and the server's frames read back as they are.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::wait::WAIT;

/// The mask a client puts on every frame here (any non-zero key shows the server unmasks).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// FIN.
pub const FIN: u8 = 0x80;
/// RSV1 (permessage-deflate: compressed).
pub const RSV1: u8 = 0x40;
/// Opcode: continuation.
pub const CONT: u8 = 0x0;
/// Opcode: text.
pub const TEXT: u8 = 0x1;
/// Opcode: binary.
pub const BINARY: u8 = 0x2;
/// Opcode: close.
pub const CLOSE: u8 = 0x8;
/// Opcode: ping.
pub const PING: u8 = 0x9;
/// Opcode: pong.
pub const PONG: u8 = 0xa;
/// A valid `Sec-WebSocket-Key` (16 bytes, base64).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request for `path` on `addr` with extra header lines (each without CRLF).
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

/// A close frame's payload: code, then reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A frame header: `first` is the first byte (FIN, RSV and opcode bits), `len` the payload length
/// declared, `mask` the masking key (none: an unmasked frame).
pub fn header(first: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match len {
        0..=125 => out.push(masked | len as u8),
        126..=0xffff => {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(masked | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame, masked with `mask` if given.
pub fn frame_with(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = header(first, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    out
}

/// A final client frame of `opcode` (masked with [`MASK`]).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(FIN | opcode, payload)
}

/// A whole client frame (masked with [`MASK`]).
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, payload, Some(MASK))
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1 bit (compressed).
    pub rsv1: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame.
    pub fn close(&self) -> Option<(u16, String)> {
        (self.opcode == CLOSE && self.payload.len() >= 2).then(|| {
            let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
            (
                code,
                String::from_utf8_lossy(&self.payload[2..]).into_owned(),
            )
        })
    }
}

/// A connection written by hand: the TCP stream and, once read, the response's head.
#[derive(Debug)]
pub struct Raw {
    /// The TCP stream.
    pub tcp: TcpStream,
    /// The response's status line and headers, as sent (empty until read).
    pub response: String,
}

/// Opens `ws://addr/path` by hand with extra request headers; panics unless the answer is 101.
pub async fn upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Raw {
    let lines: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut raw = Raw::connect(addr).await;
    raw.send(upgrade_request(addr, path, &lines).as_bytes())
        .await;
    let status = raw.response_head().await;
    assert_eq!(status, 101, "{}", raw.response);
    raw
}

impl Raw {
    /// Connects without sending anything.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Self::from_tcp(tcp)
    }

    /// Wraps a TCP stream the caller connected (with its own socket options).
    pub fn from_tcp(tcp: TcpStream) -> Self {
        Self {
            tcp,
            response: String::new(),
        }
    }

    /// Reads an HTTP response head (a byte at a time, so nothing after it is consumed) into
    /// [`Raw::response`]; its status.
    pub async fn response_head(&mut self) -> u16 {
        let mut head = Vec::new();
        let read_head = async {
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(
                    self.tcp.read(&mut byte).await.unwrap_or(0),
                    1,
                    "response cut short"
                );
                head.push(byte[0]);
                assert!(head.len() < 64 << 10, "response head too long");
            }
        };
        timeout(WAIT, read_head).await.expect("a response in time");
        self.response = String::from_utf8_lossy(&head).into_owned();
        self.response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {:?}", self.response))
    }

    /// Writes `bytes`; false if the server has closed the connection (reset, broken pipe).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).await.is_ok()
    }

    /// Whether the server ends the TCP connection within `within` (reading and dropping what it
    /// sends meanwhile).
    pub async fn closed_within(&mut self, within: std::time::Duration) -> bool {
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

    /// The next frame, or `None` when the server ended the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        timeout(WAIT, self.try_read_frame())
            .await
            .expect("a frame or the end in time")
            .ok()
    }

    /// The value of a response header (the first of that name), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.response.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The next frame from the server; panics if none comes in time.
    pub async fn read_frame(&mut self) -> Frame {
        timeout(WAIT, self.try_read_frame())
            .await
            .expect("a frame in time")
            .expect("a frame, not the end of the stream")
    }

    async fn try_read_frame(&mut self) -> std::io::Result<Frame> {
        let mut h = [0u8; 2];
        self.tcp.read_exact(&mut h).await?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.tcp.read_exact(&mut n).await?;
                u64::from(u16::from_be_bytes(n))
            }
            127 => {
                let mut n = [0u8; 8];
                self.tcp.read_exact(&mut n).await?;
                u64::from_be_bytes(n)
            }
            n => u64::from(n),
        };
        assert_eq!(h[1] & 0x80, 0, "a server frame is never masked");
        let mut payload = vec![0u8; len as usize];
        self.tcp.read_exact(&mut payload).await?;
        Ok(Frame {
            fin: h[0] & FIN != 0,
            rsv1: h[0] & RSV1 != 0,
            opcode: h[0] & 0x0f,
            payload,
        })
    }

    /// The next frame that is not a ping or a pong.
    pub async fn read_data(&mut self) -> Frame {
        loop {
            let f = self.read_frame().await;
            if f.opcode != PING && f.opcode != PONG {
                return f;
            }
        }
    }

    /// The next data message (pings and pongs aside), its fragments joined: the frame returned
    /// has the first fragment's opcode and RSV1 (RFC 7692 marks a compressed message's first
    /// frame only) and the whole payload. A close frame is returned as it is.
    pub async fn read_message(&mut self) -> Frame {
        let mut message = self.read_data().await;
        while !message.fin && message.opcode != CLOSE {
            let next = self.read_data().await;
            assert_eq!(next.opcode, CONT, "a continuation, got {next:?}");
            assert!(!next.rsv1, "RSV1 on a continuation: {next:?}");
            message.payload.extend_from_slice(&next.payload);
            message.fin = next.fin;
        }
        message
    }

    /// Closes from the client side (1000) and waits for the server's close and hang-up.
    pub async fn close(mut self) {
        self.send(&frame(FIN | CLOSE, &1000u16.to_be_bytes())).await;
        assert_eq!(self.expect_close().await.0, 1000);
    }

    /// Expects a close frame next (pings and pongs aside) and returns its code and reason; then
    /// expects the server to hang up.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let f = self.read_data().await;
        assert_eq!(f.opcode, CLOSE, "expected a close frame, got {f:?}");
        let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
        let reason = String::from_utf8(f.payload[2..].to_vec()).unwrap();
        let mut rest = Vec::new();
        // The server hangs up (EOF or a reset, as it may not have read all we sent).
        let _ = timeout(WAIT, self.tcp.read_to_end(&mut rest))
            .await
            .expect("the server hangs up in time");
        (code, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_encode_each_length_form() {
        assert_eq!(header(FIN | TEXT, 5, None), vec![0x81, 5]);
        assert_eq!(header(FIN | BINARY, 126, None), vec![0x82, 126, 0, 126]);
        assert_eq!(header(BINARY, 1 << 16, None)[1], 127);
        let masked = frame(FIN | TEXT, b"hi");
        assert_eq!(masked[1], 0x80 | 2);
        assert_eq!(&masked[2..6], &MASK);
        assert_eq!(masked[6] ^ MASK[0], b'h');
        let close = Frame {
            fin: true,
            rsv1: false,
            opcode: CLOSE,
            payload: close_payload(1002, b"bad"),
        };
        assert_eq!(close.close(), Some((1002, "bad".into())));
    }
}
