//! Close codes, close frames and the record of why a connection ended.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A WebSocket close code that an endpoint may send (RFC 6455 §7.4).
///
/// Codes 1004–1006 and 1015 are reserved for local use and never sent; codes below 1000, 1016–2999
/// and from 5000 are invalid. [`CloseCode::new`] refuses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CloseCode(u16);

/// A close code that may not be sent in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid close code {0}: use 1000-1003, 1007-1014 or 3000-4999")]
pub struct InvalidCloseCode(pub i64);

/// 1006: the code a connection lost without a close frame is recorded with (RFC 6455 §7.1.5) —
/// a reset, an end of stream, a write to a peer that has gone. Never sent, so not a [`CloseCode`].
pub(crate) const ABNORMAL_CLOSURE: u16 = 1006;

/// The longest close reason that fits a close frame (125 bytes of payload minus the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A close reason longer than [`MAX_CLOSE_REASON_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("close reason is {0} bytes; at most 123 fit in a close frame")]
pub struct ReasonTooLong(pub usize);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going away (shutdown, restart).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: Self = Self(1002);
    /// 1007: a message's data was inconsistent with its type (invalid UTF-8 text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation.
    pub const POLICY: Self = Self(1008);
    /// 1009: message too big.
    pub const TOO_BIG: Self = Self(1009);
    /// 1011: the server hit an unexpected condition (for example the handler panicked).
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Checks that `code` may be sent in a close frame.
    pub fn new(code: u16) -> Result<Self, InvalidCloseCode> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Ok(Self(code)),
            _ => Err(InvalidCloseCode(code.into())),
        }
    }

    /// Checks any integer as a close code (what JSON carries).
    pub fn from_i64(code: i64) -> Result<Self, InvalidCloseCode> {
        u16::try_from(code)
            .map_err(|_| InvalidCloseCode(code))
            .and_then(Self::new)
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for CloseCode {
    /// Reads a number and checks it like [`CloseCode::new`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(d)?;
        Self::from_i64(code).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The payload of a close frame: a code and a short UTF-8 reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: CloseCode,
    /// Why, in at most [`MAX_CLOSE_REASON_BYTES`] bytes.
    pub reason: String,
}

impl CloseFrame {
    /// Builds a frame, refusing a reason too long for the wire.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Result<Self, ReasonTooLong> {
        let reason = reason.into();
        if reason.len() > MAX_CLOSE_REASON_BYTES {
            return Err(ReasonTooLong(reason.len()));
        }
        Ok(Self { code, reason })
    }

    /// 1008 "slow consumer": the connection's queue overflowed on a send that may not wait.
    pub fn slow_consumer() -> Self {
        Self {
            code: CloseCode::POLICY,
            reason: "slow consumer".to_owned(),
        }
    }

    /// 1001 "Server shutting down", what a drain sends.
    pub fn shutdown() -> Self {
        Self {
            code: CloseCode::GOING_AWAY,
            reason: "Server shutting down".to_owned(),
        }
    }
}

/// Who ended a connection. On a client-role connection `Client` means the peer (the server) sent
/// the close and `Server` means this side's handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// The client sent a close frame.
    Client,
    /// The server's handler closed it (or returned, or dropped the socket).
    Server,
    /// An operator: `close_all`, close by id, the admin API.
    Admin,
    /// The registry's graceful shutdown.
    Shutdown,
    /// The transport failed: reset, protocol error, vanished peer, write error.
    Error,
    /// The handler panicked.
    Panic,
    /// The drain deadline passed and the connection was dropped without a handshake.
    Deadline,
    /// A limit closed it: a slow consumer whose queue overflowed, a client over its message rate.
    Limit,
    /// A timeout closed it: the peer did not answer a ping, or nothing was sent either way for the
    /// idle timeout.
    Timeout,
    /// The upstream a relayed connection is proxied to closed it (`wscope proxy`): its code and
    /// reason are passed on to the client.
    Upstream,
}

impl Initiator {
    /// Every initiator, in a fixed order (for counters).
    pub const ALL: [Initiator; 10] = [
        Self::Client,
        Self::Server,
        Self::Admin,
        Self::Shutdown,
        Self::Error,
        Self::Panic,
        Self::Deadline,
        Self::Limit,
        Self::Timeout,
        Self::Upstream,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The wire name, as used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::Admin => "admin",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Deadline => "deadline",
            Self::Limit => "limit",
            Self::Timeout => "timeout",
            Self::Upstream => "upstream",
        }
    }
}

/// Why a connection ended: recorded once, at the first close event, and kept with the removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseRecord {
    /// Who ended it.
    pub initiator: Initiator,
    /// The close code sent or received, if a close frame was involved.
    pub code: Option<u16>,
    /// The close reason, or the error's text.
    pub reason: String,
}
