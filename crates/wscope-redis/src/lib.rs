//! wscope-redis: the Redis implementation of wscope's cluster backend,
//! [`ClusterBackend`](wscope_cluster::ClusterBackend).
//!
//! [`RedisBackend::connect`] returns at once, Redis up or not, and connects in the background.
//! Commands (PUBLISH, the lease scripts) go over one multiplexed connection; subscriptions over a
//! dedicated RESP3 connection that resubscribes by itself after a reconnect. Every call is bounded
//! by [`RedisOptions::command_timeout`]: while Redis cannot be reached calls fail promptly with
//! `Unavailable` or `Timeout` and never wait for the link to come back. A background task PINGs
//! while the link is up and retries with backoff while it is down; with failed calls and the
//! subscriber connection's own notice that it closed, it keeps
//! [`ClusterBackend::link`](wscope_cluster::ClusterBackend::link) true: `Connected` only
//! when commands and the subscriptions work.
//!
//! Needs Redis 6 or later (RESP3). A lease is a hash (`holder`, `value`) with a PEXPIRE, taken,
//! renewed and released by Lua scripts so that each step is atomic. The client is the `redis`
//! crate's `ConnectionManager`; docs/CLUSTER.md ("Which Redis client") says why it rather than
//! `fred`.
//!
//! # Layout
//! - `backend`: [`RedisBackend`] — connect, the [`ClusterBackend`] calls, cleanup and load
//!   helpers ([`RedisBackend::delete_matching`], [`RedisBackend::info_commands`]).
//! - `inner`: what the clones of one backend share (the connections, the subscription router,
//!   the link) and the commands and probe both the backend and the supervisor run.
//! - `options`: [`RedisOptions`] (timeouts, probe interval, reconnect backoff).
//! - `error`: [`ConnectError`], and how client errors map onto `BackendError` kinds.
//! - `link`: the link's state, logged once per change.
//! - `supervisor`: the background task — probe, reconnect pacing, resubscribe.
//! - `subscriber`: routes pushed messages to the receivers, dropping and counting when full (in
//!   deliveries or bytes).
//! - `scripts`: the lease and release Lua scripts.
//! - `testing` (feature `testing`): helpers for tests against a real Redis.
//!
//! [`ClusterBackend`]: wscope_cluster::ClusterBackend

mod backend;
mod error;
mod inner;
mod link;
mod options;
mod scripts;
mod subscriber;
mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::RedisBackend;
pub use error::ConnectError;
pub use options::RedisOptions;

/// docs/CLUSTER.md's library example, compiled as a doctest so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/CLUSTER.md")]
struct ClusterDocDoctests;
