//! The headers a reverse proxy sends on and brings back: hop-by-hop headers removed (RFC 9110
//! §7.6.1, and the WebSocket handshake headers each hop negotiates itself), the forwarding
//! headers (`X-Forwarded-*` and RFC 7239 `Forwarded`) added.

use std::fmt::Write as _;
use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// What a proxy knows of the request it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding<'a> {
    /// The client's address, if known (the peer, or what trusted proxies in front said).
    pub client: Option<IpAddr>,
    /// The scheme the client used to reach the proxy: `"http"` or `"https"`.
    pub proto: &'a str,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection` that old clients still send).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The WebSocket handshake headers each hop negotiates on its own (its key, version,
/// extensions and accept). `Sec-WebSocket-Protocol` is the application's and passes.
const PER_HOP_WEBSOCKET: [HeaderName; 4] = [
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_ACCEPT,
];

/// `X-Forwarded-For`: the chain of client addresses.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the client asked for.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The headers to send upstream: `incoming` without hop-by-hop headers (Connection, the
/// headers Connection names, Keep-Alive, Proxy-Connection, Proxy-Authenticate,
/// Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade) nor the per-hop WebSocket
/// handshake headers (Sec-WebSocket-Key, -Version, -Extensions, -Accept), with
/// X-Forwarded-For (client appended to any existing list), X-Forwarded-Proto, X-Forwarded-Host
/// (the incoming Host) and Forwarded (RFC 7239: for=…;proto=…;host=…, IPv6 quoted and
/// bracketed, appended) added. End-to-end headers (Cookie, Authorization, Origin, User-Agent,
/// Sec-WebSocket-Protocol, …) are kept as they are. Host is NOT kept (the caller sets the
/// upstream's).
///
/// X-Forwarded-Proto and X-Forwarded-Host replace any the client sent; X-Forwarded-For and
/// Forwarded keep what came and add this hop as one more element, in one field line each.
/// Without a client address X-Forwarded-For is left as it came and Forwarded says
/// `for=unknown`; an IPv4-mapped IPv6 client is named as IPv4; without an incoming Host there
/// is no X-Forwarded-Host nor `host=`.
///
/// ```
/// use axum::http::HeaderMap;
/// use wscope_axum::{forward_headers, Forwarding};
///
/// let mut incoming = HeaderMap::new();
/// incoming.insert("host", "example.com".parse().unwrap());
/// incoming.insert("connection", "keep-alive, x-secret".parse().unwrap());
/// incoming.insert("x-secret", "hop".parse().unwrap());
/// incoming.insert("cookie", "a=1".parse().unwrap());
/// let fwd = Forwarding { client: Some("2001:db8::1".parse().unwrap()), proto: "https" };
/// let out = forward_headers(&incoming, &fwd);
/// assert!(out.get("host").is_none() && out.get("x-secret").is_none());
/// assert_eq!(out["cookie"], "a=1");
/// assert_eq!(out["x-forwarded-for"], "2001:db8::1");
/// assert_eq!(out["forwarded"], r#"for="[2001:db8::1]";proto=https;host=example.com"#);
/// ```
pub fn forward_headers(incoming: &HeaderMap, fwd: &Forwarding<'_>) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    let host = headers.remove(header::HOST);
    // An IPv4 client seen through a dual-stack socket is named as IPv4.
    let fwd = &Forwarding {
        client: fwd.client.map(|ip| ip.to_canonical()),
        proto: fwd.proto,
    };
    if let Some(client) = fwd.client {
        let chain = appended(&headers, &X_FORWARDED_FOR, &client.to_string());
        set(&mut headers, X_FORWARDED_FOR, chain);
    }
    let proto = HeaderValue::from_str(fwd.proto).ok();
    set(&mut headers, X_FORWARDED_PROTO, proto);
    set(&mut headers, X_FORWARDED_HOST, host.clone());
    let element = forwarded_element(fwd, host.as_ref());
    let forwarded = appended(&headers, &header::FORWARDED, &element);
    set(&mut headers, header::FORWARDED, forwarded);
    headers
}

/// The same removal for a response coming back (or any message crossing a hop): the
/// hop-by-hop headers, the headers `Connection` names, and the per-hop WebSocket handshake
/// headers are dropped from `headers`; everything else is left as it is.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named
        .iter()
        .chain(HOP_BY_HOP.iter())
        .chain(PER_HOP_WEBSOCKET.iter())
    {
        headers.remove(name);
    }
}

