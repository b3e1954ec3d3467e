//! The registry: the public handle over the connection state (`shared`). It admits and
//! registers connections, counts them, closes them, sweeps stale ones, bans and kicks, starts the
//! drain (`drain`) and the periodic tasks (`background`), and installs its own observers (the
//! stats logger, the recently-closed list).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::task::TaskTracker;

use crate::admission::{
    banned_reason, canonical_net, Admission, Ban, BanError, BanOutcome, ClientKey, ConnectionMeta,
    Permit, Refusal,
};
use crate::callback::CallbackSocket;
use crate::close::{CloseCode, CloseFrame, Initiator, ReasonTooLong};
use crate::config::RegistryConfig;
use crate::connection::{Connection, ConnectionHandle};
use crate::driver::{Accepted, TrackedSocket};
use crate::entry::Entry;
use crate::log::{log_snapshot, StatsLogger};
use crate::message::Message;
use crate::observer::{Observer, RefusedEvent};
use crate::outbox::SendError;
use crate::recent::RecentlyClosed;
use crate::shared::Shared;
use crate::shutdown::ShutdownReport;
use crate::snapshot::{ClosedConnection, Snapshot};

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
        let admission = config.admission();
        Self::build(config, admission)
    }

    pub(crate) fn build(config: RegistryConfig, admission: Admission) -> Self {
        let stats_interval = config.stats_interval;
        let recent =
            (config.recent_closed > 0).then(|| Arc::new(RecentlyClosed::new(config.recent_closed)));
        let shared = Arc::new(Shared::new(config, admission, recent.clone()));
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
        self.shared.config()
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        &self.shared.config().instance_id
    }

    /// `ip` as this registry's per-address limits and bans count it (its IPv6 group).
    pub fn client_key(&self, ip: std::net::IpAddr) -> ClientKey {
        self.shared.admission().client_key(ip)
    }

    /// Adds an observer: from now on it hears of every connection opened and closed and every
    /// upgrade refused, and gets a tick at its [`Observer::tick_interval`].
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        if observer.tick_interval().is_some_and(|d| !d.is_zero()) {
            self.shared.observers().defer_ticks(observer.clone());
            if self.shared.background_started() {
                crate::background::start_ticks(&self.shared);
            }
        }
        self.shared.observers().add(observer);
    }

    /// The observer of type `T` on this registry: made with `make` and added (as by
    /// [`observe`](Registry::observe)) on the first call, the same one on every later call. For
    /// integrations that must listen exactly once however often they are set up — the metrics
    /// behind `wscope_axum::admin_router`, say, which a program may build twice.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use wscope_core::{ConnectionMeta, Observer, OpenedEvent, Registry};
    ///
    /// #[derive(Default)]
    /// struct Opens(AtomicU64);
    /// impl Observer for Opens {
    ///     fn opened(&self, _event: &OpenedEvent<'_>) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let registry = Registry::new();
    /// let first = registry.observe_once(Opens::default);
    /// let again = registry.observe_once(Opens::default);
    /// assert!(Arc::ptr_eq(&first, &again));
    /// drop(registry.accept(ConnectionMeta::new("/ws")));
    /// assert_eq!(first.0.load(Ordering::Relaxed), 1); // heard once, not twice
    /// ```
    pub fn observe_once<T: Observer>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        self.shared
            .observers()
            .once(make, |observer| self.observe(observer))
    }

    /// The admission step every upgrade passes before it is accepted: a [`Permit`] to
    /// [`register`](Registry::register) it with, or why it is refused (counted in the stats'
    /// `refused`, logged at debug level and told to observers).
    pub fn admit(&self, meta: &ConnectionMeta) -> Result<Permit, Refusal> {
        let shared = &self.shared;
        let result =
            shared
                .admission()
                .admit(shared.shutdown().is_begun(), meta, shared.clock.now_nanos());
        if let Err(refusal) = &result {
            self.record_refusal(refusal, meta);
        }
        result
    }

    /// Counts a refusal made before admission could run (an invalid handshake, say), logs it at
    /// debug level and tells observers, as [`admit`](Registry::admit) does for its own.
    pub fn record_refusal(&self, refusal: &Refusal, meta: &ConnectionMeta) {
        let shared = &self.shared;
        shared.aggregates().refused(refusal.kind());
        tracing::debug!(reason = %refusal, remote = ?meta.remote_addr, path = %meta.path, "upgrade refused");
        if let Some(observers) = shared.observers().current() {
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
        crate::background::start(&self.shared);
        let entry = self.shared.insert(meta);
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
        self.shared.current()
    }

    /// The full statistics, with every connection listed (a walk of the entries).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(true)
    }

    /// The JSON of [`snapshot`](Self::snapshot), byte for byte what `serde_json` writes for it,
    /// with every entry written straight from the registry into one buffer sized from the last
    /// answer: no row is built per connection (what `GET /api/stats` answers; at 10,000
    /// connections it takes a fraction of building the snapshot and serializing it, see
    /// `benches/stats.rs`).
    ///
    /// ```
    /// let registry = wscope_core::Registry::new();
    /// let json: serde_json::Value = serde_json::from_slice(&registry.snapshot_json()).unwrap();
    /// assert_eq!(json["totalConnections"], 0);
    /// ```
    pub fn snapshot_json(&self) -> Vec<u8> {
        self.shared.snapshot_json(crate::json::FieldMask::ALL)
    }

    /// The statistics without the per-connection list, in O(1) (for the log line, health checks
    /// and observers).
    pub fn summary(&self) -> Snapshot {
        self.shared.snapshot(false)
    }

    /// Messages and bytes moved since start by every connection, open or closed, and what waits
    /// in the outbound queues now: one walk of the entries (atomics only), no per-message cost.
    /// Successive readings never go down.
    pub fn traffic(&self) -> crate::traffic::Traffic {
        self.shared.traffic()
    }

    /// Queues `msg` to every OPEN connection on `path` (every path, with `None`) without waiting:
    /// a member whose queue is full is closed as a slow consumer (1008) rather than holding up
    /// the others. Only that path's members are visited.
    ///
    /// A client that has its 101 gets every broadcast queued after it: a connection whose
    /// upgrade was answered ([`Accepted::mark_answered`], which the axum upgrade calls before it
    /// returns the 101) is a member while still CONNECTING, and what is queued to it is sent
    /// first once it runs (if its upgrade fails after all, that is dropped with it).
    pub fn broadcast(&self, path: Option<&str>, msg: &Message) -> Broadcast {
        let mut outcome = Broadcast::default();
        let send = |entry: &Arc<Entry>| {
            if !entry.reachable() {
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
            Some(path) => self.shared.for_each_on(path, send),
            None => self.shared.for_each_entry(send),
        }
        outcome
    }

    /// Handles to the OPEN connections on `path` (only that path's members are visited), with
    /// those whose 101 was given but which are not running yet, as [`broadcast`](Self::broadcast).
    pub fn connections_on(&self, path: &str) -> Vec<ConnectionHandle> {
        let mut handles = Vec::new();
        self.shared.for_each_on(path, |entry| {
            if entry.reachable() {
                handles.push(self.handle(entry.clone()));
            }
        });
        handles
    }

    /// The last closed connections (at most [`RegistryConfig::recent_closed`] are kept), newest
    /// first; `limit` caps how many.
    pub fn recently_closed(&self, limit: Option<usize>) -> Vec<ClosedConnection> {
        self.shared
            .recent()
            .map(|r| r.newest(limit))
            .unwrap_or_default()
    }

    /// How many closed connections are kept now (at most [`RegistryConfig::recent_closed`]).
    pub fn recently_closed_count(&self) -> usize {
        self.shared.recent().map_or(0, |r| r.len())
    }

    /// Handles to every OPEN connection, to send to or close (with those whose 101 was given but
    /// which are not running yet, as [`broadcast`](Self::broadcast)).
    pub fn active_connections(&self) -> Vec<ConnectionHandle> {
        self.shared
            .entries_where(|e| e.reachable())
            .into_iter()
            .map(|entry| self.handle(entry))
            .collect()
    }

    /// A handle to the connection with this id, if tracked here.
    pub fn connection(&self, id: &str) -> Option<ConnectionHandle> {
        let entry = self.shared.entry_by_id(id)?;
        Some(self.handle(entry))
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
        let target = shared.admission().ban_target(target);
        let bans = shared.admission().bans();
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
        let target = self.shared.admission().ban_target(target);
        let removed = self.shared.admission().bans().remove(target);
        tracing::info!(%target, removed, "unbanned");
        removed
    }

    /// The bans in force (expired ones are dropped), ordered by target.
    pub fn bans(&self) -> Vec<Ban> {
        self.shared.admission().bans().list(&self.shared.clock)
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
        self.shared.shutdown().is_begun()
    }

    /// The tracker for the tasks that serve connections; wait on it to join them.
    pub fn task_tracker(&self) -> &TaskTracker {
        self.shared.tracker()
    }

    /// Starts the background sweep and the observers' ticks (the stats logger's among them) now;
    /// they also start on the first registration. Needs a tokio runtime.
    pub fn start_background_tasks(&self) {
        crate::background::start(&self.shared);
    }

    /// Graceful shutdown, idempotent: refuses new upgrades, closes every connection with 1001
    /// "Server shutting down" after flushing what was queued to it, waits for the close handshakes
    /// up to the drain deadline, then drops the rest. Every caller gets the same report.
    pub async fn shutdown(&self) -> ShutdownReport {
        crate::drain::shutdown(&self.shared).await
    }

    /// Completes once shutdown has begun (at once if it has), without starting it: for what must
    /// end then rather than hold the server up, such as a live stream (a graceful HTTP stop waits
    /// for responses in flight, and a stream's response never finishes on its own).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = wscope_core::Registry::new();
    /// let started = registry.shutdown_started();
    /// registry.shutdown().await;
    /// started.await; // already complete
    /// # }
    /// ```
    pub fn shutdown_started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.shutdown().started()
    }

    /// A handle to `entry`, tracked here.
    fn handle(&self, entry: Arc<Entry>) -> ConnectionHandle {
        ConnectionHandle::new(entry, self.shared.clone())
    }
}

