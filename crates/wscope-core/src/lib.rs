//! wscope-core: the tracked-connection registry behind wscope, and the driver every tracked
//! connection runs.
//!
//! Every WebSocket connection gets an entry: id, connect time, last activity, remote address,
//! user agent, path, state and message/byte counters. The [`Registry`] admits upgrades
//! ([`Registry::admit`] → a [`Permit`] or a typed [`Refusal`]), registers them, counts them in
//! O(1), gives a [`Snapshot`] (the reference's `ConnectionStats`), hands out
//! [`ConnectionHandle`]s that can send and close, closes all or one, sweeps stale entries, tells
//! [`Observer`]s what happens and drains everything on [`Registry::shutdown`]. A registered
//! connection ([`Accepted`]) runs over any [`Transport`] — an engine adapted in `wscope-axum`, or
//! the in-process [`memory`] pair — through one driver, in the server or the client role. The
//! crate knows nothing of HTTP, nor of cluster mode (`wscope-cluster`, a layer above the
//! registry, holds a registry; the registry never holds it).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use wscope_core::{memory, CloseCode, ConnectionMeta, Message, Registry};
//!
//! let registry = Registry::new();
//! let accepted = registry.accept(ConnectionMeta::new("/ws")).expect("not shutting down");
//! let (transport, mut client) = memory::pair();
//! tokio::spawn(accepted.run(transport, |mut socket| async move {
//!     while let Some(msg) = socket.recv().await {
//!         let _ = socket.send(msg).await;
//!     }
//! }));
//! client.send("hello").unwrap();
//! assert_eq!(client.recv().await, Some(Message::text("hello")));
//!
//! let stats = registry.snapshot();
//! assert_eq!(stats.total_connections, 1);
//! assert_eq!(stats.connections_by_state.open, 1);
//! assert_eq!(stats.connections[0].messages_in, 1);
//!
//! registry.close_all(CloseCode::NORMAL, "").unwrap();
//! # }
//! ```
//!
//! # Layout
//! From the ground up; a file imports only files listed before it.
//! - Leaf types: `state` ([`ConnectionState`] and the entry's sentinel values), `counts`
//!   ([`Counts`], [`StateCounts`], [`ClosedBy`], [`RefusalCounts`]), `close` (close codes and
//!   frames, the [`CloseRecord`] kept for every removal), `message`, `id`, `clock`, `instance`,
//!   `units` (the text forms of durations and sizes), `strings` (paths, user agents and id
//!   prefixes stored once per process, [`SharedStr`]), `order` (the entries' sequence numbers in
//!   order, so registration-order pages read only the page).
//! - `admission`: [`ConnectionMeta`], [`Permit`], [`Refusal`] and the checks every upgrade passes,
//!   one file each under `admission/`: `labels` (the caps on user ids and tags, [`LabelError`]),
//!   `bans` (runtime bans, [`Registry::ban`]), `origin` ([`OriginPattern`]), `rate` (per-address
//!   handshake rate, [`RateLimit`], in a bounded table), `limits` (global and per-address
//!   connection caps); `client_key` ([`ClientKey`], [`Ipv6Prefix`]): a client as every
//!   per-address check counts it, an IPv6 host's /64 as one.
//! - `config`: [`RegistryConfig`], which also builds the admission checks it asks for.
//! - `transport`: the [`Transport`] trait engines implement, [`Role`], typed [`TransportError`]s;
//!   `memory`: an in-process transport for tests.
//! - `outbox`: each connection's bounded outbound queue, drained in batches by its writer.
//! - `budget`: [`MessageBudget`], the bound on bytes held in partly received messages across
//!   connections and per client address, and each connection's [`Charge`] against it.
//! - `snapshot`: the read model every reporter shares, and [`Summary`], the reference's figures
//!   declared once and flattened into every answer that carries them; `query`: the connections query
//!   ([`query::ConnectionQuery`]: filter, sort, page, columns) and its parser; `json`: the
//!   stats' JSON written by hand into one buffer, byte for byte serde's ([`Snapshot::write_json`],
//!   and the rows [`Registry::snapshot_json`] writes straight from the entries).
//! - `aggregates`: the O(1) counts, totals and sums behind summaries.
//! - `observer`: [`Observer`] and its events; `log`: the reference's stats lines and the
//!   [`StatsLogger`] observer; `recent`: the recently closed connections, an observer.
//! - `entry`: one connection's registry entry (atomics, queue, close record, labels, the abort
//!   bit); `paths`: the entries by request path; `liveness`: pings and the ping and idle
//!   timeouts, per entry; `traffic`: [`Traffic`], the totals moved, and their floor.
//! - `shutdown`: the shutdown's state and [`ShutdownReport`], and the signal helpers.
//! - `shared`: the state behind a registry, private to it, with every operation the others
//!   need — the insert, the one removal path, walks, snapshot, close, sweep.
//! - `connection`: the public [`ConnectionHandle`], the drop-guarded connection the driver
//!   owns (its state machine's steps are crate-private), and the gauges engines report what
//!   they hold through ([`MemoryGauge`]; [`HopGauge`] for a connection two engines carry);
//!   `drain`: the drain on shutdown; `background`: the sweep, pings, timeouts and observer
//!   ticks.
//! - `driver`: [`Accepted`] and [`TrackedSocket`] — the one state machine every connection runs;
//!   `readout`: how both drivers read out a connection they failed before dropping its socket.
//! - `registry`: [`Registry`], the public handle — admit, register, count, snapshot, close,
//!   ban, kick, shutdown.
//! - Readers above it: `wire` (the admin API's other JSON types), `listing`
//!   ([`Registry::connections`] and [`Registry::close_matching`] answer a query), `admin` (the
//!   admin actions applied to a registry, [`Registry::apply`], HTTP-free).
//!
//! # Concurrency
//! The map is sharded (`dashmap`); per-connection counters and timestamps are atomics; no lock is
//! held across `.await`. Lock order, where two are held: a map shard, then a connection's outbox
//! or its labels (user id and tags). The ordered index's shard locks are held alone.

