//! Connection ids: unique across restarts and instances, and carrying the instance id so a cluster
//! can route an action to the node that owns the connection.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::strings::SharedStr;

/// A connection id: `"{instance}-{boot}-{seq}"`, where `boot` distinguishes each registry ever
/// started (nanoseconds since the epoch at creation, in hex, kept strictly increasing within a
/// process) and `seq` counts connections within it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    prefix: SharedStr,
    seq: u64,
}

impl ConnectionId {
    pub(crate) fn new(prefix: SharedStr, seq: u64) -> Self {
        Self { prefix, seq }
    }

    /// The per-registry sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What comes before the sequence number: `{instance}-{boot}`.
    pub(crate) fn prefix(&self) -> &SharedStr {
        &self.prefix
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.prefix, self.seq)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ConnectionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for ConnectionId {
    type Err = InvalidConnectionId;

    /// Reads an id written by any wscope instance: `"{instance}-{boot}-{seq}"`.
    fn from_str(s: &str) -> Result<Self, InvalidConnectionId> {
        let (prefix, seq) = s
            .rsplit_once('-')
            .ok_or_else(|| InvalidConnectionId(s.to_owned()))?;
        let seq = seq.parse().map_err(|_| InvalidConnectionId(s.to_owned()))?;
        if prefix.is_empty() {
            return Err(InvalidConnectionId(s.to_owned()));
        }
        Ok(Self {
            prefix: SharedStr::Counted(prefix.into()),
            seq,
        })
    }
}

/// Text that is not a connection id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connection id {0:?}")]
pub struct InvalidConnectionId(pub String);

impl<'de> Deserialize<'de> for ConnectionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A boot token distinct for every registry this process creates, and (through the clock) for
/// every process start.
pub(crate) fn boot_token() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let prev = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    now.max(prev + 1)
}

/// The id prefix for a registry: `"{instance}-{boot:x}"`.
pub(crate) fn prefix(instance_id: &str, boot: u64) -> SharedStr {
    SharedStr::new(&format!("{instance_id}-{boot:x}"))
}

/// Parses `s` as an id under `prefix`, giving its sequence number.
pub(crate) fn parse_seq(prefix: &str, s: &str) -> Option<u64> {
    s.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_tokens_are_distinct() {
        let a = boot_token();
        let b = boot_token();
        assert!(b > a);
    }

    #[test]
    fn ids_round_trip() {
        let p = prefix("node-a", 0xabc);
        let id = ConnectionId::new(p.clone(), 42);
        assert_eq!(id.to_string(), "node-a-abc-42");
        assert_eq!(parse_seq(&p, "node-a-abc-42"), Some(42));
        assert_eq!(parse_seq(&p, "node-b-abc-42"), None);
        assert_eq!(parse_seq(&p, "node-a-abc-x"), None);
        let read: ConnectionId = "node-a-abc-42".parse().unwrap();
        assert_eq!(read, id);
        assert!("nodash".parse::<ConnectionId>().is_err());
        assert!("node-x".parse::<ConnectionId>().is_err());
    }
}
