//! The one read model: a [`Snapshot`] of the registry — its figures from the O(1) aggregates, and
//! (in a full snapshot) every connection from a walk of the entries. The admin API, the log lines,
//! the health check and observers all read it. Every type here serializes to the reference's JSON
//! and reads back from it, so clients (`wscope top`, cluster peers, tests) share them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::close::Initiator;
use crate::counts::{ClosedBy, RefusalCounts, StateCounts};
use crate::id::ConnectionId;
use crate::state::ConnectionState;
use crate::strings::SharedStr;

/// One connection as the reference's `connections[]` shows it, plus wscope's extra figures.
///
/// `messagesIn`/`messagesOut` count text and binary messages, in either direction, and `idleTime`
/// runs from the last of them; control frames (ping, pong, close) are neither messages nor
/// activity. `rttMs` is the last server ping's round trip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Unique id (carries the instance id).
    pub id: ConnectionId,
    /// Milliseconds since the connection was registered.
    pub age: u64,
    /// Milliseconds since the last text or binary message sent or received (pings and pongs do
    /// not count: the server's keepalive pings leave an idle connection idle).
    pub idle_time: u64,
    /// `CONNECTING`, `OPEN`, `CLOSING` or `CLOSED`.
    pub state: ConnectionState,
    /// Client address (after trusted-proxy resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<IpAddr>,
    /// Client user agent (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<SharedStr>,
    /// Request path.
    #[serde(default)]
    pub path: SharedStr,
    /// Unix time in milliseconds when it connected.
    #[serde(default)]
    pub connected_at: u64,
    /// Text and binary messages received.
    #[serde(default)]
    pub messages_in: u64,
    /// Text and binary messages sent.
    #[serde(default)]
    pub messages_out: u64,
    /// Payload bytes of the messages received.
    #[serde(default)]
    pub bytes_in: u64,
    /// Payload bytes of the messages sent.
    #[serde(default)]
    pub bytes_out: u64,
    /// Messages waiting in the outbound queue.
    #[serde(default)]
    pub queued_messages: u64,
    /// Payload bytes waiting in the outbound queue.
    #[serde(default)]
    pub queued_bytes: u64,
    /// The bytes the connection holds now: what its engine holds for it (read and write
    /// buffers, a split frame header, a partly received message) plus its queued payloads. What
    /// each engine can report is in the engine crate's documentation (`MemoryGauge`).
    #[serde(default)]
    pub memory_bytes: u64,
    /// The last server ping's round-trip time in ms, once a pong has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
    /// The user id the application attached ([`crate::TrackedSocket::set_user`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The tags the application attached ([`crate::TrackedSocket::tag`]), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The upstream a proxied connection is relayed to (`wscope proxy`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl ConnectionInfo {
    /// Every field's JSON name, in the order written (what `fields=` may pick).
    pub const FIELDS: [&'static str; 19] = [
        "id",
        "age",
        "idleTime",
        "state",
        "remoteAddress",
        "userAgent",
        "path",
        "connectedAt",
        "messagesIn",
        "messagesOut",
        "bytesIn",
        "bytesOut",
        "queuedMessages",
        "queuedBytes",
        "memoryBytes",
        "rttMs",
        "user",
        "tags",
        "upstream",
    ];
}

/// A connection that has closed, as `GET /api/closed` lists it (the registry keeps the last
/// `recent_closed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClosedConnection {
    /// Its id.
    pub id: ConnectionId,
    /// Client address (after trusted-proxy resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<IpAddr>,
    /// Client user agent (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<SharedStr>,
    /// Request path.
    #[serde(default)]
    pub path: SharedStr,
    /// Who closed it: `client`, `server`, `admin`, `shutdown`, `error`, `panic`, `deadline`,
    /// `limit` or `timeout`.
    pub closed_by: Initiator,
    /// The close code sent or received, if a close frame was involved.
    #[serde(default)]
    pub code: Option<u16>,
    /// The close reason, or the error's text.
    #[serde(default)]
    pub reason: String,
    /// Unix time in milliseconds when it connected.
    #[serde(default)]
    pub connected_at: u64,
    /// Unix time in milliseconds when it left.
    #[serde(default)]
    pub closed_at: u64,
    /// Milliseconds it lived.
    #[serde(default)]
    pub lifetime: u64,
    /// Text and binary messages received.
    #[serde(default)]
    pub messages_in: u64,
    /// Text and binary messages sent.
    #[serde(default)]
    pub messages_out: u64,
    /// Payload bytes received.
    #[serde(default)]
    pub bytes_in: u64,
    /// Payload bytes sent.
    #[serde(default)]
    pub bytes_out: u64,
}

/// The reference's `ConnectionStats` figures, declared once: every answer that carries them
/// ([`Snapshot`], the live stream's events, the cluster's sums and rows) flattens this struct
/// (`#[serde(flatten)]`), so their names and order are the same everywhere. Those types
/// dereference to it, so `stats.total_connections` reads as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Summary {
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
}

/// Implements `Deref`/`DerefMut` to [`Summary`] for a type that flattens one in its `summary`
/// field, so its figures read as its own fields.
#[macro_export]
macro_rules! deref_summary {
    ($ty:ty) => {
        impl ::std::ops::Deref for $ty {
            type Target = $crate::Summary;

            fn deref(&self) -> &$crate::Summary {
                &self.summary
            }
        }

        impl ::std::ops::DerefMut for $ty {
            fn deref_mut(&mut self) -> &mut $crate::Summary {
                &mut self.summary
            }
        }
    };
}

deref_summary!(Snapshot);

/// The reference's `ConnectionStats`, with the same JSON field names, plus wscope's extras (which
/// may be missing when reading the reference's own output).
///
/// `averageAge`, `averageIdleTime`, every connection's `age` and `idleTime`, and `uptime` are in
/// milliseconds (the health answer gives its ages in seconds, as the reference does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Snapshot {
    /// The reference's figures (`totalConnections` … `connectionsByState`), first on the wire.
    #[serde(flatten)]
    pub summary: Summary,
    /// Every tracked connection (empty in a summary).
    #[serde(default)]
    pub connections: Vec<ConnectionInfo>,
    /// The instance this registry belongs to.
    #[serde(default)]
    pub instance_id: String,
    /// Milliseconds since the registry started.
    #[serde(default)]
    pub uptime: u64,
    /// Whether shutdown has begun.
    #[serde(default)]
    pub shut_down: bool,
    /// Removals by who ended the connection.
    #[serde(default)]
    pub closed_by: ClosedBy,
    /// Upgrades refused, by reason.
    #[serde(default)]
    pub refused: RefusalCounts,
    /// Mean of the tracked connections' last ping round-trip times in ms, over those with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_rtt_ms: Option<u64>,
}
