//! `GET /api/stats` with the full list, without HTTP: [`Registry::snapshot`] (the walk that
//! builds every [`ConnectionInfo`](wscope_core::ConnectionInfo)) and the JSON of the snapshot,
//! apart and together, at 10,000 connections driven by the real driver over the in-process
//! transport (every connection open, each having sent 0-3 messages) with the fields a real
//! server shows: a distinct address, a browser user agent, a user id, two tags and a path.
//!
//! - `snapshot`: [`Registry::snapshot`] alone; `serde_json`: `serde_json::to_writer` of a built
//!   snapshot; `snapshot + serde_json`: both, as `GET /api/stats` answered before (its buffer
//!   sized at 320 bytes a connection);
//! - `write_json`: [`Snapshot::write_json`](wscope_core::Snapshot::write_json) of a built
//!   snapshot (the hand-written JSON); `snapshot_json`: [`Registry::snapshot_json`], what
//!   `GET /api/stats` answers now (every entry written straight from the registry);
//!   `stats_json reference fields`: [`Registry::stats_json`] with the reference's columns only
//!   (`GET /api/stats?fields=age,idleTime,state,remoteAddress,userAgent`);
//! - `connections page …`: `GET /api/connections?limit=10000` (the largest page), with whole rows
//!   and with the reference's columns: `serde`, the page then `serde_json` (with `fields`, each
//!   row projected to a `serde_json::Map` first), as the handler answered before;
//!   `connections_json`, [`Registry::connections_json`], what it answers now.
//!
//! Run: `cargo bench -p wscope-core --bench stats -- --warm-up-time 1 --measurement-time 3`.
//!
//! One run, 2026-12-06, on a 2-core machine shared with other builds (load average about 9, so
//! compare ratios, not times), 4.04 MB of JSON: `snapshot` 17.9 ms, `serde_json` 15.5 ms,
//! `snapshot + serde_json` 44.2 ms; `write_json` 8.1 ms (0.52× `serde_json`), `snapshot_json`
//! 22.5 ms (0.51× `snapshot + serde_json`); a second run, same load: `write_json` 8.4 ms against
//! 16.9 ms (0.50×), `snapshot_json` 22.6 ms against 38.4 ms (0.59×). Before the writer, building the snapshot and
//! serializing it cost about the same (22.2 ms and 22.3 ms). A profile of `snapshot_json`: a
//! quarter of the time is the first touch of each entry (a cache miss), a quarter the escaping
//! loop, mostly waiting on each connection's own user id string; the rest is writing the fields.
//! Reading a batch of entries' figures before writing them (for overlapping misses) measured no
//! better and was left out.
//!
//! 2026-12-07 (load average about 10): `snapshot_json` 5.04 ms for 4.25 MB; `stats_json
//! reference fields` 2.42 ms (0.48×) for 2.26 MB — the cost follows the bytes written.
//!
//! 2026-12-07, later (load average about 4): `connections page reference fields` 41.2 ms by
//! serde, 6.89 ms by `connections_json` (0.17×); whole rows 17.0 ms and 11.5 ms (0.68×).

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wscope_core::memory::{self, MemoryPeer};
use wscope_core::query::ConnectionQuery;
use wscope_core::{ConnectionMeta, Registry, RegistryConfig};

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";

fn registry() -> Registry {
    Registry::with_config(
        RegistryConfig::default()
            .instance_id("bench")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .ping_interval(Duration::ZERO),
    )
}

/// Connection `i`'s registration: its own address, user and room.
fn meta(i: usize) -> ConnectionMeta {
    let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    ConnectionMeta::new("/ws/chat")
        .remote_addr(ip)
        .user_agent(USER_AGENT.to_owned())
        .user(format!("user-{i}"))
        .unwrap()
        .tag(format!("room:{}", i % 50))
        .unwrap()
        .tag("beta")
        .unwrap()
}

