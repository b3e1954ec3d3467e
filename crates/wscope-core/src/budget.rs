//! A bound on the bytes held in partly received messages across many connections. Each
//! connection's reader keeps a [`Charge`] against one shared [`MessageBudget`] and grows it as
//! the message it is receiving grows; a message the budget cannot hold is refused (the
//! connection closes with 1013 "try again later") instead of the process growing. A message
//! received in full gives its bytes back, and so does a connection that ends, however it ends
//! (the charge is released on drop).
//!
//! ```
//! use wscope_core::MessageBudget;
//!
//! let budget = MessageBudget::new(1 << 20);
//! let (mut a, mut b) = (budget.charge(), budget.charge());
//! a.hold(700 << 10).unwrap(); // a message of 700 KiB on its way in
//! assert!(b.hold(700 << 10).is_err()); // a second one does not fit
//! b.hold(100).unwrap(); // small messages never count
//! drop(a); // received (or the connection ended): its bytes are free again
//! b.hold(700 << 10).unwrap();
//! assert_eq!(budget.in_use(), 700 << 10);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
}

impl fmt::Debug for MessageBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBudget")
            .field("limit", &self.limit())
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

    /// A budget of `limit` bytes; 0 means no limit (bytes are still counted).
    pub fn new(limit: usize) -> Self {
        let limit = if limit == 0 { usize::MAX } else { limit };
        Self {
            shared: Arc::new(Shared {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// A budget that refuses nothing.
    pub fn unlimited() -> Self {
        Self::new(0)
    }

    /// The limit, if there is one.
    pub fn limit(&self) -> Option<usize> {
        (self.shared.limit != usize::MAX).then_some(self.shared.limit)
    }

    /// The bytes charged now, across every connection.
    pub fn in_use(&self) -> usize {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// A new account (one per connection) holding nothing yet.
    pub fn charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
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
            .map_err(|in_use| OverBudget {
                wanted: bytes,
                in_use,
                limit,
            })
    }

    fn give_back(&self, bytes: usize) {
        self.shared.used.fetch_sub(bytes, Ordering::AcqRel);
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
}

impl Charge {
    /// The message in progress now holds `total` bytes: charges what it grew by, or refuses
    /// (and keeps what it held) when the budget cannot take it. A message that stays within
    /// [`MessageBudget::SMALL_MESSAGE`] is free; past it, all of it is charged.
    pub fn hold(&mut self, total: usize) -> Result<(), OverBudget> {
        if total <= self.held || (self.held == 0 && total <= MessageBudget::SMALL_MESSAGE) {
            return Ok(());
        }
        self.budget.take(total - self.held)?;
        self.held = total;
        Ok(())
    }

    /// The message is complete (or abandoned): gives its bytes back.
    pub fn release(&mut self) {
        if self.held > 0 {
            self.budget.give_back(std::mem::take(&mut self.held));
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
#[error(
    "partly received messages hold {in_use} of the {limit} bytes allowed; \
     {wanted} more do not fit"
)]
pub struct OverBudget {
    /// The bytes the message needed on top of what it held.
    pub wanted: usize,
    /// The bytes charged across all connections when it was refused.
    pub in_use: usize,
    /// The budget's limit.
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let budget = MessageBudget::new(100 << 10);
        let (mut a, mut b) = (budget.charge(), budget.charge());
        a.hold(60 << 10).unwrap();
        let err = b.hold(41 << 10).unwrap_err();
        assert_eq!(
            err,
            OverBudget {
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
}
