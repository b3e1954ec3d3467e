//! The server side of the HTTP/1.1 WebSocket handshake (RFC 6455 §4.2): checks the request's
//! head and builds the 101 response, so that any engine can take over the upgraded connection
//! (the HTTP server, axum's or another, hands it over). The extensions offered are kept for the
//! permessage-deflate negotiation (RFC 7692), whose answer joins the 101.

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Version};

use super::{accept_key, has_token, is_valid_key};
use crate::deflate::Deflate;

/// An acceptable upgrade request: its key and the subprotocols and extensions it offers.
#[derive(Debug)]
pub struct ServerHandshake {
    key: HeaderValue,
    /// `Sec-WebSocket-Protocol` as sent: the client's subprotocols, in its order of preference.
    offered: Option<HeaderValue>,
    /// `Sec-WebSocket-Extensions` as sent (each header): the extensions the client offers.
    extensions: Vec<HeaderValue>,
}

/// What an upgrade request turned out to be.
#[derive(Debug)]
pub enum Attempt {
    /// Not a WebSocket upgrade (or a version other than 13, which gets 426 naming 13).
    NotUpgrade,
    /// It asks for a WebSocket upgrade but cannot have one: 400, counted as an invalid handshake.
    Invalid(&'static str),
    /// A valid handshake.
    Valid(ServerHandshake),
}

impl ServerHandshake {
    /// What the request whose head is `parts` asks for.
    pub fn check(parts: &Parts) -> Attempt {
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
        Attempt::Valid(Self {
            key,
            offered: h.get(header::SEC_WEBSOCKET_PROTOCOL).cloned(),
            extensions: h
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .cloned()
                .collect(),
        })
    }

    /// The permessage-deflate agreement, if the client offers one wscope accepts.
    pub fn deflate(&self) -> Option<Deflate> {
        Deflate::negotiate(&self.extensions)
    }

    /// The first subprotocol the client offers that the server `supports` (the client's order
    /// of preference decides, as in axum).
    pub fn choose_protocol(&self, supports: &[String]) -> Option<String> {
        let offered = self.offered.as_ref()?.to_str().ok()?;
        offered
            .split(',')
            .map(str::trim)
            .find(|p| supports.iter().any(|s| s == p))
            .map(str::to_owned)
    }

    /// `101 Switching Protocols` with the accept key, the chosen subprotocol and the
    /// permessage-deflate answer when `deflate` was agreed.
    pub fn response(&self, protocol: Option<&str>, deflate: Option<&Deflate>) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers: &mut HeaderMap = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_bytes(&accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        if let Some(agreed) = deflate {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, agreed.response());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::get("/ws");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_valid_request_gets_the_accept_key_and_the_chosen_subprotocol() {
        let parts = parts(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "b, a"),
        ]);
        let Attempt::Valid(handshake) = ServerHandshake::check(&parts) else {
            panic!("valid")
        };
        let protocol = handshake.choose_protocol(&["a".into(), "b".into()]);
        assert_eq!(protocol.as_deref(), Some("b"), "the client's order");
        let response = handshake.response(protocol.as_deref(), None);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let accept = &response.headers()[header::SEC_WEBSOCKET_ACCEPT];
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_bad_key_is_invalid_and_another_version_no_upgrade() {
        let base = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
        ];
        let short = [&base[..], &[("sec-websocket-key", "dGhl")]].concat();
        assert!(matches!(
            ServerHandshake::check(&parts(&short)),
            Attempt::Invalid(_)
        ));
        let v8 = [&base[..2], &[("sec-websocket-version", "8")]].concat();
        assert!(matches!(
            ServerHandshake::check(&parts(&v8)),
            Attempt::NotUpgrade
        ));
    }
}
