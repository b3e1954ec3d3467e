//! The WebSocket engines a tracked connection can run on, each adapted to the core's
//! [`Transport`] in its own file behind its own cargo feature, so the engine can change without
//! touching the tracking code:
//!
//! - `tungstenite` (feature `tungstenite`, on by default): the engine axum uses.
//! - `tokio_websockets` (feature `tokio-websockets`): SIMD masking and UTF-8 checks.
//! - `fastwebsockets` (feature `fastwebsockets`): Deno's engine, through its split API.
//!
//! Every engine takes over a connection whose handshake is done (any `AsyncRead + AsyncWrite`,
//! not only hyper's upgraded one), in either role, converts its frames to and from wscope's
//! [`Message`](wscope_core::Message) without copying data payloads (a broadcast's members share
//! one payload, and under permessage-deflate one compressed body: `message::Outbound`), and
//! reports failures as typed [`TransportError`](wscope_core::TransportError)s. Adding an engine
//! is a file here, a feature, a variant of [`Engine`] and its arm in `Engine::take_over`.
//!
//! In both roles every engine reads the peer through the frame guard (`crate::guard`), which
//! enforces masking, the frame and message size limits (across fragments), the shared budget of
//! partly received bytes and permessage-deflate the same way whatever the engine.

#[cfg(not(any(
    feature = "tungstenite",
    feature = "tokio-websockets",
    feature = "fastwebsockets"
)))]
compile_error!(
    "wscope-engine needs at least one engine feature: tungstenite, tokio-websockets or fastwebsockets"
);

#[cfg(feature = "fastwebsockets")]
mod fastwebsockets;
pub(crate) mod message;
#[cfg(feature = "tokio-websockets")]
mod tokio_websockets;
#[cfg(feature = "tungstenite")]
mod tungstenite;

use wscope_core::{BoxTransport, ClientKey, Halves, MemoryGauge, Role, Transport};

use crate::config::SocketConfig;
use crate::deflate::Deflate;
use crate::engine::Engine;
use crate::guard::{FrameGuard, Tripwire, Watched};
use crate::io::Io;

impl Engine {
    /// Takes over `io`, whose server handshake is done (with permessage-deflate agreed if
    /// `deflate`), with this engine behind the frame guard, charging partly received messages to
    /// `client`'s share of the budget when the address is known, and reporting what it holds
    /// for the connection to `gauge` ([`Accepted::memory_gauge`](wscope_core::Accepted::memory_gauge),
    /// or [`MemoryGauge::detached`]). Behind the guard, an engine reports what the guard holds: a
    /// partly received message at its declared size (past the budget's small-message allowance)
    /// and the buffers the guard feeds the engine from; the engines' own buffers (tungstenite's
    /// read and write buffers, the 8 KiB of tokio-websockets and fastwebsockets) are not visible
    /// to it and are not counted. Boxed: every engine's halves
    /// become one type, so the connection's task is as large as the driver needs, not as the
    /// largest engine's state (that is what an idle connection costs).
    pub async fn server(
        self,
        io: impl Io,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        client: Option<ClientKey>,
        gauge: MemoryGauge,
    ) -> BoxTransport {
        let wire = Tripwire::default();
        let guarded = FrameGuard::server(io, cfg, deflate, client, wire.clone(), gauge);
        self.take_over(guarded, Role::Server, cfg, deflate, wire)
            .await
    }

    /// Takes over `io`, a stream the caller opened whose client handshake is done
    /// ([`ClientHandshake`](crate::ClientHandshake)), with this engine behind the frame guard in
    /// the client role: what it sends is masked, what it reads must not be, under the same
    /// limits, UTF-8 checks and compression as on the server side. The transport is the one the
    /// server side makes, so the core's driver runs it the same way.
    pub async fn client(
        self,
        io: impl Io,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
    ) -> BoxTransport {
        let wire = Tripwire::default();
        let guarded = FrameGuard::client(io, cfg, deflate, wire.clone());
        self.take_over(guarded, Role::Client, cfg, deflate, wire)
            .await
    }

    /// This engine over `io`, the guarded stream, in `role`.
    async fn take_over(
        self,
        io: impl Io,
        role: Role,
        cfg: &SocketConfig,
        deflate: Option<Deflate>,
        wire: Tripwire,
    ) -> BoxTransport {
        let window_bits = deflate.and_then(|d| d.compress_window_bits());
        match self {
            #[cfg(feature = "tungstenite")]
            Engine::Tungstenite => watched(
                tungstenite::take_over(io, role, cfg, window_bits).await,
                wire,
            ),
            #[cfg(feature = "tokio-websockets")]
            Engine::TokioWebsockets => watched(
                tokio_websockets::take_over(io, role, cfg, window_bits),
                wire,
            ),
            #[cfg(feature = "fastwebsockets")]
            Engine::Fastwebsockets => {
                watched(fastwebsockets::take_over(io, role, cfg, window_bits), wire)
            }
        }
    }
}

/// `transport`, boxed, whose reader fails with the guard's violation once the engine waits for
/// the bytes the guard held back.
fn watched<T: Transport>(transport: T, wire: Tripwire) -> BoxTransport {
    let role = transport.role();
    let (reader, writer) = transport.split();
    Halves::new(role, Watched::new(reader, wire), writer).boxed()
}
