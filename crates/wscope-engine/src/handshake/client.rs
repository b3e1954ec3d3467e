//! The client side of the HTTP/1.1 WebSocket handshake (RFC 6455 §4.1): the upgrade request,
//! with a random key, written to a stream the caller opened (TCP, TLS, a test pipe), and the
//! server's answer checked — a 101, the accept value of the key, an extension the client offered
//! (permessage-deflate, RFC 7692) and a subprotocol it offered — before any engine takes over.

use std::hash::{BuildHasher, RandomState};
use std::io;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{accept_key, has_token};
use crate::config::SocketConfig;
use crate::deflate::Deflate;
use crate::io::Prefixed;

/// The most bytes a server's answer may take up to its blank line.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// Why a client handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request cannot be sent (no host, a header that is not text).
    #[error("invalid request: {0}")]
    Request(String),
    /// The stream failed or closed before the answer was whole.
    #[error("handshake i/o: {0}")]
    Io(#[from] io::Error),
    /// The answer is not an HTTP/1.1 response head of at most 16 KiB.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// The server answered with another status than 101: its answer, with its body (up to
    /// 64 KiB), as a proxy passes it on.
    #[error("the server answered {} instead of 101 Switching Protocols", .0.status)]
    Refused(Box<RefusedAnswer>),
    /// The 101 is not a WebSocket upgrade answering this request.
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
}

/// A server's answer other than 101 to an upgrade request ([`HandshakeError::Refused`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefusedAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body: as many bytes as `Content-Length` says, or up to the end of the stream, at most
    /// [`MAX_REFUSAL_BODY`] (a chunked body is read up to the end of the stream too, unparsed).
    pub body: Bytes,
}

/// The most bytes of a refusal's body kept.
pub const MAX_REFUSAL_BODY: usize = 64 << 10;

/// A client's upgrade request, ready to be sent. See the module documentation.
#[derive(Debug)]
pub struct ClientHandshake {
    request: Request<()>,
    key: HeaderValue,
    offers_deflate: bool,
}

/// The stream after a client handshake, and what the server agreed: the engine takes the
/// stream over ([`Engine::client`](crate::Engine::client)).
#[derive(Debug)]
pub struct Upgraded<S> {
    /// The stream, with the bytes the server sent right after its 101 (a first message) served
    /// first.
    pub stream: Prefixed<S>,
    /// The subprotocol the server chose among those offered.
    pub protocol: Option<String>,
    /// permessage-deflate, if agreed.
    pub deflate: Option<Deflate>,
}

