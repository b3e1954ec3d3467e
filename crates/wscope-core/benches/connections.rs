//! `GET /api/connections?limit=50` without HTTP: [`Registry::connections`] plus the JSON of its
//! page, at 10k and 100k connections driven by the real driver over the in-process transport
//! (every connection open, each having sent 0-3 messages).
//!
//! - `age` (the default sort), first page and a page from a cursor in the middle: read from the
//!   ordered index, so the time should not grow with the registry;
//! - `messages` (a walked sort): one walk of the entries with a bounded heap, O(n);
//! - `age` with a `user` filter matching one connection in ten: the page stops early, the total
//!   is a walk.
//!
//! Run: `cargo bench -p wscope-core --bench connections -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wscope_core::memory::{self, MemoryPeer};
use wscope_core::query::ConnectionQuery;
use wscope_core::{ConnectionMeta, Registry, RegistryConfig};

fn registry() -> Registry {
    Registry::with_config(
        RegistryConfig::default()
            .instance_id("bench")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .ping_interval(Duration::ZERO),
    )
}

/// `n` open connections echoing what their peer sends; every tenth is user "u1".
fn drive(rt: &tokio::runtime::Runtime, reg: &Registry, n: usize) -> Vec<MemoryPeer> {
    rt.block_on(async {
        let mut peers = Vec::with_capacity(n);
        for i in 0..n {
            let meta = ConnectionMeta::new("/ws")
                .remote_addr(std::net::IpAddr::from([127, 0, 0, 1]))
                .user_agent("criterion/0.8".to_owned());
            let accepted = reg.accept(meta).unwrap();
            if i % 10 == 0 {
                accepted.handle().set_user("u1").unwrap();
            }
            let (transport, mut peer) = memory::pair();
            tokio::spawn(accepted.run(transport, |mut socket| async move {
                while let Some(msg) = socket.recv().await {
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
            }));
            for _ in 0..i % 4 {
                peer.send("hello").unwrap();
            }
            for _ in 0..i % 4 {
                peer.recv().await.unwrap();
            }
            peers.push(peer);
        }
        while reg.summary().connections_by_state.open < n as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peers
    })
}

fn page(reg: &Registry, query: &ConnectionQuery) -> usize {
    let page = reg.connections(query);
    serde_json::to_vec(&page).unwrap().len()
}

fn connections_page(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("connections_page");
    g.sample_size(20);
    for n in [10_000usize, 100_000] {
        let reg = registry();
        let peers = drive(&rt, &reg, n);
        let q =
            |pairs: &[(&str, &str)]| ConnectionQuery::from_pairs(pairs.iter().copied()).unwrap();
        let first = q(&[("limit", "50")]);
        let middle_cursor = {
            let half = n / 2;
            let mut at = q(&[("limit", "50")]);
            // Walk to the middle with the largest pages, as a client paging through would.
            let mut seen = 0;
            while seen + 10_000 <= half {
                let big = q(&[("limit", "10000")]);
                let big = match at.start {
                    wscope_core::query::Start::After(c) => {
                        q(&[("limit", "10000"), ("cursor", &c.to_string())])
                    }
                    _ => big,
                };
                let p = reg.connections(&big);
                seen += p.connections.len();
                at = q(&[("limit", "50"), ("cursor", &p.next.unwrap().to_string())]);
            }
            at
        };
        let messages = q(&[("limit", "50"), ("sort", "messages")]);
        let user = q(&[("limit", "50"), ("user", "u1")]);
        for (name, query) in [
            ("age first page", &first),
            ("age from a cursor mid-way", &middle_cursor),
            ("messages (walk)", &messages),
            ("age, user filter", &user),
        ] {
            assert_eq!(reg.connections(query).connections.len(), 50);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(page(&reg, query)))
            });
        }
        rt.block_on(async {
            drop(peers);
            while reg.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    g.finish();
}

criterion_group!(benches, connections_page);
criterion_main!(benches);
