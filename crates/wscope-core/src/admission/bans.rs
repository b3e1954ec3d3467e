//! Runtime bans: addresses and networks refused at admission (403) until their ban expires or is
//! lifted. The registry's [`ban`](crate::Registry::ban) adds one and closes the connections it
//! covers; [`unban`](crate::Registry::unban) lifts it; [`bans`](crate::Registry::bans) lists them.
//!
//! Bans live in the process: they do not survive a restart (a cluster backend will share them).
//! An expired ban is dropped when an upgrade from its address finds it, when the list is read,
//! and by the registry's background sweep.
//!
//! While no ban is held, the check on every upgrade is one atomic load. A ban of one client —
//! an IPv4 address, or an IPv6 group ([`ClientKey`]: a /64 by default) — is found by hash;
//! wider networks are scanned (there are few).
//!
//! An IPv6 target longer than the grouping (a single address, a /100) is widened to its group by
//! the registry before it gets here: its host can send from any address of the group, so a ban
//! of one of them would hold it back for one reconnect. `list_bans` shows the group banned.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::{ClientKey, Ipv6Prefix};
use crate::clock::Clock;
use crate::close::{CloseCode, CloseFrame, ReasonTooLong};

/// One ban, as [`crate::Registry::bans`] and the admin action `list_bans` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Ban {
    /// The address or network banned (`203.0.113.7/32`, `203.0.113.0/24`).
    pub target: IpNet,
    /// Why (also the reason of the 1008 close its connections got).
    pub reason: String,
    /// Unix time in milliseconds when it was made.
    pub banned_at: u64,
    /// Unix time in milliseconds when it expires.
    pub expires_at: u64,
    /// Milliseconds until it expires.
    pub expires_in: u64,
}

/// What [`crate::Registry::ban`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanOutcome {
    /// The ban now in force.
    pub ban: Ban,
    /// Open connections from the target asked to close (1008 with the reason).
    pub closed: u64,
    /// Whether it replaced a ban of the same target (whose expiry and reason it took over).
    pub replaced: bool,
}

/// A ban that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BanError {
    /// A ban must last: unban to lift one.
    #[error("a ban's duration must be more than zero")]
    ZeroDuration,
    /// The reason goes into the close frame, which holds 123 bytes.
    #[error(transparent)]
    ReasonTooLong(#[from] ReasonTooLong),
}

/// `net` as bans and kicks compare it: its network address (`203.0.113.7/24` is
/// `203.0.113.0/24`), and an IPv4-mapped IPv6 network as the IPv4 network it is.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(prefix)) =
            (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            if let Ok(v4) = Ipv4Net::new(v4, prefix) {
                return IpNet::V4(v4);
            }
        }
    }
    net
}

/// A held ban (clock nanoseconds).
#[derive(Debug, Clone)]
struct Held {
    reason: String,
    since: u64,
    until: u64,
}

/// The bans, by target: single clients apart from wider networks.
#[derive(Debug, Default)]
struct Table {
    hosts: HashMap<ClientKey, Held>,
    nets: HashMap<IpNet, Held>,
}

impl Table {
    fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.nets.is_empty()
    }

    /// Drops what expired by `now`.
    fn sweep(&mut self, now: u64) {
        self.hosts.retain(|_, ban| ban.until > now);
        self.nets.retain(|_, ban| ban.until > now);
    }

    /// The unexpired ban that covers `key`, and whether an expired one does. A network ban
    /// covers the whole group or none of it (networks longer than a group are widened).
    fn find(&self, key: ClientKey, now: u64) -> (bool, bool) {
        let mut expired = false;
        let group = key.network();
        let covering = self.hosts.get(&key).into_iter().chain(
            self.nets
                .iter()
                .filter(|(net, _)| net.contains(&group))
                .map(|(_, ban)| ban),
        );
        for ban in covering {
            if ban.until > now {
                return (true, expired);
            }
            expired = true;
        }
        (false, expired)
    }
}

/// The ban list of one registry.
#[derive(Debug, Default)]
pub(crate) struct Bans {
    /// How IPv6 addresses group into one client.
    ipv6_prefix: Ipv6Prefix,
    /// Whether any ban is held (set and cleared under the write lock).
    any: AtomicBool,
    table: RwLock<Table>,
}

impl Bans {
    /// An empty list, grouping IPv6 addresses by `ipv6_prefix`.
    pub(crate) fn new(ipv6_prefix: Ipv6Prefix) -> Self {
        Self {
            ipv6_prefix,
            ..Self::default()
        }
    }

