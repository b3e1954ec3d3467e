//! The admin actions applied to one registry, without HTTP: what `POST /api/admin` does on this
//! instance and what a cluster node does when a survey asks it to act. The answer types are in
//! [`wire`](crate::wire).

use serde::{Deserialize, Serialize};

use crate::close::{CloseCode, CloseFrame, Initiator, ReasonTooLong};
use crate::connection::{ConnectionHandle, ConnectionState};
use crate::outbox::SendError;
use crate::query::ConnectionFilter;
use crate::registry::Broadcast;
use crate::registry::Registry;
use crate::snapshot::Snapshot;
use crate::wire::{
    AdminRequest, BanAnswer, BansAnswer, BroadcastAnswer, BroadcastTarget, CleanupAnswer,
    CloseAllAnswer, CloseAnswer, CloseMatchingAnswer, KickAnswer, UnbanAnswer,
};

/// What an admin action answered, as it goes on the wire (each variant is its wire type as is),
/// and read back from it. Read back, a variant is recognised by its fields, most specific first:
/// `close_all`, `close_matching` and `kick` answer the same fields (`success`, `closed`), and
/// read back as [`AdminAnswer::CloseAll`] — the same JSON again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum AdminAnswer {
    /// `get_stats`.
    Stats(Box<Snapshot>),
    /// `ban`.
    Ban(BanAnswer),
    /// `broadcast`.
    Broadcast(BroadcastAnswer),
    /// `unban`.
    Unban(UnbanAnswer),
    /// `list_bans`.
    ListBans(BansAnswer),
    /// `cleanup`.
    Cleanup(CleanupAnswer),
    /// `close_all`.
    CloseAll(CloseAllAnswer),
    /// `close_matching`.
    CloseMatching(CloseMatchingAnswer),
    /// `kick`.
    Kick(KickAnswer),
    /// `close`.
    Close(CloseAnswer),
}

impl AdminAnswer {
    /// Connections asked to close, for the answers that say (`closed`).
    pub fn closed(&self) -> Option<u64> {
        match self {
            Self::CloseAll(a) => Some(a.closed),
            Self::CloseMatching(a) => Some(a.closed),
            Self::Ban(a) => Some(a.closed),
            Self::Kick(a) => Some(a.closed),
            _ => None,
        }
    }

    /// Connections a broadcast was queued to, for a broadcast's answer (`sent`).
    pub fn sent(&self) -> Option<u64> {
        match self {
            Self::Broadcast(a) => Some(a.sent),
            _ => None,
        }
    }
}

/// An admin action that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct AdminFailure {
    /// Why, as an HTTP-like class.
    pub kind: AdminFailureKind,
    /// What went wrong, for the answer's `error`.
    pub message: String,
}

/// The classes of [`AdminFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminFailureKind {
    /// The request cannot be acted on as given (HTTP 400).
    BadRequest,
    /// What it names is not here (HTTP 404).
    NotFound,
}

impl AdminFailure {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            kind: AdminFailureKind::BadRequest,
            message: message.into(),
        }
    }

    fn not_found(message: String) -> Self {
        Self {
            kind: AdminFailureKind::NotFound,
            message,
        }
    }

    /// The HTTP status the failure maps to.
    pub fn status(&self) -> u16 {
        match self.kind {
            AdminFailureKind::BadRequest => 400,
            AdminFailureKind::NotFound => 404,
        }
    }
}

