//! Surveys: a question put to every member (or one), answered within a deadline; members that
//! miss it are named, never silently left out. On them: cluster stats (sums and weighted
//! averages), the connections across members (merged pages), and admin actions cluster-wide
//! (`close` by id routed to the member that holds it).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::handle::{Cluster, ClusterError};
use crate::protocol::{AdminReply, Body, Op, Reply};
use crate::shared::ClusterState;
use crate::tasks::answer;
use crate::view::{Member, MemberStatus};
use wscope_core::query::{ConnectionQuery, SortKey, SortOrder, Start};
use wscope_core::wire::AdminRequest;
use wscope_core::AdminAnswer;
use wscope_core::Traffic;
use wscope_core::{ClosedBy, ConnectionInfo, RefusalCounts, Snapshot, Summary};

/// Who a survey asks.
enum Target {
    Everyone,
    One(String),
}

/// The answers a survey got in time, and who did not answer.
struct Answers {
    answers: Vec<(String, Reply)>,
    unanswered: Vec<String>,
}

/// `GET /api/cluster/stats`: the reference's `ConnectionStats` summed over the members that
/// answered (counts and totals added, averages weighted by each member's connections), and a row
/// per member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterStats {
    /// The cluster's name.
    pub cluster: String,
    /// The instance that made the survey.
    pub answered_by: String,
    /// The members' figures: counts and totals summed, the mean age and idle time weighted by
    /// each member's connections.
    #[serde(flatten)]
    pub summary: Summary,
    /// Mean ping round trip across members that measured one (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_rtt_ms: Option<u64>,
    /// Removals by who closed, summed.
    pub closed_by: ClosedBy,
    /// Refused upgrades by reason, summed.
    pub refused: RefusalCounts,
    /// Messages and bytes since each member started, summed.
    pub traffic: Traffic,
    /// The reference's `connections` list: empty unless asked for
    /// (`GET /api/cluster/stats?connections=N`: the N oldest across members, from
    /// [`Cluster::connections`]).
    #[serde(default)]
    pub connections: Vec<ConnectionInfo>,
    /// Members in the sums.
    pub instances_counted: u64,
    /// Every member this node knows: live, late and gone.
    pub instances: Vec<InstanceStats>,
    /// Members (live or late) that did not answer in time; their row shows their last
    /// announcement and is not in the sums.
    pub unanswered: Vec<String>,
}

wscope_core::deref_summary!(ClusterStats);

/// One member's row in [`ClusterStats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InstanceStats {
    /// Its instance id.
    pub instance_id: String,
    /// `live`, `late` or `gone`.
    pub status: MemberStatus,
    /// Whether its figures come from its answer to this survey (else from its last
    /// announcement).
    pub answered: bool,
    /// Milliseconds since it was last heard (0 for the instance answering).
    pub last_heard_ms: u64,
    /// Its main listener's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_addr: Option<String>,
    /// Its admin listener's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// Its software version.
    pub version: String,
    /// Unix ms when it started.
    pub started_at: u64,
    /// Its figures.
    #[serde(flatten)]
    pub summary: Summary,
    /// Its traffic totals (from an answer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
}

wscope_core::deref_summary!(InstanceStats);

impl InstanceStats {
    fn new(
        summary: &Snapshot,
        status: MemberStatus,
        answered: bool,
        last_heard_ms: u64,
        traffic: Option<Traffic>,
    ) -> Self {
        Self {
            instance_id: summary.instance_id.clone(),
            status,
            answered,
            last_heard_ms,
            main_addr: None,
            admin_addr: None,
            version: String::new(),
            started_at: 0,
            summary: summary.summary,
            traffic,
        }
    }
}

