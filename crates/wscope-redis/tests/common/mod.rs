//! Shared by the integration tests: a connected backend, bounded waits for the link.

#![allow(dead_code)] // each test file uses a part

use std::time::Duration;

use tokio::sync::watch;
use wscope_cluster::{ClusterBackend, Deliveries, Link};
use wscope_redis::{RedisBackend, RedisOptions};

/// Waits, at most `within`, for the link to be `want`; answers whether it got there.
pub async fn wait_link(rx: &mut watch::Receiver<Link>, want: Link, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, rx.wait_for(|l| *l == want)).await,
        Ok(Ok(_))
    )
}

/// A backend on `url` whose link is up (panics after 5 s otherwise).
pub async fn connected(url: &str) -> RedisBackend {
    let backend = RedisBackend::connect(url, RedisOptions::default()).expect("valid URL");
    let mut link = backend.link();
    assert!(
        wait_link(&mut link, Link::Connected, Duration::from_secs(5)).await,
        "no link to {url} within 5 s"
    );
    backend
}

/// A backend on `url` subscribed to the channel `{prefix}:c`: it, the channel and its deliveries.
pub async fn subscribed(url: &str, prefix: &str) -> (RedisBackend, String, Deliveries) {
    let channel = format!("{prefix}:c");
    let backend = connected(url).await;
    let rx = backend
        .subscribe(vec![channel.clone()])
        .await
        .expect("subscribed");
    (backend, channel, rx)
}

/// Waits, at most 10 s, until `backend` has dropped `count` deliveries (nobody read them), and
/// checks it dropped no more.
pub async fn dropped_exactly(backend: &RedisBackend, count: u64) {
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        while backend.dropped() < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "dropped {} of {count} within 10 s",
        backend.dropped()
    );
    assert_eq!(backend.dropped(), count);
}

/// Deletes the test's keys (`{prefix}*`).
pub async fn cleanup(backend: &RedisBackend, prefix: &str) {
    backend
        .delete_matching(&format!("{prefix}*"))
        .await
        .expect("cleanup");
}
