//! A bound on the bytes held in partly received messages across many connections. Each
//! connection's reader keeps a [`Charge`] against one shared [`MessageBudget`] and grows it as
//! the message it is receiving grows; a message the budget cannot hold is refused (the
//! connection closes with 1013 "try again later") instead of the process growing. A message
//! received in full gives its bytes back, and so does a connection that ends, however it ends
//! (the charge is released on drop).
//!
//! The connections of one client address may hold at most a share of the budget (a quarter,
//! unless set): a few clients cannot take it all and starve everyone else's large messages.
//!
//! ```
//! use std::net::IpAddr;
//! use wscope_core::{ClientKey, Ipv6Prefix, MessageBudget};
//!
//! let budget = MessageBudget::new(1 << 20);
//! let (mut a, mut b) = (budget.charge(), budget.charge());
//! a.hold(700 << 10).unwrap(); // a message of 700 KiB on its way in
//! assert!(b.hold(700 << 10).is_err()); // a second one does not fit
//! b.hold(100).unwrap(); // small messages never count
//! drop(a); // received (or the connection ended): its bytes are free again
//! b.hold(700 << 10).unwrap();
//! assert_eq!(budget.in_use(), 700 << 10);
//!
//! // One client (an IPv4 address, or an IPv6 host's network: see `ClientKey`) may hold a
//! // quarter of the budget, whatever its connections.
//! let ip: IpAddr = "203.0.113.7".parse().unwrap();
//! let client = ClientKey::new(ip, Ipv6Prefix::default());
//! let mut c = budget.charge_for(client);
//! assert!(c.hold(300 << 10).is_err());
//! c.hold(200 << 10).unwrap();
//! assert_eq!(budget.held_by(client), 200 << 10);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::admission::ClientKey;

/// A budget of bytes that partly received messages may hold, shared by every connection that
/// charges against it. Cheap to clone: the clones share one count.
#[derive(Clone)]
pub struct MessageBudget {
    shared: Arc<Shared>,
}

struct Shared {
    /// The most bytes charged at once (`usize::MAX`: no limit).
    limit: usize,
    /// The bytes charged now.
    used: AtomicUsize,
    /// The most bytes the connections of one client address may hold at once (`usize::MAX`: no
    /// limit of their own).
    per_address: usize,
    /// The bytes each client address holds now, for the addresses that hold any: an address
    /// leaves the map when its last byte is given back, so the map is no larger than the number
    /// of messages in progress. Keyed with a random SipHash key: clients behind a trusted proxy
    /// choose their addresses, and must not be able to make them collide.
    addresses: DashMap<ClientKey, usize>,
}

