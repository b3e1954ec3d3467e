//! What a node's handle and its tasks share: the node's state ([`ClusterState`]), its counters,
//! the publisher's queue entries and the inner state behind [`crate::handle::Cluster`], with the
//! helpers both sides use (announce, send, publish now, the member view's reads).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::ClusterBackend;
use crate::config::ClusterConfig;
use crate::protocol::{Announce, EnvelopeRef, Reply, PROTOCOL_VERSION};
use crate::view::{Timing, View};
use wscope_core::Message;
use wscope_core::Registry;

/// Where a node stands with its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// The engine cannot be reached (or has not been yet): the node serves locally and keeps
    /// trying, with backoff.
    Disconnected,
    /// A member: announcing, answering and relaying.
    Connected,
    /// Another live instance holds this instance id: this node stays out of the cluster.
    Refused,
    /// The node has left (shutdown).
    Left,
}

impl ClusterState {
    /// The wire name (`/health`'s `cluster` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connected => "connected",
            Self::Refused => "refused",
            Self::Left => "left",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ignored: AtomicU64,
    pub(crate) broadcasts_sent: AtomicU64,
    pub(crate) broadcasts_received: AtomicU64,
    pub(crate) broadcasts_undelivered: AtomicU64,
    pub(crate) broadcasts_lost: AtomicU64,
    pub(crate) broadcasts_too_large: AtomicU64,
    pub(crate) messages_unsent: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

/// One message waiting for the publisher.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// An envelope ready to publish (announcements, hellos, replies).
    Ready {
        /// Where.
        channel: String,
        /// The envelope.
        payload: Bytes,
    },
    /// A broadcast, numbered and written by the publisher: numbers go only to what is
    /// published, so a gap a receiver sees is a loss on the way, and the socket task that
    /// broadcast did no more than queue it.
    Broadcast {
        /// Only connections on this path.
        path: Option<String>,
        /// The message (text or binary).
        message: Message,
    },
}

impl Outgoing {
    /// The bytes it holds in the publish queue.
    pub(crate) fn cost(&self) -> usize {
        match self {
            Self::Ready { payload, .. } => payload.len(),
            Self::Broadcast { message, .. } => message.payload_len(),
        }
    }
}

/// A survey waiting for replies: who was asked and has not answered yet, and where answers go.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) asked: HashSet<String>,
    pub(crate) tx: mpsc::UnboundedSender<(String, Reply)>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) registry: Registry,
    pub(crate) backend: Arc<dyn ClusterBackend>,
    pub(crate) config: ClusterConfig,
    pub(crate) instance: String,
    pub(crate) incarnation: String,
    pub(crate) started_at: u64,
    pub(crate) state: watch::Sender<ClusterState>,
    pub(crate) view: Mutex<View>,
    /// The surveys waiting for replies, by request id.
    pub(crate) pending: Mutex<HashMap<u64, Pending>>,
    pub(crate) next_request: AtomicU64,
    /// What every envelope of this node starts with ([`crate::protocol::EnvelopeRef::prefix`]).
    pub(crate) own_prefix: Vec<u8>,
    /// The shared channel's name ([`ClusterConfig::channel_all`]), made once.
    pub(crate) channel_all: String,
    /// Last broadcast sequence number heard per sender incarnation.
    pub(crate) heard_seq: Mutex<HashMap<String, u64>>,
    pub(crate) outbound: mpsc::Sender<Outgoing>,
    /// Bytes waiting in `outbound` (and in the publisher's hands), bounded by
    /// [`ClusterConfig::publish_queue_bytes`].
    pub(crate) queued_bytes: AtomicUsize,
    /// Bytes published on the shared channel and not yet heard back, bounded by
    /// [`ClusterConfig::publish_window`].
    pub(crate) in_flight: AtomicUsize,
    /// Rung when this node hears one of its own messages back (the publisher may be waiting).
    pub(crate) echoed: Notify,
    pub(crate) counters: Counters,
    /// Cancelled when the node stops (it left, was refused, or crashed): every task returns.
    pub(crate) stop: CancellationToken,
    /// The node's tasks (the publisher, the membership task, the adoption of bans), so that
    /// [`Cluster::stopped`](crate::handle::Cluster::stopped) can wait for them to end.
    pub(crate) tasks: TaskTracker,
    /// Who holds this node's id when the lease was refused (for the refusal line).
    pub(crate) view_holder: Mutex<Option<String>>,
    /// Join attempts made (heartbeats included), so `join` can wait for the first outcome.
    pub(crate) attempts: watch::Sender<u64>,
    /// Whether the first join attempt's outcome has been logged.
    pub(crate) reported: AtomicBool,
    /// Whether [`Cluster::join`](crate::handle::Cluster::join) still waits for the first outcome: a refusal then is the
    /// caller's to report (it gets it as its error), so it is not logged here too. Held while
    /// the state changes, so that exactly one of the two reports it.
    pub(crate) joiner: Mutex<bool>,
}

