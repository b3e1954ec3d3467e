//! A node's view of the cluster's members: each one's last announcement and when it was heard,
//! and from that its status — live, late (a heartbeat missed), gone (silent past the TTL, or
//! left). Gone members stay listed (as gone) for [`super::ClusterConfig::forget_after`], so an
//! instance that stops is reported, not silently missing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::protocol::Announce;

/// A member's status in the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Heard within two heartbeat intervals.
    Live,
    /// Silent for more than two intervals but less than the TTL.
    Late,
    /// Silent past the TTL, or it said it was leaving.
    Gone,
}

impl MemberStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Late => "late",
            Self::Gone => "gone",
        }
    }
}

/// One member as the view knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Member {
    /// Its status now.
    pub status: MemberStatus,
    /// Milliseconds since it was last heard.
    pub last_heard_ms: u64,
    /// Whether it said it was leaving.
    pub left: bool,
    /// Its last announcement.
    #[serde(flatten)]
    pub announce: Announce,
}

#[derive(Debug)]
struct Heard {
    announce: Announce,
    incarnation: String,
    /// Clock milliseconds when last heard.
    at_ms: u64,
    left: bool,
}

/// The members other than this node, by instance id.
#[derive(Debug, Default)]
pub(crate) struct View {
    members: BTreeMap<String, Heard>,
}

/// When statuses change, from the heartbeat interval and TTL (ms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub late_ms: u64,
    pub ttl_ms: u64,
    pub forget_ms: u64,
}

impl Timing {
    fn status(&self, silent_ms: u64, left: bool) -> MemberStatus {
        if left || silent_ms > self.ttl_ms {
            MemberStatus::Gone
        } else if silent_ms > self.late_ms {
            MemberStatus::Late
        } else {
            MemberStatus::Live
        }
    }
}

impl View {
    /// Records an announcement heard at `now_ms`. Returns the incarnation it replaced when the
    /// same instance id now speaks with another one (a restart, or a duplicate id).
    pub fn heard(&mut self, announce: Announce, incarnation: &str, now_ms: u64) -> Option<String> {
        let id = announce.instance_id.clone();
        let heard = Heard {
            announce,
            incarnation: incarnation.to_owned(),
            at_ms: now_ms,
            left: false,
        };
        match self.members.insert(id, heard) {
            Some(old) if old.incarnation != incarnation && !old.left => Some(old.incarnation),
            _ => None,
        }
    }

    /// Marks `id` (of `incarnation`) as having left.
    pub fn left(&mut self, id: &str, incarnation: &str, now_ms: u64) {
        if let Some(m) = self.members.get_mut(id) {
            if m.incarnation == incarnation {
                m.left = true;
                m.at_ms = now_ms;
            }
        }
    }

    /// Drops members gone for longer than `forget_ms`.
    pub fn forget_old(&mut self, timing: Timing, now_ms: u64) {
        self.members.retain(|_, m| {
            let silent = now_ms.saturating_sub(m.at_ms);
            let gone_for = if m.left {
                silent
            } else {
                silent.saturating_sub(timing.ttl_ms)
            };
            timing.status(silent, m.left) != MemberStatus::Gone || gone_for <= timing.forget_ms
        });
    }

    /// Whether `incarnation` is the one the view has for some member.
    pub fn knows_incarnation(&self, incarnation: &str) -> bool {
        self.members.values().any(|m| m.incarnation == incarnation)
    }

    /// Every member with its status at `now_ms`, by instance id.
    pub fn members(&self, timing: Timing, now_ms: u64) -> Vec<Member> {
        self.members
            .values()
            .map(|m| {
                let silent = now_ms.saturating_sub(m.at_ms);
                Member {
                    status: timing.status(silent, m.left),
                    last_heard_ms: silent,
                    left: m.left,
                    announce: m.announce.clone(),
                }
            })
            .collect()
    }

    /// The ids of members not gone at `now_ms` (those a survey asks).
    pub fn reachable(&self, timing: Timing, now_ms: u64) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| {
                timing.status(now_ms.saturating_sub(m.at_ms), m.left) != MemberStatus::Gone
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}
