//! The server side of the HTTP/1.1 WebSocket handshake (RFC 6455 §4.2): checks the request,
//! takes hyper's upgrade future from it and builds the 101 response, so that any engine can take
//! over the upgraded connection. The extensions offered are kept for the permessage-deflate
//! negotiation (RFC 7692), whose answer joins the 101.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};

use crate::engine::Deflate;

/// An acceptable upgrade request: its key, the subprotocols it offers and the future that
/// yields the upgraded connection.
#[derive(Debug)]
pub(crate) struct Handshake {
    key: HeaderValue,
    /// `Sec-WebSocket-Protocol` as sent: the client's subprotocols, in its order of preference.
    offered: Option<HeaderValue>,
    /// `Sec-WebSocket-Extensions` as sent (each header): the extensions the client offers.
    extensions: Vec<HeaderValue>,
    pub(crate) on_upgrade: OnUpgrade,
}

/// Whether `name` lists `token` (comma-separated, case-insensitive), as `Connection: keep-alive, Upgrade` does.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What an upgrade request turned out to be.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Not a WebSocket upgrade (or a version other than 13, which gets 426 naming 13).
    NotUpgrade,
    /// It asks for a WebSocket upgrade but cannot have one: 400, counted as an invalid handshake.
    Invalid(&'static str),
    /// A valid handshake.
    Valid(Handshake),
}

impl Handshake {
    /// What `parts` asks for; takes hyper's upgrade future out of a valid request's extensions.
    pub(crate) fn from_parts(parts: &mut Parts) -> Attempt {
        let h = &parts.headers;
        let asks = parts.method == Method::GET
            && has_token(h, header::CONNECTION, "upgrade")
            && has_token(h, header::UPGRADE, "websocket");
        if !asks {
            return Attempt::NotUpgrade;
        }
        // RFC 6455 §4.1: HTTP/1.1 or higher; an HTTP/1.0 client cannot take the 101.
        if parts.version < Version::HTTP_11 {
            return Attempt::Invalid("HTTP/1.1 is required to upgrade");
        }
        let version = h.get(header::SEC_WEBSOCKET_VERSION);
        if version.is_none_or(|v| v != "13") {
            return Attempt::NotUpgrade;
        }
        let mut keys = h.get_all(header::SEC_WEBSOCKET_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (None, _) => return Attempt::Invalid("missing Sec-WebSocket-Key"),
            (Some(_), Some(_)) => return Attempt::Invalid("more than one Sec-WebSocket-Key"),
            (Some(key), None) if !is_valid_key(key.as_bytes()) => {
                return Attempt::Invalid("Sec-WebSocket-Key is not 16 bytes in base64")
            }
            (Some(key), None) => key.clone(),
        };
        let offered = h.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
        let extensions = h
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .cloned()
            .collect();
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            // Served without upgrades (a test harness, HTTP/2): nothing to take over.
            return Attempt::NotUpgrade;
        };
        Attempt::Valid(Self {
            key,
            offered,
            extensions,
            on_upgrade,
        })
    }

    /// The permessage-deflate agreement, if the client offers one wscope accepts; add
    /// [`Deflate::response`] to the `101` as `Sec-WebSocket-Extensions`.
    pub(crate) fn deflate(&self) -> Option<Deflate> {
        Deflate::negotiate(&self.extensions)
    }

    /// The first subprotocol the client offers that the server `supports` (the client's order
    /// of preference decides, as in axum).
    pub(crate) fn choose_protocol(&self, supports: &[String]) -> Option<String> {
        let offered = self.offered.as_ref()?.to_str().ok()?;
        offered
            .split(',')
            .map(str::trim)
            .find(|p| supports.iter().any(|s| s == p))
            .map(str::to_owned)
    }

    /// `101 Switching Protocols` with the accept key and the chosen subprotocol.
    pub(crate) fn response(&self, protocol: Option<&str>) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        response
    }
}

/// Whether a `Sec-WebSocket-Key` is 16 bytes in base64 (RFC 6455 §4.1): 24 characters with
/// their padding.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut decoded)
            .is_ok_and(|n| n == 16)
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_must_be_16_bytes_in_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",       // no padding
            b"dGhlIHNhbXBsZSBub25jZSE=",     // 17 bytes
            b"dGhlIHNhbXBsZSBub25j",         // 15 bytes
            b"dGhlIHNhbXBsZSBub25jZQ==AAAA", // too long
            b"dGhlIHNhbXBsZSBub25jZ!==",     // not base64
        ] {
            assert!(!is_valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn connection_header_may_list_several_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!has_token(&h, header::CONNECTION, "close"));
    }
}
