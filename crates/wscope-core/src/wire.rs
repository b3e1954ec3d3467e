//! The admin API's JSON, as types that serialize and deserialize: what the HTTP handlers write
//! and what clients (`wscope top`, cluster peers, tests) read, with the reference's field names.
//! The stats themselves are [`Snapshot`]; this module adds the health answer, the admin
//! requests and their answers, and the error body.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::admission::Ban;
use crate::close::CloseCode;
use crate::counts::{ClosedBy, RefusalCounts};
use crate::message::Message;
use crate::query::{ConnectionFilter, Cursor};
use crate::snapshot::{ClosedConnection, ConnectionInfo, Snapshot, Summary};
use crate::traffic::Traffic;

/// `GET /health`: the reference's health fields plus the instance id and the shutdown flag.
/// Ages and uptime here are in **seconds** (as in the reference's health example), where the
/// stats give milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Health {
    /// Whether the instance takes new connections.
    pub status: HealthStatus,
    /// Connections tracked now.
    pub active_connections: u64,
    /// Mean connection age in whole seconds (rounded).
    pub average_age: u64,
    /// Seconds since the registry started.
    pub uptime: f64,
    /// The instance id.
    #[serde(default)]
    pub instance_id: String,
    /// Whether shutdown has begun (upgrades are refused).
    #[serde(default)]
    pub shut_down: bool,
}

/// The `status` of a [`Health`] answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving (HTTP 200).
    Healthy,
    /// A drain has begun (HTTP 503, so load balancers stop sending clients).
    ShuttingDown,
}

impl Health {
    /// The health answer for a registry's summary.
    pub fn from_summary(s: &Snapshot) -> Self {
        Self {
            status: if s.shut_down {
                HealthStatus::ShuttingDown
            } else {
                HealthStatus::Healthy
            },
            active_connections: s.total_connections,
            average_age: (s.average_age + 500) / 1000,
            uptime: s.uptime as f64 / 1000.0,
            instance_id: s.instance_id.clone(),
            shut_down: s.shut_down,
        }
    }

    /// Whether this answer is a 200 (else 503).
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// The public `GET /health` (the main listener's): the reference's fields only. It leaves out
/// the instance id, which defaults to the host name, and the shutdown flag, which `status`
/// already tells; the admin listener answers the full [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PublicHealth {
    /// Whether the instance takes new connections.
    pub status: HealthStatus,
    /// Connections tracked now.
    pub active_connections: u64,
    /// Mean connection age in whole seconds (rounded).
    pub average_age: u64,
    /// Seconds since the registry started.
    pub uptime: f64,
}

impl From<Health> for PublicHealth {
    fn from(h: Health) -> Self {
        Self {
            status: h.status,
            active_connections: h.active_connections,
            average_age: h.average_age,
            uptime: h.uptime,
        }
    }
}

impl PublicHealth {
    /// The public health answer for a registry's summary.
    pub fn from_summary(s: &Snapshot) -> Self {
        Health::from_summary(s).into()
    }

