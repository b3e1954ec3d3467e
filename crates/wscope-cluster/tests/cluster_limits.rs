//! Cluster mode's bounds, on the in-process engine: what one node's clients or a forger on the
//! engine can make a node hold or do — the relay limit, the publish queue in bytes, the publish
//! window, forged members, broadcasts and replies, and sums that cannot overflow. A `Gated`
//! backend holds back a node's batches or its own messages on their way back, so each bound is
//! seen exactly, without timing bets.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use wscope_cluster::{
    delivery_buffer, BackendFuture, Cluster, ClusterBackend, ClusterConfig, Deliveries, Delivery,
    DeliverySender, Lease, Link, MemberStatus, MemoryBackend, MemoryHub,
};
use wscope_core::{Bytes, Message, Registry, RegistryConfig};

use common::{config, live_members, nothing_more, open, recv, wait_until};

/// A registry and the cluster handle its join gave.
struct Node {
    registry: Registry,
    cluster: Cluster,
}

impl std::ops::Deref for Node {
    type Target = Registry;

    fn deref(&self) -> &Registry {
        &self.registry
    }
}

/// A registry named `id` joined to `hub` through `backend` with `config`.
async fn join(id: &str, backend: Arc<dyn ClusterBackend>, config: ClusterConfig) -> Node {
    let registry = Registry::with_config(RegistryConfig::default().instance_id(id));
    let cluster = Cluster::join(&registry, backend, config)
        .await
        .expect("joins");
    Node { registry, cluster }
}

/// Node "a" joined through `backend` with `a_config` and node "b" on `hub` with `b_config`, each
/// seeing the other.
async fn a_and_b(
    hub: &MemoryHub,
    backend: Arc<dyn ClusterBackend>,
    a_config: ClusterConfig,
    b_config: ClusterConfig,
) -> (Node, Node) {
    let a = join("a", backend, a_config).await;
    let b = join("b", Arc::new(hub.backend()), b_config).await;
    live_members(&a.cluster, 1).await;
    live_members(&b.cluster, 1).await;
    (a, b)
}

/// A [`MemoryBackend`] whose publishes can be held (`hold_publishes`) and whose node's own
/// messages can be held on their way back to it (`hold_echoes`), each until released.
#[derive(Clone)]
struct Gated {
    inner: MemoryBackend,
    /// What this node's own envelopes contain (`"from":"a",`).
    own: Arc<Vec<u8>>,
    publishing: watch::Sender<bool>,
    echoes: Arc<Mutex<Echoes>>,
}

#[derive(Default)]
struct Echoes {
    holding: bool,
    held: Vec<Delivery>,
    tx: Option<DeliverySender>,
}

impl Gated {
    fn new(hub: &MemoryHub, instance: &str) -> Self {
        Self {
            inner: hub.backend(),
            own: Arc::new(format!(r#""from":"{instance}","#).into_bytes()),
            publishing: watch::Sender::new(true),
            echoes: Arc::default(),
        }
    }

    fn hold_publishes(&self, hold: bool) {
        self.publishing.send_replace(!hold);
    }

    fn hold_echoes(&self) {
        self.echoes.lock().unwrap().holding = true;
    }

    fn release_echoes(&self) {
        let mut echoes = self.echoes.lock().unwrap();
        echoes.holding = false;
        let tx = echoes.tx.clone().unwrap();
        for d in std::mem::take(&mut echoes.held) {
            tx.try_send(d).unwrap();
        }
    }
}

impl ClusterBackend for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn publish(&self, channel: &str, payload: Bytes) -> BackendFuture<'_, ()> {
        self.publish_batch(vec![(channel.to_owned(), payload)])
    }

    fn publish_batch(&self, batch: Vec<(String, Bytes)>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.publishing.subscribe().wait_for(|open| *open).await;
            self.inner.publish_batch(batch).await
        })
    }

    fn subscribe(&self, channels: Vec<String>) -> BackendFuture<'_, Deliveries> {
        Box::pin(async move {
            let mut from = self.inner.subscribe(channels).await?;
            let (tx, rx) = delivery_buffer(1 << 16, 1 << 30);
            self.echoes.lock().unwrap().tx = Some(tx.clone());
            let (echoes, own) = (self.echoes.clone(), self.own.clone());
            tokio::spawn(async move {
                while let Some(d) = from.recv().await {
                    let mut e = echoes.lock().unwrap();
                    let mine = d.payload.windows(own.len()).any(|w| w == own.as_slice());
                    if e.holding && mine {
                        e.held.push(d);
                    } else if tx.try_send(d).is_err() {
                        return;
                    }
                }
            });
            Ok(rx)
        })
    }

    fn lease(
        &self,
        key: &str,
        holder: &str,
        value: Bytes,
        ttl: Duration,
    ) -> BackendFuture<'_, Lease> {
        self.inner.lease(key, holder, value, ttl)
    }

    fn release(&self, key: &str, holder: &str) -> BackendFuture<'_, ()> {
        self.inner.release(key, holder)
    }

    fn link(&self) -> watch::Receiver<Link> {
        self.inner.link()
    }
}

