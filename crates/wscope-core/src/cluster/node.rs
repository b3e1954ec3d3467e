//! [`Cluster`]: one registry's membership in a cluster — the task that announces, listens and
//! answers, the publisher that keeps this node's messages in order, and the surveys that ask the
//! other members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backend::{BackendError, ClusterBackend};
use super::config::ClusterConfig;
use super::protocol::{Announce, Body, Envelope, Reply, PROTOCOL_VERSION};
use super::view::{Member, Timing, View};
use crate::message::Message;
use crate::registry::{Broadcast, Registry};
use crate::wire::BroadcastPayload;

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

/// Why a cluster question or action could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The node is not a connected member now.
    #[error("cluster {cluster:?} is {state}: {reason}", state = state.as_str())]
    Unavailable {
        /// The cluster.
        cluster: String,
        /// The node's state.
        state: ClusterState,
        /// Why, in words.
        reason: String,
    },
    /// Another live instance holds this instance id.
    #[error(
        "instance id {instance:?} is already a member of cluster {cluster:?} ({holder}): \
         start this instance with another --instance-id, or wait for the other to leave"
    )]
    DuplicateInstance {
        /// The id.
        instance: String,
        /// The cluster.
        cluster: String,
        /// Who holds it (its addresses and start time), as far as its lease tells.
        holder: String,
    },
    /// This registry is already a member of a cluster.
    #[error("this registry already belongs to cluster {0:?}")]
    AlreadyJoined(String),
    /// The cluster name is not usable in keys and channels.
    #[error("invalid cluster name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
}

/// Counters of what went wrong or was relayed on the cluster channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterCounters {
    /// Payloads on the cluster channels that did not parse, named another cluster or protocol
    /// version, or came from another process using this node's instance id: counted, ignored.
    pub ignored: u64,
    /// Broadcasts this node published.
    pub broadcasts_sent: u64,
    /// Broadcasts from other nodes queued to this node's connections.
    pub broadcasts_received: u64,
    /// Broadcasts that could not be published (engine down, queue full): delivered here only.
    pub broadcasts_undelivered: u64,
    /// Broadcasts of other nodes known lost on the way (gaps in their sequence numbers).
    pub broadcasts_lost: u64,
    /// Deliveries the backend dropped because this node read them too slowly.
    pub deliveries_dropped: u64,
    /// Times the link to the engine was lost.
    pub disconnects: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) ignored: AtomicU64,
    pub(super) broadcasts_sent: AtomicU64,
    pub(super) broadcasts_received: AtomicU64,
    pub(super) broadcasts_undelivered: AtomicU64,
    pub(super) broadcasts_lost: AtomicU64,
    pub(super) disconnects: AtomicU64,
}

/// What [`Cluster::broadcast`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterBroadcast {
    /// Delivery to this node's own connections.
    pub local: Broadcast,
    /// Whether the message was queued for the other nodes (false: engine down or queue full,
    /// counted in [`ClusterCounters::broadcasts_undelivered`]).
    pub relayed: bool,
}

/// A registry's membership in a cluster: a cheap-to-clone handle. Get it from
/// [`Registry::cluster`] in handlers.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub(super) inner: Arc<Inner>,
}

