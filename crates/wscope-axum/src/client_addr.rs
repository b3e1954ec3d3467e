//! The client's address: the TCP peer, or what a *trusted* proxy says in `Forwarded`,
//! `X-Forwarded-For` or `X-Real-IP`. Headers from any other peer are ignored, so a client cannot
//! spoof its address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed (default: loopback).
#[derive(Clone, Debug)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl Default for TrustedProxies {
    fn default() -> Self {
        Self::new([
            IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap_or_default(),
            IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
        ])
    }
}

impl FromStr for TrustedProxies {
    type Err = ipnet::AddrParseError;

    /// Parses a comma-separated list of CIDRs or bare addresses (`10.0.0.0/8, ::1`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nets = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(parse_net)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(nets))
    }
}

/// Parses `10.0.0.0/8`, or a bare address as a single-host network.
pub fn parse_net(s: &str) -> Result<IpNet, ipnet::AddrParseError> {
    match s.parse::<IpNet>() {
        Ok(net) => Ok(net),
        Err(e) => s.parse::<IpAddr>().map(IpNet::from).map_err(|_| e),
    }
}

impl TrustedProxies {
    /// Trusts exactly these networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().collect())
    }

    /// Trusts no proxy: the TCP peer is always the client.
    pub fn none() -> Self {
        Self::new([])
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The networks trusted.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// The client address for a request from `peer` with `headers`.
    ///
    /// When the peer is trusted, the forwarding chain (first `Forwarded`, else `X-Forwarded-For`,
    /// else `X-Real-IP`) is walked from the right, skipping trusted proxies; the first untrusted
    /// hop is the client. Otherwise the peer itself is the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        for hop in chain.iter().rev() {
            if !self.contains(*hop) {
                return *hop;
            }
        }
        chain.first().copied().unwrap_or(peer)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The addresses a proxy chain reports, client first.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value))?
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_hop)
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_hop)
        .into_iter()
        .collect()
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`. Obfuscated
/// identifiers (`unknown`, `_hidden`) give `None`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let t = TrustedProxies::default();
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_chain_walks_from_the_right() {
        let t: TrustedProxies = "127.0.0.0/8, 10.0.0.0/8".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_beats_xff_and_parses_ipv6() {
        let t = TrustedProxies::default();
        let h = headers(&[
            ("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(t.client_ip(ip("::1"), &h), ip("2001:db8:cafe::17"));
    }

    #[test]
    fn real_ip_and_mapped_addresses() {
        let t = TrustedProxies::default();
        let h = headers(&[("x-real-ip", "192.0.2.44")]);
        assert_eq!(t.client_ip(ip("::ffff:127.0.0.1"), &h), ip("192.0.2.44"));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn bad_list_is_an_error() {
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("nonsense".parse::<TrustedProxies>().is_err());
        assert_eq!(
            "192.0.2.1"
                .parse::<TrustedProxies>()
                .unwrap()
                .networks()
                .len(),
            1
        );
    }
}
