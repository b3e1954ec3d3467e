//! The client's address: the TCP peer, or what a *trusted* proxy says in the one forwarding
//! header configured ([`ClientIpHeader`]: `X-Forwarded-For` by default, `Forwarded` or
//! `X-Real-IP`). Headers from any other peer are ignored, and other forwarding headers always
//! are: a proxy passes on whatever a client wrote in the headers it does not set itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::{IpNet, Ipv4Net};

/// The forwarding header the trusted proxies set: the only one read. Pick the one your proxy
/// *writes* (overwriting or appending to what the client sent), never one it passes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx's `$proxy_add_x_forwarded_for`, most
    /// load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
    /// `X-Real-IP: client` (nginx's `proxy_set_header X-Real-IP $remote_addr`).
    XRealIp,
}

impl ClientIpHeader {
    /// Every header, in the order `--help` lists them.
    pub const ALL: &'static [ClientIpHeader] = &[
        ClientIpHeader::XForwardedFor,
        ClientIpHeader::Forwarded,
        ClientIpHeader::XRealIp,
    ];

    /// The header's name, lowercase (`x-forwarded-for`): what `--client-ip-header` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::XRealIp => "x-real-ip",
        }
    }

    /// The hops this header lists, client first; `None` for a hop that is not an address
    /// (`unknown`, `_hidden`, garbage, a `Forwarded` element without `for=`).
    fn hops(self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let values = headers.get_all(self.as_str()).into_iter();
        // A value that is not text is one hop that cannot be read, not one to skip.
        let elements = values.flat_map(|v| match v.to_str() {
            Ok(text) => text.split(',').map(Some).collect::<Vec<_>>(),
            Err(_) => vec![None],
        });
        match self {
            Self::Forwarded => elements
                .map(|element| {
                    element?.split(';').find_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        key.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_hop(value))
                    })?
                })
                .collect(),
            Self::XForwardedFor | Self::XRealIp => {
                elements.map(|element| parse_hop(element?)).collect()
            }
        }
    }
}

impl FromStr for ClientIpHeader {
    type Err = String;

    /// The header's name, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|h| h.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown client IP header {s:?}: use x-forwarded-for, forwarded or x-real-ip"
                )
            })
    }
}

impl std::fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The proxies whose forwarding header is believed (default: loopback, `X-Forwarded-For`).
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    /// IPv4-mapped IPv6 networks are held as IPv4 ones, as peers are compared.
    nets: Arc<[IpNet]>,
    /// The one header read.
    header: ClientIpHeader,
}

/// IPv4 loopback, `127.0.0.0/8`. A constant, checked when the crate is compiled: a network built
/// at run time would need a fallback for a failed conversion, and the one there was
/// (`Ipv4Net::default()`, `0.0.0.0/0`) trusted every peer.
const LOOPBACK_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// Every IPv4 address, `0.0.0.0/0`: what a trusted IPv6 network holding every IPv4-mapped
/// address (`::/0`) trusts of IPv4.
const ALL_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

impl Default for TrustedProxies {
    /// Loopback only: `127.0.0.0/8` and `::1`.
    fn default() -> Self {
        Self::new([
            IpNet::V4(LOOPBACK_V4),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ])
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

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

pub use wscope_core::units::parse_net;

impl TrustedProxies {
    /// Trusts exactly these networks, reading `X-Forwarded-For`. An IPv4-mapped network
    /// (`::ffff:127.0.0.0/104`) is taken as the IPv4 one it maps (`127.0.0.0/8`), since a
    /// mapped peer is compared as IPv4; a wider IPv6 network that holds every mapped address
    /// (`::/0`) trusts all of IPv4 too.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().flat_map(canonical_net).collect(),
            header: ClientIpHeader::default(),
        }
    }

    /// Trusts no proxy: the TCP peer is always the client.
    pub fn none() -> Self {
        Self::new([])
    }

    /// Reads `header` instead of `X-Forwarded-For`.
    pub fn header(mut self, header: ClientIpHeader) -> Self {
        self.header = header;
        self
    }