impl From<ReasonTooLong> for AdminFailure {
    fn from(e: ReasonTooLong) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl Registry {
    /// `close` by id as one step: the connection is looked up once and asked to close through
    /// what the lookup found, and the answer follows from what that request met — asked (true),
    /// a close already under way (false), or a connection that has ended, before or as it was
    /// asked (404, as for an id never seen; a second lookup could find it gone after the first
    /// found it, and answer "already closing" for a connection that had left).
    fn close_one(&self, id: &str, frame: CloseFrame) -> Result<bool, AdminFailure> {
        let handle = self
            .connection(id)
            .ok_or_else(|| AdminFailure::not_found(format!("no connection with id {id:?}")))?;
        if handle.entry.request_close(frame, Initiator::Admin) {
            return Ok(true);
        }
        // The state only moves forward, and a connection that ends is CLOSED before its queue is
        // shut: CLOSED now means the request met a connection that was over. One dropped without
        // ending (a task aborted) has its queue shut as it leaves the map: not tracked, also over.
        // Anything else refused the request because a close was already asked for.
        let entry = &handle.entry;
        if entry.state() == ConnectionState::Closed
            || !self.shared().entries.contains_key(&entry.seq)
        {
            return Err(AdminFailure::not_found(format!(
                "connection {id:?} has closed"
            )));
        }
        Ok(false)
    }

    /// `broadcast` to its target: every open connection or a path's through the registry's
    /// broadcast (which visits only that path's members), one id, a user or a filter through
    /// the connections' handles — each without waiting, a full queue closing its connection as
    /// a slow consumer.
    fn broadcast_to(&self, request: AdminRequest) -> Result<BroadcastAnswer, AdminFailure> {
        let target = match request.broadcast_target() {
            Some(Ok(target)) => target,
            Some(Err(message)) => return Err(AdminFailure::bad_request(message)),
            None => return Err(AdminFailure::bad_request("not a broadcast")),
        };
        let AdminRequest::Broadcast { ref payload, .. } = request else {
            return Err(AdminFailure::bad_request("not a broadcast"));
        };
        let msg = payload.clone().into_message();
        let handles = match target {
            BroadcastTarget::All => return Ok(BroadcastAnswer::from(self.broadcast(None, &msg))),
            BroadcastTarget::Path(path) => {
                return Ok(BroadcastAnswer::from(self.broadcast(Some(path), &msg)))
            }
            BroadcastTarget::Id(id) => vec![self.open_or_closing(id)?],
            BroadcastTarget::User(user) => {
                self.connections_matching(&ConnectionFilter::default().user(user))
            }
            BroadcastTarget::Filter(filter) => self.connections_matching(filter),
        };
        let mut answer = BroadcastAnswer::from(Broadcast::default());
        for handle in handles {
            match handle.send(msg.clone()) {
                Ok(()) => answer.sent += 1,
                Err(SendError::QueueFull) => answer.slow += 1,
                Err(SendError::Closed) => {}
            }
        }
        Ok(answer)
    }

    /// The connection with this id, unless it is unknown or has ended (404, as for `close`).
    fn open_or_closing(&self, id: &str) -> Result<ConnectionHandle, AdminFailure> {
        let handle = self
            .connection(id)
            .ok_or_else(|| AdminFailure::not_found(format!("no connection with id {id:?}")))?;
        if handle.entry.state() == ConnectionState::Closed {
            return Err(AdminFailure::not_found(format!(
                "connection {id:?} has closed"
            )));
        }
        Ok(handle)
    }

    /// Carries out one admin action on this registry, as `POST /api/admin` does.
    pub fn apply(&self, request: AdminRequest) -> Result<AdminAnswer, AdminFailure> {
        Ok(match request {
            AdminRequest::GetStats {} => AdminAnswer::Stats(Box::new(self.snapshot())),
            AdminRequest::CloseAll { code, reason } => AdminAnswer::CloseAll(CloseAllAnswer {
                success: true,
                closed: self.close_all(
                    code.unwrap_or(CloseCode::NORMAL),
                    reason.as_deref().unwrap_or_default(),
                )?,
            }),
            AdminRequest::Close { id, code, reason } => {
                let frame = CloseFrame::new(
                    code.unwrap_or(CloseCode::NORMAL),
                    reason.unwrap_or_default(),
                )?;
                AdminAnswer::Close(CloseAnswer {
                    success: self.close_one(&id, frame)?,
                })
            }
            AdminRequest::CloseMatching {
                filter,
                code,
                reason,
            } => AdminAnswer::CloseMatching(CloseMatchingAnswer {
                success: true,
                closed: self.close_matching(
                    &filter,
                    code.unwrap_or(CloseCode::NORMAL),
                    reason.as_deref().unwrap_or_default(),
                )?,
            }),
            AdminRequest::Cleanup {} => AdminAnswer::Cleanup(CleanupAnswer {
                cleaned: self.cleanup_stale(),
            }),
            AdminRequest::Ban {
                target,
                duration,
                reason,
            } => {
                let outcome = self
                    .ban(target, duration, reason.as_deref().unwrap_or_default())
                    .map_err(|e| AdminFailure::bad_request(e.to_string()))?;
                AdminAnswer::Ban(BanAnswer {
                    success: true,
                    closed: outcome.closed,
                    replaced: outcome.replaced,
                    ban: outcome.ban,
                })
            }
            AdminRequest::Unban { target } => AdminAnswer::Unban(UnbanAnswer {
                success: true,
                removed: self.unban(target),
            }),
            AdminRequest::ListBans {} => AdminAnswer::ListBans(BansAnswer { bans: self.bans() }),
            AdminRequest::Kick {
                target,
                code,
                reason,
            } => AdminAnswer::Kick(KickAnswer {
                success: true,
                closed: self.kick(
                    target,
                    code.unwrap_or(CloseCode::POLICY),
                    reason.as_deref().unwrap_or("kicked"),
                )?,
            }),
            AdminRequest::Broadcast { .. } => AdminAnswer::Broadcast(self.broadcast_to(request)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every answer's JSON reads back as an answer that writes the same JSON again.
    #[test]
    fn admin_answers_round_trip() {
        let registry = Registry::new();
        let requests = [
            r#"{"action":"get_stats"}"#,
            r#"{"action":"close_all"}"#,
            r#"{"action":"close_matching","filter":{"path":"/x"}}"#,
            r#"{"action":"cleanup"}"#,
            r#"{"action":"ban","target":"10.0.0.0/8","duration":"1m","reason":"spam"}"#,
            r#"{"action":"list_bans"}"#,
            r#"{"action":"unban","target":"10.0.0.0/8"}"#,
            r#"{"action":"kick","target":"10.1.2.3"}"#,
            r#"{"action":"broadcast","text":"hi"}"#,
        ];
        for body in requests {
            let request = AdminRequest::from_json(body.as_bytes()).expect(body);
            let answer = registry.apply(request).expect(body);
            let json = serde_json::to_string(&answer).expect(body);
            let back: AdminAnswer = serde_json::from_str(&json).expect(body);
            assert_eq!(serde_json::to_string(&back).expect(body), json, "{body}");
            assert_eq!(back.closed(), answer.closed(), "{body}");
            assert_eq!(back.sent(), answer.sent(), "{body}");
            // Each shape but the three that share one reads back as its own variant.
            let shared = matches!(answer, AdminAnswer::CloseMatching(_) | AdminAnswer::Kick(_));
            assert_eq!(back == answer, !shared, "{body}: {back:?}");
        }
    }

    #[test]
    fn a_close_answer_reads_back_as_itself() {
        let json = r#"{"success":false}"#;
        let back: AdminAnswer = serde_json::from_str(json).unwrap();
        assert_eq!(back, AdminAnswer::Close(CloseAnswer { success: false }));
    }
}
