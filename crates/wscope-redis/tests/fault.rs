//! Faults, against a `redis-server` each test starts, kills and restarts on its own port: Redis
//! down at start, killed while in use, restarted; a password and a database in the URL; the load
//! an idle backend puts on Redis.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use wscope_cluster::{BackendErrorKind, ClusterBackend, Deliveries, Lease, Link};
use wscope_redis::testing::{required, skip_or_fail, RedisServer};
use wscope_redis::{RedisBackend, RedisOptions};

use common::wait_link;

/// A server of the test's own, not started; `None` (skipped) without a `redis-server` binary.
fn own_server(test_name: &str) -> Option<RedisServer> {
    if !RedisServer::available() {
        skip_or_fail(test_name, "no redis-server binary on PATH", required());
        return None;
    }
    Some(RedisServer::on_free_port().expect("a free port"))
}

/// Publishes `payload` until it is received on `rx` (at most `within`): right after a restart
/// a publish can beat the resubscription, and pub/sub keeps nothing.
async fn received(
    backend: &RedisBackend,
    rx: &mut Deliveries,
    channel: &str,
    payload: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let _ = backend
            .publish(channel, Bytes::from(payload.to_owned()))
            .await;
        match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            Ok(Some(d)) if d.payload == payload => return true,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return false,
        }
    }
    false
}

/// Asserts that `publish` fails for want of Redis, promptly.
async fn publish_fails_promptly(backend: &RedisBackend, channel: &str) {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(3),
        backend.publish(channel, Bytes::from("lost")),
    )
    .await
    .expect("publish returns within 3 s while Redis is down");
    let err = result.expect_err("publish fails while Redis is down");
    assert!(
        matches!(
            err.kind,
            BackendErrorKind::Unavailable | BackendErrorKind::Timeout
        ),
        "{err}"
    );
    assert!(
        started.elapsed() <= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_backend_survives_redis_down_at_start_killed_and_restarted() {
    let name = "the_backend_survives_redis_down_at_start_killed_and_restarted";
    let Some(mut server) = own_server(name) else {
        return;
    };
    let channel = "fault:c";

    // Redis down at start: connect returns at once, the link is down, calls fail promptly.
    let started = Instant::now();
    let backend = RedisBackend::connect(&server.url(), RedisOptions::default()).expect("valid");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    let mut link = backend.link();
    assert_eq!(*link.borrow_and_update(), Link::Disconnected);
    publish_fails_promptly(&backend, channel).await;
    let mut rx = tokio::time::timeout(
        Duration::from_secs(3),
        backend.subscribe(vec![channel.into()]),
    )
    .await
    .expect("subscribe returns within 3 s while Redis is down")
    .expect("subscribing while Redis is down is deferred, not refused");
    assert!(!wait_link(&mut link, Link::Connected, Duration::from_millis(300)).await);

    // Redis appears: the backend connects and subscribes by itself.
    server.start().await.expect("redis-server started");
    assert!(
        wait_link(&mut link, Link::Connected, Duration::from_secs(10)).await,
        "connected within 10 s of Redis appearing"
    );
    assert!(received(&backend, &mut rx, channel, "first", Duration::from_secs(3)).await);
    let ttl = Duration::from_secs(60);
    assert_eq!(
        backend
            .lease("fault:lease", "a", Bytes::from("v"), ttl)
            .await,
        Ok(Lease::Held)
    );

    // Redis killed: the link goes down within ~2 s and calls fail promptly.
    server.kill();
    let killed = Instant::now();
    assert!(
        wait_link(&mut link, Link::Disconnected, Duration::from_secs(2)).await,
        "disconnected within 2 s of Redis dying"
    );
    eprintln!("link down {:?} after the kill", killed.elapsed());
    publish_fails_promptly(&backend, channel).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish_fails_promptly(&backend, channel).await;

    // Redis back on the same port (empty: no keys, no scripts): link up again, and the original
    // subscription hears what is published after the restart.
    server.start().await.expect("redis-server restarted");
    let restarted = Instant::now();
    assert!(
        wait_link(&mut link, Link::Connected, Duration::from_secs(10)).await,
        "connected again within 10 s of the restart"
    );
    eprintln!("link up {:?} after the restart", restarted.elapsed());
    assert!(
        received(
            &backend,
            &mut rx,
            channel,
            "after restart",
            Duration::from_secs(3)
        )
        .await,
        "the original subscription hears a message published after the restart"
    );
    // The lease script is loaded again (NOSCRIPT → EVAL) on the fresh server.
    assert_eq!(
        backend
            .lease("fault:lease", "b", Bytes::from("w"), ttl)
            .await,
        Ok(Lease::Held)
    );
    assert_eq!(backend.dropped(), 0);
}

#[tokio::test]
async fn a_password_and_a_database_in_the_url_are_used() {
    let name = "a_password_and_a_database_in_the_url_are_used";
    let Some(server) = own_server(name) else {
        return;
    };
    let mut server = server.with_args(["--requirepass", "s3cret"]);
    server.start().await.expect("redis-server started");
    let port = server.port();

    let good = RedisBackend::connect(
        &format!("redis://:s3cret@127.0.0.1:{port}/2"),
        RedisOptions::default(),
    )
    .expect("valid");
    assert!(wait_link(&mut good.link(), Link::Connected, Duration::from_secs(5)).await);
    let ttl = Duration::from_secs(60);
    assert_eq!(
        good.lease("db:key", "a", Bytes::from("v"), ttl).await,
        Ok(Lease::Held)
    );

    // The lease is in database 2 only.
    let db0 = RedisBackend::connect(
        &format!("redis://:s3cret@127.0.0.1:{port}/0"),
        RedisOptions::default(),
    )
    .expect("valid");
    assert!(wait_link(&mut db0.link(), Link::Connected, Duration::from_secs(5)).await);
    assert_eq!(
        db0.lease("db:key", "b", Bytes::new(), ttl).await,
        Ok(Lease::Held)
    );
    assert_eq!(
        good.lease("db:key", "b", Bytes::new(), ttl).await.ok(),
        Some(Lease::HeldByOther {
            value: Bytes::from("v")
        })
    );

    // A wrong password never connects, and calls still fail promptly.
    let wrong = RedisBackend::connect(
        &format!("redis://:wrong@127.0.0.1:{port}"),
        RedisOptions::default(),
    )
    .expect("valid");
    assert!(
        !wait_link(
            &mut wrong.link(),
            Link::Connected,
            Duration::from_millis(1500)
        )
        .await
    );
    let result = tokio::time::timeout(Duration::from_secs(3), wrong.publish("c", Bytes::new()))
        .await
        .expect("returns within 3 s");
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn an_idle_subscribed_backend_sends_a_few_commands_a_second() {
    let name = "an_idle_subscribed_backend_sends_a_few_commands_a_second";
    let Some(mut server) = own_server(name) else {
        return;
    };
    server.start().await.expect("redis-server started");
    let backend = RedisBackend::connect(&server.url(), RedisOptions::default()).expect("valid");
    let _rx = backend
        .subscribe(vec!["idle:c".into()])
        .await
        .expect("subscribed");
    assert!(wait_link(&mut backend.link(), Link::Connected, Duration::from_secs(5)).await);
    let before = backend.info_commands().await.expect("info");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = backend.info_commands().await.expect("info");
    // Two PINGs (publisher and subscriber) every 500 ms, and the INFO itself.
    let per_second = (after - before) as f64 / 2.0;
    eprintln!("an idle subscribed backend: {per_second} commands/s");
    assert!((2.0..=8.0).contains(&per_second), "{per_second} commands/s");
}
