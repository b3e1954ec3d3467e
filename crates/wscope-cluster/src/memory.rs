//! The in-process cluster engine: many nodes in one process share a [`MemoryHub`], each through
//! its own [`MemoryBackend`]. Deterministic and instant, for tests and simulations; a backend's
//! link can be cut and restored by hand to play an outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::backend::{
    delivery_buffer, BackendError, BackendFuture, ClusterBackend, Deliveries, Delivery,
    DeliveryRefused, DeliverySender, Lease, Link, DELIVERY_BUFFER, DELIVERY_BUFFER_BYTES,
};
use wscope_core::Clock;

/// The shared engine of in-process nodes: channels and leases.
#[derive(Clone, Debug, Default)]
pub struct MemoryHub {
    inner: Arc<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    clock: Clock,
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
    leases: Mutex<HashMap<String, HeldLease>>,
}

#[derive(Debug)]
struct Subscriber {
    /// The backend it belongs to (to skip deliveries while that backend's link is cut).
    link: watch::Receiver<Link>,
    dropped: Arc<AtomicU64>,
    tx: DeliverySender,
}

#[derive(Debug)]
struct HeldLease {
    holder: String,
    value: Bytes,
    expires_ms: u64,
}

impl MemoryHub {
    /// A hub on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub whose leases expire by `clock` (a manual clock in tests).
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            inner: Arc::new(HubInner {
                clock,
                ..HubInner::default()
            }),
        }
    }

    /// A new node's backend on this hub.
    pub fn backend(&self) -> MemoryBackend {
        let (link, _) = watch::channel(Link::Connected);
        MemoryBackend {
            hub: self.clone(),
            link: Arc::new(link),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The lease keys held now (expired ones excluded).
    pub fn lease_keys(&self) -> Vec<String> {
        let now = self.inner.clock.now_ms();
        let leases = lock(&self.inner.leases);
        let mut keys: Vec<_> = leases
            .iter()
            .filter(|(_, l)| l.expires_ms > now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node's handle on a [`MemoryHub`].
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    hub: MemoryHub,
    link: Arc<watch::Sender<Link>>,
    dropped: Arc<AtomicU64>,
}

impl MemoryBackend {
    /// Cuts (`Disconnected`) or restores (`Connected`) this node's link: while cut, its calls fail
    /// with `Unavailable` and nothing is delivered to it.
    pub fn set_link(&self, link: Link) {
        self.link.send_replace(link);
    }

    fn check(&self) -> Result<(), BackendError> {
        match *self.link.borrow() {
            Link::Connected => Ok(()),
            Link::Disconnected => Err(BackendError::unavailable("memory link cut")),
        }
    }

    /// Publishes without the future (the memory engine never waits).
    fn publish_now(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        self.check()?;
        let mut subscribers = lock(&self.hub.inner.subscribers);
        if let Some(list) = subscribers.get_mut(channel) {
            list.retain(|s| !s.tx.is_closed());
            for s in list.iter() {
                if *s.link.borrow() != Link::Connected {
                    continue;
                }
                let delivery = Delivery {
                    channel: channel.to_owned(),
                    payload: payload.clone(),
                };
                if s.tx.try_send(delivery) == Err(DeliveryRefused::Full) {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn lease_now(
        &self,
        key: &str,
        holder: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<Lease, BackendError> {
        self.check()?;
        let now = self.hub.inner.clock.now_ms();
        let mut leases = lock(&self.hub.inner.leases);
        if let Some(held) = leases.get(key) {
            if held.expires_ms > now && held.holder != holder {
                return Ok(Lease::HeldByOther {
                    value: held.value.clone(),
                });
            }
        }
        leases.insert(
            key.to_owned(),
            HeldLease {
                holder: holder.to_owned(),
                value,
                expires_ms: now + ttl.as_millis() as u64,
            },
        );
        Ok(Lease::Held)
    }
}

impl ClusterBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish(&self, channel: &str, payload: Bytes) -> BackendFuture<'_, ()> {
        let result = self.publish_now(channel, payload);
        Box::pin(async move { result })
    }

    fn subscribe(&self, channels: Vec<String>) -> BackendFuture<'_, Deliveries> {
        let result = self.check().map(|()| {
            let (tx, rx) = delivery_buffer(DELIVERY_BUFFER, DELIVERY_BUFFER_BYTES);
            let mut subscribers = lock(&self.hub.inner.subscribers);
            for channel in channels {
                subscribers.entry(channel).or_default().push(Subscriber {
                    link: self.link.subscribe(),
                    dropped: self.dropped.clone(),
                    tx: tx.clone(),
                });
            }
            rx
        });
        Box::pin(async move { result })
    }

    fn lease(
        &self,
        key: &str,
        holder: &str,
        value: Bytes,
        ttl: Duration,
    ) -> BackendFuture<'_, Lease> {
        let result = self.lease_now(key, holder, value, ttl);
        Box::pin(async move { result })
    }

    fn release(&self, key: &str, holder: &str) -> BackendFuture<'_, ()> {
        let result = self.check().map(|()| {
            let mut leases = lock(&self.hub.inner.leases);
            if leases.get(key).is_some_and(|l| l.holder == holder) {
                leases.remove(key);
            }
        });
        Box::pin(async move { result })
    }

    fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
