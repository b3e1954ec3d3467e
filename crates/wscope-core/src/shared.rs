//! The state behind a [`Registry`](crate::Registry) and the operations on it: the entry map and
//! its indexes (registration order, request path), the one insert and the one removal path, the
//! sums, the observers, the admission checks, the shutdown state and the task tracker. Its fields
//! are its own; the registry, the connection, the drain, the background tasks and the readers
//! reach them through the methods here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ipnet::IpNet;
use rustc_hash::FxBuildHasher;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{banned_frame, Admission, ConnectionMeta};
use crate::aggregates::Aggregates;
use crate::clock::Clock;
use crate::close::{CloseFrame, CloseRecord, Initiator};
use crate::config::RegistryConfig;
use crate::entry::{Entry, Labels, Stored};
use crate::id::{self, ConnectionId};
use crate::json::{self, ConnectionView, SizeHint};
use crate::liveness::{Expired, Timeouts};
use crate::observer::{ClosedEvent, Observers, OpenedEvent};
use crate::order::OrderIndex;
use crate::outbox::Outbox;
use crate::paths::PathIndex;
use crate::recent::RecentlyClosed;
use crate::shutdown::Shutdown;
use crate::snapshot::{ConnectionInfo, Snapshot, Summary};
use crate::state::{ConnectionState, REMOVED, RTT_REMOVED};
use crate::strings::{truncate, SharedStr};
use crate::traffic::{Traffic, TrafficFloor, TrafficTally};

/// State behind a [`Registry`](crate::Registry).
#[derive(Debug)]
pub(crate) struct Shared {
    config: RegistryConfig,
    /// The registry's time source.
    pub(crate) clock: Clock,
    /// `"{instance}-{boot}"`, the front of every id.
    prefix: SharedStr,
    /// The entries, sharded (one lock per shard, so readers of one shard never block another).
    entries: DashMap<u64, Arc<Entry>, FxBuildHasher>,
    /// The entries' sequence numbers in order (pages in registration order read only the page).
    order: OrderIndex,
    next_seq: AtomicU64,
    /// Counts, totals and sums, read in O(1).
    aggregates: Aggregates,
    /// The entries again, by request path (broadcasts to one path).
    paths: PathIndex,
    /// The last closed connections, when kept.
    recent: Option<Arc<RecentlyClosed>>,
    /// The checks every upgrade passes.
    admission: Admission,
    /// Who listens.
    observers: Observers,
    /// The last traffic totals read (they never go down).
    traffic_floor: TrafficFloor,
    /// The size of the last stats answer, to size the next one's buffer.
    stats_size: SizeHint,
    /// Whether shutdown began, and its report.
    shutdown: Shutdown,
    /// Woken when the last entry leaves (shutdown waits on it).
    emptied: Notify,
    /// Calls of `wait_empty` under way: removals look for an empty registry only while some are.
    waiting_empty: AtomicUsize,
    /// Cancelled when every connection is dropped at once: it stops the background tasks, and an
    /// entry registered after it is dropped as it arrives.
    root: CancellationToken,
    /// Connection tasks and background tasks.
    tracker: TaskTracker,
    /// Set once the background tasks started (they need a runtime, so start lazily).
    background: AtomicBool,
}

impl Shared {
    /// The state of a new registry: no entry, `recent` kept if asked for.
    pub(crate) fn new(
        config: RegistryConfig,
        admission: Admission,
        recent: Option<Arc<RecentlyClosed>>,
    ) -> Self {
        Self {
            clock: config.clock.clone(),
            prefix: id::prefix(&config.instance_id, id::boot_token()),
            config,
            entries: DashMap::with_hasher(FxBuildHasher),
            order: OrderIndex::default(),
            next_seq: AtomicU64::new(1),
            aggregates: Aggregates::default(),
            paths: PathIndex::default(),
            recent,
            admission,
            observers: Observers::default(),
            traffic_floor: TrafficFloor::default(),
            stats_size: SizeHint::default(),
            shutdown: Shutdown::default(),
            emptied: Notify::new(),
            waiting_empty: AtomicUsize::new(0),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            background: AtomicBool::new(false),
        }
    }