/// `GET /api/cluster/connections`: one page of the connections across members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterPage<T = ConnectionInfo> {
    /// Connections matching across the members that answered.
    pub total: u64,
    /// The page, in the query's order (ties: by instance id, then registration order). `T` is
    /// [`ConnectionInfo`], or a row of the columns `fields=` picked.
    pub connections: Vec<T>,
    /// The next page's `cursor`, or `null` on the last page (as `/api/connections` answers).
    #[serde(default)]
    pub next: Option<String>,
    /// Members that answered, with how many of their connections match.
    pub instances: Vec<InstanceCount>,
    /// Members (live or late) that did not answer in time: their connections are not here.
    pub unanswered: Vec<String>,
}

impl<T> ClusterPage<T> {
    /// The same page with each row mapped (to pick columns, say).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> ClusterPage<U> {
        ClusterPage {
            total: self.total,
            connections: self.connections.into_iter().map(f).collect(),
            next: self.next,
            instances: self.instances,
            unanswered: self.unanswered,
        }
    }

    /// The page's JSON as serde writes it, with the `connections` array written by `rows`
    /// in place of this page's own rows (which are not read): for rows that are cut to some
    /// columns by a hand-written writer (`GET /api/cluster/connections?fields=`) rather than
    /// built as a map each.
    pub fn write_json_with(&self, rows: impl FnOnce(&mut Vec<u8>)) -> serde_json::Result<Vec<u8>> {
        // Every field named, so that a new one does not compile until it is written here too.
        let Self {
            total,
            connections: _,
            next,
            instances,
            unanswered,
        } = self;
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"total\":");
        serde_json::to_writer(&mut out, total)?;
        out.extend_from_slice(b",\"connections\":");
        rows(&mut out);
        out.extend_from_slice(b",\"next\":");
        serde_json::to_writer(&mut out, next)?;
        out.extend_from_slice(b",\"instances\":");
        serde_json::to_writer(&mut out, instances)?;
        out.extend_from_slice(b",\"unanswered\":");
        serde_json::to_writer(&mut out, unanswered)?;
        out.push(b'}');
        Ok(out)
    }
}

/// A member's count in a [`ClusterPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InstanceCount {
    /// Its instance id.
    pub instance_id: String,
    /// Its connections matching the query.
    pub total: u64,
}

/// `POST /api/cluster/admin`: each member's answer to the action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterAdminAnswer {
    /// The action carried out.
    pub action: String,
    /// Whether every member asked answered with success.
    pub success: bool,
    /// Connections closed, summed over the answers that say (`closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<u64>,
    /// Connections a broadcast was queued to, summed (`sent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// One row per member asked.
    pub instances: Vec<InstanceAnswer>,
    /// Members (live or late) that did not answer in time: the action's outcome there is unknown.
    pub unanswered: Vec<String>,
}

/// One member's answer in a [`ClusterAdminAnswer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InstanceAnswer {
    /// Its instance id.
    pub instance_id: String,
    /// The status its own `/api/admin` would have answered (200, 400, 404).
    pub status: u16,
    /// Its answer (the action's answer, or `{"error": ...}`).
    pub answer: AdminReply,
}

/// The deepest row a cluster page reaches (`offset + limit`): each member is asked for that many.
pub const MAX_CLUSTER_DEPTH: usize = ConnectionQuery::MAX_LIMIT;

impl Cluster {
    fn ensure_connected(&self) -> Result<(), ClusterError> {
        if self.state() == ClusterState::Connected {
            Ok(())
        } else {
            Err(self.unavailable())
        }
    }