    /// Whether this answer is a 200 (else 503).
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// A `POST /api/admin` body: `{"action": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdminRequest {
    /// The full stats (answered with a [`Snapshot`]).
    GetStats {},
    /// Close every connection after flushing what is queued to each (answered with a
    /// [`CloseAllAnswer`]).
    CloseAll {
        /// The close code (default 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<CloseCode>,
        /// The close reason (default empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Close one connection (answered with a [`CloseAnswer`]; 404 if no connection by that id
    /// is open or closing).
    Close {
        /// Its id.
        id: String,
        /// The close code (default 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<CloseCode>,
        /// The close reason (default empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Remove stale entries (answered with a [`CleanupAnswer`]).
    Cleanup {},
    /// Ban an address or network: its open connections are closed with 1008 and the reason, new
    /// upgrades from it get 403 until the ban expires (answered with a [`BanAnswer`]).
    Ban {
        /// An IP address (`203.0.113.7`) or a CIDR network (`203.0.113.0/24`).
        #[serde(with = "net_text")]
        target: IpNet,
        /// How long (`10m`, `1h`, or a number of seconds); required and more than zero — there
        /// is no permanent ban (a long one is written `100y`).
        #[serde(with = "duration_text")]
        duration: Duration,
        /// Why: kept with the ban and sent as the close reason (default "banned").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Lift the ban of exactly this target (answered with an [`UnbanAnswer`]).
    Unban {
        /// The address or network, as it was banned.
        #[serde(with = "net_text")]
        target: IpNet,
    },
    /// The bans in force (answered with a [`BansAnswer`]).
    ListBans {},
    /// Close every connection that matches a filter (answered with a [`CloseMatchingAnswer`]).
    /// The filter must set at least one condition: `close_all` closes everything.
    CloseMatching {
        /// Which connections (`tag`, `user`, `ip`, `state`, `min_idle`, `path`, `ua`).
        filter: ConnectionFilter,
        /// The close code (default 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<CloseCode>,
        /// The close reason (default empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Close the open connections of an address or network once, without banning it (answered
    /// with a [`KickAnswer`]).
    Kick {
        /// An IP address or a CIDR network.
        #[serde(with = "net_text")]
        target: IpNet,
        /// The close code (default 1008).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<CloseCode>,
        /// The close reason (default "kicked").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Queue a message to the open connections of one target — every one by default, or those
    /// of a `path`, the one of an `id` (404 if it is not open or closing, as for `close`), those
    /// of a `user`, or those a `filter` matches — without waiting: a connection whose queue is
    /// full is closed as a slow consumer (answered with a [`BroadcastAnswer`]). The message is
    /// `text` or `binary` (base64), exactly one of them; the target at most one of the four.
    Broadcast {
        /// Only the connections on this path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Only the connection with this id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Only the connections with this user id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Only the connections this filter matches (as `close_matching`'s: at least one
        /// condition).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<ConnectionFilter>,
        /// The message.
        #[serde(flatten)]
        payload: BroadcastPayload,
    },
}

/// Whom a `broadcast` reaches: at most one target of [`AdminRequest::Broadcast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BroadcastTarget<'a> {
    /// Every open connection.
    All,
    /// The open connections on this path.
    Path(&'a str),
    /// The connection with this id.
    Id(&'a str),
    /// The open connections with this user id.
    User(&'a str),
    /// The open connections this filter matches.
    Filter(&'a ConnectionFilter),
}

impl AdminRequest {
    /// The connection id an action is about, when it is about one connection (`close`, and
    /// `broadcast` to an `id`): in cluster mode such an action goes to the member holding it.
    pub fn connection_id(&self) -> Option<&str> {
        match self {
            Self::Close { id, .. } => Some(id),
            Self::Broadcast { id: Some(id), .. } => Some(id),
            _ => None,
        }
    }

    /// The target of a `broadcast` (`None` for other actions), or what is wrong with it: two
    /// targets, or a filter without a condition.
    pub fn broadcast_target(&self) -> Option<Result<BroadcastTarget<'_>, String>> {
        let Self::Broadcast {
            path,
            id,
            user,
            filter,
            ..
        } = self
        else {
            return None;
        };
        let given = [
            path.as_deref().map(BroadcastTarget::Path),
            id.as_deref().map(BroadcastTarget::Id),
            user.as_deref().map(BroadcastTarget::User),
            filter.as_ref().map(BroadcastTarget::Filter),
        ];
        let mut given = given.into_iter().flatten();
        Some(match (given.next(), given.next()) {
            (None, _) => Ok(BroadcastTarget::All),
            (Some(_), Some(_)) => Err(
                "give at most one target: path, id, user or filter (a filter combines conditions)"
                    .to_owned(),
            ),
            (Some(BroadcastTarget::Filter(f)), None) if f.is_empty() => Err(format!(
                "filter: set at least one of {} (leave the target out to send to every \
                 connection)",
                ConnectionFilter::PARAMS.join(", ")
            )),
            (Some(target), None) => Ok(target),
        })
    }
}

/// The message of a `broadcast` action: `{"text": "..."}` or `{"binary": "<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastPayload {
    /// A text message.
    Text(String),
    /// A binary message, base64 (standard alphabet, padded) on the wire.
    Binary(#[serde(with = "base64_text")] Vec<u8>),
}

impl BroadcastPayload {
    /// The message to send.
    pub fn into_message(self) -> Message {
        match self {
            Self::Text(text) => Message::text(text),
            Self::Binary(bytes) => Message::binary(bytes),
        }
    }

    /// The payload of `msg` (text or binary; control frames have none).
    pub fn from_message(msg: &Message) -> Option<Self> {
        match msg {
            Message::Text(t) => Some(Self::Text(t.as_str().to_owned())),
            Message::Binary(b) => Some(Self::Binary(b.to_vec())),
            _ => None,
        }
    }
}

/// The action names, one row per [`AdminRequest`] variant: [`AdminRequest::ACTIONS`] and
/// [`AdminRequest::action`] are both made from this table, and a test holds each name against
/// serde's tag (`rename_all = "snake_case"`), so the three cannot drift apart.
macro_rules! admin_actions {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        impl AdminRequest {
            /// Every action's name, as written in `action`.
            pub const ACTIONS: [&'static str; [$($name),+].len()] = [$($name),+];

            /// This request's action name.
            pub fn action(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $name,)+
                }
            }
        }
    };
}

admin_actions! {
    GetStats => "get_stats",
    CloseAll => "close_all",
    Close => "close",
    CloseMatching => "close_matching",
    Cleanup => "cleanup",
    Ban => "ban",
    Unban => "unban",
    ListBans => "list_bans",
    Kick => "kick",
    Broadcast => "broadcast",
}

/// A `POST /api/admin` body that cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRequestError {
    /// Not JSON, or not an object.
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// No `action` field.
    #[error("missing field `action`: use {list}", list = AdminRequest::ACTIONS.join(", "))]
    MissingAction,
    /// An action this server does not know.
    #[error("unknown action {0:?}: use {list}", list = AdminRequest::ACTIONS.join(", "))]
    UnknownAction(String),
    /// A field no action takes.
    #[error("unknown field `{0}`: the fields are {list}", list = AdminRequest::FIELDS.join(", "))]
    UnknownField(String),
    /// A known action with fields missing or out of range.
    #[error("action {action:?}: {message}")]
    BadFields {
        /// The action.
        action: String,
        /// What is wrong.
        message: String,
    },
}

impl AdminRequest {
    /// Every field any action takes. A field of another action is ignored (so one form can send
    /// every field); a field no action takes is an error.
    pub const FIELDS: [&'static str; 11] = [
        "action", "code", "reason", "id", "target", "duration", "filter", "path", "user", "text",
        "binary",
    ];

    /// Parses a request body, naming what is wrong: malformed JSON, a missing or unknown action
    /// (with the valid ones), or the bad field of a known action.
    pub fn from_json(body: &[u8]) -> Result<Self, AdminRequestError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| AdminRequestError::Malformed(e.to_string()))?;
        let action = match value.get("action") {
            None if value.is_object() => return Err(AdminRequestError::MissingAction),
            None => {
                return Err(AdminRequestError::Malformed(
                    "expected a JSON object".into(),
                ))
            }
            Some(serde_json::Value::String(a)) => a.clone(),
            Some(other) => return Err(AdminRequestError::UnknownAction(other.to_string())),
        };
        if !Self::ACTIONS.contains(&action.as_str()) {
            return Err(AdminRequestError::UnknownAction(action));
        }
        if action == "broadcast" {
            let has = |k: &str| value.get(k).is_some();
            if has("text") == has("binary") {
                return Err(AdminRequestError::BadFields {
                    action,
                    message: "give the message as exactly one of `text` or `binary` (base64)"
                        .into(),
                });
            }
        }
        if let Some(unknown) = value
            .as_object()
            .and_then(|o| o.keys().find(|k| !Self::FIELDS.contains(&k.as_str())))
        {
            return Err(AdminRequestError::UnknownField(unknown.clone()));
        }
        let request: Self =
            serde_json::from_value(value).map_err(|e| AdminRequestError::BadFields {
                action: action.clone(),
                message: e.to_string(),
            })?;
        if let Some(Err(message)) = request.broadcast_target() {
            return Err(AdminRequestError::BadFields { action, message });
        }
        if let Self::CloseMatching { filter, .. } = &request {
            if filter.is_empty() {
                return Err(AdminRequestError::BadFields {
                    action,
                    message: format!(
                        "filter: set at least one of {} (close_all closes every connection)",
                        ConnectionFilter::PARAMS.join(", ")
                    ),
                });
            }
        }
        Ok(request)
    }
}

/// The answer to `close_all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseAllAnswer {
    /// Always true (a failure is an error answer).
    pub success: bool,
    /// How many connections were asked to close (those already closing are not counted).
    pub closed: u64,
}

/// The answer to `close_matching`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseMatchingAnswer {
    /// Always true (a failure is an error answer).
    pub success: bool,
    /// How many matching connections were asked to close (those already closing are not
    /// counted).
    pub closed: u64,
}

