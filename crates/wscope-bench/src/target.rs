//! The `--url` a run drives (and broadcast's `--sender-url`): parsed once, checked to point at
//! this machine (loopback only).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio_tungstenite::tungstenite::http::Uri;

use crate::error::BenchError;

/// A parsed `ws://` URL and the loopback socket address it names.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given: the handshake request is built from it (Host header, path).
    pub(crate) url: String,
    /// Where to connect; always a loopback address.
    pub(crate) addr: SocketAddr,
}

impl Target {
    /// Parses `url`, given by `flag` (named in any error), refusing anything that is not `ws://`
    /// on 127.0.0.0/8, `::1` or `localhost`: a load generator must never be pointed at another
    /// machine by mistake.
    pub(crate) fn parse(flag: &'static str, url: &str) -> Result<Self, BenchError> {
        let bad = |reason: &str| BenchError::Url {
            flag,
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| bad("not a URL; use ws://127.0.0.1:8080/ws"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err(bad("wss:// is not supported; use ws://")),
            _ => return Err(bad("the scheme must be ws://")),
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| BenchError::NotLoopback {
                    flag,
                    url: url.to_owned(),
                })?
        };
        if !ip.is_loopback() {
            return Err(BenchError::NotLoopback {
                flag,
                url: url.to_owned(),
            });
        }
        Ok(Self {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_only() {
        let t = Target::parse("--url", "ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            Target::parse("--url", "ws://localhost/ws").unwrap().addr,
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            Target::parse("--url", "ws://[::1]:9/x").unwrap().addr,
            "[::1]:9".parse().unwrap()
        );
        assert!(Target::parse("--url", "ws://127.3.4.5:1/").is_ok());
        for url in [
            "ws://10.0.0.1/ws",
            "ws://example.com/ws",
            "ws://[2001:db8::1]/",
        ] {
            let e = Target::parse("--url", url).unwrap_err();
            assert!(matches!(e, BenchError::NotLoopback { .. }), "{url}: {e}");
            assert!(e.to_string().starts_with("--url "), "{e}");
        }
        let e = Target::parse("--sender-url", "ws://10.0.0.1/ws/chat").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--sender-url ws://10.0.0.1/ws/chat: only loopback targets are allowed \
             (127.0.0.0/8, ::1, localhost)"
        );
        let e = Target::parse("--sender-url", "http://127.0.0.1/").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--sender-url http://127.0.0.1/: the scheme must be ws://"
        );
        assert!(matches!(
            Target::parse("--url", "wss://127.0.0.1/"),
            Err(BenchError::Url { .. })
        ));
        assert!(matches!(
            Target::parse("--url", "http://127.0.0.1/"),
            Err(BenchError::Url { .. })
        ));
    }
}