impl fmt::Debug for MessageBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBudget")
            .field("limit", &self.limit())
            .field("per_address", &self.address_limit())
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl MessageBudget {
    /// Messages of at most this many bytes are neither charged nor refused. Their bytes belong
    /// to a connection's fixed cost, which the number of connections bounds (every engine reads
    /// into a buffer of about this size anyway), and refusing them would starve the small
    /// messages most traffic is made of while a few large ones hold the budget.
    pub const SMALL_MESSAGE: usize = 4 << 10;

    /// The share of the budget one client address may hold unless set otherwise
    /// ([`MessageBudget::per_address`]): a quarter, so that at least four addresses are needed to
    /// spend it all.
    pub const ADDRESS_SHARE: usize = 4;

    /// A budget of `limit` bytes; 0 means no limit (bytes are still counted). One client
    /// address may hold a quarter of it ([`MessageBudget::ADDRESS_SHARE`]).
    pub fn new(limit: usize) -> Self {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let per_address = if limit == usize::MAX {
            usize::MAX
        } else {
            (limit / Self::ADDRESS_SHARE).max(1)
        };
        Self::with_limits(limit, per_address)
    }

    fn with_limits(limit: usize, per_address: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                limit,
                used: AtomicUsize::new(0),
                per_address,
                addresses: DashMap::new(),
            }),
        }
    }

    /// This budget with at most `bytes` held by the connections of one client address (0: no
    /// limit of their own, only the budget's). A new budget: set it before charging.
    pub fn per_address(self, bytes: usize) -> Self {
        let per_address = if bytes == 0 { usize::MAX } else { bytes };
        Self::with_limits(self.shared.limit, per_address)
    }

    /// A budget that refuses nothing.
    pub fn unlimited() -> Self {
        Self::new(0)
    }

    /// The limit, if there is one.
    pub fn limit(&self) -> Option<usize> {
        (self.shared.limit != usize::MAX).then_some(self.shared.limit)
    }

    /// The most one client address may hold, if it is limited.
    pub fn address_limit(&self) -> Option<usize> {
        (self.shared.per_address != usize::MAX).then_some(self.shared.per_address)
    }

    /// The bytes charged now, across every connection.
    pub fn in_use(&self) -> usize {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// The bytes the connections of `client` hold now.
    pub fn held_by(&self, client: ClientKey) -> usize {
        self.shared.addresses.get(&client).map_or(0, |held| *held)
    }

    /// A new account (one per connection) holding nothing yet, of a connection whose client
    /// address is unknown: only the budget's limit applies.
    pub fn charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
            address: None,
        }
    }

    /// A new account (one per connection) holding nothing yet, of a connection from client
    /// address `ip`: it counts against the address's share too.
    pub fn charge_for(&self, client: ClientKey) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
            address: (self.shared.per_address != usize::MAX).then_some(client),
        }
    }

    /// Takes `bytes` more if they fit under the limit.
    fn take(&self, bytes: usize) -> Result<(), OverBudget> {
        let limit = self.shared.limit;
        self.shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .map(drop)
            .map_err(|in_use| OverBudget::Total {
                wanted: bytes,
                in_use,
                limit,
            })
    }

    fn give_back(&self, bytes: usize) {
        self.shared.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Takes `bytes` more from the share of `key` if they fit under it.
    fn take_for(&self, key: ClientKey, bytes: usize) -> Result<(), OverBudget> {
        let limit = self.shared.per_address;
        let mut held = self.shared.addresses.entry(key).or_insert(0);
        match held.checked_add(bytes).filter(|&total| total <= limit) {
            Some(total) => {
                *held = total;
                Ok(())
            }
            None => {
                let in_use = *held;
                drop(held); // the shard's lock, before the map is touched again
                if in_use == 0 {
                    self.shared.addresses.remove_if(&key, |_, held| *held == 0);
                }
                Err(OverBudget::Address {
                    address: key,
                    wanted: bytes,
                    in_use,
                    limit,
                })
            }
        }
    }

    fn give_back_for(&self, key: ClientKey, bytes: usize) {
        let empty = match self.shared.addresses.get_mut(&key) {
            Some(mut held) => {
                *held = held.saturating_sub(bytes);
                *held == 0
            }
            None => false,
        };
        if empty {
            self.shared.addresses.remove_if(&key, |_, held| *held == 0);
        }
    }
}

impl Default for MessageBudget {
    /// No limit.
    fn default() -> Self {
        Self::unlimited()
    }
}

/// One connection's account with a [`MessageBudget`]: the bytes its message in progress holds.
/// Dropping it gives them back.
#[derive(Debug)]
pub struct Charge {
    budget: MessageBudget,
    held: usize,
    /// The share the connection's bytes count against too (its client address's, grouped).
    address: Option<ClientKey>,
}

impl Charge {
    /// The message in progress now holds `total` bytes: charges what it grew by, or refuses
    /// (and keeps what it held) when the budget, or the client address's share of it, cannot
    /// take it. A message that stays within [`MessageBudget::SMALL_MESSAGE`] is free; past it,
    /// all of it is charged.
    pub fn hold(&mut self, total: usize) -> Result<(), OverBudget> {
        if total <= self.held || (self.held == 0 && total <= MessageBudget::SMALL_MESSAGE) {
            return Ok(());
        }
        let more = total - self.held;
        if let Some(key) = self.address {
            self.budget.take_for(key, more)?;
        }
        if let Err(e) = self.budget.take(more) {
            if let Some(key) = self.address {
                self.budget.give_back_for(key, more);
            }
            return Err(e);
        }
        self.held = total;
        Ok(())
    }

    /// The message is complete (or abandoned): gives its bytes back.
    pub fn release(&mut self) {
        if self.held > 0 {
            let held = std::mem::take(&mut self.held);
            self.budget.give_back(held);
            if let Some(key) = self.address {
                self.budget.give_back_for(key, held);
            }
        }
    }

