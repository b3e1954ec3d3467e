//! The counts every reader shares: a connection's [`Counts`] of messages and bytes, the
//! registry's connections by state ([`StateCounts`]), removals by who ended them ([`ClosedBy`])
//! and refusals by kind ([`RefusalCounts`]). Plain figures, below everything that keeps them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::admission::RefusalKind;
use crate::close::Initiator;
use crate::state::ConnectionState;

/// Messages and payload bytes a connection moved in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Text and binary messages sent.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
}

/// Connections per state, with the reference's keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Upgrade accepted, handshake not complete.
    #[serde(rename = "CONNECTING")]
    pub connecting: u64,
    /// Open.
    #[serde(rename = "OPEN")]
    pub open: u64,
    /// Close handshake under way.
    #[serde(rename = "CLOSING")]
    pub closing: u64,
    /// Over but still tracked (stale; removed by the sweep or when its task ends).
    #[serde(rename = "CLOSED")]
    pub closed: u64,
}

impl StateCounts {
    /// Adds `other`'s counts to these (cluster sums), saturating: a peer may answer anything.
    pub fn add(&mut self, other: &Self) {
        self.connecting = self.connecting.saturating_add(other.connecting);
        self.open = self.open.saturating_add(other.open);
        self.closing = self.closing.saturating_add(other.closing);
        self.closed = self.closed.saturating_add(other.closed);
    }

    /// The count for `state`.
    pub fn get(&self, state: ConnectionState) -> u64 {
        match state {
            ConnectionState::Connecting => self.connecting,
            ConnectionState::Open => self.open,
            ConnectionState::Closing => self.closing,
            ConnectionState::Closed => self.closed,
        }
    }
}

/// Removals so far, by who ended the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ClosedBy {
    /// The client sent a close frame.
    pub client: u64,
    /// The server's handler closed it.
    pub server: u64,
    /// An operator (close all, close by id).
    pub admin: u64,
    /// The graceful shutdown.
    pub shutdown: u64,
    /// A transport error or vanished peer.
    pub error: u64,
    /// A handler panic.
    pub panic: u64,
    /// Dropped at the drain deadline.
    pub deadline: u64,
    /// A limit: slow consumer, message rate.
    pub limit: u64,
    /// A timeout: ping, idle.
    pub timeout: u64,
    /// The upstream of a relayed connection (`wscope proxy`).
    pub upstream: u64,
}

impl ClosedBy {
    /// Adds `other`'s counts to these (cluster sums), saturating: a peer may answer anything.
    pub fn add(&mut self, other: &Self) {
        self.client = self.client.saturating_add(other.client);
        self.server = self.server.saturating_add(other.server);
        self.admin = self.admin.saturating_add(other.admin);
        self.shutdown = self.shutdown.saturating_add(other.shutdown);
        self.error = self.error.saturating_add(other.error);
        self.panic = self.panic.saturating_add(other.panic);
        self.deadline = self.deadline.saturating_add(other.deadline);
        self.limit = self.limit.saturating_add(other.limit);
        self.timeout = self.timeout.saturating_add(other.timeout);
        self.upstream = self.upstream.saturating_add(other.upstream);
    }

    pub(crate) fn from_counts(counts: [u64; Initiator::ALL.len()]) -> Self {
        let [client, server, admin, shutdown, error, panic, deadline, limit, timeout, upstream] =
            counts;
        Self {
            client,
            server,
            admin,
            shutdown,
            error,
            panic,
            deadline,
            limit,
            timeout,
            upstream,
        }
    }
}

/// Upgrades refused, by [`RefusalKind`]: on the wire, an object with one camelCase key per kind
/// (`{"shuttingDown": 2}`). Keys a newer peer sends that this build does not know are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounts([u64; RefusalKind::ALL.len()]);

impl RefusalCounts {
    /// Adds `other`'s counts to these (cluster sums), saturating: a peer may answer anything.
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
    }

    pub(crate) fn from_counts(counts: [u64; RefusalKind::ALL.len()]) -> Self {
        Self(counts)
    }

    /// Refusals of `kind`.
    pub fn get(&self, kind: RefusalKind) -> u64 {
        self.0[kind.index()]
    }

    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (RefusalKind, u64)> + '_ {
        RefusalKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }
}

impl Serialize for RefusalCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(k, n)| (k.as_str(), n)))
    }
}

impl<'de> Deserialize<'de> for RefusalCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(d)?;
        let mut counts = [0; RefusalKind::ALL.len()];
        for (key, n) in map {
            if let Some(kind) = RefusalKind::from_key(&key) {
                counts[kind.index()] = n;
            }
        }
        Ok(Self(counts))
    }
}
