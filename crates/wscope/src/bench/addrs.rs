//! Source addresses for client sockets: one loopback address serves about 28k ephemeral ports,
//! so runs with more connections spread them over 127.0.0.1, 127.0.0.2, … (all of 127.0.0.0/8 is
//! local on Linux without any set-up).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Connections placed on one source address: well under the ~28k ports of the default
/// ephemeral range (32768–60999), leaving room for other programs and TIME_WAIT entries.
pub(crate) const PER_SOURCE: usize = 20_000;

/// The source addresses a run binds its client sockets to, handed out round-robin.
#[derive(Clone, Debug)]
pub(crate) struct SourceAddrs {
    addrs: Vec<IpAddr>,
}

impl SourceAddrs {
    /// Enough addresses for `connections` open at once at [`PER_SOURCE`] each. IPv6 has one
    /// loopback address, so a `::1` target gets only that.
    pub(crate) fn for_connections(target: IpAddr, connections: usize) -> Self {
        let addrs = match target {
            IpAddr::V4(_) => {
                let n = connections.div_ceil(PER_SOURCE).max(1);
                // 127.0.0.1 onwards; 127.0.0.0/8 holds 16M addresses, more than any fd limit.
                let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
                (0..n)
                    .filter_map(|i| u32::try_from(i).ok())
                    .map(|i| IpAddr::V4(Ipv4Addr::from(first.saturating_add(i))))
                    .collect()
            }
            IpAddr::V6(_) => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
        };
        Self { addrs }
    }

    /// The address for the `n`th connection: consecutive connections go to different addresses,
    /// so each gets an even share whatever the count.
    pub(crate) fn pick(&self, n: usize) -> IpAddr {
        self.addrs
            .get(n % self.addrs.len().max(1))
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// How many addresses are in use.
    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spreads_past_one_address_per_20k() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(SourceAddrs::for_connections(v4, 1).len(), 1);
        assert_eq!(SourceAddrs::for_connections(v4, 20_000).len(), 1);
        let s = SourceAddrs::for_connections(v4, 50_000);
        assert_eq!(s.len(), 3);
        assert_eq!(s.pick(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(s.pick(1), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s.pick(5), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let s = SourceAddrs::for_connections(IpAddr::V6(Ipv6Addr::LOCALHOST), 50_000);
        assert_eq!(s.len(), 1);
    }
}
