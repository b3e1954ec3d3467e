//! `Registry::snapshot_json` and `snapshot_capped_json`, which write every entry straight from
//! the registry, against `serde_json` of the snapshot they stand for: byte for byte, on a manual
//! clock (so nothing moves between the two readings), with connections in every state and
//! labels serde must escape. (`json.rs` compares the writer with serde on arbitrary snapshots.)
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::IpAddr;
use std::time::Duration;

use wscope_core::memory::{self, MemoryPeer};
use wscope_core::{Accepted, Clock, ConnectionMeta, Registry, RegistryConfig};

fn registry() -> (Registry, wscope_core::ManualClock) {
    let (clock, manual) = Clock::manual();
    let reg = Registry::with_config(
        RegistryConfig::default()
            .instance_id("stats-json")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .ping_interval(Duration::ZERO)
            .clock(clock),
    );
    (reg, manual)
}

/// Text that needs escaping, or not: quotes, backslashes, controls, non-ASCII, DEL.
const AWKWARD: [&str; 6] = [
    "Mozilla/5.0 (X11; Linux x86_64) \"quoted\"",
    "back\\slash\ttab\nnewline\r\u{1}\u{1f}\u{7f}",
    "é漢字🦀\u{2028}",
    "",
    "plain",
    "</script>",
];

fn meta(i: usize) -> ConnectionMeta {
    let ip: Option<IpAddr> = match i % 4 {
        0 => Some(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
        1 => Some(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16])),
        2 => Some("::ffff:192.0.2.1".parse().unwrap()),
        _ => None,
    };
    let mut meta = ConnectionMeta::new(format!("/ws/{}", AWKWARD[i % 6]))
        .remote_addr(ip)
        .user_agent((!i.is_multiple_of(5)).then(|| AWKWARD[(i + 1) % 6].repeat(1 + i % 40)));
    if i.is_multiple_of(3) {
        meta = meta.user(AWKWARD[(i + 2) % 6]).unwrap();
    }
    for t in 0..i % 4 {
        meta = meta.tag(format!("{}{t}", AWKWARD[(i + t) % 6])).unwrap();
    }
    if i.is_multiple_of(7) {
        meta = meta.upstream(format!("ws://up-{}/\"x\"", i % 2));
    }
    meta
}

/// Waits (bounded) until two readings a few scheduler turns apart agree: the connections'
/// tasks have finished what they were doing, so nothing changes between the readings compared.
async fn settle(reg: &Registry) {
    for _ in 0..1000 {
        let before = serde_json::to_vec(&reg.snapshot()).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        if serde_json::to_vec(&reg.snapshot()).unwrap() == before {
            return;
        }
    }
    panic!("the registry did not settle");
}

fn assert_same(reg: &Registry) {
    let full = serde_json::to_vec(&reg.snapshot()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reg.snapshot_json()),
        String::from_utf8_lossy(&full)
    );
    let n = reg.connection_count() as usize;
    for max in [0, 1, 2, n / 2, n, n + 5] {
        let capped = serde_json::to_vec(&reg.snapshot_capped(max)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reg.snapshot_capped_json(max)),
            String::from_utf8_lossy(&capped),
            "max {max}"
        );
    }
}

#[tokio::test]
async fn an_empty_registry_writes_what_serde_writes() {
    let (reg, _clock) = registry();
    assert_same(&reg);
}

#[tokio::test]
async fn every_state_and_awkward_labels_write_what_serde_writes() {
    let (reg, clock) = registry();
    let mut waiting: Vec<Accepted> = Vec::new();
    let mut peers: Vec<MemoryPeer> = Vec::new();
    for i in 0..48 {
        clock.advance(Duration::from_millis(7 * i as u64 + 1));
        let accepted = reg.accept(meta(i)).unwrap();
        if i % 5 == 1 {
            // Labels attached after registration, as a handler would.
            let handle = accepted.handle();
            handle.set_user(format!("late \"{i}\"")).unwrap();
            handle.tag("late\u{0}tag").unwrap();
        }
        if i % 6 == 5 {
            waiting.push(accepted); // CONNECTING: registered, never run
            continue;
        }
        let (transport, mut peer) = memory::pair();
        tokio::spawn(accepted.run(transport, |mut socket| async move {
            while let Some(msg) = socket.recv().await {
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
        }));
        for _ in 0..i % 3 {
            peer.send(AWKWARD[i % 6]).unwrap();
            peer.recv().await.unwrap();
        }
        peers.push(peer);
    }
    let open = peers.len() as u64;
    tokio::time::timeout(Duration::from_secs(10), async {
        while reg.summary().connections_by_state.open < open {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    clock.advance(Duration::from_millis(1234));
    settle(&reg).await;
    assert_same(&reg);
    // A second answer, sized from the first, is the same.
    assert_same(&reg);

    // Some connections closing from the client's side, the rest still open.
    for peer in peers.iter().step_by(4) {
        peer.close(None).unwrap();
    }
    clock.advance(Duration::from_millis(5));
    settle(&reg).await;
    assert!(reg.connection_count() < 48, "some connections left");
    assert_same(&reg);
    drop(waiting);
    drop(peers);
}