/// One message waiting for the publisher.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) channel: String,
    pub(super) payload: Bytes,
    pub(super) broadcast: bool,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) registry: Registry,
    pub(super) backend: Arc<dyn ClusterBackend>,
    pub(super) config: ClusterConfig,
    pub(super) instance: String,
    incarnation: String,
    started_at: u64,
    state: watch::Sender<ClusterState>,
    pub(super) view: Mutex<View>,
    pub(super) pending: Mutex<HashMap<u64, mpsc::UnboundedSender<(String, Reply)>>>,
    next_request: AtomicU64,
    broadcast_seq: AtomicU64,
    /// Last broadcast sequence number heard per sender incarnation.
    pub(super) heard_seq: Mutex<HashMap<String, u64>>,
    outbound: mpsc::Sender<Outgoing>,
    pub(super) counters: Counters,
    pub(super) stop: CancellationToken,
    /// Who holds this node's id when the lease was refused (for the refusal line).
    pub(super) view_holder: Mutex<Option<String>>,
    /// Join attempts made (heartbeats included), so `join` can wait for the first outcome.
    pub(super) attempts: watch::Sender<u64>,
    /// Whether the first join attempt's outcome has been logged.
    reported: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for dyn ClusterBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterBackend({})", self.name())
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A random-enough token per node start: time and address entropy, hashed.
fn incarnation() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl Cluster {
    /// Makes `registry` a member of the cluster `config.name` through `backend`, and returns once
    /// the first attempt to join has an outcome (at most `survey_timeout`): joined, engine
    /// unreachable (the node keeps trying in the background, with backoff, and serves locally
    /// meanwhile), or refused because another live instance holds this instance id
    /// ([`ClusterError::DuplicateInstance`]; the node does not join).
    ///
    /// Must be called within a tokio runtime. The node leaves (announcing it, and releasing its
    /// id) when the registry's shutdown begins.
    pub async fn join(
        registry: &Registry,
        backend: Arc<dyn ClusterBackend>,
        config: ClusterConfig,
    ) -> Result<Cluster, ClusterError> {
        let cluster = Self::start(registry, backend, config)?;
        let mut state = cluster.inner.state.subscribe();
        let wait = cluster
            .inner
            .config
            .survey_timeout
            .max(Duration::from_millis(100));
        let _ =
            tokio::time::timeout(wait, state.wait_for(|s| *s != ClusterState::Disconnected)).await;
        if cluster.state() == ClusterState::Refused {
            return Err(cluster.duplicate_error());
        }
        Ok(cluster)
    }

    /// As [`Cluster::join`], without waiting for the first attempt's outcome.
    pub fn start(
        registry: &Registry,
        backend: Arc<dyn ClusterBackend>,
        config: ClusterConfig,
    ) -> Result<Cluster, ClusterError> {
        if !valid_name(&config.name) {
            return Err(ClusterError::InvalidName(config.name));
        }
        let (outbound, outbound_rx) = mpsc::channel(config.publish_queue);
        let inner = Arc::new(Inner {
            registry: registry.clone(),
            backend,
            instance: registry.instance_id().to_owned(),
            incarnation: incarnation(),
            started_at: registry.shared().clock.unix_ms(0),
            state: watch::Sender::new(ClusterState::Disconnected),
            view: Mutex::new(View::default()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            broadcast_seq: AtomicU64::new(0),
            heard_seq: Mutex::new(HashMap::new()),
            outbound,
            counters: Counters::default(),
            stop: CancellationToken::new(),
            view_holder: Mutex::new(None),
            reported: std::sync::atomic::AtomicBool::new(false),
            attempts: watch::Sender::new(0),
            config,
        });
        let cluster = Cluster { inner };
        registry
            .shared()
            .cluster
            .set(cluster.clone())
            .map_err(|c| ClusterError::AlreadyJoined(c.inner.config.name.clone()))?;
        tokio::spawn(super::tasks::publisher(cluster.inner.clone(), outbound_rx));
        tokio::spawn(super::tasks::membership(cluster.inner.clone()));
        Ok(cluster)
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// This node's instance id.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    /// The node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Where the node stands now.
    pub fn state(&self) -> ClusterState {
        *self.inner.state.borrow()
    }

    /// The node's state now and as it changes.
    pub fn watch_state(&self) -> watch::Receiver<ClusterState> {
        self.inner.state.subscribe()
    }

    /// The other members as this node's view has them (gone ones included until forgotten).
    pub fn members(&self) -> Vec<Member> {
        let now = self.inner.now_ms();
        lock(&self.inner.view).members(self.inner.timing(), now)
    }

    /// The counters of the cluster channels.
    pub fn counters(&self) -> ClusterCounters {
        let c = &self.inner.counters;
        ClusterCounters {
            ignored: c.ignored.load(Ordering::Relaxed),
            broadcasts_sent: c.broadcasts_sent.load(Ordering::Relaxed),
            broadcasts_received: c.broadcasts_received.load(Ordering::Relaxed),
            broadcasts_undelivered: c.broadcasts_undelivered.load(Ordering::Relaxed),
            broadcasts_lost: c.broadcasts_lost.load(Ordering::Relaxed),
            deliveries_dropped: self.inner.backend.dropped(),
            disconnects: c.disconnects.load(Ordering::Relaxed),
        }
    }

    /// Queues `msg` to this node's connections (on `path`, or all) at once, and publishes it for
    /// every other node to do the same. Never waits on the engine: when it is down or the publish
    /// queue is full the message reaches this node's connections only, and
    /// [`ClusterBroadcast::relayed`] is false (counted in
    /// [`ClusterCounters::broadcasts_undelivered`]). Broadcasts of one node reach each other node
    /// in the order they were made.
    pub fn broadcast(&self, path: Option<&str>, msg: &Message) -> ClusterBroadcast {
        let local = self.inner.registry.broadcast(path, msg);
        let relayed = self.relay(path, msg);
        ClusterBroadcast { local, relayed }
    }

    /// Publishes `msg` for the other nodes only (see [`Cluster::broadcast`]).
    pub fn relay(&self, path: Option<&str>, msg: &Message) -> bool {
        let inner = &self.inner;
        let Some(payload) = BroadcastPayload::from_message(msg) else {
            return false;
        };
        if self.state() != ClusterState::Connected {
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let seq = inner.broadcast_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let body = Body::Broadcast {
            seq,
            path: path.map(str::to_owned),
            message: payload,
        };
        let queued = inner.send(inner.config.channel_all(), body, true);
        if !queued {
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    pub(super) fn unavailable(&self) -> ClusterError {
        let state = self.state();
        ClusterError::Unavailable {
            cluster: self.inner.config.name.clone(),
            state,
            reason: match state {
                ClusterState::Disconnected => format!(
                    "the {} engine cannot be reached; retrying with backoff",
                    self.inner.backend.name()
                ),
                ClusterState::Refused => "another live instance holds this instance id".to_owned(),
                ClusterState::Left => "this instance has left (shutting down)".to_owned(),
                ClusterState::Connected => "connected".to_owned(),
            },
        }
    }

    fn duplicate_error(&self) -> ClusterError {
        ClusterError::DuplicateInstance {
            instance: self.inner.instance.clone(),
            cluster: self.inner.config.name.clone(),
            holder: self.inner.holder_description(),
        }
    }

    /// Stops this node's tasks at once, without leaving (as if the process died): the others
    /// see it late, then gone after the TTL. For tests and simulations.
    #[doc(hidden)]
    pub fn crash(&self) {
        self.inner.stop.cancel();
        self.inner.state.send_replace(ClusterState::Left);
    }
}

impl Inner {
    pub(super) fn state_now(&self) -> watch::Ref<'_, ClusterState> {
        self.state.borrow()
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.registry.shared().clock.now_ms()
    }

    pub(super) fn timing(&self) -> Timing {
        let hb = self.config.heartbeat.as_millis() as u64;
        Timing {
            late_ms: hb * 2,
            ttl_ms: self.config.effective_ttl().as_millis() as u64,
            forget_ms: self.config.forget_after.as_millis() as u64,
        }
    }

    fn envelope(&self, body: Body) -> Bytes {
        let envelope = Envelope {
            v: PROTOCOL_VERSION,
            cluster: self.config.name.clone(),
            from: self.instance.clone(),
            incarnation: self.incarnation.clone(),
            body,
        };
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// Queues a message for the publisher; false if the queue is full.
    pub(super) fn send(&self, channel: String, body: Body, broadcast: bool) -> bool {
        let payload = self.envelope(body);
        self.outbound
            .try_send(Outgoing {
                channel,
                payload,
                broadcast,
            })
            .is_ok()
    }

    /// Publishes now, waiting at most the survey timeout (surveys use it to learn of failure).
    pub(super) async fn publish_now(
        &self,
        channel: String,
        body: Body,
    ) -> Result<(), BackendError> {
        let payload = self.envelope(body);
        match tokio::time::timeout(
            self.config.survey_timeout,
            self.backend.publish(&channel, payload),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(BackendError::new(
                super::BackendErrorKind::Timeout,
                "publish did not finish within the survey timeout",
            )),
        }
    }

    pub(super) fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub(super) fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn register_pending(&self, id: u64) -> mpsc::UnboundedReceiver<(String, Reply)> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.pending).insert(id, tx);
        rx
    }

    pub(super) fn forget_pending(&self, id: u64) {
        lock(&self.pending).remove(&id);
    }

    pub(super) fn reachable(&self) -> Vec<String> {
        let now = self.now_ms();
        lock(&self.view).reachable(self.timing(), now)
    }

    pub(super) fn announce(&self) -> Announce {
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
    fn holder_description(&self) -> String {
        lock(&self.view_holder)
            .clone()
            .unwrap_or_else(|| "held by another process".to_owned())
    }

    pub(super) fn set_state(&self, new: ClusterState, why: &str) {
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
