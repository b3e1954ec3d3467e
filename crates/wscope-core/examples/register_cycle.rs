//! A fixed number of register + unregister cycles beside 10,000 held connections, for counting
//! instructions under `perf stat` (which, unlike time, a busy machine does not disturb):
//!
//! `cargo build --release -p wscope-core --example register_cycle`, then
//! `perf stat -e instructions:u target/release/examples/register_cycle 1000000`; the same with
//! `0` cycles gives the setup's share to subtract.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use wscope_core::{ConnectionMeta, Registry, RegistryConfig};

fn main() {
    let cycles: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().unwrap());
    let reg = Registry::with_config(
        RegistryConfig::default()
            .instance_id("cycle")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO),
    );
    let meta = || {
        ConnectionMeta::new("/ws")
            .remote_addr(std::net::IpAddr::from([127, 0, 0, 1]))
            .user_agent("criterion/0.8".to_owned())
    };
    let held: Vec<_> = (0..10_000).map(|_| reg.accept(meta()).unwrap()).collect();
    for _ in 0..cycles {
        drop(black_box(reg.accept(meta()).unwrap()));
    }
    drop(held);
}
