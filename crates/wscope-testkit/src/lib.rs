//! wscope-testkit: what wscope's own test suites share, so that each is written once — a raw
//! HTTP/1.1 client ([`http()`]), a raw WebSocket client ([`raw`]), an SSE client ([`sse`]) and a
//! bounded wait for a condition ([`wait_until`]). Everything here panics on failure, as test
//! helpers do; loops are bounded by [`WAIT`].
//!
//! # Layout
//! - `http`: [`http()`], [`http_get`], [`http_post`] and the [`HttpResponse`] they read;
//!   [`send_raw`] for requests no client would send.
//! - `raw`: a raw WebSocket client ([`raw::Raw`]) for hand-built handshakes and frames.
//! - `served`: a `wscope serve` process ([`served::Served`]) for tests of the binary.
//! - `sse`: a Server-Sent Events client ([`sse::open`]) that yields each event as it arrives.
//! - `lib.rs`: [`WAIT`] and [`wait_until`].

#![allow(clippy::unwrap_used)]

pub mod http;
pub mod raw;
pub mod served;
pub mod sse;

use std::time::Duration;

pub use http::{http, http_get, http_post, read_response, send_raw, HttpResponse};

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
