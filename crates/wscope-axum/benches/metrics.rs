//! What `GET /metrics` costs: one scrape (`metrics_text`, everything but HTTP) at 10,000 and
//! 100,000 open connections on an in-process registry (memory transports, each connection's task
//! running), beside its two registry reads alone; and what the close observer adds to a
//! connection's register-and-remove.
//!
//! Run: `cargo bench -p wscope-axum --bench metrics`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wscope_axum::metrics_text;
use wscope_core::{memory, ConnectionMeta, Registry, RegistryConfig};

fn registry() -> Registry {
    // No background tasks: nothing but the measured work runs.
    Registry::with_config(
        RegistryConfig::default()
            .instance_id("bench")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .ping_interval(Duration::ZERO),
    )
}

/// `n` open connections, each driven by its own task over a memory transport; the clients are
/// returned so that the connections stay open.
fn open(
    runtime: &tokio::runtime::Runtime,
    registry: &Registry,
    n: usize,
) -> Vec<memory::MemoryPeer> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let accepted = registry.accept(ConnectionMeta::new("/ws")).unwrap();
            let (transport, client) = memory::pair();
            runtime.spawn(accepted.run(transport, |mut socket| async move {
                while let Some(msg) = socket.recv().await {
                    let _ = socket.send(msg).await;
                }
            }));
            client
        })
        .collect();
    runtime.block_on(async {
        while registry.summary().connections_by_state.open < n as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    clients
}

fn scrape(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("scrape");
    group.sample_size(20);
    for n in [10_000usize, 100_000] {
        let registry = registry();
        let _clients = open(&runtime, &registry, n);
        let text = metrics_text(&registry, None).unwrap();
        assert!(text.contains(&format!("wscope_connections{{state=\"open\"}} {n}\n")));
        group.bench_with_input(BenchmarkId::new("metrics_text", n), &n, |b, _| {
            b.iter(|| black_box(metrics_text(&registry, None).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("summary", n), &n, |b, _| {
            b.iter(|| black_box(registry.summary()))
        });
        group.bench_with_input(BenchmarkId::new("traffic", n), &n, |b, _| {
            b.iter(|| black_box(registry.traffic()))
        });
        runtime.block_on(async {
            registry.shutdown().await;
        });
    }
    group.finish();
}

/// Register and remove one connection (its `closed` event feeds the observer, if any).
fn close(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("register_remove");
    let plain = registry();
    group.bench_function("without metrics", |b| {
        b.iter(|| drop(black_box(plain.accept(ConnectionMeta::new("/ws")).unwrap())))
    });
    let observed = registry();
    metrics_text(&observed, None).unwrap(); // registers the close observer, as admin_router does
    group.bench_function("with metrics", |b| {
        b.iter(|| {
            drop(black_box(
                observed.accept(ConnectionMeta::new("/ws")).unwrap(),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, scrape, close);
criterion_main!(benches);
