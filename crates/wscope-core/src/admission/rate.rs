//! The per-address handshake rate (`--handshake-rate-per-ip`): a token bucket per client
//! address, refusing with 429 and a `Retry-After` of when the next token comes.
//!
//! Each bucket is one number, its "theoretical arrival time" (the generic cell rate algorithm,
//! equivalent to a token bucket): the time at which the bucket would be full again. A handshake
//! at `now` is allowed while that time is at most `burst - 1` intervals ahead of `now`, and moves
//! it one interval on. A bucket whose time has passed is full — the same as no bucket — so it can
//! be dropped: the table only holds addresses that handshook within the last `burst` intervals.
//!
//! Addresses are [`ClientKey`]s (an IPv6 host's /64 is one), and the gate runs after every other
//! check, so only admitted upgrades make buckets. The table still grows with the addresses
//! clients come from, so it has a cap ([`RegistryConfig::handshake_rate_addresses`]): when it is
//! full and no bucket can be dropped (none is full again, or the table was walked for room less
//! than a second ago), an upgrade from an address it does not hold is refused with
//! 503 ([`Refusal::RateTableFull`], counted as `rateTableFull`) and a `Retry-After` of when the
//! first bucket is full again. Refusing is the safe side: letting such upgrades in untracked
//! would turn the rate off for every address as soon as someone filled the table, and a client
//! that can fill it from that many addresses could then flood from all of them.
//!
//! [`RegistryConfig::handshake_rate_addresses`]: crate::RegistryConfig::handshake_rate_addresses

use std::collections::hash_map::RandomState;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{ClientKey, ConnectionMeta, Gate, Refusal, Slot};
use crate::units::parse_duration;

/// A rate with a burst: `count` events per `period` on average, of which up to `burst` may come
/// at once. Written `10/s`, `600/m`, `30/h`, `5/10s`, or a bare number per second.
///
/// ```
/// use std::time::Duration;
/// use wscope_core::RateLimit;
/// let rate: RateLimit = "600/m".parse().unwrap();
/// assert_eq!((rate.count(), rate.period()), (600, Duration::from_secs(60)));
/// assert_eq!(rate.burst(), 600); // by default, one period's worth
/// assert_eq!(rate.with_burst(20).burst(), 20);
/// assert_eq!(rate.to_string(), "600/m");
/// assert!("ten/s".parse::<RateLimit>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    count: u32,
    period: Duration,
    burst: u32,
}

/// A rate that cannot be read or is not positive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {0:?}: use a count per period: 10/s, 600/m, 30/h, 5/10s")]
pub struct InvalidRate(pub String);

impl RateLimit {
    /// `count` per `period`, with a burst of `count`; `None` if either is zero.
    pub fn new(count: u32, period: Duration) -> Option<Self> {
        (count > 0 && !period.is_zero()).then_some(Self {
            count,
            period,
            burst: count,
        })
    }

    /// `count` per second; `None` if it is zero.
    pub fn per_second(count: u32) -> Option<Self> {
        Self::new(count, Duration::from_secs(1))
    }

