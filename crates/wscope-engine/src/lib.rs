//! wscope-engine: the WebSocket protocol side of wscope, in both roles, with no HTTP framework —
//! the handshake, the frame guard every engine reads through, permessage-deflate, and one
//! engine per cargo feature, each producing the core's [`Transport`](wscope_core::Transport)
//! so that `wscope_core`'s driver runs every connection, accepted or opened, the same way.
//!
//! A server (wscope-axum's extractor is one) checks an upgrade request with
//! [`ServerHandshake::check`], answers with [`ServerHandshake::response`] and, once its HTTP
//! server hands the connection over, calls [`Engine::server`]. A client opens any stream, sends
//! a [`ClientHandshake`] over it and calls [`Engine::client`] on the [`Upgraded`] stream; or
//! calls [`connect`] for a `ws://` URL:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wscope_core::Registry;
//! use wscope_engine::{ClientHandshake, Engine, SocketConfig};
//!
//! // Any stream: here TCP, opened by the caller.
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
//! let cfg = SocketConfig::default().permessage_deflate(true);
//! let request = http::Request::get("ws://127.0.0.1:8080/ws").body(())?;
//! let upgraded = ClientHandshake::new(request, &cfg)?.perform(tcp).await?;
//! // Registered before the engine takes over, which reports what it holds to the entry:
//! let registry = Registry::new();
//! let meta = wscope_core::ConnectionMeta::new("/ws");
//! let permit = registry.admit(&meta)?;
//! let accepted = registry.register(meta, permit);
//! let (deflate, gauge) = (upgraded.deflate, accepted.memory_gauge());
//! let transport = Engine::default().client(upgraded.stream, &cfg, deflate, gauge).await;
//! // Then run it as any connection:
//! accepted.run(transport, |mut socket| async move {
//!     let _ = socket.send("hello").await;
//! }).await;
//! # Ok(()) }
//! ```
//!
//! # Engines
//! One cargo feature per engine: `wscope` (wscope's own, the default engine), `tungstenite`
//! (also in the default features, the reference the default is tested against), `tokio-websockets`, `fastwebsockets`. [`Engine::ALL`] lists
//! those compiled in; every one has both roles. Every engine but wscope's own reads through the
//! frame guard; wscope's own makes the guard's checks where it parses frames.
//!
//! # Layout
//! - `engine`: [`Engine`], which engine runs a connection, by name ([`UnknownEngine`]).
//! - `engines`: `Engine::server` and `Engine::client`, and one file per engine adapting it to
//!   the core's transport in either role (`engines/tungstenite.rs`,
//!   `engines/tokio_websockets.rs`, `engines/fastwebsockets.rs`, and wscope's own in
//!   `engines/own/`: `parse.rs`, `write.rs`, `mask.rs`); `engines/message.rs`: what every engine
//!   converts (a message as it goes on the wire, checked text, close frames).
//! - `io`: [`Io`], the stream an engine runs over; [`Prefixed`], a stream with the bytes read
//!   past its HTTP head served first (both roles of an upgrade read some).
//! - `config`: [`SocketConfig`], the settings the engines and the guard read.
//! - `guard`: the frame guard between the socket and every other engine, in either role (masking,
//!   frame and message limits, the shared message budget and its share per address, the
//!   deadline of a partly received message, frames of at most 4 KiB into the engine,
//!   permessage-deflate inflated): `guard/header.rs` parses a frame header, `guard/read.rs`
//!   checks and hands on what the peer sends, `guard/write.rs` compresses and frames what this
//!   side sends, `guard/linger.rs` holds the tracked tasks in which failed connections linger
//!   ([`lingering`]). wscope's own engine shares the header coding, the lingering and the
//!   limits' helpers.
//! - `deflate`: [`Deflate`], permessage-deflate negotiated in both roles, and the compression of
//!   what this side sends (once per payload).
//! - `handshake`: [`ServerHandshake`] and [`ClientHandshake`], the HTTP/1.1 upgrade in both
//!   roles, and the header-token test they and `wscope_axum`'s head reader share
//!   ([`has_token`], [`lists_token`]).
//! - `connect`: [`connect`], a tracked client connection over TCP to a `ws://` URL.

mod config;
mod connect;
mod deflate;
mod engine;
mod engines;
mod guard;
mod handshake;
mod io;

pub use config::SocketConfig;
pub use connect::{connect, connect_with, ConnectError, Connected, IntoClientRequest};
pub use deflate::Deflate;
pub use engine::{Engine, UnknownEngine};
pub use guard::lingering;
pub use handshake::{
    has_token, lists_token, Attempt, ClientHandshake, HandshakeError, RefusedAnswer,
    ServerHandshake, Upgraded, MAX_REFUSAL_BODY,
};
pub use http;
pub use io::{Io, Prefixed};