    /// Asks `target` the question `op`; this node answers itself directly.
    async fn survey(&self, target: Target, op: Op) -> Result<Answers, ClusterError> {
        self.ensure_connected()?;
        let inner = &self.inner;
        let (expected, channel, ask_self) = match &target {
            Target::Everyone => (inner.reachable(), inner.config.channel_all(), true),
            Target::One(id) if *id == inner.instance => (Vec::new(), String::new(), true),
            Target::One(id) => (vec![id.clone()], inner.config.channel_to(id), false),
        };
        let mut answers = Vec::new();
        if ask_self {
            answers.push((inner.instance.clone(), answer(inner, op.clone())));
        }
        if expected.is_empty() {
            return Ok(Answers {
                answers,
                unanswered: Vec::new(),
            });
        }
        let id = inner.next_request_id();
        let mut waiting: BTreeSet<String> = expected.into_iter().collect();
        let mut replies = inner.register_pending(id, &waiting);
        if inner.publish_now(channel, &Body::Request { id, op }).await {
            let deadline = tokio::time::Instant::now() + inner.config.survey_timeout;
            while !waiting.is_empty() {
                match tokio::time::timeout_at(deadline, replies.recv()).await {
                    Ok(Some((from, reply))) => {
                        waiting.remove(&from);
                        if answers.iter().all(|(who, _)| *who != from) {
                            answers.push((from, reply));
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        inner.forget_pending(id);
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Answers {
            answers,
            unanswered: waiting.into_iter().collect(),
        })
    }

    /// The cluster's stats: every member surveyed, the answers summed.
    pub async fn stats(&self) -> Result<ClusterStats, ClusterError> {
        let survey = self.survey(Target::Everyone, Op::Stats {}).await?;
        let members = self.members();
        let mut stats = ClusterStats {
            cluster: self.name().to_owned(),
            answered_by: self.instance_id().to_owned(),
            summary: Summary::default(),
            average_rtt_ms: None,
            closed_by: ClosedBy::default(),
            refused: RefusalCounts::default(),
            traffic: Traffic::default(),
            connections: Vec::new(),
            instances_counted: 0,
            instances: Vec::new(),
            unanswered: survey.unanswered.clone(),
        };
        let by_id: HashMap<&str, &Member> = members
            .iter()
            .map(|m| (m.announce.instance_id.as_str(), m))
            .collect();
        let mut sums = Sums::default();
        for (id, reply) in &survey.answers {
            let Reply::Stats { summary, traffic } = reply else {
                continue;
            };
            sums.add(&mut stats, summary, traffic);
            stats.instances_counted += 1;
            let member = by_id.get(id.as_str()).copied();
            let mut row = InstanceStats::new(
                summary,
                member.map_or(MemberStatus::Live, |m| m.status),
                true,
                member.map_or(0, |m| m.last_heard_ms),
                Some(*traffic),
            );
            match member {
                Some(m) => fill_from_announce(&mut row, &m.announce),
                None => fill_from_announce(&mut row, &self.inner.announce()),
            }
            stats.instances.push(row);
        }
        let answered: HashSet<&str> = survey.answers.iter().map(|(id, _)| id.as_str()).collect();
        for m in &members {
            if answered.contains(m.announce.instance_id.as_str()) {
                continue;
            }
            let mut row =
                InstanceStats::new(&m.announce.summary, m.status, false, m.last_heard_ms, None);
            fill_from_announce(&mut row, &m.announce);
            stats.instances.push(row);
        }
        stats
            .instances
            .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        sums.finish(&mut stats);
        Ok(stats)
    }

    /// One page of the connections across members. The query's `limit` and `offset` (or
    /// `start`, given as [`Start::Offset`]) page through the merged order; `offset + limit`
    /// is at most [`MAX_CLUSTER_DEPTH`]. A cursor from a single instance's listing is refused.
    pub async fn connections(&self, query: &ConnectionQuery) -> Result<ClusterPage, ClusterError> {
        let offset = match query.start {
            Start::First => 0,
            Start::Offset(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Start::After(_) => {
                return Err(ClusterError::BadQuery(
                    "cursor: a single instance's cursor cannot page the cluster listing; pass \
                     the cluster page's `next`, or an offset"
                        .into(),
                ))
            }
        };
        let depth = offset.saturating_add(query.limit).min(MAX_CLUSTER_DEPTH);
        let mut asked = query.clone();
        asked.start = Start::First;
        asked.limit = depth.max(1);
        asked.fields = None;
        let survey = self
            .survey(Target::Everyone, Op::Connections { query: asked })
            .await?;
        let mut total = 0;
        let mut instances = Vec::new();
        let mut rows: Vec<(String, ConnectionInfo)> = Vec::new();
        for (id, reply) in survey.answers {
            let Reply::Connections { page } = reply else {
                continue;
            };
            total = u64::saturating_add(total, page.total);
            instances.push(InstanceCount {
                instance_id: id.clone(),
                total: page.total,
            });
            rows.extend(page.connections.into_iter().map(|c| (id.clone(), c)));
        }
        rows.sort_by(|a, b| compare(&a.1, &b.1, query.sort, query.order).then(a.0.cmp(&b.0)));
        let end = offset.saturating_add(query.limit).min(rows.len());
        let next = (offset.saturating_add(query.limit) < total as usize
            && offset.saturating_add(query.limit) < MAX_CLUSTER_DEPTH)
            .then(|| format!("{}", offset + query.limit));
        let page = rows
            .into_iter()
            .skip(offset)
            .take(end.saturating_sub(offset))
            .map(|(_, c)| c)
            .collect();
        Ok(ClusterPage {
            total,
            connections: page,
            next,
            instances,
            unanswered: survey.unanswered,
        })
    }

    /// Carries out an admin action on every member (`close` by id and `broadcast` to an id: on
    /// the member that holds it, found from the id) and answers per member.
    pub async fn admin(&self, request: AdminRequest) -> Result<ClusterAdminAnswer, ClusterError> {
        let action = request.action().to_owned();
        let target = match request.connection_id() {
            Some(id) => match self.holder_of(id) {
                Some(holder) => Target::One(holder),
                None => {
                    return Ok(ClusterAdminAnswer {
                        action,
                        success: false,
                        closed: None,
                        sent: None,
                        instances: Vec::new(),
                        unanswered: Vec::new(),
                    })
                }
            },
            None => Target::Everyone,
        };
        let survey = self.survey(target, Op::Admin { request }).await?;
        let mut out = ClusterAdminAnswer {
            success: survey.unanswered.is_empty() && !survey.answers.is_empty(),
            action,
            closed: None,
            sent: None,
            instances: Vec::new(),
            unanswered: survey.unanswered,
        };
        for (id, reply) in survey.answers {
            let Reply::Admin { status, answer } = reply else {
                continue;
            };
            out.success &= status == 200;
            let add = |slot: &mut Option<u64>, n: Option<u64>| {
                if let Some(n) = n {
                    *slot = Some(slot.unwrap_or(0).saturating_add(n));
                }
            };
            let done = answer.answer();
            add(&mut out.closed, done.and_then(AdminAnswer::closed));
            add(&mut out.sent, done.and_then(AdminAnswer::sent));
            out.instances.push(InstanceAnswer {
                instance_id: id,
                status,
                answer,
            });
        }
        Ok(out)
    }

    /// The member (this node included) whose connections' ids start like `id`, if it is known and
    /// not gone.
    pub fn holder_of(&self, id: &str) -> Option<String> {
        let holds = |instance: &str| {
            id.strip_prefix(instance)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| rest.split('-').count() == 2)
        };
        if holds(self.instance_id()) {
            return Some(self.instance_id().to_owned());
        }
        self.inner.reachable().into_iter().find(|m| holds(m))
    }
}

/// What the cluster's averages are made of: each member's mean weighted by its connections.
/// Every figure is a member's own word: the sums saturate rather than overflow.
#[derive(Default)]
struct Sums {
    age: u128,
    idle: u128,
    rtt: u128,
    rtt_weight: u128,
}

impl Sums {
    /// Adds one member's answer to `stats`' sums, and its means to these.
    fn add(&mut self, stats: &mut ClusterStats, summary: &Snapshot, traffic: &Traffic) {
        let add = |sum: &mut u64, n: u64| *sum = sum.saturating_add(n);
        add(&mut stats.total_connections, summary.total_connections);
        add(
            &mut stats.total_connections_ever,
            summary.total_connections_ever,
        );
        add(
            &mut stats.total_connections_closed,
            summary.total_connections_closed,
        );
        stats
            .connections_by_state
            .add(&summary.connections_by_state);
        stats.closed_by.add(&summary.closed_by);
        stats.refused.add(&summary.refused);
        stats.traffic.add(traffic);
        let n = u128::from(summary.total_connections);
        let weighted = |sum: &mut u128, value: u64, n: u128| {
            *sum = sum.saturating_add(u128::from(value).saturating_mul(n));
        };
        weighted(&mut self.age, summary.average_age, n);
        weighted(&mut self.idle, summary.average_idle_time, n);
        if let Some(rtt) = summary.average_rtt_ms {
            weighted(&mut self.rtt, rtt, n.max(1));
            self.rtt_weight = self.rtt_weight.saturating_add(n.max(1));
        }
    }

    /// Sets `stats`' averages from the sums.
    fn finish(self, stats: &mut ClusterStats) {
        let n = u128::from(stats.total_connections);
        let mean = |sum: u128, n: u128| {
            sum.checked_div(n)
                .map(|m| u64::try_from(m).unwrap_or(u64::MAX))
        };
        stats.average_age = mean(self.age, n).unwrap_or(0);
        stats.average_idle_time = mean(self.idle, n).unwrap_or(0);
        stats.average_rtt_ms = mean(self.rtt, self.rtt_weight);
    }
}

fn fill_from_announce(row: &mut InstanceStats, a: &crate::protocol::Announce) {
    row.main_addr = a.main_addr.clone();
    row.admin_addr = a.admin_addr.clone();
    row.version = a.version.clone();
    row.started_at = a.started_at;
}

/// The query's order between two rows of different members: `desc` puts the larger value first
/// (the oldest, the idlest, the busiest); unknown round trips come last either way; ties go by
/// sequence number, then instance id.
fn compare(a: &ConnectionInfo, b: &ConnectionInfo, sort: SortKey, order: SortOrder) -> CmpOrdering {
    let value = |c: &ConnectionInfo| -> Option<u64> {
        match sort {
            // By connect time, which stays put between pages (ages grow, and members read them
            // at slightly different moments).
            SortKey::Age => Some(u64::MAX - c.connected_at),
            SortKey::Idle => Some(c.idle_time),
            SortKey::Messages => Some(c.messages_in.saturating_add(c.messages_out)),
            SortKey::Bytes => Some(c.bytes_in.saturating_add(c.bytes_out)),
            SortKey::Queued => Some(c.queued_bytes),
            SortKey::Memory => Some(c.memory_bytes),
            SortKey::Rtt => c.rtt_ms.map(u64::from),
        }
    };
    match (value(a), value(b)) {
        (Some(x), Some(y)) => match order {
            SortOrder::Desc => y.cmp(&x),
            SortOrder::Asc => x.cmp(&y),
        },
        (Some(_), None) => CmpOrdering::Less,
        (None, Some(_)) => CmpOrdering::Greater,
        (None, None) => CmpOrdering::Equal,
    }
    .then(a.id.seq().cmp(&b.id.seq()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written envelope is serde's, byte for byte, whatever the rows: here serde's own.
    #[test]
    fn a_page_written_with_its_rows_is_serde_page() {
        let registry = wscope_core::Registry::new();
        let _held: Vec<_> = ["/a", "/b\"\u{1}"]
            .into_iter()
            .map(|path| {
                registry
                    .accept(wscope_core::ConnectionMeta::new(path))
                    .unwrap()
            })
            .collect();
        let rows: Vec<ConnectionInfo> = registry.snapshot().connections;
        for (next, unanswered) in [(None, vec![]), (Some("2".to_owned()), vec!["c\"".into()])] {
            let page = ClusterPage {
                total: 7,
                connections: rows.clone(),
                next,
                instances: vec![InstanceCount {
                    instance_id: "a\\b".into(),
                    total: 2,
                }],
                unanswered,
            };
            let mine = page
                .write_json_with(|out| serde_json::to_writer(out, &page.connections).unwrap())
                .unwrap();
            assert_eq!(
                String::from_utf8(mine).unwrap(),
                serde_json::to_string(&page).unwrap()
            );
        }
    }
}
