//! Source addresses for client sockets: one loopback address has about 28k ephemeral ports, so
//! runs with more connections spread them over 127.0.0.1, 127.0.0.2, … (all of 127.0.0.0/8 is
//! local on Linux without any set-up).
//!
//! A socket bound before `connect` gets its port at `bind` time, from a search over the ports
//! of its address that slows down sharply as they fill up (at 19k connections on one address a
//! run spent 20 s of kernel time in `bind`). So binding is only done when spreading, and each
//! address is kept at most about a third full by default; a single-address run leaves the port
//! to `connect`, which picks it per destination in constant time.

use std::net::{IpAddr, Ipv4Addr};

/// Default connections per source address: about a third of the default ephemeral range
/// (32768–60999), where `bind` still finds a free port in a few tries.
pub(crate) const PER_SOURCE: usize = 10_000;

/// The source addresses a run binds its client sockets to, handed out round-robin.
#[derive(Clone, Debug)]
pub(crate) struct SourceAddrs {
    /// Empty when one address is enough: then sockets are not bound at all.
    addrs: Vec<IpAddr>,
}

impl SourceAddrs {
    /// Enough addresses for `connections` open at once at `per_source` each. IPv6 has one
    /// loopback address, so a `::1` target never spreads.
    pub(crate) fn for_connections(target: IpAddr, connections: usize, per_source: usize) -> Self {
        let n = connections.div_ceil(per_source.max(1)).max(1);
        let addrs = match target {
            IpAddr::V4(_) if n > 1 => {
                // 127.0.0.1 onwards; 127.0.0.0/8 holds 16M addresses, more than any fd limit.
                let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
                (0..n)
                    .filter_map(|i| u32::try_from(i).ok())
                    .map(|i| IpAddr::V4(Ipv4Addr::from(first.saturating_add(i))))
                    .collect()
            }
            _ => Vec::new(),
        };
        Self { addrs }
    }

    /// The address to bind the `n`th connection to, if spreading: consecutive connections go
    /// to different addresses, so each gets an even share whatever the count.
    pub(crate) fn pick(&self, n: usize) -> Option<IpAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        self.addrs.get(n % self.addrs.len()).copied()
    }

    /// How many addresses are in use.
    pub(crate) fn len(&self) -> usize {
        self.addrs.len().max(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn spreads_only_past_one_address_worth() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let one = SourceAddrs::for_connections(v4, 10_000, PER_SOURCE);
        assert_eq!(one.len(), 1);
        assert_eq!(
            one.pick(0),
            None,
            "one address: the kernel picks at connect"
        );
        let s = SourceAddrs::for_connections(v4, 25_000, PER_SOURCE);
        assert_eq!(s.len(), 3);
        assert_eq!(s.pick(0), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(s.pick(1), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(s.pick(5), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))));
        let s = SourceAddrs::for_connections(IpAddr::V6(Ipv6Addr::LOCALHOST), 50_000, 100);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pick(7), None);
    }
}
