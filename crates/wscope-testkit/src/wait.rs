//! The bound on every wait in a test ([`WAIT`]) and a bounded wait for a condition
//! ([`wait_until`]).

use std::time::Duration;

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// Polls `cond` every few milliseconds until it holds; panics naming `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
