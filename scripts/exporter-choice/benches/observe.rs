//! One histogram observation (what a close or a pong costs wscope's metrics) in each exporter,
//! alone and with a second thread hammering the same histogram; then the memory each holds after
//! a million observations without a scrape.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion};
use metrics_exporter_prometheus::PrometheusBuilder;

const BUCKETS: [f64; 13] = [
    0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

fn prom_client() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(BUCKETS)
}

fn metrics_rs() -> (
    metrics_exporter_prometheus::PrometheusRecorder,
    metrics::Histogram,
) {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .expect("buckets")
        .build_recorder();
    let histogram = metrics::with_local_recorder(&recorder, || metrics::histogram!("lifetime"));
    (recorder, histogram)
}

/// Runs `work` on a second thread while the returned guard lives.
struct Contender(Arc<AtomicBool>, Option<thread::JoinHandle<()>>);

impl Contender {
    fn start(work: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                work();
            }
        });
        Self(stop, Some(handle))
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            h.join().expect("contender");
        }
    }
}

fn observe(c: &mut Criterion) {
    let mut group = c.benchmark_group("observe");
    let mut v = 0.0f64;
    let mut next = move || {
        v = (v + 7.3) % 90000.0;
        v
    };

    let h = prom_client();
    group.bench_function("prometheus-client", |b| {
        b.iter(|| h.observe(black_box(next())))
    });
    {
        let other = h.clone();
        let _c = Contender::start(move || other.observe(42.0));
        group.bench_function("prometheus-client, 2 threads", |b| {
            b.iter(|| h.observe(black_box(next())))
        });
    }

    let (recorder, h) = metrics_rs();
    let handle = recorder.handle();
    group.bench_function("metrics-exporter-prometheus", |b| {
        b.iter(|| h.record(black_box(next())))
    });
    {
        let other = h.clone();
        let _c = Contender::start(move || other.record(42.0));
        group.bench_function("metrics-exporter-prometheus, 2 threads", |b| {
            b.iter(|| h.record(black_box(next())))
        });
    }
    // Keep the samples bounded across the runs above.
    black_box(handle.render());
    group.finish();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_ascii_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Memory held by a million observations between two scrapes.
fn memory(_c: &mut Criterion) {
    const N: usize = 1_000_000;
    let before = rss_kib();
    let h = prom_client();
    for i in 0..N {
        h.observe(i as f64 % 90000.0);
    }
    let prom = rss_kib().saturating_sub(before);
    let before = rss_kib();
    let (recorder, h) = metrics_rs();
    for i in 0..N {
        h.record(i as f64 % 90000.0);
    }
    let metrics = rss_kib().saturating_sub(before);
    let handle = recorder.handle();
    let start = std::time::Instant::now();
    black_box(handle.render());
    let render = start.elapsed();
    println!(
        "memory after {N} observations, no scrape: prometheus-client +{prom} KiB, \
         metrics-exporter-prometheus +{metrics} KiB (its first scrape then took {render:?})"
    );
}

// Memory first, before the allocator holds pages freed by the timing runs.
criterion_group!(benches, memory, observe);
criterion_main!(benches);
