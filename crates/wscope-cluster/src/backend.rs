//! The cluster backend seam: what a node needs from the shared engine (Redis, or the in-process
//! [`MemoryHub`](crate::memory::MemoryHub)) — publish, subscribe, a lease per instance id, and the link's
//! state — and the subscription's buffer every backend delivers into ([`delivery_buffer`]: bounded
//! in deliveries and in bytes, never waited on). Everything else (membership, surveys, routing,
//! fan-out) is built on it in `node`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

/// A backend operation in flight.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// How many deliveries a subscription buffers before the backend drops (and counts) the newest.
pub const DELIVERY_BUFFER: usize = 8192;

/// How many payload bytes a subscription buffers before the backend drops (and counts) the
/// newest: what a node holds of the cluster's traffic while it reads slowly, whatever the size
/// of each payload (8,192 deliveries of 1 MiB would be 8 GiB). Room for the largest payload a
/// node accepts ([`ClusterConfig::max_payload`](crate::config::ClusterConfig::max_payload), 16 MiB by default) twice over.
pub const DELIVERY_BUFFER_BYTES: usize = 32 << 20;

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
    /// pub/sub keeps nothing). Called once per node. A node's own publications on a channel it
    /// subscribes to are delivered to it too (it paces its publishing by hearing them back).
    /// Make the buffer with [`delivery_buffer`]: when it is full ([`DELIVERY_BUFFER`]
    /// deliveries or [`DELIVERY_BUFFER_BYTES`] bytes) the backend drops the delivery and counts
    /// it in [`ClusterBackend::dropped`], and never waits for the node to read.
    fn subscribe(&self, channels: Vec<String>) -> BackendFuture<'_, Deliveries>;

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

/// A subscription's buffer, bounded both in deliveries and in payload bytes: the sending half
/// (the backend's) never waits, the receiving half (the node's) gives the bytes back as it reads.
///
/// ```
/// use wscope_cluster::{delivery_buffer, Delivery, DeliveryRefused};
/// let (tx, mut rx) = delivery_buffer(8, 10);
/// let delivery = |n: usize| Delivery { channel: "c".into(), payload: vec![0; n].into() };
/// assert_eq!(tx.try_send(delivery(6)), Ok(()));
/// assert_eq!(tx.try_send(delivery(6)), Err(DeliveryRefused::Full)); // 12 bytes > 10
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(rx.recv().await.map(|d| d.payload.len()), Some(6));
/// # });
/// assert_eq!(tx.try_send(delivery(6)), Ok(())); // read: room again
/// ```
pub fn delivery_buffer(deliveries: usize, bytes: usize) -> (DeliverySender, Deliveries) {
    let (tx, rx) = mpsc::channel(deliveries.max(1));
    let held = Arc::new(AtomicUsize::new(0));
    (
        DeliverySender {
            tx,
            held: held.clone(),
            max_bytes: bytes,
        },
        Deliveries { rx, held },
    )
}

/// The backend's half of a [`delivery_buffer`].
#[derive(Clone, Debug)]
pub struct DeliverySender {
    tx: mpsc::Sender<Delivery>,
    /// Payload bytes sent and not yet read, shared with the receiver.
    held: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// Why [`DeliverySender::try_send`] did not buffer a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryRefused {
    /// The buffer holds its most deliveries or bytes (count the delivery as dropped).
    #[error("delivery buffer full")]
    Full,
    /// The node dropped its receiver.
    #[error("subscriber gone")]
    Closed,
}

impl DeliverySender {
    /// Buffers `delivery` if it fits, without waiting.
    ///
    /// # Errors
    /// [`DeliveryRefused::Full`] when the deliveries or bytes buffered would pass the bounds,
    /// [`DeliveryRefused::Closed`] when the receiver is gone.
    pub fn try_send(&self, delivery: Delivery) -> Result<(), DeliveryRefused> {
        let len = delivery.payload.len();
        let max = self.max_bytes;
        let reserved = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(len).filter(|total| *total <= max)
            });
        if reserved.is_err() {
            return Err(if self.tx.is_closed() {
                DeliveryRefused::Closed
            } else {
                DeliveryRefused::Full
            });
        }
        self.tx.try_send(delivery).map_err(|e| {
            self.held.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => DeliveryRefused::Full,
                mpsc::error::TrySendError::Closed(_) => DeliveryRefused::Closed,
            }
        })
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The node's half of a [`delivery_buffer`]: what [`ClusterBackend::subscribe`] returns.
#[derive(Debug)]
pub struct Deliveries {
    rx: mpsc::Receiver<Delivery>,
    held: Arc<AtomicUsize>,
}

impl Deliveries {
    /// The next delivery; `None` once the backend has dropped every sender.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await?;
        self.held
            .fetch_sub(delivery.payload.len(), Ordering::AcqRel);
        Some(delivery)
    }

    /// The next delivery if one is buffered now.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok()?;
        self.held
            .fetch_sub(delivery.payload.len(), Ordering::AcqRel);
        Some(delivery)
    }

    /// Payload bytes buffered now.
    pub fn buffered_bytes(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
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
