//! The admin actions applied to one registry, without HTTP: what `POST /api/admin` does on this
//! instance and what a cluster node does when a survey asks it to act. The answer types are in
//! [`wire`](crate::wire).

use serde::Serialize;

use crate::close::{CloseCode, ReasonTooLong};
use crate::message::Message;
use crate::registry::Registry;
use crate::snapshot::Snapshot;
use crate::wire::{
    AdminRequest, BanAnswer, BansAnswer, BroadcastAnswer, CleanupAnswer, CloseAllAnswer,
    CloseAnswer, CloseMatchingAnswer, KickAnswer, UnbanAnswer,
};

/// What an admin action answered, ready to serialize (each variant is its wire type as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum AdminAnswer {
    /// `get_stats`.
    Stats(Box<Snapshot>),
    /// `close_all`.
    CloseAll(CloseAllAnswer),
    /// `close`.
    Close(CloseAnswer),
    /// `close_matching`.
    CloseMatching(CloseMatchingAnswer),
    /// `cleanup`.
    Cleanup(CleanupAnswer),
    /// `ban`.
    Ban(BanAnswer),
    /// `unban`.
    Unban(UnbanAnswer),
    /// `list_bans`.
    ListBans(BansAnswer),
    /// `kick`.
    Kick(KickAnswer),
    /// `broadcast`.
    Broadcast(BroadcastAnswer),
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
                if self.connection(&id).is_none() {
                    return Err(AdminFailure {
                        kind: AdminFailureKind::NotFound,
                        message: format!("no connection with id {id:?}"),
                    });
                }
                AdminAnswer::Close(CloseAnswer {
                    success: self.close(
                        &id,
                        code.unwrap_or(CloseCode::NORMAL),
                        reason.as_deref().unwrap_or_default(),
                    )?,
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
            AdminRequest::Broadcast { path, payload } => {
                let msg: Message = payload.into_message();
                let outcome = self.broadcast(path.as_deref(), &msg);
                AdminAnswer::Broadcast(BroadcastAnswer {
                    success: true,
                    sent: outcome.sent,
                    slow: outcome.slow,
                })
            }
        })
    }
}
