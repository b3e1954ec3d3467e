//! Cluster mode on the in-process engine: several registries in one process, each a node on one
//! `MemoryHub`. Stats sums, close-by-id routing, broadcast and chat fan-out (exactly once, in
//! order), admin actions with per-member answers, TTL expiry on a manual clock, the duplicate id
//! refusal, outages, and foreign messages.

mod common;

use std::sync::Arc;
use std::time::Duration;

use wscope_cluster::{
    AdminReply, Cluster, ClusterBackend, ClusterConfig, ClusterError, ClusterState, Link,
    MemberStatus, MemoryBackend, MemoryHub,
};
use wscope_core::memory::MemoryPeer;
use wscope_core::query::ConnectionQuery;
use wscope_core::wire::{AdminRequest, CloseAnswer};
use wscope_core::AdminAnswer;
use wscope_core::{Bytes, Clock, ConnectionMeta, Message, Registry, RegistryConfig};

use common::{config, live_members, nothing_more, open, recv, wait_until, HEARTBEAT};

struct Node {
    registry: Registry,
    backend: MemoryBackend,
    /// What its join gave: the registry does not keep it.
    cluster: Cluster,
}

impl Node {
    fn cluster(&self) -> Cluster {
        self.cluster.clone()
    }
}

async fn node(hub: &MemoryHub, id: &str, clock: Option<Clock>) -> Node {
    let mut rc = RegistryConfig::default().instance_id(id);
    if let Some(clock) = clock {
        rc = rc.clock(clock);
    }
    let registry = Registry::with_config(rc);
    let backend = hub.backend();
    let cluster = Cluster::join(&registry, Arc::new(backend.clone()), config())
        .await
        .expect("joins");
    Node {
        registry,
        backend,
        cluster,
    }
}

/// Nodes `ids` on one hub, each seeing all the others.
async fn cluster_of(ids: &[&str]) -> (MemoryHub, Vec<Node>) {
    let hub = MemoryHub::new();
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(node(&hub, id, None).await);
    }
    for n in &nodes {
        live_members(&n.cluster, ids.len() - 1).await;
    }
    (hub, nodes)
}

async fn recv_text(peer: &mut MemoryPeer) -> String {
    match recv(peer).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn cluster_stats_are_the_sum_of_the_members_stats() {
    let (_hub, nodes) = cluster_of(&["a", "b", "c"]).await;
    let mut peers = Vec::new();
    for (n, count) in nodes.iter().zip([3, 1, 2]) {
        for _ in 0..count {
            peers.push(open(&n.registry, "/ws").await);
        }
    }
    let stats = nodes[1].cluster().stats().await.expect("stats");
    assert_eq!(stats.instances_counted, 3);
    assert!(stats.unanswered.is_empty());
    let own: Vec<_> = nodes.iter().map(|n| n.registry.summary()).collect();
    assert_eq!(
        stats.total_connections,
        own.iter().map(|s| s.total_connections).sum::<u64>()
    );
    assert_eq!(stats.total_connections, 6);
    assert_eq!(stats.connections_by_state.open, 6);
    assert_eq!(stats.total_connections_ever, 6);
    let rows: Vec<_> = stats
        .instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i.total_connections, i.answered))
        .collect();
    assert_eq!(rows, [("a", 3, true), ("b", 1, true), ("c", 2, true)]);
    assert!(stats
        .instances
        .iter()
        .all(|i| i.status == MemberStatus::Live));
}

#[tokio::test]
async fn averages_are_weighted_by_each_members_connections() {
    let hub = MemoryHub::new();
    let (clock_a, manual_a) = Clock::manual();
    let (clock_b, _manual_b) = Clock::manual();
    let a = node(&hub, "a", Some(clock_a)).await;
    let b = node(&hub, "b", Some(clock_b)).await;
    live_members(&a.cluster, 1).await;
    // a: three connections aged 900 ms; b: one aged 0 ms → (3 × 900 + 0) / 4 = 675.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open(&a.registry, "/ws").await);
    }
    manual_a.advance(Duration::from_millis(900));
    held.push(open(&b.registry, "/ws").await);
    let stats = b.cluster().stats().await.expect("stats");
    assert_eq!(stats.total_connections, 4);
    assert_eq!(stats.average_age, 675);
}

