//! The registry: the one owner of connection entries. It inserts and removes them, counts them,
//! closes them, sweeps stale ones and drains them all on shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::close::{CloseCode, CloseFrame, Initiator, ReasonTooLong};
use crate::connection::{Connection, ConnectionHandle, ConnectionMeta, ConnectionState, Entry};
use crate::id::{self, ConnectionId};
use crate::outbox::Outbox;
use crate::snapshot::{ClosedBy, ConnectionInfo, Refused, Snapshot, StateCounts};
use crate::strings::SharedStr;

/// How a registry behaves. Every field has a default; the server fills it from flags, env and TOML.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Names this instance in ids, stats and health (`INSTANCE_ID`, else the host name).
    pub instance_id: String,
    /// How often the background sweep runs [`Registry::cleanup_stale`]; zero disables it.
    pub cleanup_interval: Duration,
    /// How often the stats lines are logged; zero disables it.
    pub stats_interval: Duration,
    /// How long shutdown waits for close handshakes before dropping what is left; also how long a
    /// closing connection may take to flush its queue.
    pub drain_timeout: Duration,
    /// Most messages held in one connection's outbound queue.
    pub queue_capacity: usize,
    /// Longest user agent stored, in bytes (longer ones are cut at a character boundary).
    pub max_user_agent_len: usize,
    /// Time source (a manual clock in tests).
    pub clock: Clock,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            instance_id: crate::instance::default_instance_id(),
            cleanup_interval: Duration::from_secs(30),
            stats_interval: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            queue_capacity: 1024,
            max_user_agent_len: 256,
            clock: Clock::system(),
        }
    }
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Shutdown has begun: no new connections.
    #[error("server shutting down")]
    ShuttingDown,
}

/// What a shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownReport {
    /// Connections tracked when shutdown began.
    pub connections: u64,
    /// Those still tracked at the drain deadline, dropped without a finished handshake.
    pub dropped: u64,
}

/// The tracked-connection registry: a cheap-to-clone handle over shared state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use wscope_core::{ConnectionMeta, Registry};
/// let registry = Registry::new();
/// let conn = registry.register(ConnectionMeta::default()).unwrap();
/// conn.mark_open();
/// assert_eq!(registry.connection_count(), 1);
/// drop(conn); // however a connection ends, its entry leaves
/// assert_eq!(registry.connection_count(), 0);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Registry {
    shared: Arc<Shared>,
}

