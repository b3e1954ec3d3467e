//! wscope-core: the tracked-connection registry behind wscope.
//!
//! Every WebSocket connection gets an entry: id, connect time, last activity, remote address,
//! user agent, path, state and message/byte counters. The [`Registry`] counts them in O(1),
//! gives a [`Snapshot`] (the reference's `ConnectionStats`), hands out [`ConnectionHandle`]s that
//! can send and close, closes all or one, sweeps stale entries and drains everything on
//! [`Registry::shutdown`]. It knows nothing of HTTP: an engine integration (see `wscope-axum`)
//! registers each accepted socket and drives its [`Connection`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use wscope_core::{CloseCode, ConnectionMeta, Registry};
//!
//! let registry = Registry::new();
//! let conn = registry
//!     .register(ConnectionMeta { path: "/ws".into(), ..Default::default() })
//!     .expect("not shutting down");
//! conn.mark_open();
//! conn.record_received(64);
//!
//! let stats = registry.snapshot();
//! assert_eq!(stats.total_connections, 1);
//! assert_eq!(stats.connections_by_state.open, 1);
//!
//! registry.close_all(CloseCode::NORMAL, "").unwrap();
//! # }
//! ```
//!
//! # Layout
//! - `registry`: the owner of entries — register, remove, count, snapshot, close, sweep, shutdown.
//! - `connection`: an entry, its public [`ConnectionHandle`] and the drop-guarded [`Connection`].
//! - `outbox`: each connection's bounded outbound queue, drained in batches by its writer.
//! - `snapshot`: the read model every reporter shares.
//! - `close`: close codes and frames, and the [`CloseRecord`] kept for every removal.
//! - `message`, `id`, `clock`, `log`: the message type, ids, time and the stats lines.
//! - `strings`: paths, user agents and id prefixes, stored once per process ([`SharedStr`]).
//!
//! # Concurrency
//! The map is sharded (`dashmap`); per-connection counters and timestamps are atomics; no lock is
//! held across `.await`. Lock order, where two are held: a map shard, then a connection's outbox.

mod clock;
mod close;
mod connection;
mod id;
mod instance;
mod log;
mod message;
mod outbox;
mod registry;
mod snapshot;
mod strings;
pub mod units;

pub use bytes::Bytes;
pub use clock::{Clock, ManualClock};
pub use close::{
    CloseCode, CloseFrame, CloseRecord, Initiator, InvalidCloseCode, ReasonTooLong,
    MAX_CLOSE_REASON_BYTES,
};
pub use connection::{Connection, ConnectionHandle, ConnectionMeta, ConnectionState};
pub use id::ConnectionId;
pub use instance::{
    check_instance_id, default_instance_id, host_instance_id, instance_id_from_env,
    InvalidInstanceId, INSTANCE_ID_ENV,
};
pub use log::{log_connection_stats, stats_lines, STATS_TARGET};
pub use message::{InvalidUtf8, Message, Utf8Bytes};
pub use outbox::SendError;
pub use registry::{Refusal, Registry, RegistryConfig, ShutdownReport};
pub use snapshot::{ClosedBy, ConnectionInfo, Refused, Snapshot, StateCounts};
pub use strings::SharedStr;
