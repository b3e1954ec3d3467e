//! The WebSocket engines a tracked connection can run on, each adapted to the core's
//! [`Transport`] in its own file behind its own cargo feature, so the engine can change without
//! touching the tracking code:
//!
//! - `tungstenite` (feature `tungstenite`, on by default): the engine axum uses, and the
//!   reference wscope's own is tested against.
//! - `tokio_websockets` (feature `tokio-websockets`): SIMD masking and UTF-8 checks.
//! - `fastwebsockets` (feature `fastwebsockets`): Deno's engine, through its split API.
//! - `own` (feature `wscope`, on by default, the default engine): wscope's own engine, which makes the frame guard's checks where
//!   it parses frames, holds no buffer while idle and corks its writes (`own/mod.rs`).
//!
//! Every engine takes over a connection whose handshake is done (any `AsyncRead + AsyncWrite`,
//! not only hyper's upgraded one), in either role, converts its frames to and from wscope's
//! [`Message`](wscope_core::Message) without copying data payloads (a broadcast's members share
//! one payload, and under permessage-deflate one compressed body: `message::Outbound`), and
//! reports failures as typed [`TransportError`](wscope_core::TransportError)s. Adding an engine
//! is a file here, a feature, a variant of [`Engine`] and its arm in `Engine::take_over`.
//!
//! In both roles every other engine reads the peer through the frame guard (`crate::guard`),
//! which enforces masking, the frame and message size limits (across fragments), the shared
//! budget of partly received bytes and permessage-deflate the same way whatever the engine;
//! wscope's own enforces the same where it parses.

#[cfg(not(any(
    feature = "tungstenite",
    feature = "tokio-websockets",
    feature = "fastwebsockets",
    feature = "wscope"
)))]
compile_error!(
    "wscope-engine needs at least one engine feature: tungstenite, tokio-websockets, fastwebsockets or wscope"
);

#[cfg(feature = "fastwebsockets")]
mod fastwebsockets;
pub(crate) mod message;
#[cfg(feature = "wscope")]
mod own;
#[cfg(feature = "tokio-websockets")]
mod tokio_websockets;
#[cfg(feature = "tungstenite")]
mod tungstenite;

use wscope_core::{BoxTransport, Charge, ClientKey, Halves, MemoryGauge, Role, Transport};

use crate::config::SocketConfig;
use crate::deflate::Deflate;
use crate::engine::Engine;
use crate::guard::{FrameGuard, Tripwire, Watched};
use crate::io::Io;

impl Engine {
    /// Takes over `io`, whose server handshake is done (with permessage-deflate agreed if
    /// `deflate`), with this engine (behind the frame guard, but for wscope's own, which makes
    /// the guard's checks itself), charging partly received messages to `client`'s share of the
    /// budget when the address is known, and reporting what it holds for the connection to
    /// `gauge` ([`Accepted::memory_gauge`](wscope_core::Accepted::memory_gauge), or
    /// [`MemoryGauge::detached`]). What each engine reports (`memoryBytes`): wscope's own, all it
    /// holds — a split header, the message in progress, messages parsed and not yet handed on,
    /// what waits to be written; behind the guard, what the guard holds — a partly received
    /// message at its declared size (past the budget's small-message allowance) and the buffers it
    /// feeds the engine from, not the engines' own buffers (tungstenite's read and write buffers,
    /// the 8 KiB of tokio-websockets and fastwebsockets), which it cannot see. Boxed: every
    /// engine's halves become one type, so the
    /// connection's task is as large as the driver needs, not as the largest engine's state
    /// (that is what an idle connection costs).
    pub async fn server(
        self,
        io: impl Io,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        client: Option<ClientKey>,
        gauge: MemoryGauge,
    ) -> BoxTransport {
        let charge = match client {
            Some(client) => cfg.message_budget.charge_for(client),
            None => cfg.message_budget.charge(),
        };
        self.take_over(io, Role::Server, cfg, deflate, charge, gauge)
            .await
    }

    /// Takes over `io`, a stream the caller opened whose client handshake is done
    /// ([`ClientHandshake`](crate::ClientHandshake)), with this engine in the client role: what
    /// it sends is masked, what it reads must not be, under the same limits, UTF-8 checks and
    /// compression as on the server side. The transport is the one the server side makes, so
    /// the core's driver runs it the same way, and it reports what it holds to `gauge` as
    /// [`Engine::server`] does: register the connection first and pass
    /// [`Accepted::memory_gauge`](wscope_core::Accepted::memory_gauge), or its row shows
    /// `memoryBytes` without the engine's share; [`MemoryGauge::detached`] for a transport
    /// tracked nowhere. A gauge takes one engine: [`MemoryGauge::set`] replaces what was
    /// reported, so two engines on one gauge would overwrite each other; a second engine on a
    /// tracked connection (a proxy's upstream hop, opened before the client's entry exists)
    /// reports through a [`HopGauge`](wscope_core::HopGauge), whose share is added.
    pub async fn client(
        self,
        io: impl Io,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        gauge: MemoryGauge,
    ) -> BoxTransport {
        let charge = cfg.message_budget.charge();
        self.take_over(io, Role::Client, cfg, deflate, charge, gauge)
            .await
    }

    /// This engine over `io` in `role`: behind the frame guard, or (wscope's own) not.
    async fn take_over(
        self,
        io: impl Io,
        role: Role,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        charge: Charge,
        gauge: MemoryGauge,
    ) -> BoxTransport {
        let window_bits = deflate.and_then(|d| d.compress_window_bits());
        match self {
            #[cfg(feature = "tungstenite")]
            Engine::Tungstenite => {
                let (io, wire) = guarded(io, role, cfg, deflate, charge, gauge);
                watched(
                    tungstenite::take_over(io, role, cfg, window_bits).await,
                    wire,
                )
            }
            #[cfg(feature = "tokio-websockets")]
            Engine::TokioWebsockets => {
                let (io, wire) = guarded(io, role, cfg, deflate, charge, gauge);
                watched(
                    tokio_websockets::take_over(io, role, cfg, window_bits),
                    wire,
                )
            }
            #[cfg(feature = "fastwebsockets")]
            Engine::Fastwebsockets => {
                let (io, wire) = guarded(io, role, cfg, deflate, charge, gauge);
                watched(fastwebsockets::take_over(io, role, cfg, window_bits), wire)
            }
            #[cfg(feature = "wscope")]
            Engine::Wscope => {
                own::take_over(io, role, cfg, deflate.is_some(), window_bits, charge, gauge).boxed()
            }
        }
    }
}

/// `io` behind the frame guard, and the wire its violations trip.
#[cfg(any(
    feature = "tungstenite",
    feature = "tokio-websockets",
    feature = "fastwebsockets"
))]
fn guarded<S: Io>(
    io: S,
    role: Role,
    cfg: &SocketConfig,
    deflate: Option<Deflate>,
    charge: Charge,
    gauge: MemoryGauge,
) -> (FrameGuard<S>, Tripwire) {
    let wire = Tripwire::default();
    let guard = FrameGuard::new(io, cfg, role, deflate, charge, wire.clone()).reporting_to(gauge);
    (guard, wire)
}

/// `transport`, boxed, whose reader fails with the guard's violation once the engine waits for
/// the bytes the guard held back.
fn watched<T: Transport>(transport: T, wire: Tripwire) -> BoxTransport {
    let role = transport.role();
    let (reader, writer) = transport.split();
    Halves::new(role, Watched::new(reader, wire), writer).boxed()
}
