//! Shared by the cluster tests on the in-process engine: the cluster settings they run with, a
//! bounded wait, the wait for a node's live members, and connections on a registry read through
//! their `MemoryPeer`.

#![allow(dead_code)] // each test file uses a part

use std::time::Duration;

use wscope_cluster::{Cluster, ClusterConfig, MemberStatus};
use wscope_core::memory::{self, MemoryPeer};
use wscope_core::{ConnectionMeta, ConnectionState, Message, Registry};

/// The heartbeat every test node runs with: short, so that members are seen (and expire) fast.
pub const HEARTBEAT: Duration = Duration::from_millis(40);

/// The cluster settings of a test node: [`HEARTBEAT`], and surveys that give up well within a
/// test's wait.
pub fn config() -> ClusterConfig {
    ClusterConfig::new("test")
        .heartbeat(HEARTBEAT)
        .survey_timeout(Duration::from_millis(300))
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after 5 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until `cluster` sees `count` live members besides itself.
pub async fn live_members(cluster: &Cluster, count: usize) {
    wait_until("members seen", || {
        cluster
            .members()
            .iter()
            .filter(|m| m.status == MemberStatus::Live)
            .count()
            == count
    })
    .await;
}

/// An open connection on `path` whose handler reads until the peer goes: its id and its peer.
pub async fn open(registry: &Registry, path: &str) -> (String, MemoryPeer) {
    let accepted = registry
        .accept(ConnectionMeta::new(path))
        .expect("accepted");
    let id = accepted.id().to_string();
    let (transport, peer) = memory::pair();
    tokio::spawn(accepted.run(transport, |mut socket| async move {
        while socket.recv().await.is_some() {}
    }));
    wait_until("open", || {
        registry
            .connection_info(&id)
            .is_some_and(|c| c.state == ConnectionState::Open)
    })
    .await;
    (id, peer)
}

/// The next message `peer` gets, within 2 s.
pub async fn recv(peer: &mut MemoryPeer) -> Message {
    match tokio::time::timeout(Duration::from_secs(2), peer.recv()).await {
        Ok(Some(msg)) => msg,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// `peer` gets nothing more within 200 ms.
pub async fn nothing_more(peer: &mut MemoryPeer) {
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), peer.recv()).await {
        panic!("unexpected extra message of {} bytes", msg.payload_len());
    }
}
