//! Connection caps: the global one (`--max-connections`, 503 with `Retry-After`) and the
//! per-address one (`--max-connections-per-ip`, 429). Each admitted connection holds a slot in
//! its [`Permit`](super::Permit), released when the connection ends however it ends — so a cap
//! counts connections that hold a slot, not entries in the map. The per-address cap counts a
//! [`ClientKey`]: an IPv6 host's whole /64 (by default) is one address to it.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{ClientKey, ConnectionMeta, Gate, Refusal, Slot};

/// The `Retry-After` of a refusal by the global cap. A slot frees whenever any connection ends,
/// which nothing predicts; one second keeps well-behaved clients from hammering a full server
/// while letting them in soon after room appears.
pub(crate) const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// At most `max` connections at once, whatever their address: one atomic counter.
#[derive(Debug)]
pub(crate) struct GlobalLimit {
    max: usize,
    held: Arc<AtomicUsize>,
}

impl GlobalLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }
}

/// A slot of the global cap.
#[derive(Debug)]
struct GlobalSlot(Arc<AtomicUsize>);

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate for GlobalLimit {
    fn check(
        &self,
        _meta: &ConnectionMeta,
        _key: Option<ClientKey>,
        _now: u64,
    ) -> Result<Option<Slot>, Refusal> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| Refusal::TooManyConnections {
                retry_after: FULL_RETRY_AFTER,
            })?;
        Ok(Some(Box::new(GlobalSlot(self.held.clone()))))
    }
}

/// Connections held per address. Sharded, so two addresses rarely contend; an address leaves the
/// map when its last connection ends, so the map is never larger than the connections it counts.
/// Hashed with a random key (not the registry's fast hasher): clients choose their addresses.
type Held = DashMap<ClientKey, usize, RandomState>;

/// At most `max` connections at once from one client address.
pub(crate) struct AddressLimit {
    max: usize,
    held: Arc<Held>,
}

impl fmt::Debug for AddressLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressLimit")
            .field("max", &self.max)
            .field("addresses", &self.held.len())
            .finish()
    }
}

impl AddressLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }

    /// Addresses holding a slot now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.held.len()
    }
}

/// A slot of one address's cap.
struct AddressSlot {
    held: Arc<Held>,
    key: ClientKey,
}

impl fmt::Debug for AddressSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AddressSlot").field(&self.key).finish()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        // Under the shard's lock: a concurrent admission sees the count before or after, never
        // an entry removed under it.
        if let Entry::Occupied(mut held) = self.held.entry(self.key) {
            if *held.get() <= 1 {
                held.remove();
            } else {
                *held.get_mut() -= 1;
            }
        }
    }
}

impl Gate for AddressLimit {
    fn check(
        &self,
        _meta: &ConnectionMeta,
        key: Option<ClientKey>,
        _now: u64,
    ) -> Result<Option<Slot>, Refusal> {
        let Some(key) = key else {
            return Ok(None);
        };
        let mut count = self.held.entry(key).or_insert(0);
        if *count >= self.max {
            // Never zero here (max > 0), so no empty entry is left behind.
            return Err(Refusal::TooManyFromAddress);
        }
        *count += 1;
        drop(count);
        Ok(Some(Box::new(AddressSlot {
            held: self.held.clone(),
            key,
        })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::admission::tests::check;
    use crate::admission::Ipv6Prefix;
    use std::net::IpAddr;

    fn from(ip: &str) -> ConnectionMeta {
        ConnectionMeta::new("/ws").remote_addr(ip.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn the_global_cap_refuses_past_max_and_a_released_slot_admits_again() {
        let gate = GlobalLimit::new(2);
        let meta = from("192.0.2.1");
        let a = check(&gate, &meta, 0).unwrap();
        let _b = check(&gate, &ConnectionMeta::new("/ws"), 0).unwrap();
        let refused = check(&gate, &meta, 0).unwrap_err();
        assert_eq!(
            refused,
            Refusal::TooManyConnections {
                retry_after: FULL_RETRY_AFTER
            }
        );
        assert_eq!(refused.retry_after(), Some(FULL_RETRY_AFTER));
        drop(a);
        assert!(check(&gate, &meta, 0).is_ok());
    }

    #[test]
    fn the_address_cap_counts_each_address_and_forgets_it_at_zero() {
        let gate = AddressLimit::new(2);
        let one = from("192.0.2.1");
        let a = check(&gate, &one, 0).unwrap();
        let b = check(&gate, &one, 0).unwrap();
        assert_eq!(
            check(&gate, &one, 0).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // Another address, and the same address written as IPv4-mapped IPv6.
        let other = check(&gate, &from("192.0.2.2"), 0).unwrap();
        assert_eq!(
            check(&gate, &from("::ffff:192.0.2.1"), 0).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        // An unknown address is not counted.
        assert!(check(&gate, &ConnectionMeta::new("/ws"), 0)
            .unwrap()
            .is_none());
        assert_eq!(gate.addresses(), 2);
        drop(a);
        let c = check(&gate, &one, 0).unwrap();
        drop((b, c, other));
        assert_eq!(gate.addresses(), 0, "no entry outlives its connections");
    }

    /// A host holds a whole /64: its addresses share one count.
    #[test]
    fn the_address_cap_counts_an_ipv6_group_as_one_address() {
        let gate = AddressLimit::new(2);
        let a = check(&gate, &from("2001:db8:1:2::1"), 0).unwrap();
        let b = check(&gate, &from("2001:db8:1:2:ffff::2"), 0).unwrap();
        assert_eq!(
            check(&gate, &from("2001:db8:1:2::3"), 0).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let other = check(&gate, &from("2001:db8:1:3::1"), 0).unwrap();
        // Grouped at /128 (each address alone) the same addresses are all let in.
        let alone = Ipv6Prefix::new(128).unwrap();
        let slots: Vec<_> = (1..=3)
            .map(|i| {
                let ip: IpAddr = format!("2001:db8:9:9::{i}").parse().unwrap();
                gate.check(&from("::"), Some(ClientKey::new(ip, alone)), 0)
                    .unwrap()
            })
            .collect();
        assert_eq!(gate.addresses(), 5);
        drop((a, b, other, slots));
        assert_eq!(gate.addresses(), 0);
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_caps() {
        let global = Arc::new(GlobalLimit::new(8));
        let per_ip = Arc::new(AddressLimit::new(3));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (global, per_ip) = (global.clone(), per_ip.clone());
                std::thread::spawn(move || {
                    let meta = from(&format!("198.51.100.{}", t % 2));
                    for _ in 0..2000 {
                        let a = check(&*per_ip, &meta, 0);
                        let b = check(&*global, &meta, 0);
                        assert!(
                            per_ip
                                .held
                                .get(&ClientKey::new(
                                    meta.remote_addr.unwrap(),
                                    Default::default()
                                ))
                                .map_or(0, |n| *n)
                                <= 3
                        );
                        assert!(global.held.load(Ordering::Acquire) <= 8);
                        drop((a, b));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(global.held.load(Ordering::Acquire), 0);
        assert_eq!(per_ip.addresses(), 0);
    }
}