    /// The client `net` names, if it is exactly one.
    fn host(&self, net: IpNet) -> Option<ClientKey> {
        ClientKey::of_net(net, self.ipv6_prefix)
    }

    /// Whether `ip` is banned at `now`. Drops an expired ban it finds.
    pub(crate) fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.is_banned_key(ClientKey::new(ip, self.ipv6_prefix), now)
    }

    /// Whether the client `key` is banned at `now`. Drops an expired ban it finds.
    pub(crate) fn is_banned_key(&self, key: ClientKey, now: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let (banned, expired) = self.read().find(key, now);
        if expired {
            self.sweep(now);
        }
        banned
    }

    /// Bans `target` (canonical, and widened to its group if it is a longer IPv6 network) from
    /// now for `duration`: the ban as shown, and whether it replaced one.
    pub(crate) fn insert(
        &self,
        target: IpNet,
        reason: &str,
        duration: Duration,
        clock: &Clock,
    ) -> (Ban, bool) {
        let now = clock.now_nanos();
        let held = Held {
            reason: reason.to_owned(),
            since: now,
            until: now.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)),
        };
        let ban = shown(target, &held, clock, now);
        let mut table = self.write();
        table.sweep(now);
        let before = match self.host(target) {
            Some(key) => table.hosts.insert(key, held),
            None => table.nets.insert(target, held),
        };
        self.any.store(true, Ordering::Release);
        (ban, before.is_some())
    }

    /// Lifts the ban of exactly `target` (canonical); true if there was one.
    pub(crate) fn remove(&self, target: IpNet) -> bool {
        let mut table = self.write();
        let removed = match self.host(target) {
            Some(key) => table.hosts.remove(&key),
            None => table.nets.remove(&target),
        };
        self.any.store(!table.is_empty(), Ordering::Release);
        removed.is_some()
    }

    /// Drops every ban expired by `now`.
    pub(crate) fn sweep(&self, now: u64) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut table = self.write();
        table.sweep(now);
        self.any.store(!table.is_empty(), Ordering::Release);
    }

    /// Every unexpired ban, networks by address then prefix.
    pub(crate) fn list(&self, clock: &Clock) -> Vec<Ban> {
        let now = clock.now_nanos();
        self.sweep(now);
        let table = self.read();
        let mut bans: Vec<Ban> = table
            .hosts
            .iter()
            .map(|(key, held)| shown(key.network(), held, clock, now))
            .chain(
                table
                    .nets
                    .iter()
                    .map(|(net, held)| shown(*net, held, clock, now)),
            )
            .collect();
        bans.sort_by_key(|ban| (ban.target.addr(), ban.target.prefix_len()));
        bans
    }

    /// Bans held, expired or not (without sweeping).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        let table = self.read();
        table.hosts.len() + table.nets.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A held ban as shown at `now` (clock nanoseconds).
fn shown(target: IpNet, held: &Held, clock: &Clock, now: u64) -> Ban {
    const MS: u64 = 1_000_000;
    Ban {
        target,
        reason: held.reason.clone(),
        banned_at: clock.unix_ms(held.since / MS),
        expires_at: clock.unix_ms(held.until / MS),
        expires_in: held.until.saturating_sub(now) / MS,
    }
}

/// The close reason of a ban: its reason, or "banned".
pub(crate) fn banned_reason(reason: &str) -> &str {
    if reason.is_empty() {
        "banned"
    } else {
        reason
    }
}

