//! The one read model: a [`Snapshot`] of the registry, computed by summing shards. The admin API,
//! the log lines, the health check (and later metrics and the dashboard) all read it.

use std::net::IpAddr;

use serde::Serialize;

use crate::close::Initiator;
use crate::connection::ConnectionState;
use crate::id::ConnectionId;
use crate::strings::SharedStr;

/// Connections per state, with the reference's keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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
    pub(crate) fn add(&mut self, state: ConnectionState) {
        match state {
            ConnectionState::Connecting => self.connecting += 1,
            ConnectionState::Open => self.open += 1,
            ConnectionState::Closing => self.closing += 1,
            ConnectionState::Closed => self.closed += 1,
        }
    }
}

/// Removals so far, by who ended the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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
}

impl ClosedBy {
    pub(crate) fn from_counts(counts: [u64; Initiator::ALL.len()]) -> Self {
        let [client, server, admin, shutdown, error, panic, deadline] = counts;
        Self {
            client,
            server,
            admin,
            shutdown,
            error,
            panic,
            deadline,
        }
    }
}

/// Upgrades refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// The registry was shutting down.
    pub shutting_down: u64,
}

/// One connection as the reference's `connections[]` shows it, plus wscope's extra figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    /// Unique id (carries the instance id).
    pub id: ConnectionId,
    /// Milliseconds since the connection was registered.
    pub age: u64,
    /// Milliseconds since the last frame sent or received.
    pub idle_time: u64,
    /// `CONNECTING`, `OPEN`, `CLOSING` or `CLOSED`.
    pub state: ConnectionState,
    /// Client address (after trusted-proxy resolution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<IpAddr>,
    /// Client user agent (bounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<SharedStr>,
    /// Request path.
    pub path: SharedStr,
    /// Unix time in milliseconds when it connected.
    pub connected_at: u64,
    /// Frames received (data and control).
    pub messages_in: u64,
    /// Frames sent through the connection's queue (data, pings, close); the engine's own automatic
    /// pongs and close replies are not counted.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Messages waiting in the outbound queue.
    pub queued_messages: u64,
    /// Payload bytes waiting in the outbound queue.
    pub queued_bytes: u64,
}

/// The reference's `ConnectionStats`, with the same JSON field names, plus wscope's extras.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Connections tracked now (every state, stale CLOSED entries included).
    pub total_connections: u64,
    /// Connections registered since the registry started.
    pub total_connections_ever: u64,
    /// Connections removed since the registry started.
    pub total_connections_closed: u64,
    /// Mean age of tracked connections, in milliseconds.
    pub average_age: u64,
    /// Mean idle time of tracked connections, in milliseconds.
    pub average_idle_time: u64,
    /// Tracked connections per state.
    pub connections_by_state: StateCounts,
    /// Every tracked connection (empty in a summary).
    pub connections: Vec<ConnectionInfo>,
    /// The instance this registry belongs to.
    pub instance_id: String,
    /// Milliseconds since the registry started.
    pub uptime: u64,
    /// Whether shutdown has begun.
    pub shut_down: bool,
    /// Removals by who ended the connection.
    pub closed_by: ClosedBy,
    /// Upgrades refused, by reason.
    pub refused: Refused,
}
