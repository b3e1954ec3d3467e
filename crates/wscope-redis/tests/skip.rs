//! The skip-or-fail helper, on a URL where nothing listens.

use wscope_redis::testing::{reachable, unique_name, url_or_skip};

const NOWHERE: &str = "redis://127.0.0.1:1";

#[tokio::test]
async fn an_unreachable_redis_is_skipped_by_default() {
    assert!(reachable(NOWHERE).await.is_err());
    assert_eq!(
        url_or_skip(
            "the skip helper's own test (an address where no Redis is, on purpose)",
            NOWHERE,
            false
        )
        .await,
        None
    );
}

#[tokio::test]
#[should_panic(expected = "Redis not reachable at redis://127.0.0.1:1")]
async fn an_unreachable_redis_fails_when_required() {
    let _ = url_or_skip("skip_test", NOWHERE, true).await;
}

#[tokio::test]
async fn an_invalid_url_is_unreachable_and_says_why() {
    let err = reachable("http://127.0.0.1:6379")
        .await
        .expect_err("not a Redis URL");
    assert!(err.starts_with("invalid URL"), "{err}");
}

#[test]
fn unique_names_differ() {
    let (a, b) = (unique_name("t"), unique_name("t"));
    assert_ne!(a, b);
    assert!(a.starts_with("wscope-test:t:"), "{a}");
}