#[tokio::test]
async fn close_by_id_is_routed_to_the_member_that_holds_it() {
    let (_hub, nodes) = cluster_of(&["a", "b", "c"]).await;
    let (id, mut peer) = open(&nodes[2].registry, "/ws").await;
    let (_other, _keep) = open(&nodes[1].registry, "/ws").await;
    let answer = nodes[0]
        .cluster()
        .admin(
            AdminRequest::from_json(
                format!(r#"{{"action":"close","id":"{id}","code":4000,"reason":"bye"}}"#)
                    .as_bytes(),
            )
            .unwrap(),
        )
        .await
        .expect("answered");
    assert!(answer.success, "{answer:?}");
    assert_eq!(answer.instances.len(), 1);
    assert_eq!(answer.instances[0].instance_id, "c");
    assert_eq!(
        answer.instances[0].answer,
        AdminReply::Done(AdminAnswer::Close(CloseAnswer { success: true }))
    );
    match tokio::time::timeout(Duration::from_secs(2), peer.recv()).await {
        Ok(Some(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code.as_u16(), 4000);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(nodes[1].registry.connection_count(), 1);
    // An id no member holds: no member asked, no success.
    let none = nodes[0]
        .cluster()
        .admin(AdminRequest::from_json(br#"{"action":"close","id":"zz-1-1"}"#).unwrap())
        .await
        .unwrap();
    assert!(!none.success && none.instances.is_empty());
}

#[tokio::test]
async fn broadcast_reaches_every_member_once_and_in_order() {
    let (_hub, nodes) = cluster_of(&["a", "b", "c"]).await;
    let mut peers = Vec::new();
    for n in &nodes {
        peers.push(open(&n.registry, "/chat").await.1);
    }
    let (_other, mut elsewhere) = open(&nodes[2].registry, "/other").await;
    let a = nodes[0].cluster();
    for i in 0..100 {
        let outcome = a.broadcast(Some("/chat"), &Message::text(format!("m{i}")));
        assert!(outcome.relayed);
        assert_eq!(outcome.local.sent, 1);
    }
    for peer in &mut peers {
        for i in 0..100 {
            assert_eq!(recv_text(peer).await, format!("m{i}"));
        }
        nothing_more(peer).await;
    }
    nothing_more(&mut elsewhere).await;
    assert_eq!(nodes[1].cluster().counters().broadcasts_received, 100);
    assert_eq!(a.counters().broadcasts_sent, 100);
    assert_eq!(nodes[1].cluster().counters().broadcasts_lost, 0);
}

#[tokio::test]
async fn admin_broadcast_and_close_all_answer_per_member() {
    let (_hub, nodes) = cluster_of(&["a", "b", "c"]).await;
    let mut peers = Vec::new();
    for n in &nodes {
        peers.push(open(&n.registry, "/ws").await.1);
    }
    let bin = AdminRequest::from_json(br#"{"action":"broadcast","binary":"AAEC"}"#).unwrap();
    let answer = nodes[1].cluster().admin(bin).await.unwrap();
    assert!(answer.success);
    assert_eq!(answer.sent, Some(3));
    assert_eq!(answer.instances.len(), 3);
    for peer in &mut peers {
        match tokio::time::timeout(Duration::from_secs(2), peer.recv()).await {
            Ok(Some(Message::Binary(b))) => assert_eq!(&b[..], [0, 1, 2]),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    let all = AdminRequest::from_json(br#"{"action":"close_all","code":1001}"#).unwrap();
    let answer = nodes[0].cluster().admin(all).await.unwrap();
    assert_eq!(answer.closed, Some(3));
    assert_eq!(
        answer
            .instances
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn bans_apply_on_every_member() {
    let (hub, nodes) = cluster_of(&["a", "b"]).await;
    let ban =
        AdminRequest::from_json(br#"{"action":"ban","target":"203.0.113.0/24","duration":"1m"}"#)
            .unwrap();
    let answer = nodes[0].cluster().admin(ban).await.unwrap();
    assert!(answer.success);
    for n in &nodes {
        assert_eq!(n.registry.bans().len(), 1);
        let meta = ConnectionMeta::new("/ws")
            .remote_addr("203.0.113.9".parse::<std::net::IpAddr>().unwrap());
        assert!(n.registry.admit(&meta).is_err());
    }
    // An instance that joins later adopts the bans in force, for what is left of them.
    let late = node(&hub, "c", None).await;
    wait_until("adopted", || late.registry.bans().len() == 1).await;
    let ban = &late.registry.bans()[0];
    assert_eq!(ban.target.to_string(), "203.0.113.0/24");
    assert!(ban.expires_in <= 60_000);
}

#[tokio::test]
async fn connections_are_listed_across_members_and_paged() {
    let (_hub, nodes) = cluster_of(&["a", "b", "c"]).await;
    let mut held = Vec::new();
    for n in &nodes {
        for _ in 0..4 {
            held.push(open(&n.registry, "/ws").await);
        }
    }
    let cluster = nodes[0].cluster();
    let q = ConnectionQuery::from_pairs([("limit", "5")]).unwrap();
    let first = cluster.connections(&q).await.unwrap();
    assert_eq!(first.total, 12);
    assert_eq!(first.connections.len(), 5);
    assert_eq!(first.instances.len(), 3);
    let mut seen: Vec<String> = first.connections.iter().map(|c| c.id.to_string()).collect();
    let mut next = first.next.clone();
    while let Some(offset) = next {
        let q = ConnectionQuery::from_pairs([("limit", "5"), ("offset", offset.as_str())]).unwrap();
        let page = cluster.connections(&q).await.unwrap();
        seen.extend(page.connections.iter().map(|c| c.id.to_string()));
        next = page.next;
    }
    let mut expected: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "every connection once");
}

#[tokio::test]
async fn a_silent_member_goes_late_then_gone_on_the_manual_clock() {
    let (clock, manual) = Clock::manual();
    let hub = MemoryHub::with_clock(clock.clone());
    let a = node(&hub, "a", Some(clock.clone())).await;
    let b = node(&hub, "b", Some(clock.clone())).await;
    live_members(&a.cluster, 1).await;
    b.cluster().crash();
    let status = || a.cluster().members()[0].status;
    assert_eq!(status(), MemberStatus::Live);
    manual.advance(HEARTBEAT * 2 + Duration::from_millis(1));
    assert_eq!(status(), MemberStatus::Late);
    // A late member is still asked; its silence is named.
    let stats = a.cluster().stats().await.unwrap();
    assert_eq!(stats.unanswered, ["b"]);
    assert_eq!(stats.instances_counted, 1);
    manual.advance(HEARTBEAT);
    assert_eq!(status(), MemberStatus::Gone);
    let stats = a.cluster().stats().await.unwrap();
    assert!(stats.unanswered.is_empty());
    let row = stats
        .instances
        .iter()
        .find(|i| i.instance_id == "b")
        .unwrap();
    assert_eq!((row.status, row.answered), (MemberStatus::Gone, false));
    // Forgotten after forget_after.
    manual.advance(Duration::from_secs(601));
    wait_until("forgotten at a's next heartbeat", || {
        a.cluster().members().is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_member_that_shuts_down_is_gone_at_once() {
    let (_hub, nodes) = cluster_of(&["a", "b"]).await;
    nodes[1].registry.shutdown().await;
    wait_until("gone", || {
        nodes[0].cluster().members()[0].status == MemberStatus::Gone
    })
    .await;
    assert_eq!(nodes[1].cluster().state(), ClusterState::Left);
    // Its tasks are over: nothing of the node runs on after it left.
    tokio::time::timeout(Duration::from_secs(5), nodes[1].cluster().stopped())
        .await
        .expect("the node's tasks end once it has left");
}

#[tokio::test]
async fn a_second_instance_with_the_same_id_is_refused() {
    let hub = MemoryHub::new();
    let _first = node(&hub, "same", None).await;
    let registry = Registry::with_config(RegistryConfig::default().instance_id("same"));
    let err = Cluster::join(&registry, Arc::new(hub.backend()), config())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ClusterError::DuplicateInstance { .. }),
        "{err}"
    );
    let line = err.to_string();
    assert!(
        line.contains("\"same\"") && line.contains("--instance-id"),
        "{line}"
    );
    // Started without waiting, the node ends up refused, and stays out.
    let refused = Cluster::start(&registry, Arc::new(hub.backend()), config()).expect("starts");
    let mut state = refused.watch_state();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == ClusterState::Refused),
    )
    .await
    .expect("refused in time")
    .expect("state watch open");
    assert_eq!(refused.state(), ClusterState::Refused);
}

#[tokio::test]
async fn an_unreachable_engine_leaves_local_service_alone_and_the_node_rejoins() {
    let hub = MemoryHub::new();
    let _b = node(&hub, "b", None).await;
    let backend = hub.backend();
    backend.set_link(Link::Disconnected);
    let registry = Registry::with_config(RegistryConfig::default().instance_id("a"));
    let cluster = Cluster::join(&registry, Arc::new(backend.clone()), config())
        .await
        .expect("serves locally");
    assert_eq!(cluster.state(), ClusterState::Disconnected);
    match cluster.stats().await {
        Err(ClusterError::Unavailable { state, .. }) => {
            assert_eq!(state, ClusterState::Disconnected)
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Local service is untouched: a connection echoes... and a broadcast still reaches it.
    let (_id, mut peer) = open(&registry, "/chat").await;
    let outcome = cluster.broadcast(Some("/chat"), &Message::text("local"));
    assert_eq!((outcome.local.sent, outcome.relayed), (1, false));
    assert_eq!(recv_text(&mut peer).await, "local");
    assert_eq!(cluster.counters().broadcasts_undelivered, 1);
    backend.set_link(Link::Connected);
    wait_until("rejoined", || cluster.state() == ClusterState::Connected).await;
    let n = Node {
        registry,
        backend,
        cluster: cluster.clone(),
    };
    live_members(&n.cluster, 1).await;
    assert_eq!(cluster.stats().await.unwrap().instances_counted, 2);
    // Lost mid-run: the same again.
    n.backend.set_link(Link::Disconnected);
    wait_until("disconnected", || {
        cluster.state() == ClusterState::Disconnected
    })
    .await;
    n.backend.set_link(Link::Connected);
    wait_until("back", || cluster.state() == ClusterState::Connected).await;
    assert_eq!(
        cluster.counters().disconnects,
        1,
        "only the loss mid-run is a disconnect"
    );
}

#[tokio::test]
async fn malformed_and_foreign_messages_are_counted_and_ignored() {
    let (hub, nodes) = cluster_of(&["a", "b"]).await;
    let intruder = hub.backend();
    let channel = "wscope:test:all";
    for payload in [
        &b"not json"[..],
        br#"{"v":1,"cluster":"other","from":"x","incarnation":"1","body":{"type":"hello"}}"#,
        br#"{"v":99,"cluster":"test","from":"x","incarnation":"1","body":{"type":"hello"}}"#,
        br#"{"v":1,"cluster":"test","from":"x","incarnation":"1","body":{"type":"nonsense"}}"#,
        br#"{"v":1,"cluster":"test","from":"a","incarnation":"not-a's","body":{"type":"hello"}}"#,
    ] {
        intruder
            .publish(channel, Bytes::copy_from_slice(payload))
            .await
            .unwrap();
    }
    // b ignores the first four; a also ignores the one in its own name from another process.
    wait_until("counted", || nodes[1].cluster().counters().ignored == 4).await;
    wait_until("counted", || nodes[0].cluster().counters().ignored == 5).await;
    // Still working.
    let (_id, mut peer) = open(&nodes[1].registry, "/chat").await;
    nodes[0]
        .cluster()
        .broadcast(Some("/chat"), &Message::text("still here"));
    assert_eq!(recv_text(&mut peer).await, "still here");
}

#[tokio::test]
async fn clusters_with_other_names_share_a_hub_without_seeing_each_other() {
    let hub = MemoryHub::new();
    let a = node(&hub, "a", None).await;
    // What the other cluster's node says, heard on its own channel.
    let mut heard = hub
        .backend()
        .subscribe(vec!["wscope:other:all".to_owned()])
        .await
        .unwrap();
    let other = Registry::with_config(RegistryConfig::default().instance_id("a"));
    Cluster::join(
        &other,
        Arc::new(hub.backend()),
        ClusterConfig::new("other").heartbeat(HEARTBEAT),
    )
    .await
    .expect("same id, other cluster: no clash");
    // Its hello and two heartbeats' announcements have gone out (the hub delivers at once):
    // had they reached `a`, it would have them in its view.
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), heard.recv())
            .await
            .expect("the other node announces")
            .expect("subscribed");
    }
    assert!(a.cluster().members().is_empty());
}

#[tokio::test]
async fn broadcasts_that_could_not_leave_are_undelivered_not_lost() {
    let (_hub, nodes) = cluster_of(&["a", "b"]).await;
    let (_id, mut peer) = open(&nodes[1].registry, "/chat").await;
    let a = nodes[0].cluster();
    assert!(a.broadcast(Some("/chat"), &Message::text("one")).relayed);
    assert_eq!(recv_text(&mut peer).await, "one");
    nodes[0].backend.set_link(Link::Disconnected);
    wait_until("cut", || a.state() == ClusterState::Disconnected).await;
    for _ in 0..3 {
        assert!(!a.broadcast(Some("/chat"), &Message::text("nobody")).relayed);
    }
    nodes[0].backend.set_link(Link::Connected);
    wait_until("back", || a.state() == ClusterState::Connected).await;
    assert!(a.broadcast(Some("/chat"), &Message::text("two")).relayed);
    assert_eq!(recv_text(&mut peer).await, "two");
    assert_eq!(a.counters().broadcasts_undelivered, 3);
    assert_eq!(a.counters().broadcasts_sent, 2);
    // The receiver saw numbers 1 and 2: no gap, nothing counted lost.
    assert_eq!(nodes[1].cluster().counters().broadcasts_lost, 0);
    assert_eq!(nodes[1].cluster().counters().broadcasts_received, 2);
}
