//! Joining a cluster and what a member does without asking the others: [`Cluster::join`] (the
//! lease, the task that announces, listens and answers, the publisher that keeps this node's
//! messages in order), its state, members and counters, the cluster-wide broadcast and the leave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::ClusterBackend;
use crate::config::ClusterConfig;
use crate::handle::{Cluster, ClusterBroadcast, ClusterCounters, ClusterError};
use crate::protocol::Body;
use crate::shared::{lock, ClusterState, Counters, Inner};
use crate::view::{Member, View};
use wscope_core::Message;
use wscope_core::Registry;

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
        let cluster = Self::begin(registry, backend, config, true)?;
        let mut state = cluster.inner.state.subscribe();
        let wait = cluster
            .inner
            .config
            .survey_timeout
            .max(Duration::from_millis(100));
        let _ =
            tokio::time::timeout(wait, state.wait_for(|s| *s != ClusterState::Disconnected)).await;
        // From here on a refusal is the node's to log; until here it is this error (one report).
        let refused = {
            let mut joiner = lock(&cluster.inner.joiner);
            *joiner = false;
            cluster.state() == ClusterState::Refused
        };
        if refused {
            return Err(cluster.duplicate_error());
        }
        Ok(cluster)
    }

    /// As [`Cluster::join`], without waiting for the first attempt's outcome (a refusal is
    /// logged at error level).
    pub fn start(
        registry: &Registry,
        backend: Arc<dyn ClusterBackend>,
        config: ClusterConfig,
    ) -> Result<Cluster, ClusterError> {
        Self::begin(registry, backend, config, false)
    }

    fn begin(
        registry: &Registry,
        backend: Arc<dyn ClusterBackend>,
        config: ClusterConfig,
        joiner: bool,
    ) -> Result<Cluster, ClusterError> {
        if !valid_name(&config.name) {
            return Err(ClusterError::InvalidName(config.name));
        }
        let (outbound, outbound_rx) = mpsc::channel(config.publish_queue);
        let incarnation = incarnation();
        let instance = registry.instance_id().to_owned();
        let own_prefix = crate::protocol::EnvelopeRef {
            v: crate::protocol::PROTOCOL_VERSION,
            cluster: &config.name,
            from: &instance,
            incarnation: &incarnation,
            body: &Body::Hello {},
        }
        .prefix()
        .map_err(|e| ClusterError::Encode(e.to_string()))?;
        let inner = Arc::new(Inner {
            registry: registry.clone(),
            backend,
            instance,
            incarnation,
            own_prefix,
            channel_all: config.channel_all(),
            started_at: registry.config().clock.unix_ms(0),
            state: watch::Sender::new(ClusterState::Disconnected),
            view: Mutex::new(View::new(config.max_members)),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            heard_seq: Mutex::new(HashMap::new()),
            outbound,
            queued_bytes: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            echoed: Notify::new(),
            counters: Counters::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            view_holder: Mutex::new(None),
            reported: std::sync::atomic::AtomicBool::new(false),
            joiner: Mutex::new(joiner),
            attempts: watch::Sender::new(0),
            config,
        });
        let cluster = Cluster { inner };
        let tasks = &cluster.inner.tasks;
        tasks.spawn(crate::tasks::publisher(cluster.inner.clone(), outbound_rx));
        tasks.spawn(crate::tasks::membership(cluster.inner.clone()));
        // Closed, not finished: the membership task may add more while it runs.
        tasks.close();
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
            broadcasts_too_large: c.broadcasts_too_large.load(Ordering::Relaxed),
            messages_unsent: c.messages_unsent.load(Ordering::Relaxed),
            deliveries_dropped: self.inner.backend.dropped(),
            disconnects: c.disconnects.load(Ordering::Relaxed),
        }
    }

    /// Queues `msg` to this node's connections (on `path`, or all) at once, and publishes it for
    /// every other node to do the same. Never waits on the engine: when it is down, the publish
    /// queue is full or the message is larger than
    /// [`ClusterConfig::max_relay_size`](crate::config::ClusterConfig::max_relay_size), the message
    /// reaches this node's connections only, and [`ClusterBroadcast::relayed`] is false (counted
    /// in [`ClusterCounters::broadcasts_undelivered`]). Broadcasts of one node reach each other
    /// node in the order they were made.
    pub fn broadcast(&self, path: Option<&str>, msg: &Message) -> ClusterBroadcast {
        let local = self.inner.registry.broadcast(path, msg);
        let relayed = self.relay(path, msg);
        ClusterBroadcast { local, relayed }
    }

    /// Publishes `msg` for the other nodes only (see [`Cluster::broadcast`]).
    pub fn relay(&self, path: Option<&str>, msg: &Message) -> bool {
        let inner = &self.inner;
        if !msg.is_data() {
            return false;
        }
        if msg.payload_len() > inner.config.max_relay_size {
            inner
                .counters
                .broadcasts_too_large
                .fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.state() != ClusterState::Connected {
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let queued = inner.send_broadcast(path, msg);
        if !queued {
            inner
                .counters
                .broadcasts_undelivered
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    pub(crate) fn unavailable(&self) -> ClusterError {
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

    /// Completes once every task of this node has ended: after it left (the registry's shutdown
    /// began, the leave was announced and the instance id given up), was refused, or crashed.
    /// A server awaits it after the registry's drain, so that the leave is published before the
    /// process exits.
    pub async fn stopped(&self) {
        self.inner.tasks.wait().await;
    }

    /// Stops this node's tasks at once, without leaving (as if the process died): the others
    /// see it late, then gone after the TTL. For tests and simulations.
    #[doc(hidden)]
    pub fn crash(&self) {
        self.inner.stop.cancel();
        self.inner.state.send_replace(ClusterState::Left);
    }
}