impl std::fmt::Debug for dyn ClusterBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterBackend({})", self.name())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    pub(crate) fn state_now(&self) -> watch::Ref<'_, ClusterState> {
        self.state.borrow()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.registry.config().clock.now_ms()
    }

    pub(crate) fn timing(&self) -> Timing {
        let hb = self.config.heartbeat.as_millis() as u64;
        Timing {
            late_ms: hb * 2,
            ttl_ms: self.config.effective_ttl().as_millis() as u64,
            forget_ms: self.config.forget_after.as_millis() as u64,
        }
    }

    /// `body` in this node's envelope, as published. An error is logged and counted (unsent)
    /// here: the caller publishes nothing.
    pub(crate) fn envelope<B: Serialize>(&self, body: &B) -> Option<Bytes> {
        let envelope = EnvelopeRef {
            v: PROTOCOL_VERSION,
            cluster: &self.config.name,
            from: &self.instance,
            incarnation: &self.incarnation,
            body,
        };
        match serde_json::to_vec(&envelope) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                self.unencodable(&e);
                None
            }
        }
    }

    /// A message that could not be encoded: nothing is published in its place.
    pub(crate) fn unencodable(&self, error: &serde_json::Error) {
        self.counters
            .messages_unsent
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            cluster = %self.config.name, error = %error,
            "a cluster message could not be encoded; nothing published"
        );
    }

    /// Takes `bytes` of the publish queue's room; false (nothing taken) if they do not fit.
    fn reserve(&self, bytes: usize) -> bool {
        let max = self.config.publish_queue_bytes;
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= max)
            })
            .is_ok()
    }

    /// Gives `bytes` of the publish queue's room back (the publisher has sent them).
    pub(crate) fn release(&self, bytes: usize) {
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Queues `out` if its bytes fit the queue; false if not.
    fn enqueue(&self, out: Outgoing) -> bool {
        let cost = out.cost();
        if !self.reserve(cost) {
            return false;
        }
        let queued = self.outbound.try_send(out).is_ok();
        if !queued {
            self.release(cost);
        }
        queued
    }

    /// Queues a message for the publisher; false (counted unsent) if it could not be encoded or
    /// the queue is full.
    pub(crate) fn send<B: Serialize>(&self, channel: String, body: &B) -> bool {
        let Some(payload) = self.envelope(body) else {
            return false;
        };
        let queued = self.enqueue(Outgoing::Ready { channel, payload });
        if !queued {
            self.counters
                .messages_unsent
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Queues a broadcast for the publisher; false if the queue is full.
    pub(crate) fn send_broadcast(&self, path: Option<&str>, message: &Message) -> bool {
        self.enqueue(Outgoing::Broadcast {
            path: path.map(str::to_owned),
            message: message.clone(),
        })
    }

    /// Counts `bytes` published on `channel` as in flight if it is the shared channel (this
    /// node hears them back there).
    pub(crate) fn sent_to(&self, channel: &str, bytes: usize) {
        if channel == self.channel_all {
            self.in_flight.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    /// This node heard `bytes` of its own back on the shared channel (or gave up on them).
    pub(crate) fn heard_back(&self, bytes: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
        self.echoed.notify_one();
    }

    /// Publishes now, waiting at most the survey timeout (surveys use it to learn of failure);
    /// true if published.
    pub(crate) async fn publish_now<B: Serialize>(&self, channel: String, body: &B) -> bool {
        let Some(payload) = self.envelope(body) else {
            return false;
        };
        let len = payload.len();
        self.sent_to(&channel, len);
        let published = tokio::time::timeout(
            self.config.survey_timeout,
            self.backend.publish(&channel, payload),
        )
        .await;
        let published = matches!(published, Ok(Ok(())));
        if !published {
            // Not published, or not known to be: nothing to hear back.
            if channel == self.channel_all {
                self.heard_back(len);
            }
        }
        published
    }

    pub(crate) fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits for the replies of `asked` to request `id` (each taken once, from them only).
    pub(crate) fn register_pending(
        &self,
        id: u64,
        asked: &BTreeSet<String>,
    ) -> mpsc::UnboundedReceiver<(String, Reply)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let asked = asked.iter().cloned().collect();
        lock(&self.pending).insert(id, Pending { asked, tx });
        rx
    }

    pub(crate) fn forget_pending(&self, id: u64) {
        lock(&self.pending).remove(&id);
    }

    pub(crate) fn reachable(&self) -> Vec<String> {
        let now = self.now_ms();
        lock(&self.view).reachable(self.timing(), now)
    }

    pub(crate) fn announce(&self) -> Announce {
        Announce {
            instance_id: self.instance.clone(),
            main_addr: self.config.main_addr.clone(),
            admin_addr: self.config.admin_addr.clone(),
            started_at: self.started_at,
            version: self.config.version.clone(),
            heartbeat_ms: self.config.heartbeat.as_millis() as u64,
            summary: self.registry.summary(),
        }
    }

    /// Who holds our id, from the lease's value (an announcement), for the refusal line.
    pub(crate) fn holder_description(&self) -> String {
        lock(&self.view_holder)
            .clone()
            .unwrap_or_else(|| "held by another process".to_owned())
    }

    pub(crate) fn set_state(&self, new: ClusterState, why: &str) {
        let joiner = lock(&self.joiner);
        let old = self.state.send_replace(new);
        // The first outcome is always reported (starting with the engine down is a state change
        // from "not tried yet"); after that, only changes.
        let first = !self.reported.swap(true, Ordering::Relaxed);
        if old == new && !first {
            return;
        }
        let (cluster, instance) = (&self.config.name, &self.instance);
        match new {
            ClusterState::Connected => tracing::info!(
                cluster = %cluster, instance = %instance, backend = self.backend.name(),
                "joined the cluster"
            ),
            ClusterState::Disconnected => {
                if old == ClusterState::Connected {
                    self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(
                    cluster = %cluster, instance = %instance, backend = self.backend.name(),
                    error = why,
                    "cluster engine unreachable: serving locally, retrying with backoff"
                )
            }
            ClusterState::Refused if *joiner => {}
            ClusterState::Refused => tracing::error!(
                cluster = %cluster, instance = %instance,
                "not joining the cluster: {why}"
            ),
            ClusterState::Left => tracing::info!(
                cluster = %cluster, instance = %instance, "left the cluster"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde::ser::{Error as _, Serializer};

    use super::*;
    use crate::config::ClusterConfig;
    use crate::handle::Cluster;
    use crate::memory::MemoryHub;
    use crate::protocol::Body;
    use wscope_core::RegistryConfig;

    /// What no wire type does today, but any could: refuse to serialize.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("refused"))
        }
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_encoded_is_counted_and_nothing_is_published() {
        let hub = MemoryHub::new();
        let registry = Registry::with_config(RegistryConfig::default().instance_id("a"));
        let cluster = Cluster::join(&registry, Arc::new(hub.backend()), ClusterConfig::new("t"))
            .await
            .unwrap();
        let channel = "wscope:t:to:watcher".to_owned();
        let mut watcher = hub
            .backend()
            .subscribe(vec![channel.clone()])
            .await
            .unwrap();
        let inner = &cluster.inner;
        assert!(!inner.send(channel.clone(), &Unencodable));
        assert!(!inner.publish_now(channel.clone(), &Unencodable).await);
        assert_eq!(cluster.counters().messages_unsent, 2);
        // The first thing published on the channel is the next real envelope, not an empty one.
        assert!(inner.send(channel.clone(), &Body::Hello {}));
        let first = tokio::time::timeout(Duration::from_secs(2), watcher.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(first.payload.starts_with(&inner.own_prefix), "{first:?}");
        assert!(watcher.try_recv().is_none());
    }
}