/// A message larger than the relay limit reaches the sender's own connections only, is counted
/// undelivered and too large, and the next small one is relayed as before.
#[tokio::test]
async fn a_broadcast_larger_than_the_relay_limit_stays_local_and_is_counted() {
    let hub = MemoryHub::new();
    let (a, b) = a_and_b(&hub, Arc::new(hub.backend()), config(), config()).await;
    let (_, mut here) = open(&a, "/chat").await;
    let (_, mut there) = open(&b, "/chat").await;
    let cluster = a.cluster.clone();
    let limit = ClusterConfig::DEFAULT_MAX_RELAY_SIZE;
    let large = Message::binary(vec![7u8; limit + 1]);
    let outcome = cluster.broadcast(Some("/chat"), &large);
    assert!(!outcome.relayed);
    assert_eq!(outcome.local.sent, 1);
    assert_eq!(recv(&mut here).await.payload_len(), limit + 1);
    let at_limit = Message::binary(vec![8u8; limit]);
    assert!(cluster.broadcast(Some("/chat"), &at_limit).relayed);
    assert_eq!(recv(&mut here).await.payload_len(), limit);
    assert_eq!(recv(&mut there).await.payload_len(), limit);
    nothing_more(&mut there).await;
    let counters = cluster.counters();
    assert_eq!(
        (
            counters.broadcasts_too_large,
            counters.broadcasts_undelivered,
            counters.broadcasts_sent
        ),
        (1, 1, 1)
    );
}

/// A receiver applies its own relay limit: a larger broadcast from a member with a higher one
/// is ignored and counted.
#[tokio::test]
async fn a_broadcast_larger_than_the_receivers_relay_limit_is_ignored() {
    let hub = MemoryHub::new();
    let (a, b) = a_and_b(
        &hub,
        Arc::new(hub.backend()),
        config().max_relay_size(1 << 20),
        config().max_relay_size(1000),
    )
    .await;
    let (_, mut there) = open(&b, "/chat").await;
    let cluster = a.cluster.clone();
    assert!(
        cluster
            .broadcast(Some("/chat"), &Message::text("x".repeat(1001)))
            .relayed
    );
    assert!(
        cluster
            .broadcast(Some("/chat"), &Message::text("y".repeat(1000)))
            .relayed
    );
    assert_eq!(recv(&mut there).await.payload_len(), 1000);
    nothing_more(&mut there).await;
    let counters = b.cluster.clone().counters();
    assert_eq!((counters.ignored, counters.broadcasts_received), (1, 1));
}

/// While the engine takes nothing, the publish queue fills to its bound in bytes, not to 65,536
/// messages of any size: the broadcasts past it reach this node's connections only and are
/// counted undelivered; the queued ones go out, in order, once the engine takes them.
#[tokio::test]
async fn the_publish_queue_is_bounded_in_bytes() {
    let hub = MemoryHub::new();
    let gated = Gated::new(&hub, "a");
    let (a, b) = a_and_b(
        &hub,
        Arc::new(gated.clone()),
        config()
            .survey_timeout(Duration::from_secs(10))
            .publish_queue_bytes(1 << 20),
        config(),
    )
    .await;
    let (_, mut there) = open(&b, "/chat").await;
    let cluster = a.cluster.clone();
    gated.hold_publishes(true);
    let size = 60_000;
    let relayed: Vec<bool> = (0..40u8)
        .map(|i| {
            cluster
                .broadcast(Some("/chat"), &Message::binary(vec![i; size]))
                .relayed
        })
        .collect();
    let queued = relayed.iter().filter(|r| **r).count();
    // 17 × 60,000 bytes fit 1 MiB (the heartbeat's announcements may take a little of it).
    assert!((14..=17).contains(&queued), "{queued} queued");
    assert!(relayed[..queued].iter().all(|r| *r), "{relayed:?}");
    assert_eq!(
        cluster.counters().broadcasts_undelivered,
        (40 - queued) as u64
    );
    gated.hold_publishes(false);
    for i in 0..queued {
        let msg = recv(&mut there).await;
        assert_eq!(msg, Message::binary(vec![i as u8; size]));
    }
    nothing_more(&mut there).await;
    // Sent: room again.
    wait_until("queue drained", || {
        cluster.counters().broadcasts_sent == queued as u64
    })
    .await;
    assert!(
        cluster
            .broadcast(Some("/chat"), &Message::binary(vec![0; size]))
            .relayed
    );
    assert_eq!(recv(&mut there).await.payload_len(), size);
}