    /// The header read.
    pub fn client_ip_header(&self) -> ClientIpHeader {
        self.header
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The networks trusted (IPv4-mapped ones as IPv4).
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    /// The client address for a request from `peer` with `headers`.
    ///
    /// From an untrusted peer, the peer. From a trusted one, the configured header's hops are
    /// walked from the right (the nearest proxy's entry first): a trusted hop is passed, the
    /// first untrusted one is the client. A hop that is not an address ends the walk, and the
    /// client is then the last trusted hop (the proxy that could not say whom it talked to):
    /// nothing left of it can be believed. When every hop is trusted the leftmost is the
    /// client; with no header, the peer. Other forwarding headers are never read.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut nearest = peer;
        for hop in self.header.hops(headers).into_iter().rev() {
            match hop {
                None => break,
                Some(ip) if !self.contains(ip) => return ip,
                Some(ip) => nearest = ip,
            }
        }
        nearest
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

/// A trusted network as peers are compared: a mapped network as IPv4; a wider IPv6 one that
/// holds every mapped address also as all of IPv4.
fn canonical_net(net: IpNet) -> Vec<IpNet> {
    let IpNet::V6(v6) = net.trunc() else {
        return vec![net.trunc()];
    };
    let mapped_block = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
    if v6.prefix_len() >= 96 {
        let v4 = v6
            .network()
            .to_ipv4_mapped()
            .and_then(|v4| Ipv4Net::new(v4, v6.prefix_len() - 96).ok());
        if let Some(v4) = v4 {
            return vec![IpNet::V4(v4)];
        }
    } else if v6.contains(&mapped_block) {
        return vec![IpNet::V6(v6), IpNet::V4(ALL_V4)];
    }
    vec![IpNet::V6(v6)]
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`. Obfuscated
/// identifiers (`unknown`, `_hidden`) and anything else give `None`.
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
    fn forwarded_is_read_only_when_chosen_and_parses_ipv6() {
        let h = headers(&[
            ("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        let t = TrustedProxies::default();
        assert_eq!(t.client_ip(ip("::1"), &h), ip("198.51.100.1"));
        let t = t.header(ClientIpHeader::Forwarded);
        assert_eq!(t.client_ip(ip("::1"), &h), ip("2001:db8:cafe::17"));
    }

    #[test]
    fn real_ip_and_mapped_addresses() {
        let t = TrustedProxies::default().header(ClientIpHeader::XRealIp);
        let h = headers(&[("x-real-ip", "192.0.2.44")]);
        assert_eq!(t.client_ip(ip("::ffff:127.0.0.1"), &h), ip("192.0.2.44"));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_spoofed_forwarded_header_beside_the_proxys_xff_is_ignored() {
        // A client sends its own `Forwarded`; the proxy appends to X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        let t = TrustedProxies::default();
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn the_walk_stops_at_the_first_hop_it_cannot_parse() {
        let t: TrustedProxies = "127.0.0.0/8, 10.0.0.0/8".parse().unwrap();
        // Left of `unknown` is whatever the client wrote: never believed.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, unknown, 10.0.0.2")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.2"));
        let h = headers(&[("x-forwarded-for", "6.6.6.6, _hidden")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let h = headers(&[("x-forwarded-for", "6.6.6.6,,10.0.0.2")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.2"));
        // A `Forwarded` element without `for=` cannot be read either.
        let t = t.header(ClientIpHeader::Forwarded);
        let h = headers(&[("forwarded", "for=6.6.6.6, proto=https, for=10.0.0.3")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.3"));
    }

    #[test]
    fn the_walk_never_falls_through_to_another_header() {
        let t = TrustedProxies::default();
        // The chosen header is unreadable or absent: the peer, not another header's word.
        let h = headers(&[("x-forwarded-for", "unknown"), ("x-real-ip", "6.6.6.6")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let h = headers(&[("forwarded", "for=6.6.6.6"), ("x-real-ip", "6.6.6.7")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let real = t.header(ClientIpHeader::XRealIp);
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(real.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_trusted_networks_are_taken_as_ipv4() {
        let t: TrustedProxies = "::ffff:127.0.0.0/104, ::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            t.networks(),
            [
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "10.1.2.3/32".parse().unwrap()
            ]
        );
        let h = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        assert_eq!(t.client_ip(ip("::ffff:10.1.2.3"), &h), ip("203.0.113.5"));
        // A network holding every mapped address holds all of IPv4.
        let all: TrustedProxies = "::/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        assert!(all.contains(ip("2001:db8::1")));
        // Other IPv6 networks stay as they are.
        let v6: TrustedProxies = "2001:db8::/32".parse().unwrap();
        assert!(!v6.contains(ip("192.0.2.1")));
    }

    /// No fallback widens trust: the defaults are exactly loopback, and nothing else is believed.
    #[test]
    fn the_default_trusts_loopback_and_nothing_else() {
        let t = TrustedProxies::default();
        assert_eq!(
            t.networks(),
            [
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        for peer in [
            "0.0.0.0",
            "10.0.0.1",
            "128.0.0.1",
            "203.0.113.9",
            "::2",
            "2001:db8::1",
        ] {
            assert!(!t.contains(ip(peer)), "{peer} trusted");
            assert_eq!(
                t.client_ip(ip(peer), &h),
                ip(peer),
                "{peer}'s header believed"
            );
        }
        for peer in ["127.0.0.1", "127.255.255.254", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(t.client_ip(ip(peer), &h), ip("6.6.6.6"), "{peer}");
        }
        assert_eq!(
            ALL_V4.prefix_len(),
            0,
            "only ::/0-like networks map to all of IPv4"
        );
    }

    #[test]
    fn header_names_parse_in_any_case() {
        assert_eq!("X-Real-IP".parse(), Ok(ClientIpHeader::XRealIp));
        assert_eq!("forwarded".parse(), Ok(ClientIpHeader::Forwarded));
        assert!("x-client-ip".parse::<ClientIpHeader>().is_err());
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
