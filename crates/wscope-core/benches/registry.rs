//! Registry micro-benchmarks: register + unregister, activity update, `connection_count`, and
//! `snapshot` at 1k / 10k / 100k entries — each alone and with a second thread doing the same.
//!
//! Run: `cargo bench -p wscope-core --bench registry --features bench-internals`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wscope_core::{Accepted, ConnectionMeta, Registry, RegistryConfig};

fn registry() -> Registry {
    // No background tasks: nothing but the measured work runs.
    Registry::with_config(
        RegistryConfig::default()
            .instance_id("bench")
            .cleanup_interval(std::time::Duration::ZERO)
            .stats_interval(std::time::Duration::ZERO),
    )
}

fn meta() -> ConnectionMeta {
    ConnectionMeta::new("/ws")
        .remote_addr(std::net::IpAddr::from([127, 0, 0, 1]))
        .user_agent("criterion/0.8".to_owned())
}

fn fill(reg: &Registry, n: usize) -> Vec<Accepted> {
    (0..n).map(|_| reg.accept(meta()).unwrap()).collect()
}

/// Runs `work` on a second thread until the returned guard is dropped.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Background {
    fn start(work: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                work();
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

fn register_unregister(c: &mut Criterion) {
    let mut g = c.benchmark_group("register_unregister");
    g.throughput(Throughput::Elements(1));
    let reg = registry();
    let _base = fill(&reg, 10_000);
    g.bench_function("1 thread", |b| {
        b.iter(|| drop(black_box(reg.accept(meta()).unwrap())))
    });
    let other = reg.clone();
    let _bg = Background::start(move || drop(other.accept(meta()).unwrap()));
    g.bench_function("2 threads", |b| {
        b.iter(|| drop(black_box(reg.accept(meta()).unwrap())))
    });
    g.finish();
}

fn activity_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("activity_update");
    g.throughput(Throughput::Elements(1));
    let reg = registry();
    let conns = Arc::new(fill(&reg, 10_000));
    g.bench_function("1 thread", |b| {
        let conn = &conns[17];
        b.iter(|| conn.bench_record_received(black_box(64)))
    });
    let others = conns.clone();
    let _bg = Background::start(move || others[4242].bench_record_received(64));
    g.bench_function("2 threads", |b| {
        let conn = &conns[17];
        b.iter(|| conn.bench_record_received(black_box(64)))
    });
    g.finish();
}

fn connection_count(c: &mut Criterion) {
    let mut g = c.benchmark_group("connection_count");
    let reg = registry();
    let _conns = fill(&reg, 10_000);
    g.bench_function("1 thread", |b| b.iter(|| black_box(reg.connection_count())));
    let other = reg.clone();
    // The other thread churns connections, so the counter's cache line really moves.
    let _bg = Background::start(move || drop(other.accept(meta()).unwrap()));
    g.bench_function("2 threads", |b| {
        b.iter(|| black_box(reg.connection_count()))
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(20);
    for n in [1_000usize, 10_000, 100_000] {
        let reg = registry();
        let conns = Arc::new(fill(&reg, n));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("1 thread", n), &n, |b, _| {
            b.iter(|| black_box(reg.snapshot()))
        });
        // Two snapshots at once, plus live activity updates landing meanwhile.
        let other = reg.clone();
        let busy = conns.clone();
        let _bg = Background::start(move || {
            black_box(other.snapshot());
            busy[0].bench_record_received(64);
        });
        g.bench_with_input(BenchmarkId::new("2 threads", n), &n, |b, _| {
            b.iter(|| black_box(reg.snapshot()))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    register_unregister,
    activity_update,
    connection_count,
    snapshot
);
criterion_main!(benches);