    /// The same rate with up to `burst` events at once (0 restores the default, `count`).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = if burst == 0 { self.count } else { burst };
        self
    }

    /// Events per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Events allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds between two events at the steady rate (at least one).
    fn interval(&self) -> u64 {
        (nanos(self.period) / u64::from(self.count)).max(1)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl FromStr for RateLimit {
    type Err = InvalidRate;

    fn from_str(text: &str) -> Result<Self, InvalidRate> {
        let err = || InvalidRate(text.to_owned());
        let t = text.trim();
        let (count, period) = t.split_once('/').unwrap_or((t, "s"));
        let count: u32 = count.trim().replace('_', "").parse().map_err(|_| err())?;
        let period = period.trim();
        // A bare unit is one of it: `/s` is `/1s`, `/m` is `/1m`.
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(period)
        } else {
            parse_duration(&format!("1{period}"))
        }
        .map_err(|_| err())?;
        Self::new(count, period).ok_or_else(err)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match (self.period.as_secs(), self.period.subsec_nanos()) {
            (1, 0) => "s".to_owned(),
            (60, 0) => "m".to_owned(),
            (3600, 0) => "h".to_owned(),
            _ => humantime::format_duration(self.period)
                .to_string()
                .replace(' ', ""),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Buckets by client, sharded. Hashed with a random key: clients choose their addresses.
type Buckets = DashMap<ClientKey, u64, RandomState>;

/// Addresses held before the first prune; the table is pruned again each time it doubles.
const FIRST_PRUNE: usize = 1024;

/// Least time between two prunes made to find room in a full table: a prune walks the whole
/// table, and while someone keeps it full a bucket may come due every few milliseconds.
const FULL_PRUNE_GAP: u64 = 1_000_000_000;

/// What taking a token found.
enum Taken {
    /// A token was taken; `true` if the table has grown to its prune mark.
    Token(bool),
    /// The bucket is empty: a token comes after this long.
    Empty(Duration),
    /// The address has no bucket and the table is full.
    Full,
}

/// A token bucket per client address, in a table of at most `max_addresses`.
pub(crate) struct HandshakeRateGate {
    rate: RateLimit,
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of now a bucket's time may be and still allow a handshake.
    tolerance: u64,
    /// Per client: when its bucket is full again (registry clock nanoseconds).
    buckets: Buckets,
    /// Most clients held.
    max_addresses: usize,
    /// Clients held: counted under the shard lock of each insert (so the cap is exact), and
    /// down by what a prune drops.
    held: AtomicUsize,
    /// When the first held bucket is full again (`u64::MAX` when none is held): until then a
    /// prune would drop nothing, so a full table refuses without one.
    earliest: AtomicU64,
    /// When a full table may next be pruned to make room ([`FULL_PRUNE_GAP`] after the last).
    next_full_prune: AtomicU64,
    /// Prune when `held` reaches this.
    prune_at: AtomicUsize,
    /// Set while one caller prunes, so others do not queue behind it.
    pruning: AtomicBool,
    /// Set when the table fills (warned once), cleared when a prune makes room.
    full: AtomicBool,
}

impl fmt::Debug for HandshakeRateGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRateGate")
            .field("rate", &self.rate)
            .field("addresses", &self.held.load(Ordering::Relaxed))
            .field("max_addresses", &self.max_addresses)
            .finish()
    }
}

impl HandshakeRateGate {
    /// `rate` per client, holding at most `max_addresses` clients (at least one).
    pub(crate) fn new(rate: RateLimit, max_addresses: usize) -> Self {
        let interval = rate.interval();
        Self {
            rate,
            interval,
            tolerance: interval.saturating_mul(u64::from(rate.burst.max(1) - 1)),
            buckets: Buckets::default(),
            max_addresses: max_addresses.max(1),
            held: AtomicUsize::new(0),
            earliest: AtomicU64::new(u64::MAX),
            next_full_prune: AtomicU64::new(0),
            prune_at: AtomicUsize::new(FIRST_PRUNE),
            pruning: AtomicBool::new(false),
            full: AtomicBool::new(false),
        }
    }

    /// Takes a token from `key`'s bucket, making one if the table has room.
    fn take(&self, key: ClientKey, now: u64) -> Taken {
        match self.buckets.entry(key) {
            Entry::Occupied(mut bucket) => {
                let full_at = (*bucket.get()).max(now);
                let ahead = full_at - now;
                if ahead > self.tolerance {
                    return Taken::Empty(Duration::from_nanos(ahead - self.tolerance));
                }
                *bucket.get_mut() = full_at.saturating_add(self.interval);
                Taken::Token(false)
            }
            Entry::Vacant(empty) => {
                let room = self
                    .held
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < self.max_addresses).then_some(n + 1)
                    });
                let Ok(before) = room else {
                    return Taken::Full;
                };
                let full_at = now.saturating_add(self.interval);
                empty.insert(full_at);
                self.earliest.fetch_min(full_at, Ordering::AcqRel);
                Taken::Token(before + 1 >= self.prune_at.load(Ordering::Relaxed))
            }
        }
    }

    /// Drops the buckets that are full again: the table keeps only recent addresses.
    fn prune(&self, now: u64) {
        if self.pruning.swap(true, Ordering::Acquire) {
            return;
        }
        // Reset before the walk: a bucket made during it either is seen by the walk or lowers
        // the mark itself.
        self.earliest.store(u64::MAX, Ordering::Release);
        let mut dropped = 0;
        self.buckets.retain(|_, full_at| {
            let keep = *full_at > now;
            if keep {
                self.earliest.fetch_min(*full_at, Ordering::AcqRel);
            } else {
                dropped += 1;
            }
            keep
        });
        let left = self.held.fetch_sub(dropped, Ordering::AcqRel) - dropped;
        self.prune_at
            .store(left.saturating_mul(2).max(FIRST_PRUNE), Ordering::Relaxed);
        if dropped > 0 {
            self.full.store(false, Ordering::Relaxed);
        }
        self.pruning.store(false, Ordering::Release);
    }

    /// The refusal of an address the full table has no room for; the first one is logged.
    fn full(&self, now: u64) -> Refusal {
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                addresses = self.max_addresses,
                "the handshake rate's table of client addresses is full: upgrades from other \
                 addresses get 503 until buckets expire (raise --handshake-rate-addresses)"
            );
        }
        let room_at = self
            .earliest
            .load(Ordering::Acquire)
            .max(self.next_full_prune.load(Ordering::Relaxed));
        Refusal::RateTableFull {
            retry_after: Duration::from_nanos(room_at.saturating_sub(now).max(1)),
        }
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.buckets.len()
    }
}

