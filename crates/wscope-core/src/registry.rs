//! The registry: the one owner of connection entries. It admits and registers them, removes them
//! (the one removal path), counts them, closes them, sweeps stale ones and tells its observers.
//! The drain on shutdown is in `shutdown`, the periodic tasks in `background`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use ipnet::IpNet;
use rustc_hash::FxBuildHasher;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{
    canonical_net, Admission, Ban, BanError, BanOutcome, ClientKey, ConnectionMeta, Ipv6Prefix,
    OriginPattern, Permit, RateLimit, Refusal,
};
use crate::aggregates::Aggregates;
use crate::clock::Clock;
use crate::close::{CloseCode, CloseFrame, CloseRecord, Initiator, ReasonTooLong};
use crate::connection::{Connection, ConnectionHandle, ConnectionState, Entry, Stored};
use crate::driver::Accepted;
use crate::id::{self, ConnectionId};
use crate::log::StatsLogger;
use crate::message::Message;
use crate::observer::{ClosedEvent, Observer, Observers, OpenedEvent, RefusedEvent};
use crate::order::OrderIndex;
use crate::outbox::{Outbox, SendError};
use crate::paths::PathIndex;
use crate::recent::RecentlyClosed;
use crate::shutdown::ShutdownReport;
use crate::snapshot::{ClosedConnection, ConnectionInfo, Snapshot, Summary};
use crate::strings::SharedStr;

/// How a registry behaves. Every field has a default; set the ones you need with the builder
/// methods (`RegistryConfig::default().instance_id("eu-1").drain_timeout(d)`). The server fills it
/// from flags, env and TOML.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Most payload bytes held in one connection's outbound queue (a single larger message is
    /// taken when the queue is empty). A handler's own sends wait for room; a send that may not
    /// wait (a broadcast, an admin send) closes the connection as a slow consumer.
    pub max_queued_bytes: usize,
    /// How often the server pings each open connection; zero disables pings.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (1011 "ping timeout").
    pub ping_timeout: Duration,
    /// How long a connection may send and receive no message before it is closed (1000 "idle
    /// timeout"); zero disables it. Pings and pongs do not count as messages.
    pub idle_timeout: Duration,
    /// Most messages one connection may send per second (a token bucket with a one-second
    /// burst); past it the connection is closed with 1008. Zero disables it.
    pub max_messages_per_second: u32,
    /// How many connections per second the shutdown closes (so a fleet of clients does not
    /// reconnect all at once); zero closes them all at once. The drain finishes within
    /// [`RegistryConfig::drain_timeout`] whatever the rate.
    pub drain_rate: u32,
    /// How many recently closed connections are kept for [`Registry::recently_closed`]; zero keeps
    /// none.
    pub recent_closed: usize,
    /// Longest user agent stored, in bytes (longer ones are cut at a character boundary).
    pub max_user_agent_len: usize,
    /// Time source (a manual clock in tests).
    pub clock: Clock,
    /// Most connections held at once; past it an upgrade gets 503 with `Retry-After: 1` (a slot
    /// frees whenever any connection ends). 0 = unlimited.
    pub max_connections: usize,
    /// Most connections held at once from one client address (as resolved through trusted
    /// proxies); past it an upgrade gets 429. 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Handshakes allowed per client address: a token bucket of [`RateLimit::burst`] tokens
    /// refilled at the rate; an upgrade with the bucket empty gets 429 with `Retry-After` (when
    /// the next token comes). `None` = unlimited.
    pub handshake_rate_per_ip: Option<RateLimit>,
    /// Most client addresses the handshake rate tracks at once (an address is held until its
    /// bucket is full again); when the table is full, an upgrade from an address it does not
    /// hold gets 503 with `Retry-After` ([`Refusal::RateTableFull`](crate::Refusal)).
    pub handshake_rate_addresses: usize,
    /// How IPv6 addresses group into one client for the per-address cap, the handshake rate and
    /// bans: by their first 64 bits by default, since one host commonly holds a whole /64.
    pub ipv6_prefix: Ipv6Prefix,
    /// The origins allowed to open WebSockets (`Origin` header); another gets 403. Empty = any.
    pub allowed_origins: Vec<OriginPattern>,
    /// Whether an upgrade without an `Origin` header (a non-browser client) is admitted; with
    /// `false`, it gets 403 whether or not [`RegistryConfig::allowed_origins`] is set.
    pub allow_missing_origin: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            instance_id: crate::instance::default_instance_id(),
            cleanup_interval: Self::DEFAULT_CLEANUP_INTERVAL,
            stats_interval: Self::DEFAULT_STATS_INTERVAL,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            max_queued_bytes: Self::DEFAULT_MAX_QUEUED_BYTES,
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            ping_timeout: Self::DEFAULT_PING_TIMEOUT,
            idle_timeout: Duration::ZERO,
            max_messages_per_second: 0,
            drain_rate: 0,
            recent_closed: Self::DEFAULT_RECENT_CLOSED,
            max_user_agent_len: 256,
            clock: Clock::system(),
            max_connections: 0,
            max_connections_per_ip: 0,
            handshake_rate_per_ip: None,
            handshake_rate_addresses: Self::DEFAULT_HANDSHAKE_RATE_ADDRESSES,
            ipv6_prefix: Ipv6Prefix::DEFAULT,
            allowed_origins: Vec::new(),
            allow_missing_origin: Self::DEFAULT_ALLOW_MISSING_ORIGIN,
        }
    }
}