/// State behind a [`Registry`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RegistryConfig,
    pub(crate) clock: Clock,
    /// `"{instance}-{boot}"`, the front of every id.
    prefix: SharedStr,
    /// The entries, sharded (one lock per shard, so readers of one shard never block another).
    entries: DashMap<u64, Arc<Entry>, FxBuildHasher>,
    next_seq: AtomicU64,
    /// Entries tracked now; a separate atomic keeps `connection_count` O(1).
    current: AtomicU64,
    total_ever: AtomicU64,
    total_closed: AtomicU64,
    closed_by: [AtomicU64; Initiator::ALL.len()],
    refused_shutting_down: AtomicU64,
    /// Set when shutdown begins; upgrades are refused from then on.
    shutting_down: AtomicBool,
    /// Woken when the last entry leaves (shutdown waits on it).
    emptied: Notify,
    /// Parent of every connection's token: cancelling it drops every connection at once.
    root: CancellationToken,
    /// Connection tasks and background tasks.
    pub(crate) tracker: TaskTracker,
    /// 0 = background tasks not started, 1 = started (they need a runtime, so start lazily).
    background: AtomicU8,
    /// The shutdown's outcome, once known; later callers wait on it.
    shutdown_done: watch::Sender<Option<ShutdownReport>>,
    /// Serialises shutdown's start (so exactly one caller drives it).
    shutdown_lock: Mutex<()>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the default configuration.
    pub fn new() -> Self {
        Self::with_config(RegistryConfig::default())
    }

    /// A registry with `config`.
    pub fn with_config(config: RegistryConfig) -> Self {
        let prefix = id::prefix(&config.instance_id, id::boot_token());
        let shared = Arc::new(Shared {
            clock: config.clock.clone(),
            config,
            prefix,
            entries: DashMap::with_hasher(FxBuildHasher),
            next_seq: AtomicU64::new(1),
            current: AtomicU64::new(0),
            total_ever: AtomicU64::new(0),
            total_closed: AtomicU64::new(0),
            closed_by: Default::default(),
            refused_shutting_down: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            emptied: Notify::new(),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            background: AtomicU8::new(0),
            shutdown_done: watch::channel(None).0,
            shutdown_lock: Mutex::new(()),
        });
        Self { shared }
    }

    /// The process-wide default registry, used by integrations when none is passed explicitly.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// The configuration in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.shared.config
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        &self.shared.config.instance_id
    }

    /// Registers a connection whose upgrade was accepted (state CONNECTING). The returned
    /// [`Connection`] removes the entry when dropped.
    pub fn register(&self, meta: ConnectionMeta) -> Result<Connection, Refusal> {
        let shared = &self.shared;
        if shared.shutting_down.load(Ordering::Acquire) {
            shared.refused_shutting_down.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::ShuttingDown);
        }
        shared.start_background();
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let now = shared.clock.now_nanos();
        let entry = Arc::new(Entry {
            seq,
            connected_at: now,
            last_activity: AtomicU64::new(now),
            state: AtomicU8::new(ConnectionState::Connecting as u8),
            fail_fast: AtomicBool::new(false),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            remote_addr: meta.remote_addr,
            user_agent: meta
                .user_agent
                .map(|ua| SharedStr::new(&truncate(ua, shared.config.max_user_agent_len))),
            path: SharedStr::new(&meta.path),
            outbox: Outbox::new(shared.config.queue_capacity),
            cancel: shared.root.child_token(),
            close_record: Mutex::new(None),
        });
        shared.entries.insert(seq, entry.clone());
        shared.current.fetch_add(1, Ordering::AcqRel);
        shared.total_ever.fetch_add(1, Ordering::Relaxed);
        // A shutdown that began between the check above and the insert would miss this entry:
        // close it now, like the rest.
        if shared.shutting_down.load(Ordering::Acquire) {
            entry.outbox.request_close(CloseFrame::shutdown());
        }
        Ok(Connection {
            entry,
            shared: self.shared.clone(),
        })
    }

    /// Connections tracked now, in O(1).
    #[inline]
    pub fn connection_count(&self) -> u64 {
        self.shared.current.load(Ordering::Acquire)
    }

    /// The full statistics, with every connection listed.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(true)
    }

    /// The statistics without the per-connection list (for the log line and health checks).
    pub fn summary(&self) -> Snapshot {
        self.shared.snapshot(false)
    }

    /// Handles to every OPEN connection, to send to or close.
    pub fn active_connections(&self) -> Vec<ConnectionHandle> {
        self.shared
            .entries
            .iter()
            .filter(|e| e.value().state() == ConnectionState::Open)
            .map(|e| ConnectionHandle {
                entry: e.value().clone(),
                shared: self.shared.clone(),
            })
            .collect()
    }

    /// A handle to the connection with this id, if tracked here.
    pub fn connection(&self, id: &str) -> Option<ConnectionHandle> {
        let seq = id::parse_seq(&self.shared.prefix, id)?;
        let entry = self.shared.entries.get(&seq)?.value().clone();
        Some(ConnectionHandle {
            entry,
            shared: self.shared.clone(),
        })
    }

    /// Closes every connection with `code` and `reason` after flushing what is queued to each;
    /// the reference's default is `close_all(CloseCode::NORMAL, "")`. Returns how many were asked
    /// to close (those already closing are not counted).
    pub fn close_all(&self, code: CloseCode, reason: &str) -> Result<u64, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        Ok(self.shared.close_all(&frame, Initiator::Admin))
    }

    /// Closes one connection by id. `Ok(false)` when no such connection is tracked or it was
    /// already closing.
    pub fn close(&self, id: &str, code: CloseCode, reason: &str) -> Result<bool, ReasonTooLong> {
        match self.connection(id) {
            Some(handle) => handle.close(code, reason),
            None => {
                CloseFrame::new(code, reason)?;
                Ok(false)
            }
        }
    }

    /// Removes entries that are closed but still tracked, returning how many.
    pub fn cleanup_stale(&self) -> u64 {
        self.shared.cleanup_stale()
    }

    /// Whether shutdown has begun (new upgrades are refused).
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// Graceful shutdown, idempotent: refuses new upgrades, closes every connection with 1001
    /// "Server shutting down" after flushing what was queued to it, waits for the close handshakes
    /// up to the drain deadline, then drops the rest. Every caller gets the same report.
    pub async fn shutdown(&self) -> ShutdownReport {
        let mut done = self.shared.shutdown_done.subscribe();
        let first = {
            let _serial = self
                .shared
                .shutdown_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            !self.shared.shutting_down.swap(true, Ordering::AcqRel)
        };
        if first {
            // Run the drain in its own task, so it completes even if this caller is cancelled.
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let report = shared.drain().await;
                shared.shutdown_done.send_replace(Some(report));
            });
        }
        loop {
            if let Some(report) = *done.borrow_and_update() {
                return report;
            }
            if done.changed().await.is_err() {
                return ShutdownReport::default();
            }
        }
    }

    /// The tracker for the tasks that serve connections; wait on it to join them.
    pub fn task_tracker(&self) -> &TaskTracker {
        &self.shared.tracker
    }

    /// Starts the background sweep and stats logger now (they also start on the first
    /// registration). Needs a tokio runtime.
    pub fn start_background_tasks(&self) {
        self.shared.start_background();
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Shared {
    /// Whether shutdown has begun, for a connection that has just become CLOSED. The fence pairs
    /// with the one in `drain`: a connection closing as the drain starts either sees the flag
    /// and removes itself, or is seen CLOSED by the drain's sweep.
    pub(crate) fn is_shutting_down(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn id_of(&self, seq: u64) -> ConnectionId {
        ConnectionId::new(self.prefix.clone(), seq)
    }

    /// The one removal path: drop guards and the sweep both come here; the map decides who wins.
    /// Returns whether this call removed the entry.
    pub(crate) fn remove(&self, entry: &Arc<Entry>) -> bool {
        entry
            .state
            .store(ConnectionState::Closed as u8, Ordering::Release);
        entry.outbox.shut();
        if self.entries.remove(&entry.seq).is_none() {
            return false; // already swept
        }
        let record = entry.close_record().unwrap_or_else(|| {
            let (initiator, reason) = if std::thread::panicking() {
                (Initiator::Panic, "handler panicked")
            } else {
                (Initiator::Server, "connection dropped")
            };
            crate::close::CloseRecord {
                initiator,
                code: None,
                reason: reason.to_owned(),
            }
        });
        self.closed_by[record.initiator.index()].fetch_add(1, Ordering::Relaxed);
        self.total_closed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            id = %self.id_of(entry.seq),
            closed_by = record.initiator.as_str(),
            code = record.code,
            reason = %record.reason,
            "connection removed"
        );
        if self.current.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
        true
    }

    fn cleanup_stale(&self) -> u64 {
        let stale: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| e.value().state() == ConnectionState::Closed)
            .map(|e| e.value().clone())
            .collect();
        let mut cleaned = 0;
        for entry in stale {
            if self.remove(&entry) {
                cleaned += 1;
            }
        }
        cleaned
    }

    fn close_all(&self, frame: &CloseFrame, initiator: Initiator) -> u64 {
        // Collect first so no shard lock is held while outbox locks are taken.
        let entries: Vec<Arc<Entry>> = self.entries.iter().map(|e| e.value().clone()).collect();
        let mut closed = 0;
        for entry in entries {
            if entry.state() != ConnectionState::Closed
                && entry.request_close(frame.clone(), initiator)
            {
                closed += 1;
            }
        }
        closed
    }

    fn snapshot(&self, list: bool) -> Snapshot {
        let now = self.clock.now_nanos();
        let mut by_state = StateCounts::default();
        let (mut age_sum, mut idle_sum, mut n) = (0u128, 0u128, 0u64);
        let mut connections = Vec::new();
        if list {
            connections.reserve(self.current.load(Ordering::Relaxed) as usize);
        }
        for item in self.entries.iter() {
            let e = item.value();
            let state = e.state();
            let age = now.saturating_sub(e.connected_at);
            let idle = now.saturating_sub(e.last_activity.load(Ordering::Relaxed));
            by_state.add(state);
            age_sum += u128::from(age);
            idle_sum += u128::from(idle);
            n += 1;
            if list {
                let (queued_messages, queued_bytes) = e.outbox.queued();
                connections.push(ConnectionInfo {
                    id: self.id_of(e.seq),
                    age: age / 1_000_000,
                    idle_time: idle / 1_000_000,
                    state,
                    remote_address: e.remote_addr,
                    user_agent: e.user_agent.clone(),
                    path: e.path.clone(),
                    connected_at: self.clock.unix_ms(e.connected_at),
                    messages_in: e.messages_in.load(Ordering::Relaxed),
                    messages_out: e.messages_out.load(Ordering::Relaxed),
                    bytes_in: e.bytes_in.load(Ordering::Relaxed),
                    bytes_out: e.bytes_out.load(Ordering::Relaxed),
                    queued_messages: queued_messages as u64,
                    queued_bytes: queued_bytes as u64,
                });
            }
        }
        let avg_ms = |sum: u128| {
            if n == 0 {
                0
            } else {
                (sum / u128::from(n) / 1_000_000) as u64
            }
        };
        let mut closed_by = [0u64; Initiator::ALL.len()];
        for (slot, counter) in closed_by.iter_mut().zip(&self.closed_by) {
            *slot = counter.load(Ordering::Relaxed);
        }
        Snapshot {
            total_connections: self.current.load(Ordering::Acquire),
            total_connections_ever: self.total_ever.load(Ordering::Relaxed),
            total_connections_closed: self.total_closed.load(Ordering::Relaxed),
            average_age: avg_ms(age_sum),
            average_idle_time: avg_ms(idle_sum),
            connections_by_state: by_state,
            connections,
            instance_id: self.config.instance_id.clone(),
            uptime: now / 1_000_000,
            shut_down: self.shutting_down.load(Ordering::Acquire),
            closed_by: ClosedBy::from_counts(closed_by),
            refused: Refused {
                shutting_down: self.refused_shutting_down.load(Ordering::Relaxed),
            },
        }
    }

    /// Waits until no entry is left, or `deadline` passes; true if emptied.
    async fn wait_empty(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let emptied = self.emptied.notified();
                tokio::pin!(emptied);
                emptied.as_mut().enable();
                if self.current.load(Ordering::Acquire) == 0 {
                    return;
                }
                emptied.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    async fn drain(self: &Arc<Self>) -> ShutdownReport {
        let connections = self.current.load(Ordering::Acquire);
        // Entries already CLOSED finished their handshake; only their handlers still hold
        // them. Sweep them now rather than wait for them and call them dropped at the deadline.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.cleanup_stale();
        let closing = self.close_all(&CloseFrame::shutdown(), Initiator::Shutdown);
        tracing::info!(
            connections,
            closing,
            deadline = ?self.config.drain_timeout,
            "shutdown: closing every connection"
        );
        // Connections dropped without a finished handshake: those whose own close timeout
        // fired during the drain, plus those still here at the deadline.
        let deadline_drops = || self.closed_by[Initiator::Deadline.index()].load(Ordering::Relaxed);
        let before = deadline_drops();
        if !self.wait_empty(self.config.drain_timeout).await {
            let left = self.current.load(Ordering::Acquire);
            tracing::warn!(left, "shutdown: drain deadline passed, dropping the rest");
            for item in self.entries.iter() {
                item.value().record_dropped("drain deadline passed");
            }
            self.root.cancel();
            // Aborted tasks unwind promptly; give them a moment to drop their entries.
            self.wait_empty(Duration::from_secs(1)).await;
        }
        let dropped = deadline_drops() - before + self.current.load(Ordering::Acquire);
        self.root.cancel();
        self.tracker.close();
        ShutdownReport {
            connections,
            dropped,
        }
    }

    fn start_background(self: &Arc<Self>) {
        if self.background.load(Ordering::Relaxed) != 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime yet: the first registration inside one starts them
        };
        if self.background.swap(1, Ordering::AcqRel) != 0 {
            return;
        }
        let cleanup = self.config.cleanup_interval;
        let stats = self.config.stats_interval;
        if !cleanup.is_zero() {
            let weak = Arc::downgrade(self);
            let token = self.root.clone();
            self.tracker.spawn_on(
                every(cleanup, token, weak, |shared| {
                    let cleaned = shared.cleanup_stale();
                    if cleaned > 0 {
                        tracing::debug!(cleaned, "swept stale connections");
                    }
                }),
                &runtime,
            );
        }
        if !stats.is_zero() {
            let weak = Arc::downgrade(self);
            let token = self.root.clone();
            self.tracker.spawn_on(
                every(stats, token, weak, |shared| {
                    crate::log::log_snapshot(&shared.snapshot(false));
                }),
                &runtime,
            );
        }
    }
}

/// Runs `tick` every `period` until the registry is dropped or shut down.
async fn every(
    period: Duration,
    stop: CancellationToken,
    shared: Weak<Shared>,
    tick: impl Fn(&Shared),
) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match shared.upgrade() {
            Some(shared) => tick(&shared),
            None => return,
        }
    }
}
