//! Publish and subscribe against the machine's Redis (`WSCOPE_TEST_REDIS_URL`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use wscope_cluster::{ClusterBackend, Link, DELIVERY_BUFFER, DELIVERY_BUFFER_BYTES};
use wscope_redis::testing::{redis_url_or_skip, unique_name};

use common::{cleanup, connected, dropped_exactly, subscribed, wait_link};

#[tokio::test]
async fn a_thousand_messages_arrive_in_publish_order() {
    let Some(url) = redis_url_or_skip("a_thousand_messages_arrive_in_publish_order").await else {
        return;
    };
    let prefix = unique_name("pubsub_order");
    let (a, b) = (format!("{prefix}:a"), format!("{prefix}:b"));
    let subscriber = connected(&url).await;
    let publisher = connected(&url).await;
    let mut rx = subscriber
        .subscribe(vec![a.clone(), b.clone()])
        .await
        .expect("subscribed");
    let mut link = subscriber.link();
    assert!(wait_link(&mut link, Link::Connected, Duration::from_secs(5)).await);

    // The first half one by one, the second in pipelined batches of 100: one order for all.
    for i in 0..500u32 {
        let channel = if i % 2 == 0 { &a } else { &b };
        publisher
            .publish(channel, Bytes::from(i.to_string()))
            .await
            .expect("published");
    }
    for start in (500..1000u32).step_by(100) {
        let batch = (start..start + 100)
            .map(|i| {
                let channel = if i % 2 == 0 { &a } else { &b };
                (channel.clone(), Bytes::from(i.to_string()))
            })
            .collect();
        publisher.publish_batch(batch).await.expect("published");
    }
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = Vec::with_capacity(1000);
        while got.len() < 1000 {
            let delivery = rx.recv().await.expect("subscription open");
            got.push(delivery);
        }
        got
    })
    .await
    .expect("1,000 deliveries within 10 s");
    for (i, delivery) in received.iter().enumerate() {
        assert_eq!(
            delivery.payload,
            Bytes::from(i.to_string()),
            "#{i} out of order"
        );
        let channel = if i % 2 == 0 { &a } else { &b };
        assert_eq!(&delivery.channel, channel);
    }
    assert_eq!(subscriber.dropped(), 0);
    cleanup(&publisher, &prefix).await;
}

#[tokio::test]
async fn a_backend_hears_its_own_publishes_and_not_other_channels() {
    let Some(url) =
        redis_url_or_skip("a_backend_hears_its_own_publishes_and_not_other_channels").await
    else {
        return;
    };
    let prefix = unique_name("pubsub_own");
    let (mine, other) = (format!("{prefix}:mine"), format!("{prefix}:other"));
    let backend = connected(&url).await;
    let mut rx = backend
        .subscribe(vec![mine.clone()])
        .await
        .expect("subscribed");
    backend
        .publish(&other, Bytes::from("no"))
        .await
        .expect("published");
    backend
        .publish(&mine, Bytes::from("yes"))
        .await
        .expect("published");
    let delivery = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("delivered within 2 s")
        .expect("open");
    assert_eq!(
        (delivery.channel.as_str(), delivery.payload),
        (mine.as_str(), Bytes::from("yes"))
    );
    assert!(rx.try_recv().is_none(), "nothing from {other}");
    cleanup(&backend, &prefix).await;
}

#[tokio::test]
async fn a_full_buffer_drops_and_counts() {
    let Some(url) = redis_url_or_skip("a_full_buffer_drops_and_counts").await else {
        return;
    };
    let prefix = unique_name("pubsub_drops");
    let (backend, channel, mut rx) = subscribed(&url, &prefix).await;
    let extra = 100;
    for i in 0..DELIVERY_BUFFER + extra {
        backend
            .publish(&channel, Bytes::from(i.to_string()))
            .await
            .expect("published");
    }
    // Nobody reads: once the buffer is full the rest are dropped and counted.
    dropped_exactly(&backend, extra as u64).await;
    let mut buffered = 0;
    while let Some(delivery) = rx.try_recv() {
        assert_eq!(
            delivery.payload,
            Bytes::from(buffered.to_string()),
            "the oldest are kept"
        );
        buffered += 1;
    }
    assert_eq!(buffered, DELIVERY_BUFFER);
    cleanup(&backend, &prefix).await;
}

/// Large payloads nobody reads: the buffer holds at most `DELIVERY_BUFFER_BYTES` of them (not
/// `DELIVERY_BUFFER` deliveries, which at 1 MiB each would be 8 GiB); the rest are dropped and
/// counted, and the link stays up.
#[tokio::test]
async fn a_buffer_full_in_bytes_drops_and_counts() {
    let Some(url) = redis_url_or_skip("a_buffer_full_in_bytes_drops_and_counts").await else {
        return;
    };
    let prefix = unique_name("pubsub_bytes");
    let (backend, channel, mut rx) = subscribed(&url, &prefix).await;
    let size = 1 << 20;
    let fit = DELIVERY_BUFFER_BYTES / size;
    let extra = 8;
    let payload = Bytes::from(vec![b'x'; size]);
    for _ in 0..fit + extra {
        backend
            .publish(&channel, payload.clone())
            .await
            .expect("published");
    }
    dropped_exactly(&backend, extra as u64).await;
    assert_eq!(rx.buffered_bytes(), fit * size);
    let mut buffered = 0;
    while rx.try_recv().is_some() {
        buffered += 1;
    }
    assert_eq!((buffered, rx.buffered_bytes()), (fit, 0));
    assert_eq!(*backend.link().borrow(), Link::Connected);
    // Read: room again.
    backend
        .publish(&channel, payload.clone())
        .await
        .expect("published");
    let delivery = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("delivered within 2 s")
        .expect("open");
    assert_eq!(delivery.payload.len(), size);
    cleanup(&backend, &prefix).await;
}