/// The publisher has at most the publish window's bytes on the engine that it has not heard
/// back: while its own messages are held on their way back it stops, and it goes on, in order,
/// as they arrive. (Redis holds what a subscriber has not read; this keeps what one node
/// publishes to what the engine delivers.)
#[tokio::test]
async fn the_publisher_waits_for_its_own_messages_past_the_window() {
    let hub = MemoryHub::new();
    let gated = Gated::new(&hub, "a");
    let window = 256 << 10;
    let (a, b) = a_and_b(
        &hub,
        Arc::new(gated.clone()),
        config()
            .survey_timeout(Duration::from_secs(10))
            .publish_window(window),
        config(),
    )
    .await;
    let (_, mut there) = open(&b, "/chat").await;
    let cluster = a.cluster.clone();
    gated.hold_echoes();
    let size = 60_000;
    for i in 0..20u8 {
        assert!(
            cluster
                .broadcast(Some("/chat"), &Message::binary(vec![i; size]))
                .relayed
        );
    }
    // At most a window's worth (4 × 60,000 < 256 KiB) goes out while nothing comes back.
    let mut got = 0;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), there.recv()).await {
        assert_eq!(msg, Message::binary(vec![got; size]));
        got += 1;
    }
    assert!((1..=4).contains(&got), "{got} went out past the window");
    gated.release_echoes();
    for i in got..20 {
        assert_eq!(recv(&mut there).await, Message::binary(vec![i; size]));
    }
    nothing_more(&mut there).await;
    assert_eq!(cluster.counters().broadcasts_undelivered, 0);
}

/// An envelope of cluster `test` as a forger on the engine writes it.
fn forged(from: &str, incarnation: &str, body: serde_json::Value) -> Bytes {
    let envelope = serde_json::json!({
        "v": 1, "cluster": "test", "from": from, "incarnation": incarnation, "body": body,
    });
    Bytes::from(serde_json::to_vec(&envelope).unwrap())
}

fn summary(id: &str, n: u64) -> serde_json::Value {
    serde_json::json!({
        "totalConnections": n, "totalConnectionsEver": n, "totalConnectionsClosed": n,
        "averageAge": n, "averageIdleTime": n,
        "connectionsByState": {"CONNECTING": 0, "OPEN": n, "CLOSING": 0, "CLOSED": 0},
        "instanceId": id,
    })
}

fn announcement(id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "announce", "instanceId": id, "startedAt": 1, "version": "0.1.0",
        "heartbeatMs": 1000, "summary": summary(id, 0),
    })
}

const ALL: &str = "wscope:test:all";

/// Answers every survey request published on the shared channel, as `from` (of `incarnation`),
/// with a stats reply claiming `n` of everything, until the test ends.
async fn answer_surveys_as(hub: &MemoryHub, from: &'static str, incarnation: &'static str, n: u64) {
    let forger = hub.backend();
    let mut requests = forger.subscribe(vec![ALL.into()]).await.unwrap();
    tokio::spawn(async move {
        while let Some(d) = requests.recv().await {
            let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
            if v["body"]["type"] != "request" || v["body"]["op"]["op"] != "stats" {
                continue;
            }
            let to = format!("wscope:test:to:{}", v["from"].as_str().unwrap());
            let traffic = serde_json::json!({
                "messagesIn": n, "messagesOut": n, "bytesIn": n, "bytesOut": n,
                "queuedMessages": n, "queuedBytes": n,
            });
            let reply = serde_json::json!({
                "type": "reply", "id": v["body"]["id"],
                "reply": {"op": "stats", "summary": summary(from, n), "traffic": traffic},
            });
            let _ = forger.publish(&to, forged(from, incarnation, reply)).await;
        }
    });
}