/// `GET /api/connections`: one page of the connections that match the query, and where the next
/// page starts. `T` is [`ConnectionInfo`], or a JSON object when `fields=` picked columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionPage<T = ConnectionInfo> {
    /// Connections matching the filter (all pages together).
    pub total: u64,
    /// This page's rows, in the query's order.
    pub connections: Vec<T>,
    /// The cursor of the next page (`cursor=`); `null` on the last page.
    pub next: Option<Cursor>,
}

impl<T> ConnectionPage<T> {
    /// A page of `connections` out of `total`, followed by `next`.
    pub fn new(total: u64, connections: Vec<T>, next: Option<Cursor>) -> Self {
        Self {
            total,
            connections,
            next,
        }
    }

    /// The same page with each row mapped (to pick columns, say).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> ConnectionPage<U> {
        ConnectionPage {
            total: self.total,
            connections: self.connections.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// The answer to `close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseAnswer {
    /// True if the connection was asked to close, false if a close was already under way. A
    /// connection that has ended (or was never here) is a 404 instead.
    pub success: bool,
}

/// The answer to `cleanup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupAnswer {
    /// Stale entries removed.
    pub cleaned: u64,
}

/// `GET /api/closed`: the recently closed connections, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClosedList {
    /// How many the registry keeps now (the list may be cut by `limit`).
    pub total: usize,
    /// The newest first.
    pub connections: Vec<ClosedConnection>,
}

