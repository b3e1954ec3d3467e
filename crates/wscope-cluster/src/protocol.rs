//! What nodes say to each other: one JSON [`Envelope`] per published payload, on two channels per
//! cluster — `{prefix}{cluster}:all` (announcements, hellos, leaves, surveys of every member,
//! broadcasts) and `{prefix}{cluster}:to:{instance}` (surveys of one member, replies). A payload
//! that does not parse, names another cluster or another protocol version is counted and ignored.
//! docs/CLUSTER.md shows each message.

use serde::{Deserialize, Serialize};

use wscope_core::query::ConnectionQuery;
use wscope_core::wire::{AdminRequest, BroadcastPayload, ConnectionPage, ErrorBody};
use wscope_core::AdminAnswer;
use wscope_core::Snapshot;
use wscope_core::Traffic;

/// The protocol version every envelope carries (`"v"`); another version is ignored.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest incarnation believed (this build sends 16 hex digits).
const MAX_INCARNATION_LEN: usize = 64;

/// The longest address or version an announcement may carry.
const MAX_LABEL_LEN: usize = 256;

/// One message between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The cluster name (a message of another cluster is ignored).
    pub cluster: String,
    /// The sender's instance id.
    pub from: String,
    /// The sender's incarnation: random per node start, to tell two processes with one id apart.
    pub incarnation: String,
    /// What it says.
    pub body: Body,
}

impl Envelope {
    /// Why its sender cannot be believed, if it cannot: an instance id this build would refuse,
    /// or an incarnation that is empty, long, or not printable ASCII.
    pub fn check_sender(&self) -> Result<(), &'static str> {
        if wscope_core::check_instance_id(&self.from).is_err() {
            return Err("an invalid sender id");
        }
        let incarnation = self.incarnation.as_bytes();
        if incarnation.is_empty()
            || incarnation.len() > MAX_INCARNATION_LEN
            || !incarnation.iter().all(u8::is_ascii_graphic)
        {
            return Err("an invalid incarnation");
        }
        Ok(())
    }
}

/// An envelope to send, borrowing everything (what [`Envelope`] reads back).
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a, B = Body> {
    pub v: u32,
    pub cluster: &'a str,
    pub from: &'a str,
    pub incarnation: &'a str,
    pub body: &'a B,
}

impl<B> EnvelopeRef<'_, B> {
    /// The JSON text every envelope from this sender starts with, up to its body: a payload that
    /// starts with it is this node's own, echoed back, and is skipped without parsing.
    pub fn prefix(&self) -> Result<Vec<u8>, serde_json::Error> {
        let text = serde_json::to_string;
        Ok(format!(
            r#"{{"v":{},"cluster":{},"from":{},"incarnation":{},"body":"#,
            self.v,
            text(self.cluster)?,
            text(self.from)?,
            text(self.incarnation)?
        )
        .into_bytes())
    }
}

/// What an [`Envelope`] says.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Body {
    /// "I am here": sent every heartbeat interval.
    Announce(Announce),
    /// "Announce yourselves now": sent by a node as it joins.
    Hello {},
    /// "I am leaving": sent on shutdown, so the others mark it gone at once.
    Leave {},
    /// A survey question; the answer goes to the sender's own channel.
    Request {
        /// Matches the reply to the question.
        id: u64,
        /// The question.
        op: Op,
    },
    /// An answer to the request `id` of the node it is addressed to.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// A cluster-wide broadcast: every other node queues it to its connections (on `path`).
    Broadcast {
        /// Counts up per broadcast of the sender (gaps show losses).
        seq: u64,
        /// Only connections on this path (every path if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// The message.
        message: BroadcastPayload,
    },
}

/// A node's announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Announce {
    /// The instance id.
    pub instance_id: String,
    /// The main listener's address, if the node told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_addr: Option<String>,
    /// The admin listener's address, if the node told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// Unix time in ms when the node started.
    pub started_at: u64,
    /// The node's software version.
    pub version: String,
    /// How often it announces, in ms (its TTL is [`ClusterConfig::ttl`](crate::config::ClusterConfig::ttl)).
    pub heartbeat_ms: u64,
    /// Its stats summary when it announced (the list of connections left out).
    pub summary: Snapshot,
}