    pub(crate) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    pub(crate) fn observers(&self) -> &Observers {
        &self.observers
    }

    pub(crate) fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    pub(crate) fn recent(&self) -> Option<&RecentlyClosed> {
        self.recent.as_deref()
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Connections tracked now, in O(1).
    pub(crate) fn current(&self) -> u64 {
        self.aggregates.current()
    }

    /// Claims the start of the background tasks: true for exactly one caller.
    pub(crate) fn claim_background(&self) -> bool {
        !self.background.load(Ordering::Relaxed) && !self.background.swap(true, Ordering::AcqRel)
    }

    /// Whether the background tasks have started.
    pub(crate) fn background_started(&self) -> bool {
        self.background.load(Ordering::Acquire)
    }

    /// Completes when the registry's tasks must stop (shutdown's end, or every connection
    /// dropped at once).
    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.root.clone()
    }

    /// Drops every connection at once (their tasks stop) and stops the background tasks.
    pub(crate) fn abort_all(&self) {
        self.root.cancel();
        self.for_each_entry(|entry| entry.abort());
    }

    /// Drops every connection and stops the background tasks; no task is tracked after this.
    pub(crate) fn stop_tasks(&self) {
        self.abort_all();
        self.tracker.close();
    }

    /// Fails `entry` from outside its task (a timeout, a slow consumer): its writer sends `frame`
    /// after what is queued and drops it without waiting for a reply; if the writer is stuck on
    /// a peer that reads nothing, a tracked timer drops it after the close timeout. Returns false
    /// if a close was already under way.
    pub(crate) fn fail(&self, entry: &Arc<Entry>, frame: CloseFrame, initiator: Initiator) -> bool {
        if !entry.fail(frame, initiator) {
            return false;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let (entry, within) = (entry.clone(), self.config.drain_timeout);
            self.tracker
                .spawn(async move { entry.abort_after(within).await });
        }
        true
    }

    pub(crate) fn id_of(&self, seq: u64) -> ConnectionId {
        ConnectionId::new(self.prefix.clone(), seq)
    }

    /// The entry with this public id, if tracked here.
    pub(crate) fn entry_by_id(&self, id: &str) -> Option<Arc<Entry>> {
        let seq = id::parse_seq(&self.prefix, id)?;
        self.entry(seq)
    }

    /// The entry with sequence number `seq`, if tracked.
    pub(crate) fn entry(&self, seq: u64) -> Option<Arc<Entry>> {
        self.entries.get(&seq).map(|e| e.value().clone())
    }