impl ClosedList {
    /// A list of `connections` out of `total` kept.
    pub fn new(total: usize, connections: Vec<ClosedConnection>) -> Self {
        Self { total, connections }
    }
}

/// `GET /ready`: whether this instance takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ready {
    /// True while serving; false from the moment a drain begins.
    pub ready: bool,
}

impl Ready {
    /// The answer for a registry that is (not) shutting down.
    pub fn new(ready: bool) -> Self {
        Self { ready }
    }
}

/// The answer to `ban`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanAnswer {
    /// Always true (a failure is an error answer).
    pub success: bool,
    /// Open connections from the target asked to close.
    pub closed: u64,
    /// Whether it replaced a ban of the same target.
    pub replaced: bool,
    /// The ban now in force.
    pub ban: Ban,
}

/// The answer to `unban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbanAnswer {
    /// Always true: lifting a ban that is not held is not an error.
    pub success: bool,
    /// Whether a ban of exactly that target was held and is now lifted.
    pub removed: bool,
}

/// The answer to `list_bans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BansAnswer {
    /// The bans in force, ordered by target.
    pub bans: Vec<Ban>,
}

/// The answer to `kick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickAnswer {
    /// Always true (a failure is an error answer).
    pub success: bool,
    /// Open connections from the target asked to close.
    pub closed: u64,
}

/// The answer to `broadcast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastAnswer {
    /// Always true (a broadcast to nobody still succeeds; an unknown `id` is a 404).
    pub success: bool,
    /// Connections the message was queued to (of the target's open ones).
    pub sent: u64,
    /// Connections whose queue was full: closed as slow consumers (1008).
    pub slow: u64,
}

impl From<crate::registry::Broadcast> for BroadcastAnswer {
    fn from(outcome: crate::registry::Broadcast) -> Self {
        Self {
            success: true,
            sent: outcome.sent,
            slow: outcome.slow,
        }
    }
}

/// Bytes as standard base64 text (padded).
mod base64_text {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("binary: not base64 ({e})")))
    }
}

/// A target as text: an IP address or a CIDR network (written as a network).
mod net_text {
    use std::fmt;

