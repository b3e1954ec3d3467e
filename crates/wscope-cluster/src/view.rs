//! A node's view of the cluster's members: each one's last announcement and when it was heard,
//! and from that its status — live, late (a heartbeat missed), gone (silent past the TTL, or
//! left). Gone members stay listed (as gone) for [`crate::config::ClusterConfig::forget_after`], so an
//! instance that stops is reported, not silently missing. The view holds at most
//! [`crate::config::ClusterConfig::max_members`] members, and finds a member by id or by incarnation in
//! O(log n) or O(1): what a forger publishes on the engine costs each node in proportion.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::protocol::Announce;

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
#[derive(Debug)]
pub(crate) struct View {
    members: BTreeMap<String, Heard>,
    /// Each member's incarnation → its id (senders of broadcasts are looked up by incarnation).
    incarnations: HashMap<String, String>,
    /// Most members held.
    max: usize,
}

/// Why [`View::heard`] did not record an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViewFull;

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
    /// An empty view holding at most `max` members.
    pub fn new(max: usize) -> Self {
        Self {
            members: BTreeMap::new(),
            incarnations: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Records an announcement heard at `now_ms`. Returns the incarnation it replaced when the
    /// same instance id now speaks with another one (a restart, or a duplicate id). A new member
    /// when the view is full takes the place of the member gone longest; with none gone, it is
    /// not recorded ([`ViewFull`]).
    pub fn heard(
        &mut self,
        announce: Announce,
        incarnation: &str,
        timing: Timing,
        now_ms: u64,
    ) -> Result<Option<String>, ViewFull> {
        let id = announce.instance_id.clone();
        if !self.members.contains_key(&id) && self.members.len() >= self.max {
            let oldest_gone = self
                .members
                .iter()
                .filter(|(_, m)| {
                    timing.status(now_ms.saturating_sub(m.at_ms), m.left) == MemberStatus::Gone
                })
                .min_by_key(|(_, m)| m.at_ms)
                .map(|(id, _)| id.clone());
            match oldest_gone {
                Some(gone) => self.remove(&gone),
                None => return Err(ViewFull),
            }
        }
        let heard = Heard {
            announce,
            incarnation: incarnation.to_owned(),
            at_ms: now_ms,
            left: false,
        };
        self.incarnations.insert(incarnation.to_owned(), id.clone());
        match self.members.insert(id, heard) {
            Some(old) if old.incarnation != incarnation => {
                self.incarnations.remove(&old.incarnation);
                Ok((!old.left).then_some(old.incarnation))
            }
            _ => Ok(None),
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            self.incarnations.remove(&m.incarnation);
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
        let incarnations = &mut self.incarnations;
        self.members.retain(|_, m| {
            let silent = now_ms.saturating_sub(m.at_ms);
            let gone_for = if m.left {
                silent
            } else {
                silent.saturating_sub(timing.ttl_ms)
            };
            let keep =
                timing.status(silent, m.left) != MemberStatus::Gone || gone_for <= timing.forget_ms;
            if !keep {
                incarnations.remove(&m.incarnation);
            }
            keep
        });
    }

    /// Whether `incarnation` is the one the view has for some member.
    pub fn knows_incarnation(&self, incarnation: &str) -> bool {
        self.incarnations.contains_key(incarnation)
    }

    /// Whether `id` is a member speaking as `incarnation` (gone or not).
    pub fn is_member(&self, id: &str, incarnation: &str) -> bool {
        self.incarnations.get(incarnation).is_some_and(|m| m == id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use wscope_core::Snapshot;

    const TIMING: Timing = Timing {
        late_ms: 2_000,
        ttl_ms: 3_000,
        forget_ms: 600_000,
    };

    fn announce(id: &str) -> Announce {
        Announce {
            instance_id: id.to_owned(),
            main_addr: None,
            admin_addr: None,
            started_at: 0,
            version: String::new(),
            heartbeat_ms: 1_000,
            summary: serde_json::from_value::<Snapshot>(serde_json::json!({
                "totalConnections": 0, "totalConnectionsEver": 0, "totalConnectionsClosed": 0,
                "averageAge": 0, "averageIdleTime": 0,
                "connectionsByState": {"CONNECTING": 0, "OPEN": 0, "CLOSING": 0, "CLOSED": 0},
            }))
            .unwrap(),
        }
    }

    #[test]
    fn a_full_view_takes_a_new_member_only_in_place_of_one_gone() {
        let mut view = View::new(3);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(view.heard(announce(id), id, TIMING, i as u64), Ok(None));
        }
        // All live: the newcomer is refused, and nothing it said is kept.
        assert_eq!(view.heard(announce("d"), "d", TIMING, 10), Err(ViewFull));
        assert!(!view.knows_incarnation("d"));
        // A member it knows may still speak (a restart, with a new incarnation).
        assert_eq!(
            view.heard(announce("b"), "b2", TIMING, 20),
            Ok(Some("b".to_owned()))
        );
        assert!(view.is_member("b", "b2") && !view.knows_incarnation("b"));
        // Past the TTL a and c are gone (heard at 0 and 2); b (heard at 20) too, but later:
        // the newcomer takes the place of the one gone longest, a.
        assert_eq!(view.heard(announce("d"), "d", TIMING, 3_010), Ok(None));
        let ids: Vec<_> = view
            .members(TIMING, 3_010)
            .into_iter()
            .map(|m| m.announce.instance_id)
            .collect();
        assert_eq!(ids, ["b", "c", "d"]);
        assert!(!view.knows_incarnation("a"));
    }

    #[test]
    fn the_incarnation_index_follows_restarts_and_forgetting() {
        let mut view = View::new(10);
        assert_eq!(view.heard(announce("a"), "a1", TIMING, 0), Ok(None));
        assert!(view.is_member("a", "a1"));
        assert!(
            !view.is_member("b", "a1"),
            "an incarnation names one member"
        );
        view.left("a", "a1", 5);
        // Back with another incarnation after leaving: not a restart to report.
        assert_eq!(view.heard(announce("a"), "a2", TIMING, 10), Ok(None));
        assert!(view.is_member("a", "a2") && !view.knows_incarnation("a1"));
        view.forget_old(TIMING, 10 + 3_000 + 600_001);
        assert!(!view.knows_incarnation("a2"));
        assert!(view.members(TIMING, 0).is_empty());
    }
}