    /// Whether the entry with sequence number `seq` is tracked.
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.entries.contains_key(&seq)
    }

    /// Runs `f` on every entry, holding one map shard at a time (take no outbox lock in `f`
    /// that a shard holder could wait on; see the lock order in the crate docs).
    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(&Arc<Entry>)) {
        self.entries.iter().for_each(|item| f(item.value()));
    }

    /// Every entry, collected so that no shard lock is held while the caller works on them.
    pub(crate) fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries.iter().map(|e| e.value().clone()).collect()
    }

    /// The entries collected that `keep` keeps.
    pub(crate) fn entries_where(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Arc<Entry>> {
        self.entries
            .iter()
            .filter(|e| keep(e.value()))
            .map(|e| e.value().clone())
            .collect()
    }

    /// The entries' sequence numbers in registration order.
    pub(crate) fn order(&self) -> &OrderIndex {
        &self.order
    }

    /// Runs `f` on every entry on `path`.
    pub(crate) fn for_each_on(&self, path: &str, f: impl FnMut(&Arc<Entry>)) {
        self.paths.for_each_member(path, f);
    }

    /// Adds an admitted connection's entry (state CONNECTING), closing it at once if a shutdown
    /// or a ban came between its admission and now, and tells the observers.
    pub(crate) fn insert(&self, meta: ConnectionMeta) -> Arc<Entry> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now_ms();
        let stored = Stored {
            path: SharedStr::new(&meta.path),
            user_agent: meta
                .user_agent
                .map(|ua| SharedStr::new(truncate(&ua, self.config.max_user_agent_len))),
            remote_addr: meta.remote_addr,
        };
        let entry = Arc::new(Entry::new(
            seq,
            now,
            stored,
            Outbox::new(self.config.queue_capacity, self.config.max_queued_bytes),
        ));
        // Within their caps: admission checked them.
        entry.set_labels(meta.user.as_deref(), &meta.tags, meta.upstream.as_deref());
        // In the order index first: a page walk that finds a number not yet in the map skips
        // it, while one missing from the index would be skipped by every page.
        self.order.insert(seq);
        self.entries.insert(seq, entry.clone());
        self.paths.insert(&entry);
        self.aggregates.registered(now);
        // Every connection was dropped at once (`abort_all`) before this one was in the map,
        // whose walk therefore missed it: it goes too (the shard lock orders the two).
        if self.root.is_cancelled() {
            entry.abort();
        }
        // A shutdown that began between admission and the insert would miss this entry: close
        // it now, like the rest.
        if self.shutdown.is_begun() {
            entry.outbox.request_close(CloseFrame::shutdown());
        }
        // Likewise a ban made between admission and the insert, whose walk missed this entry
        // (the map's shard lock orders the two: if the walk missed it, this sees the ban).
        if let Some(ip) = entry.remote_addr {
            if self
                .admission
                .bans()
                .is_banned(ip.to_canonical(), self.clock.now_nanos())
            {
                entry.request_close(banned_frame(""), Initiator::Admin);
            }
        }
        if let Some(observers) = self.observers.current() {
            let id = self.id_of(seq);
            let event = OpenedEvent {
                id: &id,
                remote_addr: entry.remote_addr,
                path: &entry.path,
            };
            observers.iter().for_each(|o| o.opened(&event));
        }
        entry
    }

    /// A send that may not wait found `entry`'s queue full: drop what was queued to it and close
    /// it with 1008 "slow consumer", without waiting for a reply; if its writer is stuck on a
    /// peer that reads nothing, it is dropped after the close timeout.
    pub(crate) fn slow_consumer(&self, entry: &Arc<Entry>) {
        if self.fail(entry, CloseFrame::slow_consumer(), Initiator::Limit) {
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
        let last_ms = entry.last_activity_ms.swap(REMOVED, Ordering::AcqRel);
        let rtt = entry.rtt_ms.swap(RTT_REMOVED, Ordering::AcqRel);
        if rtt < RTT_REMOVED {
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
        self.aggregates.removed(
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
        // Summing the shards costs: only while someone waits for the registry to empty (a
        // drain). Sequentially consistent with `wait_empty`'s count and read: either this sees
        // the waiter, or the waiter's read sees this removal.
        if self.waiting_empty.load(Ordering::SeqCst) > 0 && self.current() == 0 {
            self.emptied.notify_waiters();
        }
        true
    }

    pub(crate) fn cleanup_stale(&self) -> u64 {
        let stale = self.entries_where(|e| e.state() == ConnectionState::Closed);
        stale.iter().filter(|entry| self.remove(entry)).count() as u64
    }

    /// Asks every connection from an address in `net` (canonical) to close with `frame`.
    pub(crate) fn close_from(&self, net: IpNet, frame: &CloseFrame) -> u64 {
        let entries = self.entries_where(|e| {
            e.remote_addr
                .is_some_and(|ip| net.contains(&ip.to_canonical()))
        });
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
        let entries = self.entries();
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
            shut_down: self.shutdown.is_begun(),
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
        e.with_labels(|labels| self.view(e, labels, now).to_info())
    }

    /// One entry's figures as of `now` (ms), borrowing its strings and `labels` (its labels,
    /// locked by the caller).
    pub(crate) fn view<'a>(
        &'a self,
        e: &'a Entry,
        labels: Option<&'a Labels>,
        now: u64,
    ) -> ConnectionView<'a, SharedStr> {
        let (queued_messages, queued_bytes) = e.outbox.queued();
        let counts = e.counts();
        ConnectionView {
            id_prefix: &self.prefix,
            seq: e.seq,
            age: now.saturating_sub(e.connected_ms),
            idle_time: now.saturating_sub(e.last_activity_ms.load(Ordering::Relaxed)),
            state: e.state(),
            remote_address: e.remote_addr,
            user_agent: e.user_agent.as_ref(),
            path: &e.path,
            connected_at: self.clock.unix_ms(e.connected_ms),
            messages_in: counts.messages_in,
            messages_out: counts.messages_out,
            bytes_in: counts.bytes_in,
            bytes_out: counts.bytes_out,
            queued_messages: queued_messages as u64,
            queued_bytes: queued_bytes as u64,
            memory_bytes: u64::from(e.held_bytes.load(Ordering::Relaxed)) + queued_bytes as u64,
            rtt_ms: e.rtt(),
            user: labels.and_then(|l| l.user.as_deref()),
            tags: labels.map_or(&[], |l| &l.tags),
            upstream: labels.and_then(|l| l.upstream.as_deref()),
        }
    }

    /// The JSON of `head` (a summary) with the entries `walk` hands over listed, each written
    /// straight from the entry as of `head`'s uptime: what `serde_json` writes for the snapshot
    /// that lists them, without building a row per entry. `expected` sizes the buffer, with
    /// the last answer's size per entry. Each row has `fields` (the size of rows cut to fewer
    /// is not recorded: the hint stays the full rows').
    pub(crate) fn stats_json(
        &self,
        head: &Snapshot,
        expected: usize,
        fields: json::FieldMask,
        walk: impl FnOnce(&mut dyn FnMut(&Entry)),
    ) -> Vec<u8> {
        let now = head.uptime;
        let mut out = Vec::with_capacity(self.stats_size.capacity(expected));
        json::write_head(head, &mut out);
        let mut list = json::List::with_fields(fields);
        walk(&mut |e| e.with_labels(|labels| list.push(&self.view(e, labels, now), &mut out)));
        json::write_tail(head, &mut out);
        if fields == json::FieldMask::ALL {
            self.stats_size.record(out.len(), list.len());
        }
        out
    }

    /// [`Shared::stats_json`] listing every entry (the full snapshot's JSON, each row cut to
    /// `fields`).
    pub(crate) fn snapshot_json(&self, fields: json::FieldMask) -> Vec<u8> {
        let head = self.snapshot(false);
        self.stats_json(&head, head.total_connections as usize, fields, |each| {
            for item in self.entries.iter() {
                each(item.value());
            }
        })
    }

    /// Messages and bytes moved since start by every connection, and what waits in the queues:
    /// the closed sums, then one walk of the entries, never lower than the last reading.
    pub(crate) fn traffic(&self) -> Traffic {
        // Sums first, then the walk: an entry removed in between is missed (for one reading),
        // never counted twice.
        let mut tally = TrafficTally::new(self.aggregates.closed_traffic());
        self.for_each_entry(|entry| tally.add(entry));
        self.traffic_floor.read(tally)
    }

    /// Pings every open connection that has no ping outstanding.
    pub(crate) fn ping_all(&self) {
        let now = self.clock.now_ms();
        self.for_each_entry(|entry| crate::liveness::ping(entry, now));
    }

    /// Closes the open connections past their ping or idle timeout; returns how many.
    pub(crate) fn check_timeouts(&self) -> u64 {
        let now = self.clock.now_ms();
        let timeouts = Timeouts::new(&self.config);
        let mut closed = 0;
        self.for_each_entry(|entry| {
            let closing = match timeouts.expired(entry, now) {
                None => false,
                Some(expired @ Expired::Ping) => {
                    self.fail(entry, expired.frame(), Initiator::Timeout)
                }
                Some(expired @ Expired::Idle) => {
                    entry.request_close(expired.frame(), Initiator::Timeout)
                }
            };
            closed += u64::from(closing);
        });
        closed
    }

    /// Drops empty path entries (the background sweep).
    pub(crate) fn drop_empty_paths(&self) {
        self.paths.drop_empty();
    }

    /// Waits until no entry is left, or `deadline` passes; true if emptied.
    pub(crate) async fn wait_empty(&self, deadline: Duration) -> bool {
        /// Counts a waiter while it lives (the wait may be dropped at any await).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting_empty.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting_empty);
        let wait = async {
            loop {
                let emptied = self.emptied.notified();
                tokio::pin!(emptied);
                emptied.as_mut().enable();
                if self.current() == 0 {
                    return;
                }
                emptied.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}