    use ipnet::IpNet;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        struct Net;
        impl Visitor<'_> for Net {
            type Value = IpNet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the target as a string: an IP address or a CIDR network")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IpNet, E> {
                crate::units::parse_net(v).map_err(|e| E::custom(format!("target: {e}")))
            }
        }
        d.deserialize_str(Net)
    }
}

/// A duration as text (`10m`, written back as humantime does) or a number of seconds.
mod duration_text {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the duration as a string (\"10m\") or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                crate::units::parse_duration(v).map_err(|e| E::custom(format!("duration: {e}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom(format!("duration: {v} is negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Duration::try_from_secs_f64(v)
                    .map_err(|_| E::custom(format!("duration: invalid number of seconds {v}")))
            }
        }
        d.deserialize_any(Text)
    }
}

/// An optional [`net_text`] (for filters).
pub(crate) mod opt_net_text {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Net(#[serde(with = "super::net_text")] IpNet);

    pub(crate) fn serialize<S: Serializer>(net: &Option<IpNet>, s: S) -> Result<S::Ok, S::Error> {
        net.map(Net).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
        Ok(Option::<Net>::deserialize(d)?.map(|n| n.0))
    }
}

/// An optional [`duration_text`] (for filters).
pub(crate) mod opt_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Text(#[serde(with = "super::duration_text")] Duration);

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(Text).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
    }
}

/// Every error answer's body: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// One event of the live stream (`GET /api/stats/stream`, `event: stats`): the summary's figures,
/// the traffic totals since start, and rates per second over the interval since the previous
/// event. Each event's SSE `id` is its `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LiveStats {
    /// Counts up by one per event of this stream (its SSE `id`).
    pub seq: u64,
    /// Unix time of the reading in milliseconds.
    pub time: u64,
    /// The instance id.
    pub instance_id: String,
    /// Milliseconds since the registry started.
    pub uptime: u64,
    /// Whether shutdown has begun.
    pub shut_down: bool,
    /// The reference's figures (`totalConnections` … `connectionsByState`).
    #[serde(flatten)]
    pub summary: Summary,
    /// Mean of the last ping round trips (ms), once any pong has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_rtt_ms: Option<u64>,
    /// Removals by who closed.
    pub closed_by: ClosedBy,
    /// Refused upgrades by reason.
    pub refused: RefusalCounts,
    /// Messages and bytes since start, and what is queued now.
    pub traffic: Traffic,
    /// Per second, over the interval since the previous event (zero in the first one).
    pub rates: Rates,
}

/// Per-second rates of a [`LiveStats`] event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Rates {
    /// Text and binary messages received per second.
    pub messages_in: f64,
    /// Text and binary messages sent per second.
    pub messages_out: f64,
    /// Payload bytes received per second.
    pub bytes_in: f64,
    /// Payload bytes sent per second.
    pub bytes_out: f64,
    /// Connections registered per second.
    pub opened: f64,
    /// Connections removed per second.
    pub closed: f64,
    /// Upgrades refused per second.
    pub refused: f64,
}

deref_summary!(LiveStats);