    /// The bytes charged to this account now.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

/// A message the budget could not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverBudget {
    /// The budget, shared by every connection, is spent.
    #[error(
        "partly received messages hold {in_use} of the {limit} bytes allowed; \
         {wanted} more do not fit"
    )]
    Total {
        /// The bytes the message needed on top of what it held.
        wanted: usize,
        /// The bytes charged across all connections when it was refused.
        in_use: usize,
        /// The budget's limit.
        limit: usize,
    },
    /// The share of the budget one client address may hold is spent.
    #[error(
        "partly received messages from {address} hold {in_use} of the {limit} bytes one \
         address may hold; {wanted} more do not fit"
    )]
    Address {
        /// The client (an IPv4 address, or an IPv6 host's network).
        address: ClientKey,
        /// The bytes the message needed on top of what it held.
        wanted: usize,
        /// The bytes that address's connections held when it was refused.
        in_use: usize,
        /// The most one address may hold.
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Ipv6Prefix;

    #[test]
    fn small_messages_are_free_and_large_ones_are_charged_in_full() {
        let budget = MessageBudget::new(64 << 10);
        let mut c = budget.charge();
        c.hold(MessageBudget::SMALL_MESSAGE).unwrap();
        assert_eq!(budget.in_use(), 0);
        c.hold(MessageBudget::SMALL_MESSAGE + 1).unwrap();
        assert_eq!(budget.in_use(), MessageBudget::SMALL_MESSAGE + 1);
        c.hold(10).unwrap(); // a message never shrinks while in progress
        assert_eq!(c.held(), MessageBudget::SMALL_MESSAGE + 1);
        c.release();
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_refused_message_keeps_what_it_held_and_the_limit_is_inclusive() {
        let budget = MessageBudget::new(100 << 10).per_address(0);
        let (mut a, mut b) = (budget.charge(), budget.charge());
        a.hold(60 << 10).unwrap();
        let err = b.hold(41 << 10).unwrap_err();
        assert_eq!(
            err,
            OverBudget::Total {
                wanted: 41 << 10,
                in_use: 60 << 10,
                limit: 100 << 10
            }
        );
        b.hold(40 << 10).unwrap();
        assert_eq!(budget.in_use(), 100 << 10);
        assert!(a.hold(70 << 10).is_err());
        assert_eq!(a.held(), 60 << 10);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn zero_means_no_limit_but_bytes_are_counted() {
        let budget = MessageBudget::new(0);
        assert_eq!(budget.limit(), None);
        let mut c = budget.charge();
        c.hold(usize::MAX / 2).unwrap();
        assert_eq!(budget.in_use(), usize::MAX / 2);
        assert_eq!(MessageBudget::new(5).limit(), Some(5));
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_others_still_fit() {
        let budget = MessageBudget::new(8 << 20);
        assert_eq!(budget.address_limit(), Some(2 << 20));
        let key = |ip: &str| ClientKey::new(ip.parse().unwrap(), Ipv6Prefix::default());
        let attacker = key("198.51.100.6");
        let mapped = key("::ffff:198.51.100.6");
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut c = budget.charge_for(attacker);
            if c.hold(1 << 20).is_ok() {
                held.push(c);
            }
        }
        assert_eq!(held.len(), 2, "two 1 MiB messages fill a quarter of 8 MiB");
        let mut again = budget.charge_for(mapped);
        let err = again.hold(1 << 20).unwrap_err();
        assert!(
            matches!(err, OverBudget::Address { in_use, limit, .. } if in_use == 2 << 20 && limit == 2 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("198.51.100.6"), "{err}");
        assert_eq!(budget.held_by(mapped), 2 << 20, "mapped counts as IPv4");
        // Anyone else still fits, up to the budget.
        let mut other = budget.charge_for(key("192.0.2.1"));
        // One IPv6 host: its whole /64 is one client.
        let mut v6 = budget.charge_for(key("2001:db8:1:2::1"));
        v6.hold(2 << 20).unwrap();
        assert!(budget
            .charge_for(key("2001:db8:1:2:ffff::9"))
            .hold(100_000)
            .is_err());
        drop(v6);
        other.hold(100_000).unwrap();
        let mut unknown = budget.charge();
        unknown.hold(3 << 20).unwrap();
        assert_eq!(budget.in_use(), (5 << 20) + 100_000);
        drop(held);
        assert_eq!(budget.held_by(attacker), 0);
        assert!(
            budget.shared.addresses.len() == 1,
            "only 192.0.2.1 holds bytes"
        );
        drop(other);
        assert!(budget.shared.addresses.is_empty());
    }

    #[test]
    fn a_refusal_by_the_budget_gives_the_addresss_share_back() {
        let budget = MessageBudget::new(1 << 20).per_address(1 << 20);
        let mut a = budget.charge();
        a.hold(900 << 10).unwrap();
        let ip = ClientKey::new("192.0.2.9".parse().unwrap(), Ipv6Prefix::default());
        let mut b = budget.charge_for(ip);
        assert!(matches!(b.hold(200 << 10), Err(OverBudget::Total { .. })));
        assert_eq!(budget.held_by(ip), 0);
        assert!(budget.shared.addresses.is_empty());
        assert_eq!(MessageBudget::unlimited().address_limit(), None);
        assert_eq!(budget.clone().per_address(0).address_limit(), None);
    }
}
