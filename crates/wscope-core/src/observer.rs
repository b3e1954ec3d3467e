//! Observers: what a registry tells the rest of the process as it happens — a connection opened,
//! a connection closed (with its lifetime, idle time, counters and close record), an upgrade
//! refused, a ping's round trip timed — and, for those that ask, a summary at a fixed period. Metrics, the live stream, the
//! cluster heartbeat and the periodic stats log listen here instead of polling the registry.
//!
//! Events are passed by reference and built on the stack; a registry with no observer builds
//! none. Observers run inline on the task that caused the event (a connection's own task, or the
//! caller of `admit`), so they must be quick and must not block: count, or hand the event to a
//! channel with `try_send`.

use std::any::Any;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::admission::Refusal;
use crate::close::CloseRecord;
use crate::counts::Counts;
use crate::id::ConnectionId;
use crate::snapshot::Snapshot;
use crate::strings::SharedStr;

/// A connection was admitted and registered (state CONNECTING; it opens once its handshake
/// completes).
#[derive(Debug)]
#[non_exhaustive]
pub struct OpenedEvent<'a> {
    /// Its id.
    pub id: &'a ConnectionId,
    /// The client's address, if known.
    pub remote_addr: Option<IpAddr>,
    /// The request path.
    pub path: &'a str,
}

/// A connection left the registry (once per connection, whatever ended it).
#[derive(Debug)]
#[non_exhaustive]
pub struct ClosedEvent<'a> {
    /// Its id.
    pub id: &'a ConnectionId,
    /// Who ended it, with the close code and reason.
    pub record: &'a CloseRecord,
    /// How long it was registered.
    pub lifetime: Duration,
    /// How long it had been idle when it left: since its last text or binary message either way
    /// (control frames are not activity, so this is how long it idled before it was closed).
    pub idle: Duration,
    /// What it moved.
    pub counts: Counts,
    /// The client's address, if known.
    pub remote_addr: Option<IpAddr>,
    /// The request path.
    pub path: &'a SharedStr,
    /// The user agent, if sent.
    pub user_agent: Option<&'a SharedStr>,
    /// When it left (Unix time, ms).
    pub closed_at: u64,
}

/// An upgrade was refused at admission.
#[derive(Debug)]
#[non_exhaustive]
pub struct RefusedEvent<'a> {
    /// Why.
    pub reason: &'a Refusal,
    /// The client's address, if known.
    pub remote_addr: Option<IpAddr>,
    /// The request path.
    pub path: &'a str,
}

/// A server ping was answered: its round trip, timed by the registry's clock (millisecond
/// resolution), once per pong that answers a ping of ours.
#[derive(Debug)]
#[non_exhaustive]
pub struct RttEvent {
    /// From the ping's send to its pong's arrival.
    pub rtt: Duration,
}

/// Something that listens to a registry. Every method has an empty default: implement the ones
/// you need.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use wscope_core::{ClosedEvent, Observer, Registry};
///
/// #[derive(Default)]
/// struct Closes(AtomicU64);
/// impl Observer for Closes {
///     fn closed(&self, _event: &ClosedEvent<'_>) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let registry = Registry::new();
/// let closes = Arc::new(Closes::default());
/// registry.observe(closes.clone());
/// ```
pub trait Observer: Send + Sync + 'static {
    /// A connection was registered.
    fn opened(&self, _event: &OpenedEvent<'_>) {}

    /// A connection was removed.
    fn closed(&self, _event: &ClosedEvent<'_>) {}

    /// An upgrade was refused.
    fn refused(&self, _event: &RefusedEvent<'_>) {}

    /// A pong answered a server ping (see [`RegistryConfig::ping_interval`]).
    ///
    /// [`RegistryConfig::ping_interval`]: crate::RegistryConfig::ping_interval
    fn ping_rtt(&self, _event: &RttEvent) {}

    /// Whether it wants the events (`opened`, `closed`, `refused`, `ping_rtt`); an observer that only ticks
    /// says `false`, so that connections pay nothing for it. Read once, when it is added.
    fn wants_events(&self) -> bool {
        true
    }

    /// How often [`Observer::tick`] should run; `None` (the default) for never. Read once, when
    /// the observer is added.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Called every [`Observer::tick_interval`] with the registry's summary (no per-connection
    /// list; computed in O(1)).
    fn tick(&self, _summary: &Snapshot) {}
}

/// The observers of one registry that want events. Reading the list on an event is one atomic
/// load when it is empty, and a short read lock plus a reference-count increment otherwise.
#[derive(Default)]
pub(crate) struct Observers {
    list: RwLock<Arc<[Arc<dyn Observer>]>>,
    /// Whether the list is non-empty, so that the common case takes no lock.
    any: std::sync::atomic::AtomicBool,
    /// Observers that asked for ticks, waiting for the registry's background tasks to start.
    pending_ticks: Mutex<Vec<Arc<dyn Observer>>>,
    /// Those added through [`Registry::observe_once`](crate::Registry::observe_once), found
    /// again by type.
    once: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("count", &self.current().map_or(0, |l| l.len()))
            .finish()
    }
}

impl Observers {
    pub(crate) fn add(&self, observer: Arc<dyn Observer>) {
        if !observer.wants_events() {
            return;
        }
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Arc<dyn Observer>> = list.iter().cloned().collect();
        next.push(observer);
        *list = next.into();
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The observers now, or `None` if there are none (the common, lock-free case).
    #[inline]
    pub(crate) fn current(&self) -> Option<Arc<[Arc<dyn Observer>]>> {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        // Cloned out of the lock, so an observer may add another without deadlocking.
        Some(self.list.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Holds `observer`'s ticks until the registry's background tasks start.
    pub(crate) fn defer_ticks(&self, observer: Arc<dyn Observer>) {
        self.pending_ticks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(observer);
    }

    /// The observers whose ticks wait to be started (taken: each is started once).
    pub(crate) fn take_pending_ticks(&self) -> Vec<Arc<dyn Observer>> {
        std::mem::take(
            &mut *self
                .pending_ticks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The observer of type `T` added through here before, or `make`'s, handed to `add`.
    pub(crate) fn once<T: Observer>(
        &self,
        make: impl FnOnce() -> T,
        add: impl FnOnce(Arc<T>),
    ) -> Arc<T> {
        // Held while adding, so that two first calls at once add one observer; adding takes
        // only the list's own locks, never this one.
        let mut once = self.once.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = once.iter().find_map(|o| o.clone().downcast::<T>().ok()) {
            return found;
        }
        let observer = Arc::new(make());
        once.push(observer.clone());
        add(observer.clone());
        observer
    }

    /// Tells every observer a ping's round trip, `rtt_ms`.
    #[inline]
    pub(crate) fn rtt_measured(&self, rtt_ms: u32) {
        if let Some(observers) = self.current() {
            let event = RttEvent {
                rtt: Duration::from_millis(u64::from(rtt_ms)),
            };
            observers.iter().for_each(|o| o.ping_rtt(&event));
        }
    }
}
