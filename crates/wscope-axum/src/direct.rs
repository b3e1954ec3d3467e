//! The direct upgrade path of [`serve`](crate::serve): the first request on a plain connection
//! is read and parsed here, and a WebSocket upgrade request goes to the router without hyper's
//! connection (its dispatcher, its read and write buffers, the upgrade's channel and the boxed
//! stream behind it). Its 101 is written here, and the engine takes the TCP stream over at once,
//! in a task of its own. Anything else (another method, another request, a head that is not
//! complete within the limit, one this parser refuses) goes to hyper as it came, with the bytes
//! already read served first, so that every answer but an upgrade's is hyper's.
//!
//! The router sees the same request either way; what tells [`WebSocketUpgrade`] which path it
//! is on is the request's extension: hyper's `OnUpgrade`, or this module's [`DirectUpgrade`],
//! into which the accepted upgrade puts what takes the stream over.
//!
//! [`WebSocketUpgrade`]: crate::WebSocketUpgrade

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::body::{Body, HttpBody};
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version,
};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use wscope_engine::{has_token, lists_token};

use crate::upgraded_io::UpgradedIo;

/// What takes over a connection the router answered 101 on the direct path: called with the
/// stream once the 101 is written, or with why it could not be.
pub(crate) type Takeover = Box<dyn FnOnce(io::Result<UpgradedIo>) + Send>;

/// The request extension of an upgrade on the direct path: the accepted upgrade puts its
/// [`Takeover`] in it, and the server takes it out after the router's answer.
#[derive(Clone, Default)]
pub(crate) struct DirectUpgrade(Arc<Mutex<Option<Takeover>>>);

impl DirectUpgrade {
    /// Called by the accepted upgrade, before the router answers 101.
    pub(crate) fn put(&self, takeover: Takeover) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(takeover);
    }

    fn take(&self) -> Option<Takeover> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl fmt::Debug for DirectUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectUpgrade")
    }
}

/// The most headers an upgrade request may have on this path; more, and hyper reads it (and
/// applies its own limit).
const MAX_HEADERS: usize = 48;
/// Room for the first read: a browser's upgrade request is some 400 to 1,500 bytes.
const FIRST_READ: usize = 2048;

/// The first request on a connection, as far as this path is concerned. Returned once and taken
/// apart at once: boxing the request would cost every handshake an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Head {
    /// A complete WebSocket upgrade request (GET, HTTP/1.1, `Upgrade: websocket`, no body), and
    /// the bytes read after its head.
    Upgrade(Request<Body>, Bytes),
    /// Anything else: the bytes read so far, for hyper to read first.
    Other(Bytes),
}

/// Reads the first request's head from `tcp`, up to `max` bytes.
pub(crate) async fn read_head(tcp: &mut TcpStream, max: usize) -> io::Result<Head> {
    let mut buf = BytesMut::with_capacity(FIRST_READ.min(max.max(64)));
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let searched = buf.len().saturating_sub(3);
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(Head::Other(buf.freeze()));
        }
        if !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
            return Ok(Head::Other(buf.freeze()));
        }
        match find_end(&buf, searched) {
            // Past the bound: hyper reads it again, and answers 431.
            Some(end) if end > max => return Ok(Head::Other(buf.freeze())),
            Some(end) => {
                let head = buf.split_to(end).freeze();
                return Ok(match upgrade_request(&head) {
                    Some(request) => Head::Upgrade(request, buf.freeze()),
                    None => {
                        // hyper reads it all again, head first.
                        let mut all = BytesMut::from(head);
                        all.extend_from_slice(&buf);
                        Head::Other(all.freeze())
                    }
                });
            }
            None if buf.len() >= max => return Ok(Head::Other(buf.freeze())),
            None => {}
        }
    }
}

/// Where the head ends (just past its blank line), looking from `from`.
fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(&buf[from..], b"\r\n\r\n").map(|at| from + at + 4)
}

/// `head` as a request for the router, if it is a WebSocket upgrade this path takes: GET,
/// HTTP/1.1, an `Upgrade` header naming `websocket`, no body. Header values share `head`'s bytes.
fn upgrade_request(head: &Bytes) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let mut upgrade = false;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return None;
        }
        if name == header::UPGRADE {
            upgrade |= lists_token(h.value, "websocket");
        }
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        map.append(name, value);
    }
    if !upgrade {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Some(request)
}

/// Whether a request's `Connection` header names `close` among its tokens (`Upgrade, close`):
/// the connection then ends after the answer, if it is not an upgrade.
pub(crate) fn asks_to_close(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "close")
}