/// 2,000 forged announcements, each from another made-up instance: the view keeps 100 (its
/// cap), ignores and counts the rest, and once those are gone a real instance that joins takes
/// a gone one's place.
#[tokio::test]
async fn forged_announcements_fill_the_view_only_to_its_cap() {
    let hub = MemoryHub::new();
    let (clock, manual) = wscope_core::Clock::manual();
    let a = Registry::with_config(RegistryConfig::default().instance_id("a").clock(clock));
    let cluster = Cluster::join(&a, Arc::new(hub.backend()), config().max_members(100))
        .await
        .expect("joins");
    let forger = hub.backend();
    let batch = (0..2000)
        .map(|i| {
            let id = format!("forged-{i}");
            (
                ALL.to_owned(),
                forged(&id, &format!("{i:x}"), announcement(&id)),
            )
        })
        .collect();
    forger.publish_batch(batch).await.unwrap();
    wait_until("the forgeries are read", || {
        cluster.counters().ignored >= 1900
    })
    .await;
    assert_eq!(cluster.counters().ignored, 1900);
    assert_eq!(cluster.members().len(), 100);
    let stats = cluster.stats().await.unwrap();
    assert_eq!(stats.instances.len(), 101, "100 members and a itself");
    assert_eq!(stats.unanswered.len(), 100, "forged members do not answer");
    // The forged members fall silent: gone after the TTL. A real instance then joins.
    manual.advance(Duration::from_secs(10));
    let b = join("b", Arc::new(hub.backend()), config()).await;
    wait_until("b seen", || {
        cluster
            .members()
            .iter()
            .any(|m| m.announce.instance_id == "b" && m.status == MemberStatus::Live)
    })
    .await;
    assert_eq!(cluster.members().len(), 100);
    let stats = cluster.stats().await.unwrap();
    assert_eq!((stats.instances_counted, stats.unanswered.len()), (2, 0));
    drop(b);
}

/// Broadcasts from instances that never announced themselves reach no connection; replies from
/// instances the survey did not ask (a made-up one, or a member's id with another incarnation)
/// are not counted in the answers.
#[tokio::test]
async fn broadcasts_and_replies_from_non_members_are_ignored() {
    let hub = MemoryHub::new();
    let (a, b) = a_and_b(&hub, Arc::new(hub.backend()), config(), config()).await;
    let (_, mut peer) = open(&a, "/chat").await;
    let cluster = a.cluster.clone();
    let forger = hub.backend();
    let broadcasts = (0..1000)
        .map(|i| {
            let body = serde_json::json!({
                "type": "broadcast", "seq": 1, "path": "/chat", "message": {"text": "forged"},
            });
            (
                ALL.to_owned(),
                forged(&format!("x{i}"), &format!("{i:x}"), body),
            )
        })
        .collect();
    forger.publish_batch(broadcasts).await.unwrap();
    wait_until("the forgeries are read", || {
        cluster.counters().ignored >= 1000
    })
    .await;
    nothing_more(&mut peer).await;
    assert_eq!(cluster.counters().broadcasts_received, 0);
    answer_surveys_as(&hub, "zz", "abc", 1000).await;
    answer_surveys_as(&hub, "b", "notbs", 1000).await;
    let stats = cluster.stats().await.unwrap();
    let rows: Vec<_> = stats
        .instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i.answered))
        .collect();
    assert_eq!(rows, [("a", true), ("b", true)]);
    assert_eq!((stats.instances_counted, stats.total_connections), (2, 1));
    wait_until("forged replies counted", || {
        cluster.counters().ignored >= 1002
    })
    .await;
    drop(b);
}

/// A member may answer any number: the cluster's sums saturate instead of overflowing (which
/// panicked in a debug build and wrapped around in a release one).
#[tokio::test]
async fn a_members_huge_numbers_saturate_the_sums() {
    let hub = MemoryHub::new();
    let a = join("a", Arc::new(hub.backend()), config()).await;
    let (_, _peer) = open(&a, "/chat").await;
    let cluster = a.cluster.clone();
    let forger = hub.backend();
    forger
        .publish(ALL, forged("m", "f00d", announcement("m")))
        .await
        .unwrap();
    live_members(&a.cluster, 1).await;
    answer_surveys_as(&hub, "m", "f00d", u64::MAX).await;
    let stats = cluster.stats().await.unwrap();
    assert_eq!(stats.instances_counted, 2);
    assert_eq!(stats.total_connections, u64::MAX);
    assert_eq!(stats.connections_by_state.open, u64::MAX);
    assert_eq!(stats.traffic.messages_in, u64::MAX);
    assert_eq!(stats.average_age, u64::MAX);
}
