//! The subscriber side: which receiver wants which channel, and the push handler that feeds them
//! from the dedicated RESP3 connection without ever waiting (a full buffer, in deliveries or in
//! bytes, drops and counts): the connection is read as fast as Redis writes, so Redis never
//! holds a backlog for it, whatever the node does with what it reads.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use wscope_cluster::{Delivery, DeliveryRefused, DeliverySender};

use crate::link::LinkState;

/// The receivers handed out by `subscribe`, each with its channels, and whether the
/// subscriptions have to be made again.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Mutex<Vec<Route>>,
    dropped: AtomicU64,
    /// Set whenever the link is lost or a SUBSCRIBE failed; the supervisor SUBSCRIBEs to every
    /// channel again before it reports the link up.
    pub(crate) resubscribe: AtomicBool,
    /// Marked down at once when the subscriber connection closes.
    link: Arc<LinkState>,
}

#[derive(Debug)]
struct Route {
    channels: HashSet<String>,
    tx: DeliverySender,
}

impl Router {
    pub(crate) fn new(link: Arc<LinkState>) -> Self {
        Self {
            routes: Mutex::default(),
            dropped: AtomicU64::new(0),
            resubscribe: AtomicBool::new(false),
            link,
        }
    }

    fn routes(&self) -> MutexGuard<'_, Vec<Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends what is published on `channels` to `tx` from now on.
    pub(crate) fn add(&self, channels: Vec<String>, tx: DeliverySender) {
        self.routes().push(Route {
            channels: channels.into_iter().collect(),
            tx,
        });
    }

    /// Every channel some open receiver wants (receivers dropped since are forgotten).
    pub(crate) fn channels(&self) -> BTreeSet<String> {
        let mut routes = self.routes();
        routes.retain(|r| !r.tx.is_closed());
        routes
            .iter()
            .flat_map(|r| r.channels.iter().cloned())
            .collect()
    }

    /// Deliveries dropped because a receiver's buffer was full (in deliveries or bytes).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands one server push to the receivers that want it. The client's own notice that the
    /// connection closed marks the link down (sooner than the next PING would); anything else
    /// (subscribe confirmations) is ignored.
    pub(crate) fn push(&self, push: PushInfo) {
        if push.kind == PushKind::Disconnection {
            self.resubscribe.store(true, Ordering::Relaxed);
            self.link.down("subscriber connection closed");
            return;
        }
        if push.kind != PushKind::Message {
            return;
        }
        let Some((channel, payload)) = message(push.data) else {
            tracing::debug!("redis: a message push without channel and payload");
            return;
        };
        for route in self.routes().iter() {
            if !route.channels.contains(&channel) {
                continue;
            }
            let delivery = Delivery {
                channel: channel.clone(),
                payload: payload.clone(),
            };
            if route.tx.try_send(delivery) == Err(DeliveryRefused::Full) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The channel and payload of a `message` push (`[channel, payload]`).
fn message(data: Vec<Value>) -> Option<(String, Bytes)> {
    let mut data = data.into_iter();
    let channel = match data.next()? {
        Value::BulkString(b) => String::from_utf8(b).ok()?,
        Value::SimpleString(s) => s,
        _ => return None,
    };
    let payload = match data.next()? {
        Value::BulkString(b) => Bytes::from(b),
        Value::SimpleString(s) => Bytes::from(s),
        _ => return None,
    };
    Some((channel, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wscope_cluster::{delivery_buffer, Link};

    fn router() -> Router {
        let link = Arc::new(LinkState::new("redis://h".into(), Arc::default()));
        link.set(Link::Connected, "test");
        Router::new(link)
    }

    fn msg(channel: &str, payload: &str) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(payload.as_bytes().to_vec()),
            ],
        }
    }

    #[test]
    fn routes_by_channel_and_counts_drops_when_full() {
        let router = router();
        let (a_tx, mut a) = delivery_buffer(1, 1 << 20);
        let (b_tx, mut b) = delivery_buffer(8, 1 << 20);
        router.add(vec!["x".into()], a_tx);
        router.add(vec!["x".into(), "y".into()], b_tx);
        router.push(msg("x", "1"));
        router.push(msg("y", "2"));
        router.push(msg("x", "3")); // `a` is full: dropped and counted
        router.push(msg("z", "4")); // nobody wants it
        router.push(PushInfo {
            kind: PushKind::Subscribe,
            data: vec![],
        });
        assert_eq!(a.try_recv().unwrap().payload, Bytes::from("1"));
        assert!(a.try_recv().is_none());
        let got: Vec<_> = std::iter::from_fn(|| b.try_recv())
            .map(|d| (d.channel, d.payload))
            .collect();
        assert_eq!(
            got,
            [
                ("x".to_owned(), Bytes::from("1")),
                ("y".to_owned(), Bytes::from("2")),
                ("x".to_owned(), Bytes::from("3")),
            ]
        );
        assert_eq!(router.dropped(), 1);
    }

    #[test]
    fn a_closed_connection_marks_the_link_down_and_asks_for_a_resubscription() {
        let router = router();
        router.push(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert_eq!(router.link.get(), Link::Disconnected);
        assert!(router.resubscribe.load(Ordering::Relaxed));
    }

    #[test]
    fn closed_receivers_are_forgotten() {
        let router = router();
        let (tx, rx) = delivery_buffer(1, 1 << 20);
        router.add(vec!["gone".into()], tx);
        let (tx2, _rx2) = delivery_buffer(1, 1 << 20);
        router.add(vec!["kept".into()], tx2);
        drop(rx);
        assert_eq!(router.channels().into_iter().collect::<Vec<_>>(), ["kept"]);
    }

    #[test]
    fn a_buffer_full_in_bytes_drops_and_counts() {
        let router = router();
        let (tx, mut rx) = delivery_buffer(8192, 10);
        router.add(vec!["x".into()], tx);
        router.push(msg("x", "123456"));
        router.push(msg("x", "123456")); // 12 bytes would be past 10: dropped and counted
        router.push(msg("x", "1234"));
        assert_eq!(router.dropped(), 1);
        assert_eq!(rx.buffered_bytes(), 10);
        assert_eq!(rx.try_recv().unwrap().payload, Bytes::from("123456"));
        assert_eq!(rx.try_recv().unwrap().payload, Bytes::from("1234"));
        assert_eq!(rx.buffered_bytes(), 0);
    }
}