mod admin;
mod admission;
mod aggregates;
mod background;
mod budget;
mod callback;
mod clock;
mod close;
mod config;
mod connection;
mod counts;
mod drain;
mod driver;
mod entry;
mod id;
mod instance;
mod json;
mod listing;
mod liveness;
mod log;
pub mod memory;
mod message;
mod observer;
mod order;
mod outbox;
mod paths;
pub mod query;
mod readout;
mod recent;
mod registry;
mod shared;
mod shutdown;
// `deref_summary!` (exported for wscope-cluster) is in scope by text for the modules after this one.
#[macro_use]
mod snapshot;
mod state;
mod strings;
mod traffic;
pub mod transport;
pub mod units;
pub mod wire;

pub use admin::{AdminAnswer, AdminFailure, AdminFailureKind};
pub use admission::{
    Ban, BanError, BanOutcome, ClientKey, ConnectionMeta, InvalidIpv6Prefix, InvalidOriginPattern,
    InvalidRate, Ipv6Prefix, LabelError, OriginPattern, Permit, RateLimit, Refusal, RefusalKind,
    MAX_TAGS, MAX_TAG_LEN, MAX_USER_LEN,
};
#[doc(hidden)]
pub use aggregates::set_shard;
pub use budget::{Charge, MessageBudget, OverBudget};
pub use bytes::Bytes;
pub use callback::{CallbackSocket, OnMessage};
pub use clock::{Clock, ManualClock};
pub use close::{
    CloseCode, CloseFrame, CloseRecord, Initiator, InvalidCloseCode, ReasonTooLong,
    MAX_CLOSE_REASON_BYTES,
};
pub use config::RegistryConfig;
pub use connection::{ConnectionHandle, HopGauge, MemoryGauge};
pub use counts::{ClosedBy, Counts, RefusalCounts, StateCounts};
pub use driver::{Accepted, TrackedSocket};
pub use id::{ConnectionId, InvalidConnectionId};
pub use instance::{
    check_instance_id, default_instance_id, host_instance_id, instance_id_from_env,
    InvalidInstanceId, INSTANCE_ID_ENV,
};
pub use ipnet::IpNet;
pub use log::{stats_lines, StatsLogger, STATS_TARGET};
pub use message::{InvalidUtf8, Message, Utf8Bytes};
pub use observer::{ClosedEvent, Observer, OpenedEvent, RefusedEvent, RttEvent};
pub use outbox::SendError;
pub use registry::{log_connection_stats, Broadcast, Registry};
pub use shutdown::{shutdown_signal, ShutdownReport, StopSignal, StopSignals};
pub use snapshot::{ClosedConnection, ConnectionInfo, Snapshot, Summary};
pub use state::ConnectionState;
pub use strings::SharedStr;
pub use traffic::Traffic;
pub use transport::{
    BoxDuplex, BoxReader, BoxTransport, BoxWriter, Duplex, Halves, Joined, Role, SharedReader,
    SharedWriter, Transport, TransportError, TransportErrorKind, Whole,
};
