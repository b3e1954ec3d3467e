//! Leases against the machine's Redis (`WSCOPE_TEST_REDIS_URL`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use wscope_cluster::{ClusterBackend, Lease};
use wscope_redis::testing::{redis_url_or_skip, unique_name};

use common::{cleanup, connected};

fn other(value: &str) -> Lease {
    Lease::HeldByOther {
        value: Bytes::from(value.to_owned()),
    }
}

#[tokio::test]
async fn a_lease_is_taken_renewed_refused_and_released_by_its_holder_only() {
    let Some(url) =
        redis_url_or_skip("a_lease_is_taken_renewed_refused_and_released_by_its_holder_only").await
    else {
        return;
    };
    let prefix = unique_name("lease_cas");
    let key = format!("{prefix}:instance");
    let backend = connected(&url).await;
    let ttl = Duration::from_secs(30);
    let lease = |holder: &'static str, value: &'static str| {
        backend.lease(&key, holder, Bytes::from(value), ttl)
    };

    assert_eq!(lease("a", "a1").await, Ok(Lease::Held), "taken");
    assert_eq!(lease("a", "a2").await, Ok(Lease::Held), "renewed");
    assert_eq!(
        lease("b", "b1").await,
        Ok(other("a2")),
        "refused, with a's latest value"
    );
    backend.release(&key, "b").await.expect("release by b");
    assert_eq!(
        lease("b", "b1").await,
        Ok(other("a2")),
        "b cannot release a's lease"
    );
    backend.release(&key, "a").await.expect("release by a");
    assert_eq!(
        lease("b", "b1").await,
        Ok(Lease::Held),
        "free again after a released it"
    );
    assert_eq!(lease("a", "a3").await, Ok(other("b1")));
    backend.release(&key, "b").await.expect("release by b");
    cleanup(&backend, &prefix).await;
}

#[tokio::test]
async fn a_lease_expires_after_its_ttl_and_renewal_extends_it() {
    let Some(url) = redis_url_or_skip("a_lease_expires_after_its_ttl_and_renewal_extends_it").await
    else {
        return;
    };
    let prefix = unique_name("lease_ttl");
    let key = format!("{prefix}:instance");
    let backend = connected(&url).await;
    let ttl = Duration::from_millis(800);

    assert_eq!(
        backend.lease(&key, "a", Bytes::from("v"), ttl).await,
        Ok(Lease::Held)
    );
    for _ in 0..3 {
        // Renewed every 300 ms: it outlives its first ttl.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            backend.lease(&key, "a", Bytes::from("v"), ttl).await,
            Ok(Lease::Held)
        );
    }
    assert_eq!(
        backend.lease(&key, "b", Bytes::from("w"), ttl).await,
        Ok(other("v")),
        "still a's, 900 ms after it was first taken for 800 ms"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        backend.lease(&key, "b", Bytes::from("w"), ttl).await,
        Ok(Lease::Held),
        "expired without renewal"
    );
    cleanup(&backend, &prefix).await;
}

#[tokio::test]
async fn delete_matching_deletes_only_matching_keys() {
    let Some(url) = redis_url_or_skip("delete_matching_deletes_only_matching_keys").await else {
        return;
    };
    let prefix = unique_name("cleanup");
    let backend = connected(&url).await;
    let ttl = Duration::from_secs(30);
    for i in 0..25 {
        let key = format!("{prefix}:doomed:{i}");
        assert_eq!(
            backend.lease(&key, "a", Bytes::new(), ttl).await,
            Ok(Lease::Held)
        );
    }
    let kept = format!("{prefix}:kept");
    assert_eq!(
        backend.lease(&kept, "a", Bytes::from("k"), ttl).await,
        Ok(Lease::Held)
    );
    assert_eq!(
        backend.delete_matching(&format!("{prefix}:doomed:*")).await,
        Ok(25)
    );
    assert_eq!(
        backend.lease(&kept, "b", Bytes::new(), ttl).await,
        Ok(other("k"))
    );
    cleanup(&backend, &prefix).await;
    assert_eq!(backend.delete_matching(&format!("{prefix}*")).await, Ok(0));
}
