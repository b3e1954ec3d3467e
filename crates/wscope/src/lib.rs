//! The `wscope` binary's library: the pieces `main.rs` wires together, public so that tests,
//! benchmarks and the coming subcommands drive them in-process.
//!
//! # How the binary is organised
//! A subcommand that serves is settings, a [`Server`](serve::Server) and an application:
//!
//! ```no_run
//! # async fn run(args: wscope::config::ServeArgs) -> anyhow::Result<()> {
//! use wscope::config::ServeSettings;
//! use wscope::serve::Server;
//!
//! let settings = ServeSettings::resolve(args)?; // flags, variables, INSTANCE_ID, file, defaults
//! // Both listeners (the main one once per runtime with `--runtime per-core`), the registry,
//! // the admin guard; the binary runs this on `runtime::build`'s runtime.
//! let server = Server::bind(&settings)?;
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! server.serve(wscope::demo::app(), shutdown).await?; // `wscope serve`: the demo application
//! # Ok(()) }
//! ```
//!
//! The settings are groups (listeners, instance, liveness, sockets, limits, admin access,
//! cluster, logging), each declared once in `config/` and flattened into each subcommand's
//! settings; the server takes any settings that hold the groups it needs
//! ([`ServerGroups`](config::ServerGroups)) and any application's router
//! ([`App`](app::App)), and adds what every wscope server has: tracked WebSockets, `/health`,
//! `/ready`, the admin API, cluster mode and the drain. `wscope proxy` is the same server with
//! the proxy's application ([`proxy::Proxy::app`]).
//!
//! `wscope bench` is the `wscope-bench` crate. `wscope top` is a module tree of the binary alone
//! (`src/top/`, declared in `main.rs`, not exported here): it reads a server's admin API over
//! HTTP and shares nothing with the server but the token-file reader
//! ([`config::token_file`]). The connection machinery is `wscope-core` and `wscope-axum`.
//!
//! # Layout
//! - `config`: the settings groups, each setting declared once and read from its flag, its
//!   `WSCOPE_*` variable, `INSTANCE_ID`, the TOML file and its default; `wscope serve`'s
//!   [`ServeSettings`](config::ServeSettings); the macros that declare them, and how each kind
//!   of value is read (`config/mod.rs` says which file holds what).
//! - `serve`: [`serve::Server`] — any application's router on the main listener beside `/health`
//!   and `/ready`, its WebSockets tracked; the admin listener; TLS on either; cluster mode; the
//!   graceful drain.
//! - `app`: [`app::App`], an application for the server: its router, and the endpoints the
//!   start-up line names.
//! - `demo`: the application `wscope serve` runs (`/ws` echo, `/ws/chat` fan-out).
//! - `proxy/`: the application `wscope proxy` runs ([`proxy::Proxy`]): WebSockets relayed and
//!   other requests reverse-proxied by route, and the reload that swaps the routes.
//! - `listener`: TCP listeners with a large accept backlog.
//! - `runtime`: [`runtime::RuntimeLayout`] (`--runtime`): a `current_thread` runtime per core
//!   (the main listener's, started by the server) or one multi-thread runtime, and the runtime
//!   the main thread runs a server's subcommand on.
//! - `tls`: the listeners' TLS — their certificate files read into server configurations, each
//!   pair reread on SIGHUP.
//! - `reload`: [`reload::Reloader`], the named actions SIGHUP runs (the certificates; a proxy's
//!   routes can join them through [`serve::Server::on_reload`]).
//! - `logging`: the log lines on stderr (human or JSON): write failures ignored, client text
//!   escaped.
//!
//! Beside the library, in the binary only (declared from `main.rs`): `top/`, `wscope top` — its
//! flags and loop (`mod.rs`), the admin API client (`client.rs`) and its event stream
//! (`sse.rs`), the figures it keeps (`state.rs`) and the screen it draws (`view.rs`).

pub mod app;
pub mod config;
pub mod demo;
mod listener;
pub mod logging;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod serve;
mod tls;
