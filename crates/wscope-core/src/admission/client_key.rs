//! [`ClientKey`]: a client as every per-address limit counts it — its IPv4 address, or the IPv6
//! network of [`Ipv6Prefix`] bits (a /64 by default) that holds its IPv6 address. One host
//! commonly holds a whole /64 (SLAAC, privacy addresses) and may send from any address in it, so
//! limits that counted each IPv6 address alone let it pass them 2^64 times over.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv6Net};

/// How many leading bits of an IPv6 address name one client for per-address limits, rates and
/// bans: 48 to 128, 64 by default (`128` counts each address alone).
///
/// ```
/// use wscope_core::Ipv6Prefix;
/// assert_eq!(Ipv6Prefix::default().len(), 64);
/// assert_eq!("/56".parse::<Ipv6Prefix>().unwrap().len(), 56);
/// assert!("47".parse::<Ipv6Prefix>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix(u8);

/// A prefix length that is not a number from 48 to 128.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv6 prefix {0:?}: use a length from 48 to 128 (64 groups each /64)")]
pub struct InvalidIpv6Prefix(pub String);

impl Ipv6Prefix {
    /// The shortest prefix: a /48 is what a site is usually given; shorter would put unrelated
    /// clients in one group.
    pub const MIN: u8 = 48;
    /// The longest: each IPv6 address alone.
    pub const MAX: u8 = 128;
    /// The default, a /64: the smallest network a host is given.
    pub const DEFAULT: Self = Self(64);

    /// `len` bits, or `None` outside 48–128.
    pub const fn new(len: u8) -> Option<Self> {
        if len >= Self::MIN && len <= Self::MAX {
            Some(Self(len))
        } else {
            None
        }
    }

    /// The length in bits.
    #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection
    pub const fn len(self) -> u8 {
        self.0
    }

    /// `net` as bans see it: an IPv6 network longer than the prefix (a single address, a /100)
    /// widened to the group that holds it, since its host can move anywhere in the group;
    /// others (IPv4, shorter IPv6 networks) unchanged. `net` is already canonical.
    pub(crate) fn widen(self, net: IpNet) -> IpNet {
        match net {
            IpNet::V6(v6) if v6.prefix_len() > self.0 => {
                IpNet::V6(Ipv6Net::new_assert(v6.network(), self.0).trunc())
            }
            other => other,
        }
    }
}

impl Default for Ipv6Prefix {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for Ipv6Prefix {
    type Err = InvalidIpv6Prefix;

    /// `64` or `/64`.
    fn from_str(text: &str) -> Result<Self, InvalidIpv6Prefix> {
        let t = text.trim();
        t.strip_prefix('/')
            .unwrap_or(t)
            .parse::<u8>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| InvalidIpv6Prefix(text.to_owned()))
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client as per-address limits count it: an IPv4 address (an IPv4-mapped IPv6 address counts
/// as the IPv4 one it carries), or the IPv6 network of an [`Ipv6Prefix`] that holds an IPv6
/// address. The connection caps, the handshake rate and bans all key on it; build one for the
/// same grouping elsewhere with [`ClientKey::new`] or [`crate::Registry::client_key`].
///
/// ```
/// use std::net::IpAddr;
/// use wscope_core::{ClientKey, Ipv6Prefix};
/// let key = |ip: &str| ClientKey::new(ip.parse::<IpAddr>().unwrap(), Ipv6Prefix::default());
/// assert_eq!(key("2001:db8:1:2::7"), key("2001:db8:1:2:ffff::1"));
/// assert_ne!(key("2001:db8:1:2::7"), key("2001:db8:1:3::7"));
/// assert_eq!(key("2001:db8:1:2::7").to_string(), "2001:db8:1:2::/64");
/// assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
/// assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1/32");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    /// The network's first address.
    addr: IpAddr,
    /// 32 for IPv4; the grouping's length for IPv6.
    prefix_len: u8,
}

impl ClientKey {
    /// The key of `ip` with IPv6 addresses grouped by `prefix`.
    pub fn new(ip: IpAddr, prefix: Ipv6Prefix) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self {
                addr: IpAddr::V4(v4),
                prefix_len: 32,
            },
            IpAddr::V6(v6) => Self {
                addr: IpAddr::V6(mask(v6, prefix.0)),
                prefix_len: prefix.0,
            },
        }
    }

    /// The key of `net` if `net` is exactly one group (an IPv4 /32, an IPv6 network of the
    /// prefix's length), else `None`. `net` is canonical and truncated.
    pub(crate) fn of_net(net: IpNet, prefix: Ipv6Prefix) -> Option<Self> {
        let whole = match net {
            IpNet::V4(v4) => v4.prefix_len() == 32,
            IpNet::V6(v6) => v6.prefix_len() == prefix.0,
        };
        whole.then(|| Self::new(net.network(), prefix))
    }