/// What became of an upgrade request on this path.
pub(crate) enum Answered {
    /// Answered 101 and taken over: the connection is the engine's now.
    Upgraded,
    /// Answered with something else: HTTP may go on over the stream (hyper's), whose bytes
    /// read past the head come first.
    Answered(TcpStream, Bytes),
}

/// Writes the router's `response` to an upgrade request carrying `slot`: a 101 whose upgrade
/// put its takeover in the slot hands the stream (with `rest`, what was read past the head)
/// over; anything else is written in full (a takeover then fails: the answer was not its 101),
/// saying `Connection: close` when the connection ends after it (`close`).
pub(crate) async fn answer(
    mut tcp: TcpStream,
    slot: &DirectUpgrade,
    response: Response<Body>,
    rest: Bytes,
    close: bool,
) -> io::Result<Answered> {
    let takeover = slot.take();
    let (mut parts, body) = response.into_parts();
    if parts.status == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(takeover) = takeover {
            let mut out = Vec::with_capacity(256);
            encode_head(&parts, &mut out);
            match tcp.write_all(&out).await {
                Ok(()) => takeover(Ok(UpgradedIo::rewound(rest, tcp))),
                Err(e) => takeover(Err(e)),
            }
            return Ok(Answered::Upgraded);
        }
    }
    if let Some(takeover) = takeover {
        takeover(Err(io::Error::other(format!(
            "the upgrade was answered {}, not 101",
            parts.status
        ))));
    }
    if close {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !parts.headers.contains_key(header::DATE) {
        let date = httpdate::fmt_http_date(SystemTime::now());
        if let Ok(date) = HeaderValue::try_from(date) {
            parts.headers.insert(header::DATE, date);
        }
    }
    let mut body = body;
    let mut out = Vec::with_capacity(512);
    match HttpBody::size_hint(&body).exact() {
        Some(_) => {
            let data = body.collect().await.map_err(io::Error::other)?.to_bytes();
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
            encode_head(&parts, &mut out);
            out.extend_from_slice(&data);
            tcp.write_all(&out).await?;
        }
        None => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            encode_head(&parts, &mut out);
            tcp.write_all(&out).await?;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map_err(io::Error::other)?.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                out.clear();
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                tcp.write_all(&out).await?;
            }
            tcp.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(Answered::Answered(tcp, rest))
}

/// The status line and headers of `parts`, and the blank line after them.
fn encode_head(parts: &axum::http::response::Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Option<Request<Body>> {
        upgrade_request(&Bytes::copy_from_slice(head.as_bytes()))
    }

    const UPGRADE: &str = "GET /ws?user=a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
        Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn an_upgrade_request_keeps_its_path_query_and_headers() {
        let request = request(UPGRADE).expect("an upgrade");
        assert_eq!(request.uri().path(), "/ws");
        assert_eq!(request.uri().query(), Some("user=a"));
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(
            request.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(request.headers().len(), 5);
    }

    #[test]
    fn anything_but_a_bodyless_http11_get_upgrade_is_left_to_hyper() {
        for other in [
            UPGRADE.replace("GET", "POST"),
            UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
            UPGRADE.replace("Upgrade: WebSocket", "Upgrade: h2c"),
            UPGRADE.replace("Host: x", "Content-Length: 0"),
            UPGRADE.replace("Host: x", "Transfer-Encoding: chunked"),
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        ] {
            assert!(request(&other).is_none(), "{other:?}");
        }
    }

    #[test]
    fn close_is_found_among_the_connection_tokens() {
        for (value, close) in [
            ("close", true),
            ("Upgrade, close", true),
            ("Upgrade,CLOSE ", true),
            ("Upgrade", false),
            ("keep-alive, Upgrade", false),
            ("closed", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONNECTION, HeaderValue::from_static(value));
            assert_eq!(asks_to_close(&headers), close, "{value:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_even_split_across_reads() {
        let bytes = b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest";
        assert_eq!(find_end(bytes, 0), Some(bytes.len() - 4));
        // A read that ended in the blank line ("...A: b\r\n", 22 bytes): the search resumes
        // 3 bytes before that end and finds the "\r\n\r\n" split across the two reads.
        assert_eq!(find_end(bytes, 22 - 3), Some(bytes.len() - 4));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n", 0), None);
    }

    #[test]
    fn a_head_is_written_with_its_status_and_headers() {
        let mut response = Response::new(());
        *response.status_mut() = axum::http::StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
        );
    }
}
