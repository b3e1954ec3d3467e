//! The cluster backend seam: what a node needs from the shared engine (Redis, or the in-process
//! [`MemoryHub`](super::MemoryHub)) — publish, subscribe, a lease per instance id, and the link's
//! state. Everything else (membership, surveys, routing, fan-out) is built on it in `node`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

/// A backend operation in flight.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// How many deliveries a subscription buffers before the backend drops (and counts) the newest.
pub const DELIVERY_BUFFER: usize = 8192;

/// What a cluster node needs from the engine its instances share.
///
/// Implementations keep their own connections and reconnect by themselves; a call made while the
/// engine is unreachable fails promptly with [`BackendErrorKind::Unavailable`] (or
/// [`BackendErrorKind::Timeout`]) rather than waiting for the link to come back, so no caller is
/// ever held up by a slow or absent engine longer than the backend's own command timeout.
pub trait ClusterBackend: Send + Sync + 'static {
    /// A short name for logs and errors (`"memory"`, `"redis"`).
    fn name(&self) -> &'static str;

    /// Publishes one payload on `channel`. Payloads published through one backend value reach
    /// every subscriber in the order they were published.
    fn publish(&self, channel: &str, payload: Bytes) -> BackendFuture<'_, ()>;

    /// Publishes several payloads, in order, as one operation where the engine allows (Redis:
    /// one pipelined round trip). Either all are handed to the engine or the call fails (some
    /// may have been published). The default publishes them one after another.
    fn publish_batch(&self, batch: Vec<(String, Bytes)>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            for (channel, payload) in batch {
                self.publish(&channel, payload).await?;
            }
            Ok(())
        })
    }

    /// Delivers what is published on `channels` from now on into the returned receiver, and keeps
    /// doing so across reconnects (what is published while the link is down is not delivered:
    /// pub/sub keeps nothing). Called once per node. When the receiver's buffer
    /// ([`DELIVERY_BUFFER`]) is full the backend drops the delivery and counts it in
    /// [`ClusterBackend::dropped`].
    fn subscribe(&self, channels: Vec<String>) -> BackendFuture<'_, mpsc::Receiver<Delivery>>;

    /// Takes the lease on `key` for `holder`, or renews it if `holder` has it, storing `value`
    /// with it for `ttl`. If another holder has it the answer is [`Lease::HeldByOther`] with that
    /// holder's value, and nothing changes.
    fn lease(
        &self,
        key: &str,
        holder: &str,
        value: Bytes,
        ttl: Duration,
    ) -> BackendFuture<'_, Lease>;

    /// Gives the lease on `key` up if `holder` has it.
    fn release(&self, key: &str, holder: &str) -> BackendFuture<'_, ()>;

    /// The link's state now, and each change.
    fn link(&self) -> watch::Receiver<Link>;

    /// Deliveries dropped because the subscriber's buffer was full.
    fn dropped(&self) -> u64 {
        0
    }
}

/// One payload received on a subscribed channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The channel it was published on.
    pub channel: String,
    /// What was published.
    pub payload: Bytes,
}

/// The outcome of [`ClusterBackend::lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// The caller holds the lease (taken or renewed).
    Held,
    /// Another holder has it.
    HeldByOther {
        /// The value that holder stored.
        value: Bytes,
    },
}

/// Whether the backend can reach its engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Commands and subscriptions work.
    Connected,
    /// The engine cannot be reached; the backend is retrying.
    Disconnected,
}

impl Link {
    /// The wire name (`connected`, `disconnected`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend operation that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    /// What kind of failure.
    pub kind: BackendErrorKind,
    /// The engine's or client's own words.
    pub message: String,
}

impl BackendError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The engine cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Unavailable, message)
    }
}

/// The kinds of [`BackendError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The engine cannot be reached (down, refused, link lost).
    Unavailable,
    /// The engine did not answer within the backend's command timeout.
    Timeout,
    /// The engine answered with an error.
    Engine,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Engine => "engine error",
        })
    }
}