impl ConnectionHandle {
    /// The registry the connection is tracked in.
    pub fn registry(&self) -> Registry {
        Registry::from_shared(self.shared().clone())
    }
}

impl TrackedSocket {
    /// The registry this connection is tracked in: broadcast through its
    /// [`active_connections`](Registry::active_connections), read its stats.
    pub fn registry(&self) -> Registry {
        Registry::from_shared(self.connection().shared().clone())
    }
}

impl CallbackSocket {
    /// The registry this connection is tracked in, as [`TrackedSocket::registry`].
    pub fn registry(&self) -> Registry {
        Registry::from_shared(self.connection().shared().clone())
    }
}

/// Logs the reference's three stats lines at INFO under [`STATS_TARGET`](crate::STATS_TARGET):
///
/// ```text
/// [WebSocket Stats] Active: 5, Total: 23, Closed: 18
/// [WebSocket Stats] Avg Age: 45s, Avg Idle: 12s
/// [WebSocket Stats] By State - Open: 5, Connecting: 0, Closing: 0
/// ```
pub fn log_connection_stats(registry: &Registry) {
    log_snapshot(&registry.summary());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::admission::tests::CountingGate;
    use crate::clock::Clock;
    use crate::memory;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

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
        let bans = reg.shared.admission().bans();
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

    /// A layer that panics on the drain's first log line, as the fmt layer did on a closed stderr.
    struct PanicInDrain;

    impl<S: tracing::Subscriber> Layer<S> for PanicInDrain {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == "wscope_core::drain" {
                panic!("cannot write the log line");
            }
        }
    }

    // On a current-thread runtime the drain task runs on this thread, under this subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn a_drain_that_panics_still_publishes_its_report() {
        let subscriber = tracing_subscriber::registry().with(PanicInDrain);
        let _default = tracing::subscriber::set_default(subscriber);
        let registry = Registry::with_config(
            RegistryConfig::default()
                .stats_interval(Duration::ZERO)
                .cleanup_interval(Duration::ZERO),
        );
        let report = tokio::time::timeout(Duration::from_secs(5), registry.shutdown())
            .await
            .expect("the report arrives although the drain panicked");
        assert_eq!(report, ShutdownReport::default());
        // Later callers get the same report, at once.
        assert_eq!(registry.shutdown().await, report);
        assert!(registry.is_shut_down());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_started_completes_when_shutdown_begins_not_before() {
        let registry = Registry::with_config(
            RegistryConfig::default()
                .stats_interval(Duration::ZERO)
                .cleanup_interval(Duration::ZERO),
        );
        let started = registry.shutdown_started();
        tokio::pin!(started);
        assert!(futures_util::FutureExt::now_or_never(started.as_mut()).is_none());
        assert!(!registry.is_shut_down());
        let drain = tokio::spawn({
            let registry = registry.clone();
            async move { registry.shutdown().await }
        });
        tokio::time::timeout(Duration::from_secs(5), started)
            .await
            .expect("completes once shutdown begins");
        assert!(registry.is_shut_down());
        drain.await.unwrap();
        // A reader that arrives later finds it complete at once.
        tokio::time::timeout(Duration::from_secs(5), registry.shutdown_started())
            .await
            .unwrap();
    }
}
