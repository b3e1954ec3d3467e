//! One raw HTTP/1.1 client for every test: it writes exactly the request it is given (so tests can
//! send what a real client would not) and reads one response by `Content-Length`, chunked
//! encoding or to the end of the connection.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::wait::WAIT;

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// The first of `headers` (names lower-cased, as both clients keep them) named `name`, in any case.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::find_header(&self.headers, name)
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        self.parse()
    }

    /// The body read as `T` (a wire type); panics if it does not parse.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one raw HTTP/1.1 request and reads one response (by `Content-Length` or chunked
/// encoding, so it works whether or not the server keeps the connection open).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut tcp).await
    })
    .await
    .expect("HTTP response in time")
}

/// `GET path` with `Connection: close`.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[("Connection", "close")], None).await
}

/// `POST path` with a JSON body and `Connection: close`.
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> HttpResponse {
    http(addr, "POST", path, &[("Connection", "close")], Some(body)).await
}

/// Writes `bytes` exactly as given (malformed, oversized or partial requests) and returns all
/// the server sends back until it closes the connection, as text. A write cut short and a reset
/// after the answer are not errors: a server may hang up with part of the request unread.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = tcp.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    timeout(WAIT, read)
        .await
        .expect("the server answers and closes in time");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads one response from `tcp` (after a request the caller wrote).
pub async fn read_response(tcp: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        assert!(
            fill(tcp, &mut buf).await > 0,
            "connection closed in headers"
        );
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(len) = header("content-length") {
        let len: usize = len.parse().unwrap();
        while rest.len() < len {
            assert!(fill(tcp, &mut rest).await > 0, "connection closed in body");
        }
        rest.truncate(len);
        rest
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&rest, b"\r\n") {
                    break i;
                }
                assert!(fill(tcp, &mut rest).await > 0, "connection closed in chunk");
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            while rest.len() < line_end + 2 + size + 2 {
                assert!(fill(tcp, &mut rest).await > 0, "connection closed in chunk");
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        // No length: the body runs to the end of the connection.
        while fill(tcp, &mut rest).await > 0 {}
        rest
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    let n = tcp.read(&mut chunk).await.unwrap();
    buf.extend_from_slice(&chunk[..n]);
    n
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
