//! wscope-testkit: what wscope's own test suites share, so that each is written once — a raw
//! HTTP/1.1 client ([`http()`]), a raw WebSocket client ([`raw`]), an SSE client ([`sse`]), test certificates ([`pki`]) and a
//! bounded wait for a condition ([`wait_until`]). Everything here panics on failure, as test
//! helpers do; loops are bounded by [`WAIT`].
//!
//! # Layout
//! - `http`: [`http()`], [`http_get`], [`http_post`] and the [`HttpResponse`] they read;
//!   [`send_raw`] for requests no client would send.
//! - `node`: a Node.js upstream on the npm package `ws` ([`node::NodeUpstream`]) for the
//!   proxy's tests, skipped without Node.
//! - `pki`: a CA made at test time ([`pki::TestCa`]) and the leaf certificates it signs, as
//!   PEM files.
//! - `raw`: a raw WebSocket client ([`raw::Raw`]) for hand-built handshakes and frames.
//! - `served`: a `wscope serve` or `wscope proxy` process ([`served::Served`]) for tests of the
//!   binary.
//! - `sse`: a Server-Sent Events client ([`sse::open`]) that yields each event as it arrives.
//! - `wait`: [`WAIT`] and [`wait_until`].

#![allow(clippy::unwrap_used)]

pub mod http;
pub mod node;
pub mod pki;
pub mod raw;
pub mod served;
pub mod sse;
mod wait;

pub use http::{http, http_get, http_post, read_response, send_raw, HttpResponse};
pub use wait::{wait_until, WAIT};