    /// The addresses this key stands for: `192.0.2.1/32`, `2001:db8:1:2::/64`.
    pub fn network(&self) -> IpNet {
        match self.addr {
            IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
            IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new_assert(v6, self.prefix_len)),
        }
    }

    /// Whether `ip` (in any form, IPv4-mapped or not) has this key.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.network().contains(&ip.to_canonical())
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.network(), f)
    }
}

/// The first `bits` bits of `addr`, the rest zero.
fn mask(addr: Ipv6Addr, bits: u8) -> Ipv6Addr {
    let keep = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
    Ipv6Addr::from(u128::from(addr) & keep)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn prefix(len: u8) -> Ipv6Prefix {
        Ipv6Prefix::new(len).unwrap()
    }

    #[test]
    fn prefixes_are_48_to_128() {
        assert_eq!(Ipv6Prefix::new(47), None);
        assert_eq!(Ipv6Prefix::new(129), None);
        assert_eq!("128".parse(), Ok(prefix(128)));
        assert_eq!(" /48 ".parse(), Ok(prefix(48)));
        for bad in ["", "/", "64/", "0", "300", "-64", "sixty-four"] {
            let err = bad.parse::<Ipv6Prefix>().unwrap_err().to_string();
            assert!(err.starts_with("invalid IPv6 prefix"), "{bad}: {err}");
        }
        assert_eq!(Ipv6Prefix::default().to_string(), "64");
    }

    #[test]
    fn ipv6_addresses_group_by_prefix_and_ipv4_stays_alone() {
        let p64 = Ipv6Prefix::default();
        let a = ClientKey::new(ip("2001:db8:1:2:aaaa::1"), p64);
        assert_eq!(a, ClientKey::new(ip("2001:db8:1:2::ffff"), p64));
        assert_ne!(a, ClientKey::new(ip("2001:db8:1:3::1"), p64));
        assert_eq!(a.network().to_string(), "2001:db8:1:2::/64");
        assert!(a.contains(ip("2001:db8:1:2:1:2:3:4")));
        assert!(!a.contains(ip("2001:db8:1:3::1")));
        // 128 keeps each address alone; 48 merges a site.
        let alone = |s| ClientKey::new(ip(s), prefix(128));
        assert_ne!(alone("2001:db8::1"), alone("2001:db8::2"));
        assert_eq!(alone("2001:db8::1").to_string(), "2001:db8::1/128");
        let site = |s| ClientKey::new(ip(s), prefix(48));
        assert_eq!(site("2001:db8:1:2::1"), site("2001:db8:1:ffff::1"));
        // IPv4, and IPv4 written as mapped IPv6, is the address.
        let v4 = ClientKey::new(ip("192.0.2.1"), p64);
        assert_eq!(v4, ClientKey::new(ip("::ffff:192.0.2.1"), p64));
        assert_ne!(v4, ClientKey::new(ip("192.0.2.2"), p64));
        assert!(v4.contains(ip("::ffff:192.0.2.1")));
    }

    #[test]
    fn one_group_networks_have_a_key_and_bans_widen_to_the_group() {
        let p64 = Ipv6Prefix::default();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            ClientKey::of_net(net("192.0.2.1/32"), p64),
            Some(ClientKey::new(ip("192.0.2.1"), p64))
        );
        assert_eq!(ClientKey::of_net(net("192.0.2.0/24"), p64), None);
        assert_eq!(
            ClientKey::of_net(net("2001:db8:1:2::/64"), p64),
            Some(ClientKey::new(ip("2001:db8:1:2::9"), p64))
        );
        assert_eq!(ClientKey::of_net(net("2001:db8:1:2::1/128"), p64), None);
        assert_eq!(ClientKey::of_net(net("2001:db8::/48"), p64), None);

        assert_eq!(
            p64.widen(net("2001:db8:1:2::7/128")),
            net("2001:db8:1:2::/64")
        );
        assert_eq!(
            p64.widen(net("2001:db8:1:2::/100")),
            net("2001:db8:1:2::/64")
        );
        assert_eq!(p64.widen(net("2001:db8::/48")), net("2001:db8::/48"));
        assert_eq!(p64.widen(net("192.0.2.7/32")), net("192.0.2.7/32"));
        assert_eq!(
            prefix(128).widen(net("2001:db8:1:2::7/128")),
            net("2001:db8:1:2::7/128")
        );
    }
}
