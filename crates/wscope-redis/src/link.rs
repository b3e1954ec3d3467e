//! The link's state: one `watch` value, set by failed calls (down) and by the supervisor's probes
//! (down or up), logged once per change.

use std::sync::Arc;

use tokio::sync::{watch, Notify};
use wscope_cluster::Link;

/// The link state and the supervisor's wake-up bell.
#[derive(Debug)]
pub(crate) struct LinkState {
    tx: watch::Sender<Link>,
    /// Rung when the link goes down, so the supervisor starts retrying now instead of at its
    /// next tick.
    wake: Arc<Notify>,
    /// The URL for log lines, password masked.
    url: String,
}

impl LinkState {
    /// Starts `Disconnected`: nothing has answered yet.
    pub(crate) fn new(url: String, wake: Arc<Notify>) -> Self {
        let (tx, _) = watch::channel(Link::Disconnected);
        Self { tx, wake, url }
    }

    /// The URL, password masked.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Link> {
        self.tx.subscribe()
    }

    pub(crate) fn get(&self) -> Link {
        *self.tx.borrow()
    }

    /// Sets the state; logs and answers `true` only if it changed.
    pub(crate) fn set(&self, link: Link, why: &str) -> bool {
        let changed = self.tx.send_if_modified(|now| {
            let changed = *now != link;
            *now = link;
            changed
        });
        if changed {
            match link {
                Link::Connected => tracing::info!(url = %self.url, "redis link connected"),
                Link::Disconnected => {
                    tracing::warn!(url = %self.url, reason = why, "redis link disconnected");
                }
            }
        }
        changed
    }

    /// A call failed for want of Redis: down now, and the supervisor starts retrying.
    pub(crate) fn down(&self, why: &str) {
        if self.set(Link::Disconnected, why) {
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_reported_once() {
        let state = LinkState::new("redis://h".into(), Arc::default());
        let mut rx = state.subscribe();
        assert_eq!(*rx.borrow_and_update(), Link::Disconnected);
        assert!(!state.set(Link::Disconnected, "still down"));
        assert!(!rx.has_changed().unwrap());
        assert!(state.set(Link::Connected, "ping"));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Link::Connected);
        assert!(!state.set(Link::Connected, "ping"));
        assert!(!rx.has_changed().unwrap());
        state.down("refused");
        assert_eq!(state.get(), Link::Disconnected);
    }
}