/// The 1008 close frame of a ban with `reason` (a short one: the reason was checked at the ban).
pub(crate) fn banned_frame(reason: &str) -> CloseFrame {
    CloseFrame::new(CloseCode::POLICY, banned_reason(reason)).unwrap_or(CloseFrame {
        code: CloseCode::POLICY,
        reason: "banned".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> IpNet {
        canonical_net(crate::units::parse_net(s).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn targets_are_compared_as_networks() {
        assert_eq!(net("203.0.113.7/24"), net("203.0.113.0/24"));
        assert_eq!(net("::ffff:203.0.113.0/120"), net("203.0.113.0/24"));
        assert_eq!(net("::ffff:203.0.113.7/128"), net("203.0.113.7/32"));
        assert_eq!(net("2001:db8::1/32").to_string(), "2001:db8::/32");
        // A v6 network wider than the mapped range stays v6.
        assert_eq!(net("::ffff:0:0/95").to_string(), "::fffe:0:0/95");
    }

    #[test]
    fn bans_cover_their_target_until_they_expire() {
        let (clock, manual) = Clock::manual();
        let bans = Bans::default();
        let ban = |target: &str, reason: &str, secs: u64| {
            bans.insert(net(target), reason, Duration::from_secs(secs), &clock)
        };
        assert!(!bans.is_banned(ip("203.0.113.7"), 0));
        let (shown, replaced) = ban("203.0.113.0/24", "flood", 60);
        assert!(!replaced);
        assert_eq!(
            (shown.target.to_string(), shown.expires_in),
            ("203.0.113.0/24".into(), 60_000)
        );
        assert!(!ban("198.51.100.7", "spam", 10).1);
        let now = clock.now_nanos();
        assert!(bans.is_banned(ip("203.0.113.7"), now));
        assert!(bans.is_banned(ip("198.51.100.7"), now));
        assert!(!bans.is_banned(ip("198.51.100.8"), now));
        assert!(!bans.is_banned(ip("203.0.114.1"), now));

        let listed = bans.list(&clock);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].target.to_string(), "198.51.100.7/32");
        assert_eq!(
            (listed[0].reason.as_str(), listed[0].expires_in),
            ("spam", 10_000)
        );
        assert_eq!(listed[1].expires_at - listed[1].banned_at, 60_000);

        manual.advance(Duration::from_secs(10));
        let now = clock.now_nanos();
        assert!(!bans.is_banned(ip("198.51.100.7"), now), "expired");
        assert!(bans.is_banned(ip("203.0.113.7"), now));
        assert_eq!(bans.list(&clock).len(), 1, "the expired ban was dropped");
        assert_eq!(bans.list(&clock)[0].expires_in, 50_000);

        // Banning again replaces the ban: its new expiry and reason.
        let (again, replaced) = ban("203.0.113.0/24", "again", 1);
        assert!(replaced);
        assert_eq!(bans.list(&clock), vec![again]);
        manual.advance(Duration::from_secs(1));
        assert!(!bans.is_banned(ip("203.0.113.7"), clock.now_nanos()));
        assert!(
            !bans.any.load(Ordering::Acquire),
            "the last expiry clears the flag"
        );
    }

    #[test]
    fn unban_lifts_exactly_its_target() {
        let (clock, _) = Clock::manual();
        let bans = Bans::default();
        let minute = Duration::from_secs(60);
        bans.insert(net("203.0.113.0/24"), "", minute, &clock);
        bans.insert(net("203.0.113.7"), "", minute, &clock);
        assert!(!bans.remove(net("203.0.113.0/25")));
        assert!(bans.remove(net("203.0.113.0/24")));
        assert!(bans.is_banned(ip("203.0.113.7"), 0));
        assert!(!bans.is_banned(ip("203.0.113.8"), 0));
        assert!(bans.remove(net("203.0.113.7/32")));
        assert!(!bans.remove(net("203.0.113.7/32")));
        assert!(!bans.any.load(Ordering::Acquire));
    }

    /// An IPv6 group ban (what the registry makes of a single IPv6 address) is found by hash
    /// for every address of the group; a wider network covers whole groups.
    #[test]
    fn ipv6_bans_cover_whole_groups() {
        let (clock, _) = Clock::manual();
        let bans = Bans::default();
        let minute = Duration::from_secs(60);
        let group = Ipv6Prefix::default().widen(net("2001:db8:1:2::7"));
        assert_eq!(group.to_string(), "2001:db8:1:2::/64");
        bans.insert(group, "", minute, &clock);
        bans.insert(net("2001:db8:aa::/48"), "", minute, &clock);
        assert_eq!(bans.read().hosts.len(), 1, "a group is held as one client");
        for banned in [
            "2001:db8:1:2::7",
            "2001:db8:1:2:ffff::1",
            "2001:db8:aa:9::1",
        ] {
            assert!(bans.is_banned(ip(banned), 0), "{banned}");
        }
        for free in ["2001:db8:1:3::7", "2001:db8:ab::1", "192.0.2.1"] {
            assert!(!bans.is_banned(ip(free), 0), "{free}");
        }
        assert_eq!(
            bans.list(&clock)
                .iter()
                .map(|b| b.target.to_string())
                .collect::<Vec<_>>(),
            ["2001:db8:1:2::/64", "2001:db8:aa::/48"]
        );
        // Grouped at /128, a single address is one client and bans nothing else.
        let alone = Bans::new(Ipv6Prefix::new(128).unwrap());
        alone.insert(net("2001:db8:1:2::7"), "", minute, &clock);
        assert!(alone.is_banned(ip("2001:db8:1:2::7"), 0));
        assert!(!alone.is_banned(ip("2001:db8:1:2::8"), 0));
        assert!(alone.remove(net("2001:db8:1:2::7")));
    }
}