impl Announce {
    /// Why this announcement from `from` is not recorded, if it is not: it names another id, or
    /// carries more than a member's row needs (long labels, a list of connections, which the
    /// view would keep and `/api/cluster/stats` repeat).
    pub(crate) fn check(&mut self, from: &str) -> Result<(), &'static str> {
        if self.instance_id != from {
            return Err("an announcement for another id");
        }
        let labels = [&self.main_addr, &self.admin_addr]
            .into_iter()
            .flatten()
            .chain([&self.version]);
        if labels.into_iter().any(|l| l.len() > MAX_LABEL_LEN) {
            return Err("an announcement with an over-long address or version");
        }
        if !self.summary.connections.is_empty() {
            return Err("an announcement with a list of connections");
        }
        if self.summary.instance_id.is_empty() {
            self.summary.instance_id = from.to_owned();
        } else if self.summary.instance_id != from {
            return Err("an announcement whose summary names another id");
        }
        Ok(())
    }
}

/// A survey question.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// The stats summary and traffic totals.
    Stats {},
    /// A page of connections.
    Connections {
        /// Filter, sort, first rows (the asker pages across members).
        query: ConnectionQuery,
    },
    /// Carry out an admin action here.
    Admin {
        /// The action.
        request: AdminRequest,
    },
}

/// A survey answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// To [`Op::Stats`].
    Stats {
        /// The summary.
        summary: Box<Snapshot>,
        /// Messages and bytes since start.
        traffic: Traffic,
    },
    /// To [`Op::Connections`].
    Connections {
        /// The page.
        page: ConnectionPage,
    },
    /// To [`Op::Admin`]: the HTTP-like status and the answer (or `{"error": ...}`).
    Admin {
        /// 200, or the failure's status.
        status: u16,
        /// The answer.
        answer: AdminReply,
    },
}

/// A member's answer to an admin action, as its own `POST /api/admin` would have answered:
/// the action's answer, or `{"error": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum AdminReply {
    /// The action failed there (its status says how).
    Failed(ErrorBody),
    /// The action's answer.
    Done(AdminAnswer),
}

impl AdminReply {
    /// The failure's message, if the action failed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Failed(body) => Some(&body.error),
            Self::Done(_) => None,
        }
    }

    /// The answer, if the action was carried out.
    pub fn answer(&self) -> Option<&AdminAnswer> {
        match self {
            Self::Done(answer) => Some(answer),
            Self::Failed(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use wscope_core::wire::CloseAnswer;

    use super::*;

    fn json(body: Body) -> String {
        let out = EnvelopeRef {
            v: PROTOCOL_VERSION,
            cluster: "prod",
            from: "eu-1",
            incarnation: "5f1c2a9e0b7d4c31",
            body: &body,
        };
        let text = serde_json::to_string(&out).unwrap();
        assert!(
            text.as_bytes().starts_with(&out.prefix().unwrap()),
            "{text}"
        );
        // What is sent reads back as what was said.
        let back: Envelope = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(serde_json::to_string(&back).unwrap_or_default(), text);
        text
    }

    /// The formats docs/CLUSTER.md shows, pinned.
    #[test]
    fn the_wire_formats_are_the_documented_ones() {
        assert_eq!(
            json(Body::Hello {}),
            r#"{"v":1,"cluster":"prod","from":"eu-1","incarnation":"5f1c2a9e0b7d4c31","body":{"type":"hello"}}"#
        );
        assert!(json(Body::Leave {}).ends_with(r#""body":{"type":"leave"}}"#));
        assert!(json(Body::Request {
            id: 7,
            op: Op::Stats {}
        })
        .ends_with(r#""body":{"type":"request","id":7,"op":{"op":"stats"}}}"#));
        let admin = Op::Admin {
            request: AdminRequest::from_json(br#"{"action":"close","id":"eu-2-18a-5"}"#)
                .unwrap_or(AdminRequest::Cleanup {}),
        };
        assert!(json(Body::Request { id: 8, op: admin }).ends_with(
            r#""body":{"type":"request","id":8,"op":{"op":"admin","request":{"action":"close","id":"eu-2-18a-5"}}}}"#
        ));
        assert!(json(Body::Reply {
            id: 8,
            reply: Reply::Admin {
                status: 200,
                answer: AdminReply::Done(AdminAnswer::Close(CloseAnswer { success: true })),
            }
        })
        .ends_with(r#""body":{"type":"reply","id":8,"reply":{"op":"admin","status":200,"answer":{"success":true}}}}"#));
        assert!(json(Body::Broadcast {
            seq: 42,
            path: Some("/ws/chat".into()),
            message: BroadcastPayload::Text("hi".into()),
        })
        .ends_with(
            r#""body":{"type":"broadcast","seq":42,"path":"/ws/chat","message":{"text":"hi"}}}"#
        ));
        assert!(json(Body::Broadcast {
            seq: 43,
            path: None,
            message: BroadcastPayload::Binary(vec![0, 1, 2]),
        })
        .ends_with(r#""body":{"type":"broadcast","seq":43,"message":{"binary":"AAEC"}}}"#));
    }
}
