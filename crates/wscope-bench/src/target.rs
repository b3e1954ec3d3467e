//! The `--url` a run drives: parsed once, checked to point at this machine (loopback only).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio_tungstenite::tungstenite::http::Uri;

use crate::BenchError;

/// A parsed `ws://` URL and the loopback socket address it names.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given: the handshake request is built from it (Host header, path).
    pub(crate) url: String,
    /// Where to connect; always a loopback address.
    pub(crate) addr: SocketAddr,
}

impl Target {
    /// Parses `url`, refusing anything that is not `ws://` on 127.0.0.0/8, `::1` or `localhost`:
    /// a load generator must never be pointed at another machine by mistake.
    pub(crate) fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = |reason: &str| BenchError::Url {
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
                    url: url.to_owned(),
                })?
        };
        if !ip.is_loopback() {
            return Err(BenchError::NotLoopback {
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
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            Target::parse("ws://localhost/ws").unwrap().addr,
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            Target::parse("ws://[::1]:9/x").unwrap().addr,
            "[::1]:9".parse().unwrap()
        );
        assert!(Target::parse("ws://127.3.4.5:1/").is_ok());
        for url in [
            "ws://10.0.0.1/ws",
            "ws://example.com/ws",
            "ws://[2001:db8::1]/",
        ] {
            let e = Target::parse(url).unwrap_err();
            assert!(matches!(e, BenchError::NotLoopback { .. }), "{url}: {e}");
            assert!(e.to_string().starts_with("--url "), "{e}");
        }
        assert!(matches!(
            Target::parse("wss://127.0.0.1/"),
            Err(BenchError::Url { .. })
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1/"),
            Err(BenchError::Url { .. })
        ));
    }
}