impl RegistryConfig {
    /// The default [`RegistryConfig::cleanup_interval`].
    pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(30);
    /// The default [`RegistryConfig::stats_interval`] (the reference logs every 30 s).
    pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(30);
    /// The default [`RegistryConfig::drain_timeout`].
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`RegistryConfig::queue_capacity`].
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    /// The default [`RegistryConfig::max_queued_bytes`].
    pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;
    /// The default [`RegistryConfig::ping_interval`].
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
    /// The default [`RegistryConfig::ping_timeout`].
    pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`RegistryConfig::recent_closed`].
    pub const DEFAULT_RECENT_CLOSED: usize = 1000;
    /// The default [`RegistryConfig::allow_missing_origin`]: non-browser clients send no
    /// `Origin`, and are let in.
    pub const DEFAULT_ALLOW_MISSING_ORIGIN: bool = true;
    /// The default [`RegistryConfig::handshake_rate_addresses`]: about 5.6 MiB of table when full.
    pub const DEFAULT_HANDSHAKE_RATE_ADDRESSES: usize = 100_000;

    /// Sets [`RegistryConfig::instance_id`].
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Sets [`RegistryConfig::cleanup_interval`].
    pub fn cleanup_interval(mut self, every: Duration) -> Self {
        self.cleanup_interval = every;
        self
    }

    /// Sets [`RegistryConfig::stats_interval`].
    pub fn stats_interval(mut self, every: Duration) -> Self {
        self.stats_interval = every;
        self
    }

    /// Sets [`RegistryConfig::drain_timeout`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`RegistryConfig::queue_capacity`].
    pub fn queue_capacity(mut self, messages: usize) -> Self {
        self.queue_capacity = messages;
        self
    }

    /// Sets [`RegistryConfig::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets [`RegistryConfig::ping_interval`].
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every;
        self
    }

    /// Sets [`RegistryConfig::ping_timeout`].
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`RegistryConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`RegistryConfig::max_messages_per_second`].
    pub fn max_messages_per_second(mut self, rate: u32) -> Self {
        self.max_messages_per_second = rate;
        self
    }

    /// Sets [`RegistryConfig::drain_rate`].
    pub fn drain_rate(mut self, per_second: u32) -> Self {
        self.drain_rate = per_second;
        self
    }

    /// Sets [`RegistryConfig::recent_closed`].
    pub fn recent_closed(mut self, count: usize) -> Self {
        self.recent_closed = count;
        self
    }

    /// Sets [`RegistryConfig::max_user_agent_len`].
    pub fn max_user_agent_len(mut self, bytes: usize) -> Self {
        self.max_user_agent_len = bytes;
        self
    }

    /// Sets [`RegistryConfig::clock`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`RegistryConfig::max_connections`] (0 = unlimited).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`RegistryConfig::max_connections_per_ip`] (0 = unlimited).
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Sets [`RegistryConfig::handshake_rate_per_ip`] (`None` = unlimited).
    pub fn handshake_rate_per_ip(mut self, rate: impl Into<Option<RateLimit>>) -> Self {
        self.handshake_rate_per_ip = rate.into();
        self
    }

    /// Sets [`RegistryConfig::handshake_rate_addresses`] (at least 1).
    pub fn handshake_rate_addresses(mut self, max: usize) -> Self {
        self.handshake_rate_addresses = max.max(1);
        self
    }

    /// Sets [`RegistryConfig::ipv6_prefix`].
    pub fn ipv6_prefix(mut self, prefix: Ipv6Prefix) -> Self {
        self.ipv6_prefix = prefix;
        self
    }

    /// Sets [`RegistryConfig::allowed_origins`] (empty = any).
    pub fn allowed_origins(mut self, origins: impl IntoIterator<Item = OriginPattern>) -> Self {
        self.allowed_origins = origins.into_iter().collect();
        self
    }

    /// Adds one entry to [`RegistryConfig::allowed_origins`].
    pub fn allowed_origin(mut self, origin: OriginPattern) -> Self {
        self.allowed_origins.push(origin);
        self
    }

    /// Sets [`RegistryConfig::allow_missing_origin`].
    pub fn allow_missing_origin(mut self, allow: bool) -> Self {
        self.allow_missing_origin = allow;
        self
    }
}

/// What a [`Registry::broadcast`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// Connections the message was queued to.
    pub sent: u64,
    /// Connections whose queue was full: closed as slow consumers.
    pub slow: u64,
}

/// The tracked-connection registry: a cheap-to-clone handle over shared state.
///
/// ```
/// use wscope_core::{ConnectionMeta, Registry};
/// let registry = Registry::new();
/// let meta = ConnectionMeta::new("/ws");
/// let permit = registry.admit(&meta).expect("not shutting down");
/// let accepted = registry.register(meta, permit); // CONNECTING until it runs
/// assert_eq!(registry.connection_count(), 1);
/// drop(accepted); // however a connection ends, its entry leaves
/// assert_eq!(registry.connection_count(), 0);
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
    pub(crate) entries: DashMap<u64, Arc<Entry>, FxBuildHasher>,
    /// The entries' sequence numbers in order (pages in registration order read only the page).
    pub(crate) order: OrderIndex,
    next_seq: AtomicU64,
    /// Counts, totals and sums, read in O(1).
    pub(crate) aggregates: Aggregates,
    /// The entries again, by request path (broadcasts to one path).
    pub(crate) paths: PathIndex,
    /// The last closed connections, when kept.
    recent: Option<Arc<RecentlyClosed>>,
    /// The checks every upgrade passes.
    admission: Admission,
    /// Who listens.
    pub(crate) observers: Observers,
    /// The last traffic totals read (they never go down).
    pub(crate) traffic_floor: crate::traffic::TrafficFloor,
    /// Set when shutdown begins; upgrades are refused from then on.
    pub(crate) shutting_down: AtomicBool,
    /// Cancelled when shutdown begins, for readers that wait on it (`Registry::shutdown_started`).
    pub(crate) shutdown_started: CancellationToken,
    /// Woken when the last entry leaves (shutdown waits on it).
    pub(crate) emptied: Notify,
    /// Parent of every connection's token: cancelling it drops every connection at once.
    pub(crate) root: CancellationToken,
    /// Connection tasks and background tasks.
    pub(crate) tracker: TaskTracker,
    /// 0 = background tasks not started, 1 = started (they need a runtime, so start lazily).
    pub(crate) background: AtomicU8,
    /// The shutdown's outcome, once known; later callers wait on it.
    pub(crate) shutdown_done: watch::Sender<Option<ShutdownReport>>,
    /// Serialises shutdown's start (so exactly one caller drives it).
    pub(crate) shutdown_lock: Mutex<()>,
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

    /// A registry with `config`. With a non-zero [`RegistryConfig::stats_interval`] its first
    /// observer is the stats logger.
    pub fn with_config(config: RegistryConfig) -> Self {
        let admission = Admission::from_config(&config);
        Self::build(config, admission)
    }

    pub(crate) fn build(config: RegistryConfig, admission: Admission) -> Self {
        let prefix = id::prefix(&config.instance_id, id::boot_token());
        let stats_interval = config.stats_interval;
        let recent =
            (config.recent_closed > 0).then(|| Arc::new(RecentlyClosed::new(config.recent_closed)));
        let shared = Arc::new(Shared {
            clock: config.clock.clone(),
            config,
            prefix,
            entries: DashMap::with_hasher(FxBuildHasher),
            order: OrderIndex::default(),
            next_seq: AtomicU64::new(1),
            aggregates: Aggregates::default(),
            paths: PathIndex::default(),
            recent: recent.clone(),
            admission,
            observers: Observers::default(),
            traffic_floor: Default::default(),
            shutting_down: AtomicBool::new(false),
            shutdown_started: CancellationToken::new(),
            emptied: Notify::new(),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            background: AtomicU8::new(0),
            shutdown_done: watch::channel(None).0,
            shutdown_lock: Mutex::new(()),
        });
        let registry = Self { shared };
        if !stats_interval.is_zero() {
            registry.observe(Arc::new(StatsLogger::every(stats_interval)));
        }
        if let Some(recent) = recent {
            registry.observe(recent);
        }
        registry
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The process-wide default registry, which integrations use when none is given to them.
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

    /// `ip` as this registry's per-address limits and bans count it (its IPv6 group).
    pub fn client_key(&self, ip: std::net::IpAddr) -> ClientKey {
        self.shared.admission.client_key(ip)
    }

    /// Adds an observer: from now on it hears of every connection opened and closed and every
    /// upgrade refused, and gets a tick at its [`Observer::tick_interval`].
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        if observer.tick_interval().is_some_and(|d| !d.is_zero()) {
            self.shared
                .observers
                .pending_ticks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(observer.clone());
            if self.shared.background.load(Ordering::Acquire) != 0 {
                self.shared.start_ticks();
            }
        }
        self.shared.observers.add(observer);
    }

    /// The admission step every upgrade passes before it is accepted: a [`Permit`] to
    /// [`register`](Registry::register) it with, or why it is refused (counted in the stats'
    /// `refused`, logged at debug level and told to observers).
    pub fn admit(&self, meta: &ConnectionMeta) -> Result<Permit, Refusal> {
        let shared = &self.shared;
        let result = shared.admission.admit(
            shared.shutting_down.load(Ordering::Acquire),
            meta,
            shared.clock.now_nanos(),
        );
        if let Err(refusal) = &result {
            self.record_refusal(refusal, meta);
        }
        result
    }

    /// Counts a refusal made before admission could run (an invalid handshake, say), logs it at
    /// debug level and tells observers, as [`admit`](Registry::admit) does for its own.
    pub fn record_refusal(&self, refusal: &Refusal, meta: &ConnectionMeta) {
        let shared = &self.shared;
        shared.aggregates.refused(refusal.kind());
        tracing::debug!(reason = %refusal, remote = ?meta.remote_addr, path = %meta.path, "upgrade refused");
        if let Some(observers) = shared.observers.current() {
            let event = RefusedEvent {
                reason: refusal,
                remote_addr: meta.remote_addr,
                path: &meta.path,
            };
            observers.iter().for_each(|o| o.refused(&event));
        }
    }

    /// Registers an admitted connection (state CONNECTING). Run it with [`Accepted::run`] once
    /// its transport is ready; dropping the [`Accepted`] instead removes the entry.
    pub fn register(&self, meta: ConnectionMeta, permit: Permit) -> Accepted {
        let shared = &self.shared;
        shared.start_background();
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let now = shared.clock.now_ms();
        let stored = Stored {
            path: SharedStr::new(&meta.path),
            user_agent: meta
                .user_agent
                .map(|ua| SharedStr::new(truncate(&ua, shared.config.max_user_agent_len))),
            remote_addr: meta.remote_addr,
        };
        let entry = Arc::new(Entry::new(
            seq,
            now,
            stored,
            Outbox::new(shared.config.queue_capacity, shared.config.max_queued_bytes),
            shared.root.child_token(),
        ));
        // Within their caps: admission checked them.
        entry.set_labels(meta.user.as_deref(), &meta.tags);
        // In the order index first: a page walk that finds a number not yet in the map skips
        // it, while one missing from the index would be skipped by every page.
        shared.order.insert(seq);
        shared.entries.insert(seq, entry.clone());
        shared.paths.insert(&entry);
        shared.aggregates.registered(seq, now);
        // A shutdown that began between admission and the insert would miss this entry: close
        // it now, like the rest.
        if shared.shutting_down.load(Ordering::Acquire) {
            entry.outbox.request_close(CloseFrame::shutdown());
        }
        // Likewise a ban made between admission and the insert, whose walk missed this entry
        // (the map's shard lock orders the two: if the walk missed it, this sees the ban).
        if let Some(ip) = entry.remote_addr {
            if shared
                .admission
                .bans()
                .is_banned(ip.to_canonical(), shared.clock.now_nanos())
            {
                entry.request_close(banned_frame(""), Initiator::Admin);
            }
        }
        if let Some(observers) = shared.observers.current() {
            let id = shared.id_of(seq);
            let event = OpenedEvent {
                id: &id,
                remote_addr: entry.remote_addr,
                path: &entry.path,
            };
            observers.iter().for_each(|o| o.opened(&event));
        }
        Accepted::new(Connection::new(entry, self.shared.clone(), permit))
    }

    /// [`admit`](Registry::admit), then [`register`](Registry::register).
    pub fn accept(&self, meta: ConnectionMeta) -> Result<Accepted, Refusal> {
        let permit = self.admit(&meta)?;
        Ok(self.register(meta, permit))
    }

    /// Connections tracked now, in O(1).
    #[inline]
    pub fn connection_count(&self) -> u64 {
        self.shared.aggregates.current.load(Ordering::Acquire)
    }

    /// The full statistics, with every connection listed (a walk of the entries).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(true)
    }

    /// The statistics without the per-connection list, in O(1) (for the log line, health checks
    /// and observers).
    pub fn summary(&self) -> Snapshot {
        self.shared.snapshot(false)
    }

    /// Messages and bytes moved since start by every connection, open or closed, and what waits
    /// in the outbound queues now: one walk of the entries (atomics only), no per-message cost.
    /// Successive readings never go down.
    pub fn traffic(&self) -> crate::Traffic {
        self.shared.traffic()
    }

    /// Queues `msg` to every OPEN connection on `path` (every path, with `None`) without waiting:
    /// a member whose queue is full is closed as a slow consumer (1008) rather than holding up
    /// the others. Only that path's members are visited.
    pub fn broadcast(&self, path: Option<&str>, msg: &Message) -> Broadcast {
        let mut outcome = Broadcast::default();
        let mut send = |entry: &Arc<Entry>| {
            if entry.state() != ConnectionState::Open {
                return;
            }
            match entry.outbox.try_push(msg.clone()) {
                Ok(()) => outcome.sent += 1,
                Err(SendError::QueueFull) => {
                    self.shared.slow_consumer(entry);
                    outcome.slow += 1;
                }
                Err(SendError::Closed) => {}
            }
        };
        match path {
            Some(path) => self.shared.paths.for_each_member(path, send),
            None => self.shared.entries.iter().for_each(|e| send(e.value())),
        }
        outcome
    }

    /// Handles to the OPEN connections on `path` (only that path's members are visited).
    pub fn connections_on(&self, path: &str) -> Vec<ConnectionHandle> {
        let mut handles = Vec::new();
        self.shared.paths.for_each_member(path, |entry| {
            if entry.state() == ConnectionState::Open {
                handles.push(ConnectionHandle {
                    entry: entry.clone(),
                    shared: self.shared.clone(),
                });
            }
        });
        handles
    }

    /// The last closed connections (at most [`RegistryConfig::recent_closed`] are kept), newest
    /// first; `limit` caps how many.
    pub fn recently_closed(&self, limit: Option<usize>) -> Vec<ClosedConnection> {
        self.shared
            .recent
            .as_ref()
            .map(|r| r.newest(limit))
            .unwrap_or_default()
    }

    /// How many closed connections are kept now (at most [`RegistryConfig::recent_closed`]).
    pub fn recently_closed_count(&self) -> usize {
        self.shared.recent.as_ref().map_or(0, |r| r.len())
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

    /// Bans `target` (an address, or a network: `"203.0.113.0/24".parse()`) for `duration`:
    /// upgrades from it are refused with 403 until then, and its open connections are closed with
    /// 1008 and `reason` ("banned" if empty) after their queues are flushed. Banning a target
    /// again replaces its ban. Bans are held in memory: they do not survive a restart.
    ///
    /// An IPv6 address (or a network longer than [`RegistryConfig::ipv6_prefix`]) is banned as
    /// the group that holds it — `2001:db8:1:2::7` bans `2001:db8:1:2::/64` by default —, since
    /// its host can send from any address of the group; the outcome and [`bans`](Self::bans)
    /// show the group.
    pub fn ban(
        &self,
        target: IpNet,
        duration: Duration,
        reason: &str,
    ) -> Result<BanOutcome, BanError> {
        if duration.is_zero() {
            return Err(BanError::ZeroDuration);
        }
        let frame = CloseFrame::new(CloseCode::POLICY, banned_reason(reason))?;
        let shared = &self.shared;
        let target = shared.admission.ban_target(target);
        let bans = shared.admission.bans();
        let (ban, replaced) = bans.insert(target, reason, duration, &shared.clock);
        let closed = shared.close_from(target, &frame);
        tracing::info!(%target, ?duration, reason, closed, "banned");
        Ok(BanOutcome {
            ban,
            closed,
            replaced,
        })
    }

    /// Lifts the ban of exactly `target` (as it was banned: unbanning one address of a banned
    /// network lifts nothing; an IPv6 address names its group, as in [`ban`](Self::ban)).
    /// Returns whether there was one.
    pub fn unban(&self, target: IpNet) -> bool {
        let target = self.shared.admission.ban_target(target);
        let removed = self.shared.admission.bans().remove(target);
        tracing::info!(%target, removed, "unbanned");
        removed
    }

    /// The bans in force (expired ones are dropped), ordered by target.
    pub fn bans(&self) -> Vec<Ban> {
        self.shared.admission.bans().list(&self.shared.clock)
    }

    /// Closes every open connection from `target` (an address or a network) with `code` and
    /// `reason` after flushing its queue, without banning it: it may reconnect at once. Returns
    /// how many were asked to close.
    pub fn kick(&self, target: IpNet, code: CloseCode, reason: &str) -> Result<u64, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        let target = canonical_net(target);
        let closed = self.shared.close_from(target, &frame);
        tracing::info!(%target, closed, "kicked");
        Ok(closed)
    }

    /// Whether shutdown has begun: upgrades are refused from then on (the reference's
    /// `isShutDown`).
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// The tracker for the tasks that serve connections; wait on it to join them.
    pub fn task_tracker(&self) -> &TaskTracker {
        &self.shared.tracker
    }

    /// Starts the background sweep and the observers' ticks (the stats logger's among them) now;
    /// they also start on the first registration. Needs a tokio runtime.
    pub fn start_background_tasks(&self) {
        self.shared.start_background();
    }
}