impl Gate for HandshakeRateGate {
    fn check(
        &self,
        _meta: &ConnectionMeta,
        key: Option<ClientKey>,
        now: u64,
    ) -> Result<Option<Slot>, Refusal> {
        let Some(key) = key else {
            return Ok(None);
        };
        let mut taken = self.take(key, now);
        if matches!(taken, Taken::Full)
            && now >= self.earliest.load(Ordering::Acquire)
            && now >= self.next_full_prune.load(Ordering::Relaxed)
        {
            // Some bucket is full again: make room (the shard's lock is let go by now).
            self.next_full_prune
                .store(now.saturating_add(FULL_PRUNE_GAP), Ordering::Relaxed);
            self.prune(now);
            taken = self.take(key, now);
        }
        match taken {
            Taken::Token(prune) => {
                if prune {
                    // After the shard's lock is let go: pruning takes every shard's.
                    self.prune(now);
                }
                Ok(None)
            }
            Taken::Empty(retry_after) => Err(Refusal::HandshakeRate { retry_after }),
            Taken::Full => Err(self.full(now)),
        }
    }

    fn sweep(&self, now: u64) {
        self.prune(now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::admission::tests::check;
    use crate::Clock;
    use std::net::IpAddr;

    const MS: u64 = 1_000_000;

    fn from(ip: &str) -> ConnectionMeta {
        ConnectionMeta::new("/ws").remote_addr(ip.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn rates_read_and_show_as_written() {
        let rate = |s: &str| s.parse::<RateLimit>();
        assert_eq!(rate("10/s"), Ok(RateLimit::per_second(10).unwrap()));
        assert_eq!(rate("10"), rate("10/s"));
        assert_eq!(rate(" 10 / 1s "), rate("10/s"));
        assert_eq!(rate("600/m").unwrap().period(), Duration::from_secs(60));
        assert_eq!(rate("30/h").unwrap().period(), Duration::from_secs(3600));
        assert_eq!(rate("5/10s").unwrap().period(), Duration::from_secs(10));
        assert_eq!(
            rate("1/500ms").unwrap().period(),
            Duration::from_millis(500)
        );
        for text in ["10/s", "600/m", "30/h", "5/10s", "1/500ms"] {
            assert_eq!(rate(text).unwrap().to_string(), text);
        }
        for bad in ["", "0/s", "10/0s", "ten/s", "10/soon", "-1/s", "10/s/s"] {
            let err = rate(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid rate"), "{bad}: {err}");
        }
        assert_eq!(rate("10/s").unwrap().with_burst(0).burst(), 10);
    }

    /// Burst, then one per interval; the wait is exact; another address has its own bucket.
    #[test]
    fn a_bucket_allows_its_burst_then_the_rate_and_says_when() {
        let (clock, manual) = Clock::manual();
        let gate = HandshakeRateGate::new(RateLimit::per_second(10).unwrap().with_burst(3), 100);
        let one = from("192.0.2.1");
        for _ in 0..3 {
            assert!(check(&gate, &one, clock.now_nanos()).is_ok());
        }
        let refused = check(&gate, &one, clock.now_nanos()).unwrap_err();
        assert_eq!(
            refused,
            Refusal::HandshakeRate {
                retry_after: Duration::from_millis(100)
            }
        );
        // Another address (and an unknown one) is not affected.
        assert!(check(&gate, &from("192.0.2.2"), clock.now_nanos()).is_ok());
        assert!(check(&gate, &ConnectionMeta::new("/ws"), clock.now_nanos()).is_ok());

        manual.advance(Duration::from_millis(40));
        assert_eq!(
            check(&gate, &one, clock.now_nanos())
                .unwrap_err()
                .retry_after(),
            Some(Duration::from_millis(60))
        );
        manual.advance(Duration::from_millis(60));
        assert!(check(&gate, &one, clock.now_nanos()).is_ok());
        assert!(check(&gate, &one, clock.now_nanos()).is_err());

        // A quiet address's bucket refills to its burst, no further.
        manual.advance(Duration::from_secs(5));
        for _ in 0..3 {
            assert!(check(&gate, &one, clock.now_nanos()).is_ok());
        }
        assert!(check(&gate, &one, clock.now_nanos()).is_err());
    }

    #[test]
    fn full_buckets_are_dropped_by_the_sweep_and_by_growth() {
        let (clock, manual) = Clock::manual();
        let gate = HandshakeRateGate::new("2/s".parse().unwrap(), usize::MAX);
        for i in 0..10 {
            check(&gate, &from(&format!("198.51.100.{i}")), clock.now_nanos()).unwrap();
        }
        check(&gate, &from("198.51.100.0"), clock.now_nanos()).unwrap();
        manual.advance(Duration::from_millis(600));
        gate.sweep(clock.now_nanos());
        // Only the address that used two tokens is not full yet.
        assert_eq!(gate.addresses(), 1);
        manual.advance(Duration::from_millis(500));
        gate.sweep(clock.now_nanos());
        assert_eq!(gate.addresses(), 0);

        // Without any sweep, a flood of new addresses is pruned as the table doubles.
        let mut now = clock.now_nanos();
        for i in 0..(FIRST_PRUNE as u32 * 8) {
            now += 10 * MS; // each bucket is full again 500 ms after its one handshake
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            check(&gate, &ConnectionMeta::new("/ws").remote_addr(ip), now).unwrap();
        }
        assert!(gate.addresses() <= 2 * FIRST_PRUNE, "{}", gate.addresses());
    }

    /// A host's whole /64 shares one bucket.
    #[test]
    fn an_ipv6_group_shares_one_bucket() {
        let (clock, _) = Clock::manual();
        let gate = HandshakeRateGate::new("2/h".parse().unwrap(), 100);
        let now = clock.now_nanos();
        assert!(check(&gate, &from("2001:db8:1:2::1"), now).is_ok());
        assert!(check(&gate, &from("2001:db8:1:2:ffff::1"), now).is_ok());
        assert!(matches!(
            check(&gate, &from("2001:db8:1:2::3"), now),
            Err(Refusal::HandshakeRate { .. })
        ));
        assert!(check(&gate, &from("2001:db8:1:3::1"), now).is_ok());
        assert_eq!(gate.addresses(), 2);
    }

    /// A full table refuses new addresses (503, with when a bucket frees), keeps serving the
    /// ones it holds, and makes room once a bucket is full again.
    #[test]
    fn a_full_table_refuses_new_addresses_until_a_bucket_is_full_again() {
        let (clock, manual) = Clock::manual();
        let gate = HandshakeRateGate::new("10/m".parse().unwrap(), 3);
        for i in 1..=3 {
            check(&gate, &from(&format!("192.0.2.{i}")), clock.now_nanos()).unwrap();
            manual.advance(Duration::from_secs(1));
        }
        let refused = check(&gate, &from("192.0.2.4"), clock.now_nanos()).unwrap_err();
        // The first bucket (6 s per token) is full again 6 s after its handshake: 3 s from now.
        assert_eq!(
            refused,
            Refusal::RateTableFull {
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(refused.kind().as_str(), "rateTableFull");
        assert_eq!(
            gate.addresses(),
            3,
            "a refused address leaves nothing behind"
        );
        // Held addresses keep their buckets.
        assert!(check(&gate, &from("192.0.2.3"), clock.now_nanos()).is_ok());
        // Once the first bucket is full again, it makes room at once, without a sweep.
        manual.advance(Duration::from_secs(3));
        assert!(check(&gate, &from("192.0.2.4"), clock.now_nanos()).is_ok());
        assert_eq!(gate.addresses(), 3);
        assert!(check(&gate, &from("192.0.2.5"), clock.now_nanos()).is_err());
        assert_eq!(gate.held.load(Ordering::Relaxed), gate.addresses());
    }

    /// A full table walks itself to make room at most once a second, and says so.
    #[test]
    fn a_full_table_is_pruned_for_room_at_most_once_a_second() {
        let (clock, manual) = Clock::manual();
        let gate = HandshakeRateGate::new("10/m".parse().unwrap(), 3);
        for i in 1..=3 {
            check(&gate, &from(&format!("192.0.2.{i}")), clock.now_nanos()).unwrap();
            manual.advance(Duration::from_millis(500));
        }
        // Full again at 6 s, 6.5 s and 7 s.
        manual.advance(Duration::from_millis(4500));
        assert!(check(&gate, &from("192.0.2.4"), clock.now_nanos()).is_ok());
        manual.advance(Duration::from_millis(500));
        assert_eq!(
            check(&gate, &from("192.0.2.5"), clock.now_nanos()).unwrap_err(),
            Refusal::RateTableFull {
                retry_after: Duration::from_millis(500)
            },
            "a bucket is due, but the last walk was half a second ago"
        );
        manual.advance(Duration::from_millis(500));
        assert!(check(&gate, &from("192.0.2.5"), clock.now_nanos()).is_ok());
        assert_eq!(gate.addresses(), 2, "the walk dropped both buckets due");
    }

    /// 100,000 distinct addresses against a table of 1,000: it never holds more.
    #[test]
    fn the_table_never_grows_past_its_cap() {
        let (clock, _) = Clock::manual();
        let gate = HandshakeRateGate::new("1/h".parse().unwrap(), 1000);
        let mut refused = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) << 64));
            if check(
                &gate,
                &ConnectionMeta::new("/ws").remote_addr(ip),
                clock.now_nanos(),
            )
            .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!((gate.addresses(), refused), (1000, 99_000));
    }
}