impl ClientHandshake {
    /// The upgrade request for `request` (its URI, absolute or a path with a `Host` header, and
    /// any headers of the caller's, `Sec-WebSocket-Protocol` among them), with a new random
    /// key, offering permessage-deflate if `cfg` has it on.
    pub fn new(mut request: Request<()>, cfg: &SocketConfig) -> Result<Self, HandshakeError> {
        if !request.headers().contains_key(header::HOST) {
            let host = request
                .uri()
                .authority()
                .ok_or_else(|| HandshakeError::Request(format!("no host in {}", request.uri())))?;
            let host = HeaderValue::from_str(host.as_str())
                .map_err(|e| HandshakeError::Request(e.to_string()))?;
            request.headers_mut().insert(header::HOST, host);
        }
        let key = random_key();
        let headers = request.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
        if cfg.permessage_deflate {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, Deflate::offer());
        }
        Ok(Self {
            request,
            key,
            offers_deflate: cfg.permessage_deflate,
        })
    }

    /// The request as it is sent.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Sends the request over `io` and reads and checks the server's answer.
    pub async fn perform<S>(self, mut io: S) -> Result<Upgraded<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        io.write_all(&self.encode()).await?;
        io.flush().await?;
        let mut head = Vec::with_capacity(1024);
        let end = loop {
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(HandshakeError::Malformed("head over 16 KiB"));
            }
            if io.read_buf(&mut head).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        };
        let (status, headers) = parse_head(&head[..end])?;
        if status != StatusCode::SWITCHING_PROTOCOLS {
            head.drain(..end);
            let body = read_body(&mut io, &headers, head).await;
            let answer = RefusedAnswer {
                status,
                headers,
                body,
            };
            return Err(HandshakeError::Refused(Box::new(answer)));
        }
        let (protocol, deflate) = self.check(status, &headers)?;
        Ok(Upgraded {
            stream: Prefixed::new(Bytes::copy_from_slice(&head[end..]), io),
            protocol,
            deflate,
        })
    }

    /// The request line and headers, as HTTP/1.1 writes them.
    fn encode(&self) -> Vec<u8> {
        let target = self
            .request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str());
        let mut out = format!("GET {target} HTTP/1.1\r\n").into_bytes();
        for (name, value) in self.request.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Checks the server's answer against this request: the subprotocol and permessage-deflate
    /// agreed.
    fn check(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<(Option<String>, Option<Deflate>), HandshakeError> {
        use HandshakeError::Invalid;
        debug_assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
        if !has_token(headers, header::UPGRADE, "websocket")
            || !has_token(headers, header::CONNECTION, "upgrade")
        {
            return Err(Invalid("not an upgrade to websocket"));
        }
        let accept = headers.get(header::SEC_WEBSOCKET_ACCEPT);
        if accept.is_none_or(|a| a.as_bytes() != accept_key(self.key.as_bytes())) {
            return Err(Invalid("Sec-WebSocket-Accept does not answer the key"));
        }
        let extensions = headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
        let deflate = match self.offers_deflate {
            true => Deflate::from_response(extensions).map_err(Invalid)?,
            false if extensions.iter().next().is_some() => {
                return Err(Invalid("an extension that was not offered"))
            }
            false => None,
        };
        let protocol = match headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
            None => None,
            Some(chosen) => {
                let chosen = chosen
                    .to_str()
                    .map_err(|_| Invalid("subprotocol not text"))?;
                let offered = self.request.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
                let offered = offered.and_then(|o| o.to_str().ok()).unwrap_or_default();
                if !offered.split(',').any(|o| o.trim() == chosen) {
                    return Err(Invalid("a subprotocol that was not offered"));
                }
                Some(chosen.to_owned())
            }
        };
        Ok((protocol, deflate))
    }
}

