//! `wscope-bench`: a load generator that drives a WebSocket server on this machine by URL, the
//! library behind `wscope bench`.
//!
//! Four modes, each a plain `async fn` taking an options struct and returning a report that
//! serialises to JSON, so that tests and wrappers run them in-process; the command line
//! ([`BenchArgs`], [`run`]) only parses flags into those structs and prints the reports:
//! - [`echo()`]: C connections × W messages in flight × S bytes for T after a warm-up: messages/s
//!   and round-trip latency. Every reply must be the echo of what its connection sent, in order;
//!   anything else is counted as an error, never as a message.
//! - [`idle()`]: open C connections with bounded handshake concurrency and hold them: handshakes/s
//!   and, with `--pid`, the server's bytes per connection. Held connections answer the server's
//!   pings; any the server drops are reported with why (`1011 ping timeout`).
//! - [`churn()`]: C workers each looping connect → echo one message → close: connections/s.
//! - [`broadcast()`]: C listeners on a chat endpoint and one sender: fan-out latency to the last
//!   receiver. The sender may connect elsewhere (`--sender-url`): to another instance of a
//!   cluster, which times a cross-instance fan-out.
//!
//! Every mode goes through one shared path: the URL (and `--sender-url`) is checked to be
//! loopback, the open-file limit raised, a bare TCP connect tried and `--pid` read before anything
//! is opened; connections are opened under a handshake bound; the CPU of this process and of the server are read over
//! one window (in % of one core: 100 is one core busy); and at the end come an optional
//! [`Checkpoint`] and the close handshakes. Every run is bounded by `--timeout` and reports what
//! it has when that passes. When connections are lost mid-run, rates are taken over the time the
//! load was running, and the report says how many were lost and when.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wscope_bench::BenchError> {
//! use std::time::Duration;
//! use wscope_bench::{echo, EchoOptions};
//!
//! let report = echo(EchoOptions {
//!     url: "ws://127.0.0.1:8080/ws".into(),
//!     connections: 10,
//!     duration: Duration::from_secs(1),
//!     ..Default::default()
//! })
//! .await?;
//! println!("{} messages/s, p99 {} µs", report.messages_per_sec, report.latency.p99);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `cli`: the `wscope bench` flags ([`BenchArgs`], [`Mode`]) and [`run`], which prints a report.
//! - `echo`, `idle`, `churn`, `broadcast`: the modes, each with its options, report and run;
//!   `echo/` holds one connection's loop (`drive.rs`) and the check of its replies
//!   (`payload.rs`), `broadcast/` the rounds
//!   state and the chat members.
//! - `options`: the options every mode shares, and each mode's `Default` read from its flags.
//! - `session`: the path every mode shares: checks, opening, the measurement window, the end.
//! - `target`, `addrs`, `limits`: the `--url` (loopback only), source addresses past the
//!   ephemeral-port limit, the open-file limit.
//! - `ws`: a client connection and the bound on its close handshake.
//! - `connect`, `reason`: opening and closing connections; errors and close frames worded as
//!   short phrases (`the server closed the connection (1011 ping timeout)`).
//! - `keeper`: one task that reads every connection not yet driven (while the others open, and
//!   through `idle`'s hold), so each answers the server's pings; counts the ones the server
//!   ends, by close code and reason.
//! - `deadline`, `checkpoint`: when a run must stop; the pause with every connection open.
//! - `probe`, `cpu`, `rss`: CPU time and memory of this process and of the server (`--pid`).
//! - `latency`, `failures`, `lost`: what connection tasks record: round trips, errors, losses.
//! - `progress`, `report`: progress bars on stderr; the table or JSON on stdout.
//! - `error`: why a run could not start.

mod addrs;
mod broadcast;
mod checkpoint;
mod churn;
mod cli;
mod connect;
mod cpu;
mod deadline;
mod echo;
mod error;
mod failures;
mod idle;
mod keeper;
mod latency;
mod limits;
mod lost;
mod options;
mod probe;
mod progress;
mod reason;
pub mod report;
mod rss;
mod session;
mod target;
mod ws;

pub use broadcast::{broadcast, BroadcastOptions, BroadcastReport};
pub use checkpoint::{Checkpoint, CheckpointHandle};
pub use churn::{churn, ChurnOptions, ChurnReport};
pub use cli::{run, BenchArgs, Mode};
pub use cpu::CpuUse;
pub use echo::{echo, EchoOptions, EchoReport};
pub use error::BenchError;
pub use idle::{idle, IdleOptions, IdleReport};
pub use latency::LatencySummary;
pub use lost::Lost;
pub use options::CommonOptions;
pub use probe::{ClientCpu, ServerUse, Usage};
pub use report::Report;
