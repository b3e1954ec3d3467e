//! The `wscope` binary's library: the pieces `main.rs` wires together, public so that tests and
//! benchmarks drive them in-process.
//!
//! # Layout
//! - `config`: `wscope serve`'s settings, each declared once (`config/mod.rs`) and read from its
//!   flag, its `WSCOPE_*` variable, `INSTANCE_ID`, the TOML file and its default; `config/kind.rs`
//!   says how each kind of value is read, `flag.rs` and `file.rs` the two sides, `error.rs` what
//!   a bad value reports.
//! - `listener`: TCP listeners with a large accept backlog.
//! - `logging`: the log lines on stderr: write failures ignored, client text escaped.
//! - `serve`: [`serve::Server`] — any application's router on the main listener beside `/health`
//!   and `/ready`, its WebSockets tracked; the admin listener; cluster mode; the graceful drain.
//! - `app`: [`app::App`], an application for the server: its router, and the endpoints the
//!   start-up line names.
//! - `demo`: the application `wscope serve` runs (`/ws` echo, `/ws/chat` fan-out).
//!
//! `wscope bench` is the `wscope-bench` crate; `wscope top` is a module tree of the binary alone
//! (`src/top/`, declared in `main.rs`): it reads a server's admin API over HTTP and shares
//! nothing with the server but the token-file reader ([`config::token_file`]). The connection
//! machinery is `wscope-core` and `wscope-axum`.

pub mod app;
pub mod config;
pub mod demo;
pub mod listener;
pub mod logging;
pub mod serve;
