//! A WebSocket client written by hand over raw TCP, for what a real client never sends:
//! unmasked frames, reserved bits and opcodes, lengths declared but never sent, fragments by the
//! thousand, compressed payloads made by the test itself.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::WAIT;

/// The mask a client puts on every frame here (any non-zero key shows the server unmasks).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// FIN.
pub const FIN: u8 = 0x80;
/// RSV1 (permessage-deflate: compressed).
pub const RSV1: u8 = 0x40;
/// Opcodes.
pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

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

/// A whole client frame (masked with [`MASK`]).
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, payload, Some(MASK))
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A WebSocket opened by hand: the TCP stream after the `101` and the response's head.
pub struct Raw {
    pub tcp: TcpStream,
    /// The response's status line and headers, as sent.
    pub response: String,
}

/// Opens `ws://addr/path` by hand with extra request headers; panics unless the answer is 101.
pub async fn upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "response cut short");
            head.push(byte[0]);
            assert!(head.len() < 16 << 10, "response head too long");
        }
    };
    timeout(WAIT, read_head).await.expect("a response in time");
    let response = String::from_utf8(head).unwrap();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    Raw { tcp, response }
}

impl Raw {
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