/// `n` open connections echoing what their peer sends.
fn drive(rt: &tokio::runtime::Runtime, reg: &Registry, n: usize) -> Vec<MemoryPeer> {
    rt.block_on(async {
        let mut peers = Vec::with_capacity(n);
        for i in 0..n {
            let accepted = reg.accept(meta(i)).unwrap();
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

/// The buffer `/api/stats` writes into: sized up front, as the handler does.
fn buffer(connections: usize) -> Vec<u8> {
    Vec::with_capacity(1024 + connections * 320)
}

fn stats(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("stats");
    g.sample_size(20);
    let n = 10_000usize;
    let reg = registry();
    let peers = drive(&rt, &reg, n);
    let snapshot = reg.snapshot();
    assert_eq!(snapshot.connections.len(), n);
    let bytes = serde_json::to_vec(&snapshot).unwrap().len();
    println!("{n} connections: {bytes} bytes of JSON");
    g.bench_with_input(BenchmarkId::new("snapshot", n), &n, |b, _| {
        b.iter(|| black_box(reg.snapshot()))
    });
    g.bench_with_input(BenchmarkId::new("serde_json", n), &n, |b, _| {
        b.iter(|| {
            let mut body = buffer(n);
            serde_json::to_writer(&mut body, &snapshot).unwrap();
            black_box(body)
        })
    });
    g.bench_with_input(BenchmarkId::new("write_json", n), &n, |b, _| {
        b.iter(|| {
            let mut body = buffer(n);
            snapshot.write_json(&mut body);
            black_box(body)
        })
    });
    g.bench_with_input(BenchmarkId::new("snapshot + serde_json", n), &n, |b, _| {
        b.iter(|| {
            let snapshot = reg.snapshot();
            let mut body = buffer(snapshot.connections.len());
            serde_json::to_writer(&mut body, &snapshot).unwrap();
            black_box(body)
        })
    });
    g.bench_with_input(BenchmarkId::new("snapshot_json", n), &n, |b, _| {
        b.iter(|| black_box(reg.snapshot_json()))
    });
    // `GET /api/stats?fields=…` with the reference's columns only.
    let reference: wscope_core::query::Fields = "age,idleTime,state,remoteAddress,userAgent"
        .parse()
        .unwrap();
    println!(
        "full rows: {} bytes; the reference's fields: {} bytes",
        reg.snapshot_json().len(),
        reg.stats_json(None, Some(&reference)).len()
    );
    g.bench_with_input(
        BenchmarkId::new("stats_json reference fields", n),
        &n,
        |b, _| b.iter(|| black_box(reg.stats_json(None, Some(&reference)))),
    );
    // `GET /api/connections?limit=10000[&fields=…]` (the largest page) at 10,000: the page
    // then serde, as the handler answered before (with `fields`, a `serde_json::Map` per row),
    // against `connections_json`, what it answers now.
    for (name, pairs) in [
        ("whole rows", vec![("limit", "10000")]),
        (
            "reference fields",
            vec![
                ("limit", "10000"),
                ("fields", "age,idleTime,state,remoteAddress,userAgent"),
            ],
        ),
    ] {
        let query = ConnectionQuery::from_pairs(pairs).unwrap();
        let by_serde = || match &query.fields {
            None => serde_json::to_vec(&reg.connections(&query)).unwrap(),
            Some(fields) => {
                serde_json::to_vec(&reg.connections(&query).map(|i| fields.project(&i))).unwrap()
            }
        };
        // The same bytes (tested in `json.rs` and `tests/listing.rs`), up to the figures that
        // move with the clock between the two.
        println!(
            "connections page, {name}: {} bytes, by serde {}",
            reg.connections_json(&query).len(),
            by_serde().len()
        );
        g.bench_with_input(
            BenchmarkId::new(format!("connections page {name}: serde"), n),
            &n,
            |b, _| b.iter(|| black_box(by_serde())),
        );
        g.bench_with_input(
            BenchmarkId::new(format!("connections page {name}: connections_json"), n),
            &n,
            |b, _| b.iter(|| black_box(reg.connections_json(&query))),
        );
    }
    g.finish();
    rt.block_on(async {
        drop(peers);
        while reg.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

criterion_group!(benches, stats);
criterion_main!(benches);