/// Every value of `name` in `headers`, as one comma-separated list, with `last` appended (the
/// values' bytes kept as they came). `None` if `last` is no valid header value.
fn appended(headers: &HeaderMap, name: &HeaderName, last: &str) -> Option<HeaderValue> {
    let mut list = Vec::new();
    for value in headers.get_all(name) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            list.extend_from_slice(value);
            list.extend_from_slice(b", ");
        }
    }
    list.extend_from_slice(last.as_bytes());
    HeaderValue::from_bytes(&list).ok()
}

/// Replaces `name` with `value`, or removes it if there is none.
fn set(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(value) => {
            headers.insert(name, value);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// This hop's element of `Forwarded`: `for=…;proto=…;host=…` (RFC 7239 §4).
fn forwarded_element(fwd: &Forwarding<'_>, host: Option<&HeaderValue>) -> String {
    let mut element = String::from("for=");
    match fwd.client {
        // §6: an IPv6 address is bracketed, and so must be quoted (":" is no token character).
        Some(IpAddr::V6(ip)) => {
            let _ = write!(element, "\"[{ip}]\"");
        }
        Some(IpAddr::V4(ip)) => {
            let _ = write!(element, "{ip}");
        }
        None => element.push_str("unknown"),
    }
    element.push_str(";proto=");
    push_value(&mut element, fwd.proto);
    if let Some(host) = host.and_then(|host| host.to_str().ok()) {
        element.push_str(";host=");
        push_value(&mut element, host);
    }
    element
}

/// Appends `value` as a token if it is one, else as a quoted string (RFC 7230 §3.2.6).
fn push_value(out: &mut String, value: &str) {
    if !value.is_empty() && value.bytes().all(is_tchar) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Whether `b` is a token character (RFC 7230 §3.2.6 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn v4() -> Forwarding<'static> {
        Forwarding {
            client: Some("192.0.2.7".parse().unwrap()),
            proto: "http",
        }
    }

    fn get<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
        map.get(name).map(|v| v.to_str().unwrap())
    }

    /// Forwards `pairs` and checks that each of `dropped` is gone and `kept` passed.
    fn assert_drops(pairs: &[(&str, &str)], dropped: &[HeaderName], kept: (&str, &str)) {
        let out = forward_headers(&headers(pairs), &v4());
        for name in dropped {
            assert!(out.get(name).is_none(), "{name} forwarded");
        }
        assert_eq!(get(&out, kept.0), Some(kept.1));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let pairs = [
            ("connection", "keep-alive, Upgrade"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("accept", "text/html"),
        ];
        assert_drops(&pairs, &HOP_BY_HOP, ("accept", "text/html"));
    }

    #[test]
    fn headers_named_by_connection_are_dropped() {
        let incoming = headers(&[
            ("connection", "X-Hop-One"),
            ("connection", " x-hop-two ,close"),
            ("x-hop-one", "1"),
            ("x-hop-two", "2"),
            ("x-end-to-end", "3"),
        ]);
        let out = forward_headers(&incoming, &v4());
        assert!(out.get("x-hop-one").is_none());
        assert!(out.get("x-hop-two").is_none());
        assert_eq!(get(&out, "x-end-to-end"), Some("3"));
    }

    #[test]
    fn per_hop_websocket_headers_are_dropped_but_the_protocol_kept() {
        let pairs = [
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-extensions", "permessage-deflate"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("sec-websocket-protocol", "chat, superchat"),
        ];
        let kept = ("sec-websocket-protocol", "chat, superchat");
        assert_drops(&pairs, &PER_HOP_WEBSOCKET, kept);
    }

    #[test]
    fn end_to_end_headers_are_kept_as_they_are() {
        let pairs = [
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("authorization", "Bearer t0k3n"),
            ("origin", "https://app.example"),
            ("user-agent", "test/1.0"),
            ("content-length", "12"),
            ("content-type", "application/json"),
        ];
        let out = forward_headers(&headers(&pairs), &v4());
        let cookies: Vec<_> = out.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        for (name, value) in &pairs[2..] {
            assert_eq!(get(&out, name), Some(*value), "{name}");
        }
    }

    #[test]
    fn host_is_not_kept_but_becomes_x_forwarded_host() {
        let incoming = headers(&[("host", "example.com:8080")]);
        let out = forward_headers(&incoming, &v4());
        assert!(out.get("host").is_none());
        assert_eq!(get(&out, "x-forwarded-host"), Some("example.com:8080"));
    }

    #[test]
    fn x_forwarded_for_appends_the_client_to_the_list() {
        let incoming = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2, 10.0.0.1"),
        ]);
        let out = forward_headers(&incoming, &v4());
        let all: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["203.0.113.1, 198.51.100.2, 10.0.0.1, 192.0.2.7"]);
        let fresh = forward_headers(&HeaderMap::new(), &v4());
        assert_eq!(get(&fresh, "x-forwarded-for"), Some("192.0.2.7"));
    }

    #[test]
    fn listed_values_keep_their_bytes() {
        let mut incoming = HeaderMap::new();
        let opaque = HeaderValue::from_bytes(b"for=\"caf\xe9\"").unwrap();
        incoming.insert(header::FORWARDED, opaque);
        let out = forward_headers(&incoming, &v4());
        assert_eq!(
            out[header::FORWARDED].as_bytes(),
            b"for=\"caf\xe9\", for=192.0.2.7;proto=http"
        );
    }

    #[test]
    fn without_a_client_x_forwarded_for_passes_and_forwarded_says_unknown() {
        let incoming = headers(&[("x-forwarded-for", "203.0.113.1")]);
        let fwd = Forwarding {
            client: None,
            proto: "http",
        };
        let out = forward_headers(&incoming, &fwd);
        assert_eq!(get(&out, "x-forwarded-for"), Some("203.0.113.1"));
        assert_eq!(get(&out, "forwarded"), Some("for=unknown;proto=http"));
    }

    #[test]
    fn x_forwarded_proto_and_host_replace_what_the_client_sent() {
        let incoming = headers(&[
            ("host", "real.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
        ]);
        let out = forward_headers(&incoming, &v4());
        assert_eq!(get(&out, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&out, "x-forwarded-host"), Some("real.example"));
        let hostless = headers(&[("x-forwarded-host", "spoofed.example")]);
        let out = forward_headers(&hostless, &v4());
        assert!(out.get("x-forwarded-host").is_none());
    }

    #[test]
    fn forwarded_names_client_proto_and_host() {
        let incoming = headers(&[("host", "example.com")]);
        let out = forward_headers(&incoming, &v4());
        assert_eq!(
            get(&out, "forwarded"),
            Some("for=192.0.2.7;proto=http;host=example.com")
        );
    }

    #[test]
    fn forwarded_quotes_and_brackets_ipv6_and_quotes_a_host_with_a_port() {
        let incoming = headers(&[("host", "[::1]:8080")]);
        let fwd = Forwarding {
            client: Some("2001:db8:cafe::17".parse().unwrap()),
            proto: "https",
        };
        let out = forward_headers(&incoming, &fwd);
        assert_eq!(
            get(&out, "forwarded"),
            Some(r#"for="[2001:db8:cafe::17]";proto=https;host="[::1]:8080""#)
        );
    }

    #[test]
    fn an_ipv4_mapped_client_is_named_as_ipv4() {
        let fwd = Forwarding {
            client: Some("::ffff:192.0.2.9".parse().unwrap()),
            proto: "http",
        };
        let out = forward_headers(&HeaderMap::new(), &fwd);
        assert_eq!(get(&out, "x-forwarded-for"), Some("192.0.2.9"));
        assert_eq!(get(&out, "forwarded"), Some("for=192.0.2.9;proto=http"));
    }

    #[test]
    fn forwarded_appends_to_an_existing_list() {
        let incoming = headers(&[
            ("forwarded", "for=203.0.113.1;proto=https"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        let out = forward_headers(&incoming, &v4());
        let all: Vec<_> = out.get_all("forwarded").iter().collect();
        assert_eq!(
            all,
            ["for=203.0.113.1;proto=https, for=198.51.100.2, for=192.0.2.7;proto=http"]
        );
    }

    #[test]
    fn quoted_values_escape_quotes_and_backslashes() {
        let mut out = String::new();
        push_value(&mut out, r#"a"b\c"#);
        assert_eq!(out, r#""a\"b\\c""#);
        let mut token = String::new();
        push_value(&mut token, "example.com");
        assert_eq!(token, "example.com");
    }

    #[test]
    fn strip_hop_by_hop_cleans_a_response() {
        let mut response = headers(&[
            ("connection", "keep-alive, x-upstream-hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-upstream-hop", "1"),
            ("set-cookie", "s=1"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut response);
        let names: Vec<_> = response.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["set-cookie", "content-type"]);
    }
}
