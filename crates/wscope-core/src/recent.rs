//! The recently closed connections: the last N removals with who closed them, the code and
//! reason, how long they lived and what they moved — NATS's `/connz?state=closed`, as an
//! [`Observer`] of the registry. Newest first.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::observer::{ClosedEvent, Observer};
use crate::snapshot::ClosedConnection;

/// A bounded list of the last closed connections.
#[derive(Debug)]
pub(crate) struct RecentlyClosed {
    capacity: usize,
    /// Oldest at the front.
    list: Mutex<VecDeque<ClosedConnection>>,
}

impl RecentlyClosed {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            list: Mutex::new(VecDeque::new()),
        }
    }

    /// The newest `limit` (all, if `None`), newest first.
    pub(crate) fn newest(&self, limit: Option<usize>) -> Vec<ClosedConnection> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let n = limit.unwrap_or(usize::MAX).min(list.len());
        list.iter().rev().take(n).cloned().collect()
    }

    /// How many are kept now.
    pub(crate) fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Observer for RecentlyClosed {
    fn closed(&self, event: &ClosedEvent<'_>) {
        let closed = ClosedConnection {
            id: event.id.clone(),
            remote_address: event.remote_addr,
            user_agent: event.user_agent.cloned(),
            path: event.path.clone(),
            closed_by: event.record.initiator,
            code: event.record.code,
            reason: event.record.reason.clone(),
            connected_at: event
                .closed_at
                .saturating_sub(event.lifetime.as_millis() as u64),
            closed_at: event.closed_at,
            lifetime: event.lifetime.as_millis() as u64,
            messages_in: event.counts.messages_in,
            messages_out: event.counts.messages_out,
            bytes_in: event.counts.bytes_in,
            bytes_out: event.counts.bytes_out,
        };
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() == self.capacity {
            list.pop_front();
        }
        list.push_back(closed);
    }
}