/// The close reason of a ban: its reason, or "banned".
fn banned_reason(reason: &str) -> &str {
    if reason.is_empty() {
        "banned"
    } else {
        reason
    }
}

/// The 1008 close frame of a ban with `reason` (a short one: the reason was checked at the ban).
fn banned_frame(reason: &str) -> CloseFrame {
    CloseFrame::new(CloseCode::POLICY, banned_reason(reason)).unwrap_or(CloseFrame {
        code: CloseCode::POLICY,
        reason: "banned".to_owned(),
    })
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

impl Shared {
    /// Whether shutdown has begun, for a connection that has just become CLOSED. The fence pairs
    /// with the one in the drain: a connection ending as the drain starts either sees the flag
    /// and removes itself, or is seen CLOSED by the drain's sweep.
    pub(crate) fn shutdown_begun(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn id_of(&self, seq: u64) -> ConnectionId {
        ConnectionId::new(self.prefix.clone(), seq)
    }

    /// A send that may not wait found `entry`'s queue full: drop what was queued to it and close
    /// it with 1008 "slow consumer", without waiting for a reply; if its writer is stuck on a
    /// peer that reads nothing, it is dropped after the close timeout.
    pub(crate) fn slow_consumer(&self, entry: &Arc<Entry>) {
        if entry.fail(
            CloseFrame::slow_consumer(),
            Initiator::Limit,
            self.config.drain_timeout,
        ) {
            entry.outbox.discard();
            tracing::debug!(id = %self.id_of(entry.seq), "slow consumer: queue full, closing with 1008");
        }
    }

    /// The one removal path: drop guards and the sweep both come here; the map decides who wins.
    /// Returns whether this call removed the entry.
    pub(crate) fn remove(&self, entry: &Arc<Entry>) -> bool {
        entry.outbox.shut();
        if self.entries.remove(&entry.seq).is_none() {
            return false; // already swept
        }
        self.order.remove(entry.seq);
        self.paths.remove(entry);
        // Out of the map, so no snapshot reads it any more: take it out of the sums.
        let state = ConnectionState::from_u8(
            entry
                .state
                .swap(ConnectionState::Closed as u8, Ordering::AcqRel),
        );
        let last_ms = entry
            .last_activity_ms
            .swap(crate::connection::REMOVED, Ordering::AcqRel);
        let rtt = entry
            .rtt_ms
            .swap(crate::connection::RTT_REMOVED, Ordering::AcqRel);
        if rtt < crate::connection::RTT_REMOVED {
            self.aggregates.rtt_removed(rtt);
        }
        let record = entry.close_record().unwrap_or_else(|| {
            let (initiator, reason) = if std::thread::panicking() {
                (Initiator::Panic, "handler panicked")
            } else {
                (Initiator::Server, "connection dropped")
            };
            CloseRecord {
                initiator,
                code: None,
                reason: reason.to_owned(),
            }
        });
        let left = self.aggregates.removed(
            entry.seq,
            state,
            entry.connected_ms,
            last_ms,
            record.initiator,
            entry.counts(),
        );
        let id = self.id_of(entry.seq);
        tracing::debug!(
            id = %id,
            closed_by = record.initiator.as_str(),
            code = record.code,
            reason = %record.reason,
            "connection removed"
        );
        if let Some(observers) = self.observers.current() {
            let now = self.clock.now_ms();
            let ms = |t: u64| Duration::from_millis(now.saturating_sub(t));
            let event = ClosedEvent {
                id: &id,
                record: &record,
                lifetime: ms(entry.connected_ms),
                idle: ms(last_ms),
                counts: entry.counts(),
                remote_addr: entry.remote_addr,
                path: &entry.path,
                user_agent: entry.user_agent.as_ref(),
                closed_at: self.clock.unix_ms(now),
            };
            observers.iter().for_each(|o| o.closed(&event));
        }
        if left == 0 {
            self.emptied.notify_waiters();
        }
        true
    }

    pub(crate) fn cleanup_stale(&self) -> u64 {
        let stale: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| e.value().state() == ConnectionState::Closed)
            .map(|e| e.value().clone())
            .collect();
        stale.iter().filter(|entry| self.remove(entry)).count() as u64
    }

    /// Asks every connection from an address in `net` (canonical) to close with `frame`.
    pub(crate) fn close_from(&self, net: IpNet, frame: &CloseFrame) -> u64 {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| {
                e.value()
                    .remote_addr
                    .is_some_and(|ip| net.contains(&ip.to_canonical()))
            })
            .map(|e| e.value().clone())
            .collect();
        entries
            .iter()
            .filter(|entry| {
                entry.state() != ConnectionState::Closed
                    && entry.request_close(frame.clone(), Initiator::Admin)
            })
            .count() as u64
    }

    /// Drops expired bans and admission state no longer needed (the background sweep).
    pub(crate) fn sweep_admission(&self) {
        self.admission.sweep(self.clock.now_nanos());
    }

    pub(crate) fn close_all(&self, frame: &CloseFrame, initiator: Initiator) -> u64 {
        // Collect first so no shard lock is held while outbox locks are taken.
        let entries: Vec<Arc<Entry>> = self.entries.iter().map(|e| e.value().clone()).collect();
        entries
            .iter()
            .filter(|entry| {
                entry.state() != ConnectionState::Closed
                    && entry.request_close(frame.clone(), initiator)
            })
            .count() as u64
    }

    /// The figures from the aggregates (O(1)); with `list`, every entry too (a walk).
    pub(crate) fn snapshot(&self, list: bool) -> Snapshot {
        let now = self.clock.now_ms();
        let figures = self.aggregates.figures(now);
        let connections = if list {
            self.list(now, figures.current as usize)
        } else {
            Vec::new()
        };
        Snapshot {
            summary: Summary {
                total_connections: figures.current,
                total_connections_ever: figures.total_ever,
                total_connections_closed: figures.total_closed,
                average_age: figures.average_age_ms,
                average_idle_time: figures.average_idle_ms,
                connections_by_state: figures.by_state,
            },
            connections,
            instance_id: self.config.instance_id.clone(),
            uptime: now,
            shut_down: self.shutting_down.load(Ordering::Acquire),
            closed_by: figures.closed_by,
            refused: figures.refused,
            average_rtt_ms: figures.average_rtt_ms,
        }
    }

    /// Every entry as the stats list it, as of `now` (ms).
    fn list(&self, now: u64, expected: usize) -> Vec<ConnectionInfo> {
        let mut connections = Vec::with_capacity(expected);
        for item in self.entries.iter() {
            connections.push(self.info(item.value(), now));
        }
        connections
    }

    /// One entry as the stats list it, as of `now` (ms).
    pub(crate) fn info(&self, e: &Entry, now: u64) -> ConnectionInfo {
        let (queued_messages, queued_bytes) = e.outbox.queued();
        let counts = e.counts();
        let (user, tags) = e.labels_view();
        ConnectionInfo {
            id: self.id_of(e.seq),
            age: now.saturating_sub(e.connected_ms),
            idle_time: now.saturating_sub(e.last_activity_ms.load(Ordering::Relaxed)),
            state: e.state(),
            remote_address: e.remote_addr,
            user_agent: e.user_agent.clone(),
            path: e.path.clone(),
            connected_at: self.clock.unix_ms(e.connected_ms),
            messages_in: counts.messages_in,
            messages_out: counts.messages_out,
            bytes_in: counts.bytes_in,
            bytes_out: counts.bytes_out,
            queued_messages: queued_messages as u64,
            queued_bytes: queued_bytes as u64,
            rtt_ms: e.rtt(),
            user,
            tags,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::admission::tests::CountingGate;
    use crate::memory;

    fn gated(max: usize) -> (Registry, Arc<AtomicUsize>) {
        let held = Arc::new(AtomicUsize::new(0));
        let mut admission = Admission::default();
        admission.push(CountingGate {
            held: held.clone(),
            max,
        });
        let config = RegistryConfig::default()
            .instance_id("gated")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .drain_timeout(Duration::from_secs(2));
        (Registry::build(config, admission), held)
    }

    async fn released(held: &AtomicUsize) {
        for _ in 0..500 {
            if held.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the permit was not released");
    }

    /// However a connection ends, what admission reserved for it is released.
    #[tokio::test]
    async fn the_permit_is_released_however_the_connection_ends() {
        let (reg, held) = gated(1);
        let meta = ConnectionMeta::new("/ws");

        // Never run (a failed upgrade).
        let accepted = reg.accept(meta.clone()).unwrap();
        assert_eq!(held.load(Ordering::SeqCst), 1);
        assert!(reg.accept(meta.clone()).is_err(), "the gate is full");
        accepted.fail("upgrade failed: test");
        released(&held).await;
        assert_eq!(reg.summary().closed_by.error, 1);

        // Closed by the peer.
        let (transport, peer) = memory::pair();
        let task = tokio::spawn(
            reg.accept(meta.clone())
                .unwrap()
                .run(transport, |mut s| async move {
                    while s.recv().await.is_some() {}
                }),
        );
        peer.close(None).unwrap();
        task.await.unwrap();
        released(&held).await;

        // The handler panics: the peer gets 1011 and answers it.
        let (transport, mut peer) = memory::pair();
        let task = tokio::spawn(reg.accept(meta.clone()).unwrap().run(
            transport,
            |socket| async move {
                let _held = socket; // dropped while unwinding
                panic!("handler bug")
            },
        ));
        match peer.recv().await {
            Some(crate::Message::Close(Some(f))) => assert_eq!(f.code.as_u16(), 1011),
            other => panic!("expected 1011, got {other:?}"),
        }
        peer.close(None).unwrap();
        task.await.unwrap();
        released(&held).await;
        assert_eq!(reg.summary().closed_by.panic, 1);

        // Shut down with the connection open.
        let (transport, mut peer) = memory::pair();
        let task = tokio::spawn(
            reg.accept(meta)
                .unwrap()
                .run(transport, |mut s| async move {
                    while s.recv().await.is_some() {}
                }),
        );
        let shutdown = tokio::spawn({
            let reg = reg.clone();
            async move { reg.shutdown().await }
        });
        // The peer answers the 1001 close.
        while let Some(msg) = peer.recv().await {
            if let crate::Message::Close(frame) = msg {
                peer.close(frame).unwrap();
            }
        }
        task.await.unwrap();
        shutdown.await.unwrap();
        released(&held).await;
        assert_eq!(reg.summary().total_connections_closed, 4);
    }

    fn from(ip: &str) -> ConnectionMeta {
        ConnectionMeta::new("/ws").remote_addr(ip.parse::<std::net::IpAddr>().unwrap())
    }

    fn net(s: &str) -> IpNet {
        crate::units::parse_net(s).unwrap()
    }

    /// Runs an admitted connection over an in-process transport whose peer answers a close.
    fn run(
        reg: &Registry,
        meta: ConnectionMeta,
    ) -> (tokio::task::JoinHandle<()>, crate::memory::MemoryPeer) {
        let (transport, peer) = memory::pair();
        let accepted = reg.accept(meta).unwrap();
        let task = tokio::spawn(accepted.run(transport, |mut s| async move {
            while s.recv().await.is_some() {}
        }));
        (task, peer)
    }

    /// The close frame the peer gets, answered.
    async fn closed_with(peer: &mut crate::memory::MemoryPeer) -> (u16, String) {
        loop {
            match peer.recv().await {
                Some(crate::Message::Close(Some(f))) => {
                    peer.close(Some(f.clone())).unwrap();
                    return (f.code.as_u16(), f.reason);
                }
                Some(_) => continue,
                None => panic!("no close frame"),
            }
        }
    }

    /// The configured caps are slots in the permit: full means refused, an ended connection
    /// frees its slot.
    #[tokio::test]
    async fn configured_caps_refuse_when_full_and_free_their_slots() {
        let config = RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .max_connections(2)
            .max_connections_per_ip(1);
        let reg = Registry::with_config(config);
        let a = reg.accept(from("192.0.2.1")).unwrap();
        assert_eq!(
            reg.accept(from("192.0.2.1")).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let (task, peer) = run(&reg, from("192.0.2.2"));
        let refused = reg.accept(from("192.0.2.3")).unwrap_err();
        assert_eq!(refused.kind(), crate::RefusalKind::TooManyConnections);
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
        a.fail("upgrade failed: test");
        let b = reg.accept(from("192.0.2.1")).unwrap();
        peer.close(None).unwrap();
        task.await.unwrap();
        let c = reg.accept(from("192.0.2.3")).unwrap();
        drop((b, c));
        let refused = reg.summary().refused;
        assert_eq!(refused.get(crate::RefusalKind::TooManyFromAddress), 1);
        assert_eq!(refused.get(crate::RefusalKind::TooManyConnections), 1);
    }

    /// A ban closes what it covers with 1008 and its reason, refuses new upgrades from it until
    /// it expires (on the registry's clock) or is lifted; a kick closes without banning.
    #[tokio::test]
    async fn bans_close_refuse_expire_and_lift_and_kicks_only_close() {
        let (clock, manual) = Clock::manual();
        let config = RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .clock(clock);
        let reg = Registry::with_config(config);
        let (banned_task, mut banned) = run(&reg, from("203.0.113.7"));
        let (other_task, mut other) = run(&reg, from("198.51.100.1"));

        let outcome = reg
            .ban(net("203.0.113.0/24"), Duration::from_secs(600), "flooding")
            .unwrap();
        assert_eq!((outcome.closed, outcome.replaced), (1, false));
        assert_eq!(outcome.ban.target.to_string(), "203.0.113.0/24");
        assert_eq!(outcome.ban.expires_in, 600_000);
        assert_eq!(
            closed_with(&mut banned).await,
            (1008, "flooding".to_owned())
        );
        banned_task.await.unwrap();
        assert_eq!(
            reg.accept(from("203.0.113.9")).unwrap_err(),
            Refusal::Banned
        );
        assert_eq!(
            reg.accept(from("::ffff:203.0.113.9")).unwrap_err(),
            Refusal::Banned,
            "the IPv4-mapped form is the same address"
        );
        drop(reg.accept(from("198.51.100.2")).unwrap());
        assert_eq!(reg.bans(), vec![outcome.ban.clone()]);

        // Expiry, on the registry's clock.
        manual.advance(Duration::from_secs(599));
        assert!(reg.accept(from("203.0.113.9")).is_err());
        manual.advance(Duration::from_secs(1));
        drop(reg.accept(from("203.0.113.9")).unwrap());
        assert!(reg.bans().is_empty());

        // Unban lifts exactly its target.
        reg.ban(net("203.0.113.9"), Duration::from_secs(60), "")
            .unwrap();
        assert!(!reg.unban(net("203.0.113.0/24")));
        assert!(reg.accept(from("203.0.113.9")).is_err());
        assert!(reg.unban(net("203.0.113.9")));
        drop(reg.accept(from("203.0.113.9")).unwrap());

        // Bad bans.
        assert_eq!(
            reg.ban(net("192.0.2.1"), Duration::ZERO, "").unwrap_err(),
            BanError::ZeroDuration
        );
        assert!(matches!(
            reg.ban(net("192.0.2.1"), Duration::from_secs(1), &"x".repeat(124)),
            Err(BanError::ReasonTooLong(_))
        ));
        assert!(reg.bans().is_empty(), "a refused ban is not made");

        // A kick closes, and the address may come back at once.
        assert_eq!(
            reg.kick(net("198.51.100.0/24"), CloseCode::POLICY, "kicked")
                .unwrap(),
            1
        );
        assert_eq!(closed_with(&mut other).await, (1008, "kicked".to_owned()));
        other_task.await.unwrap();
        drop(reg.accept(from("198.51.100.1")).unwrap());
        assert_eq!(reg.summary().refused.get(crate::RefusalKind::Banned), 4);
        assert_eq!(reg.summary().closed_by.admin, 2);
    }

    /// The background sweep drops expired bans without any upgrade finding them.
    #[tokio::test(start_paused = true)]
    async fn the_background_sweep_drops_expired_bans() {
        let (clock, manual) = Clock::manual();
        let config = RegistryConfig::default()
            .stats_interval(Duration::ZERO)
            .cleanup_interval(Duration::from_secs(30))
            .clock(clock);
        let reg = Registry::with_config(config);
        reg.start_background_tasks();
        reg.ban(net("203.0.113.0/24"), Duration::from_secs(1), "")
            .unwrap();
        let bans = reg.shared.admission.bans();
        manual.advance(Duration::from_secs(1));
        assert_eq!(bans.held(), 1, "nothing has looked yet");
        for _ in 0..100 {
            if bans.held() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await; // paused: the sweep's clock
        }
        panic!("the sweep did not drop the expired ban");
    }
}
