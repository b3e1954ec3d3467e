//! A connection's lifecycle ([`ConnectionState`]) and the sentinel values its entry's atomics
//! take, below everything that reads or moves them.

use serde::{Deserialize, Serialize};

/// The lifecycle of a connection, as the reference names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum ConnectionState {
    /// The upgrade was accepted; the handshake is not complete yet.
    Connecting = 0,
    /// The WebSocket is open.
    Open = 1,
    /// A close frame was sent or received; the handshake is not complete.
    Closing = 2,
    /// The connection is over; the entry is stale until its owner drops it or a sweep removes it.
    Closed = 3,
}

impl ConnectionState {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Open,
            2 => Self::Closing,
            _ => Self::Closed,
        }
    }

    /// The reference's name (`"OPEN"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "CONNECTING",
            Self::Open => "OPEN",
            Self::Closing => "CLOSING",
            Self::Closed => "CLOSED",
        }
    }
}

/// `last_activity_ms` of an entry that has left the registry: its activity no longer counts.
pub(crate) const REMOVED: u64 = u64::MAX;
/// `rtt_ms` before the first pong.
pub(crate) const RTT_NONE: u32 = u32::MAX;
/// `rtt_ms` once the entry has left.
pub(crate) const RTT_REMOVED: u32 = u32::MAX - 1;
/// `ping_sent_ms` when no ping is outstanding.
pub(crate) const NO_PING: u64 = u64::MAX;

/// The payload of every server ping: the round trip is timed by the entry, not by the payload.
pub(crate) const PING_PAYLOAD: &[u8] = b"wscope";