impl LiveStats {
    /// The event numbered `seq` from `summary` (a [`Snapshot`] without its list) and `traffic`
    /// read at unix time `time` (ms), with rates against `previous` (the last event of the same
    /// stream, if any).
    pub fn new(
        seq: u64,
        time: u64,
        summary: &Snapshot,
        traffic: Traffic,
        previous: Option<&LiveStats>,
    ) -> Self {
        let rates = previous
            .filter(|p| time > p.time)
            .map(|p| {
                let secs = (time - p.time) as f64 / 1000.0;
                let per_sec = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
                Rates {
                    messages_in: per_sec(traffic.messages_in, p.traffic.messages_in),
                    messages_out: per_sec(traffic.messages_out, p.traffic.messages_out),
                    bytes_in: per_sec(traffic.bytes_in, p.traffic.bytes_in),
                    bytes_out: per_sec(traffic.bytes_out, p.traffic.bytes_out),
                    opened: per_sec(summary.total_connections_ever, p.total_connections_ever),
                    closed: per_sec(summary.total_connections_closed, p.total_connections_closed),
                    refused: per_sec(summary.refused.total(), p.refused.total()),
                }
            })
            .unwrap_or_default();
        Self {
            seq,
            time,
            instance_id: summary.instance_id.to_string(),
            uptime: summary.uptime,
            shut_down: summary.shut_down,
            summary: summary.summary,
            average_rtt_ms: summary.average_rtt_ms,
            closed_by: summary.closed_by,
            refused: summary.refused,
            traffic,
            rates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AdminRequest, String> {
        AdminRequest::from_json(s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn admin_requests_round_trip() {
        for req in [
            AdminRequest::GetStats {},
            AdminRequest::CloseAll {
                code: Some(CloseCode::GOING_AWAY),
                reason: Some("maintenance".into()),
            },
            AdminRequest::Close {
                id: "a-1-2".into(),
                code: None,
                reason: None,
            },
            AdminRequest::Cleanup {},
            AdminRequest::Ban {
                target: "203.0.113.0/24".parse().unwrap(),
                duration: Duration::from_secs(600),
                reason: Some("flooding".into()),
            },
            AdminRequest::Unban {
                target: "203.0.113.7/32".parse().unwrap(),
            },
            AdminRequest::ListBans {},
            AdminRequest::Kick {
                target: "2001:db8::/32".parse().unwrap(),
                code: Some(CloseCode::POLICY),
                reason: None,
            },
        ] {
            let json = serde_json::to_string(&req).unwrap();
            assert!(json.contains(&format!("\"action\":\"{}\"", req.action())));
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            for key in value.as_object().unwrap().keys() {
                assert!(AdminRequest::FIELDS.contains(&key.as_str()), "{key}");
            }
            assert_eq!(parse(&json), Ok(req));
        }
        assert_eq!(
            serde_json::to_string(&AdminRequest::CloseAll {
                code: Some(CloseCode::NORMAL),
                reason: None
            })
            .unwrap(),
            r#"{"action":"close_all","code":1000}"#
        );
    }

    #[test]
    fn close_matching_wants_a_filter_with_a_condition() {
        let req = AdminRequest::from_json(
            br#"{"action":"close_matching","filter":{"tag":"beta","min_idle":"1m"},"code":4000}"#,
        )
        .unwrap();
        let AdminRequest::CloseMatching {
            filter,
            code,
            reason,
        } = &req
        else {
            panic!("{req:?}");
        };
        assert_eq!(filter.tag.as_deref(), Some("beta"));
        assert_eq!(filter.min_idle, Some(Duration::from_secs(60)));
        assert_eq!((code.map(|c| c.as_u16()), reason), (Some(4000), &None));
        assert_eq!(req.action(), "close_matching");
        let again = AdminRequest::from_json(serde_json::to_string(&req).unwrap().as_bytes());
        assert_eq!(again.unwrap(), req);

        for (body, needle) in [
            (
                r#"{"action":"close_matching","filter":{}}"#,
                "filter: set at least one of",
            ),
            (r#"{"action":"close_matching"}"#, "missing field `filter`"),
            (
                r#"{"action":"close_matching","filter":{"colour":"red"}}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"action":"close_matching","filter":{"ip":"x"}}"#,
                "invalid address or network",
            ),
            (
                r#"{"action":"close_matching","filter":{"state":"UP"}}"#,
                "unknown state \"UP\"",
            ),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn broadcasts_take_at_most_one_target() {
        let target = |body: &str| {
            let request = parse(body)?;
            let target = request.broadcast_target().unwrap()?;
            Ok::<_, String>(format!("{target:?}"))
        };
        assert_eq!(
            target(r#"{"action":"broadcast","text":"hi"}"#),
            Ok("All".into())
        );
        assert_eq!(
            target(r#"{"action":"broadcast","path":"/ws","text":"hi"}"#),
            Ok(r#"Path("/ws")"#.into())
        );
        assert_eq!(
            target(r#"{"action":"broadcast","id":"a-1-2","binary":"AAEC"}"#),
            Ok(r#"Id("a-1-2")"#.into())
        );
        assert_eq!(
            target(r#"{"action":"broadcast","user":"ann","text":"hi"}"#),
            Ok(r#"User("ann")"#.into())
        );
        let filtered = target(r#"{"action":"broadcast","filter":{"tag":"red"},"text":"hi"}"#);
        assert!(filtered.unwrap().starts_with("Filter("));
        for (body, needle) in [
            (
                r#"{"action":"broadcast","user":"ann","id":"a-1-2","text":"hi"}"#,
                "give at most one target: path, id, user or filter",
            ),
            (
                r#"{"action":"broadcast","filter":{},"text":"hi"}"#,
                "filter: set at least one of",
            ),
            (
                r#"{"action":"broadcast","filter":{"colour":"red"},"text":"hi"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"action":"broadcast","user":"ann"}"#,
                "exactly one of `text`",
            ),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        // Each form writes back as it was read.
        for body in [
            r#"{"action":"broadcast","id":"a-1-2","text":"hi"}"#,
            r#"{"action":"broadcast","user":"ann","binary":"AAEC"}"#,
            r#"{"action":"broadcast","filter":{"path":"/ws","user":"bob"},"text":"hi"}"#,
        ] {
            let request = parse(body).unwrap();
            assert_eq!(serde_json::to_string(&request).unwrap(), body);
        }
        // Another action's request has no broadcast target.
        assert!(AdminRequest::Cleanup {}.broadcast_target().is_none());
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = parse(r#"{"action":"explode"}"#).unwrap_err();
        assert!(err.contains("unknown action \"explode\""), "{err}");
        assert!(
            err.contains(
                "get_stats, close_all, close, close_matching, cleanup, ban, unban, list_bans, kick"
            ),
            "{err}"
        );
        assert!(parse("{}").unwrap_err().contains("missing field `action`"));
        assert!(parse("[1]").unwrap_err().contains("malformed request body"));
        assert!(parse("nope")
            .unwrap_err()
            .contains("malformed request body"));
        for code in ["1005", "999", "70000", "-1"] {
            let err = parse(&format!(r#"{{"action":"close_all","code":{code}}}"#)).unwrap_err();
            assert!(err.contains(&format!("invalid close code {code}")), "{err}");
        }
        let err = parse(r#"{"action":"close"}"#).unwrap_err();
        assert!(err.contains("missing field `id`"), "{err}");
        let err = parse(r#"{"action":"cleanup","bogus":1}"#).unwrap_err();
        assert!(err.contains("unknown field `bogus`"), "{err}");
        // Fields of other actions are ignored.
        assert_eq!(
            parse(r#"{"action":"get_stats","reason":"x"}"#),
            Ok(AdminRequest::GetStats {})
        );
    }

    #[test]
    fn ban_requests_read_targets_and_durations_and_name_bad_ones() {
        let ban = parse(r#"{"action":"ban","target":"203.0.113.7","duration":"10m"}"#).unwrap();
        assert_eq!(
            ban,
            AdminRequest::Ban {
                target: "203.0.113.7/32".parse().unwrap(),
                duration: Duration::from_secs(600),
                reason: None,
            }
        );
        assert_eq!(
            serde_json::to_string(&ban).unwrap(),
            r#"{"action":"ban","target":"203.0.113.7/32","duration":"10m"}"#
        );
        let seconds = parse(r#"{"action":"ban","target":"::1","duration":90}"#).unwrap();
        assert!(matches!(seconds, AdminRequest::Ban { duration, .. } if duration.as_secs() == 90));
        let bad = |body: &str, wanted: &str| {
            let err = parse(body).unwrap_err();
            assert!(err.contains(wanted), "{body}: {err}");
        };
        bad(
            r#"{"action":"ban","target":"nope","duration":"1m"}"#,
            "target: invalid address",
        );
        bad(
            r#"{"action":"ban","target":"10.0.0.0/33","duration":"1m"}"#,
            "target:",
        );
        bad(
            r#"{"action":"ban","target":5,"duration":"1m"}"#,
            "expected the target",
        );
        bad(
            r#"{"action":"ban","target":"10.0.0.1","duration":"soon"}"#,
            "duration: invalid duration",
        );
        bad(
            r#"{"action":"ban","target":"10.0.0.1","duration":-1}"#,
            "duration: -1 is negative",
        );
        bad(
            r#"{"action":"ban","target":"10.0.0.1","duration":true}"#,
            "expected the duration",
        );
        bad(
            r#"{"action":"ban","target":"10.0.0.1"}"#,
            "missing field `duration`",
        );
        bad(
            r#"{"action":"ban","duration":"1m"}"#,
            "missing field `target`",
        );
        bad(r#"{"action":"unban"}"#, "missing field `target`");
        bad(
            r#"{"action":"kick","target":"x"}"#,
            "target: invalid address",
        );
        bad(
            r#"{"action":"kick","target":"10.0.0.1","code":1005}"#,
            "invalid close code 1005",
        );
    }

    #[test]
    fn health_reads_back() {
        let h = Health {
            status: HealthStatus::ShuttingDown,
            active_connections: 3,
            average_age: 2,
            uptime: 31.4,
            instance_id: "eu-1".into(),
            shut_down: true,
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#""status":"shutting_down""#), "{json}");
        assert!(json.contains(r#""activeConnections":3"#), "{json}");
        assert_eq!(serde_json::from_str::<Health>(&json).unwrap(), h);
    }

    #[test]
    fn public_health_has_the_reference_fields_only() {
        let h = Health {
            status: HealthStatus::Healthy,
            active_connections: 3,
            average_age: 2,
            uptime: 31.4,
            instance_id: "secret-host".into(),
            shut_down: false,
        };
        let public = PublicHealth::from(h);
        let json = serde_json::to_value(&public).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["activeConnections", "averageAge", "status", "uptime"]
        );
        assert_eq!(
            serde_json::from_value::<PublicHealth>(json).unwrap(),
            public
        );
    }

    #[test]
    fn live_stats_rates_are_per_second_since_the_previous_event() {
        let registry = crate::registry::Registry::with_config(
            crate::config::RegistryConfig::default()
                .instance_id("rates")
                .cleanup_interval(Duration::ZERO)
                .stats_interval(Duration::ZERO),
        );
        let summary = registry.summary();
        let first = LiveStats::new(1, 10_000, &summary, Traffic::default(), None);
        assert_eq!(first.rates, Rates::default());
        let traffic = Traffic {
            messages_in: 30,
            bytes_in: 3_000,
            ..Traffic::default()
        };
        let second = LiveStats::new(2, 12_000, &summary, traffic, Some(&first));
        assert_eq!(second.rates.messages_in, 15.0);
        assert_eq!(second.rates.bytes_in, 1_500.0);
        assert_eq!(second.rates.opened, 0.0);
        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["traffic"]["messagesIn"], 30);
        assert_eq!(json["rates"]["bytesIn"], 1500.0);
        assert_eq!(json["instanceId"], "rates");
        let back: LiveStats = serde_json::from_value(json).unwrap();
        assert_eq!(back, second);
    }

    /// One request of each action: the table's name is serde's tag, and it parses back.
    #[test]
    fn each_action_name_is_serdes_tag_and_round_trips() {
        let net: IpNet = "203.0.113.0/24".parse().unwrap();
        let one_of_each = [
            AdminRequest::GetStats {},
            AdminRequest::CloseAll {
                code: None,
                reason: None,
            },
            AdminRequest::Close {
                id: "a-1-2".into(),
                code: None,
                reason: None,
            },
            AdminRequest::CloseMatching {
                filter: ConnectionFilter::default().tag("t"),
                code: None,
                reason: None,
            },
            AdminRequest::Cleanup {},
            AdminRequest::Ban {
                target: net,
                duration: Duration::from_secs(60),
                reason: None,
            },
            AdminRequest::Unban { target: net },
            AdminRequest::ListBans {},
            AdminRequest::Kick {
                target: net,
                code: None,
                reason: None,
            },
            AdminRequest::Broadcast {
                path: None,
                id: None,
                user: None,
                filter: None,
                payload: BroadcastPayload::Text("hi".into()),
            },
        ];
        let names: Vec<&str> = one_of_each.iter().map(AdminRequest::action).collect();
        assert_eq!(
            names,
            AdminRequest::ACTIONS,
            "one request per action, in order"
        );
        for req in one_of_each {
            let json = serde_json::to_value(&req).unwrap();
            assert_eq!(json["action"], req.action(), "serde's tag for {req:?}");
            let back = AdminRequest::from_json(json.to_string().as_bytes()).unwrap();
            assert_eq!(back, req);
        }
    }
}