/// The status and headers of an HTTP/1.1 response head (up to and with its blank line).
fn parse_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), HandshakeError> {
    let text = std::str::from_utf8(head).map_err(|_| HandshakeError::Malformed("not text"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let (Some("HTTP/1.1"), Some(code)) = (words.next(), words.next()) else {
        return Err(HandshakeError::Malformed("not an HTTP/1.1 status line"));
    };
    let status = StatusCode::from_bytes(code.as_bytes())
        .map_err(|_| HandshakeError::Malformed("bad status code"))?;
    let mut headers = HeaderMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(HandshakeError::Malformed("a header line without a colon"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| HandshakeError::Malformed("bad header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| HandshakeError::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// How long a refusal's body may take to arrive: a server that announces no length and keeps
/// the connection open (or sends less than it announced) gets its answer passed on with what
/// came by then, rather than holding the handshake.
const REFUSAL_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The body of a refusal: `Content-Length` bytes, or what comes until the stream ends, at most
/// [`MAX_REFUSAL_BODY`] and for at most [`REFUSAL_BODY_WAIT`], starting with what was read past
/// the head (`read`). A stream that fails midway gives what had come.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    headers: &HeaderMap,
    mut read: Vec<u8>,
) -> Bytes {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let want = length.unwrap_or(MAX_REFUSAL_BODY).min(MAX_REFUSAL_BODY);
    let reading = async {
        while read.len() < want {
            match io.read_buf(&mut read).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_BODY_WAIT, reading).await;
    read.truncate(want);
    Bytes::from(read)
}

/// A new `Sec-WebSocket-Key`: 16 random bytes in base64. (A nonce, not a secret: std's
/// randomly keyed hasher is random enough, and needs no other crate.)
fn random_key() -> HeaderValue {
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let random = RandomState::new().hash_one(i);
        half.copy_from_slice(&random.to_le_bytes());
    }
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    HeaderValue::from_str(&key).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{Attempt, ServerHandshake};
    use tokio::io::duplex;

    /// A wscope server's answer to `request`, as `ServerHandshake` makes it, written as
    /// HTTP/1.1, followed by `early` bytes.
    fn answer(request: &Request<()>, supports: &[String], early: &[u8]) -> Vec<u8> {
        let parts = Request::get(request.uri().clone())
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut parts = parts;
        parts.headers = request.headers().clone();
        let Attempt::Valid(server) = ServerHandshake::check(&parts) else {
            panic!("wscope's own request is valid")
        };
        let deflate = server.deflate();
        let response = server.response(
            server.choose_protocol(supports).as_deref(),
            deflate.as_ref(),
        );
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for (name, value) in response.headers() {
            out.extend(format!("{}: {}\r\n", name, value.to_str().unwrap()).bytes());
        }
        out.extend(b"\r\n");
        out.extend(early);
        out
    }

    #[tokio::test]
    async fn a_client_agrees_with_a_wscope_server_and_keeps_its_early_bytes() {
        let cfg = SocketConfig::default().permessage_deflate(true);
        let request = Request::get("ws://example.com/ws")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "chat, v2")
            .body(())
            .unwrap();
        let handshake = ClientHandshake::new(request, &cfg).unwrap();
        assert_eq!(handshake.request().headers()[header::HOST], "example.com");
        let reply = answer(handshake.request(), &["v2".into()], b"\x81\x02hi");
        let (ours, mut theirs) = duplex(1 << 16);
        theirs.write_all(&reply).await.unwrap();
        let mut upgraded = handshake.perform(ours).await.unwrap();
        assert_eq!(upgraded.protocol.as_deref(), Some("v2"));
        assert!(upgraded.deflate.is_some());
        let mut first = [0u8; 4];
        upgraded.stream.read_exact(&mut first).await.unwrap();
        assert_eq!(
            &first, b"\x81\x02hi",
            "the frame after the 101 is read first"
        );
        let mut sent = vec![0u8; 4096];
        let n = theirs.read(&mut sent).await.unwrap();
        assert!(sent[..n].starts_with(b"GET /ws HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn a_wrong_accept_key_an_unoffered_protocol_or_another_status_fail() {
        let cfg = SocketConfig::default();
        for (reply, expected) in [
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n", "Sec-WebSocket-Accept"),
            ("HTTP/1.1 403 Forbidden\r\n\r\n", "403"),
            ("SSH-2.0\r\n\r\n", "status line"),
        ] {
            let handshake =
                ClientHandshake::new(Request::get("ws://h/").body(()).unwrap(), &cfg).unwrap();
            let (ours, mut theirs) = duplex(1 << 16);
            theirs.write_all(reply.as_bytes()).await.unwrap();
            let error = handshake.perform(ours).await.unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        // A refusal with its body: status, headers and body come back.
        let handshake =
            ClientHandshake::new(Request::get("ws://h/").body(()).unwrap(), &cfg).unwrap();
        let (ours, mut theirs) = duplex(1 << 16);
        let refusal = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 10\r\nWWW-Authenticate: Cookie\r\n\r\nno session";
        theirs.write_all(refusal.as_bytes()).await.unwrap();
        match handshake.perform(ours).await.unwrap_err() {
            HandshakeError::Refused(answer) => {
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
                assert_eq!(answer.headers["www-authenticate"], "Cookie");
                assert_eq!(&answer.body[..], b"no session");
            }
            other => panic!("expected a refusal, got {other}"),
        }
        let handshake =
            ClientHandshake::new(Request::get("ws://h/").body(()).unwrap(), &cfg).unwrap();
        let mut reply = answer(handshake.request(), &[], b"");
        let at = reply.len() - 2;
        reply.splice(at..at, b"Sec-WebSocket-Protocol: chat\r\n".iter().copied());
        let (ours, mut theirs) = duplex(1 << 16);
        theirs.write_all(&reply).await.unwrap();
        let error = handshake.perform(ours).await.unwrap_err().to_string();
        assert!(error.contains("not offered"), "{error}");
    }

    #[test]
    fn keys_are_random_and_valid() {
        let (a, b) = (random_key(), random_key());
        assert_ne!(a, b);
        assert!(super::super::is_valid_key(a.as_bytes()));
    }
}
