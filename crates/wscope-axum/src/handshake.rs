//! The server side of the HTTP/1.1 WebSocket handshake (RFC 6455 §4.2): checks the request,
//! takes hyper's upgrade future from it and builds the 101 response, so that any engine can take
//! over the upgraded connection. The extensions offered are kept for the permessage-deflate
//! negotiation (RFC 7692), whose answer joins the 101.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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

impl Handshake {
    /// The handshake of `parts`, if it is a valid WebSocket upgrade request; takes hyper's
    /// upgrade future out of the request's extensions.
    pub(crate) fn from_parts(parts: &mut Parts) -> Option<Self> {
        let h = &parts.headers;
        let ok = parts.method == Method::GET
            && has_token(h, header::CONNECTION, "upgrade")
            && has_token(h, header::UPGRADE, "websocket")
            && h.get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        if !ok {
            return None;
        }
        let key = h.get(header::SEC_WEBSOCKET_KEY)?.clone();
        let offered = h.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
        let extensions = h
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .cloned()
            .collect();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
        Some(Self {
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
