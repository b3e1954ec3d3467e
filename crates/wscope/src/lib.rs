//! The `wscope` binary's library: the pieces `main.rs` wires together, public so that tests and
//! benchmarks drive them in-process.
//!
//! # Layout
//! - `config`: `wscope serve`'s options, from flags, `WSCOPE_*` variables and a TOML file.
//! - `listener`: TCP listeners with a large accept backlog.
//! - `serve`: the server — echo, chat, health, the admin listener and the graceful drain.

pub mod config;
pub mod listener;
pub mod serve;
