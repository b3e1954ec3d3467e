//! The WebSocket relay: a client's upgrade, admitted and tracked like any other, relayed to an
//! upstream WebSocket server — what `wscope proxy` runs for every upgrade, and what a Rust service
//! can run for some of its routes.
//!
//! ```no_run
//! use axum::{extract::Request, response::Response, routing::get, Router};
//! use wscope_axum::relay::{relay, RelayConfig, Upstream};
//! use wscope_axum::{Tracking, WebSocketUpgrade};
//! use wscope_core::Registry;
//!
//! # fn app() -> Result<Router, Box<dyn std::error::Error>> {
//! let upstream = Upstream::new("http://127.0.0.1:3000".parse()?)?;
//! let config = RelayConfig::default();
//! let registry = Registry::new();
//! let app = Router::new()
//!     .route(
//!         "/live",
//!         get(move |ws: WebSocketUpgrade, request: Request| async move {
//!             // Admitted here, then the upstream opened at the same path and query: its
//!             // answer decides the client's (101, its refusal, 502 or 504).
//!             relay(ws, request.headers(), request.uri(), &upstream, &config).await
//!         }),
//!     )
//!     .layer(Tracking::new(registry).layer());
//! # Ok(app) }
//! ```
//!
//! **One tracked connection per client.** The client's socket is the entry (it names its
//! upstream as `upstream`); the upstream hop runs on the same engine and frame guard, in the
//! client role, without an entry of its own. Messages are counted once, on the client's entry.
//!
//! **Answers.** The upstream's refusal (any status but 101) is passed on with its status,
//! end-to-end headers and body; an upstream that cannot be reached gets the client 502, one that
//! does not answer within [`RelayConfig::timeout`] 504 (JSON bodies); accepted, the client gets
//! 101 with the subprotocol the upstream chose. Each hop negotiates its own compression.
//!
//! **Closes.** A close from either side reaches the other with its code and reason; the entry
//! records who closed (`client`, `upstream`, or wscope's own: `admin`, `limit`, `shutdown`, …, in
//! which case the client gets wscope's code and the upstream 1001 "Going away"). An upstream that
//! vanishes or breaks the protocol closes the client with 1014 "Bad Gateway".
//!
//! **Backpressure.** Each direction moves one message at a time: a client that stops reading
//! fills its bounded queue, then the relay stops reading its upstream (whose TCP window closes);
//! an upstream that stops reading stops the relay reading its client. What either side withholds
//! is bounded by the queue and the engines' buffers.
//!
//! **Memory.** The client's entry shows in `memoryBytes` what both hops' engines hold and what
//! waits in the client's queue (a message from the upstream on its way to a slow client): both
//! engines report through one [`HopGauge`](wscope_core::HopGauge), which writes their sum to
//! the entry, so a message the upstream is part-way through sending (up to
//! [`RelayConfig::socket`]'s `max_message_size`, charged to its message budget) shows in the
//! client's row, in the process total and under `sort=memory`. The upstream's engine is made
//! before the client's entry exists (the upstream's answer decides whether there will be one),
//! so its gauge keeps what it reports until the client is accepted, then is attached to the
//! entry with what it holds by then; once nothing more comes from the upstream, its share
//! leaves the entry (back to 0), though the client may still be closing.
//!
//! # Layout
//! - `open`: opening the upstream (TCP, the client handshake with the forwarded headers) and the
//!   client's answer when that fails.
//! - `pump`: the two directions of an open relay and the close handshake across it.
//! - `figures`: [`Upstream`] and its figures, [`Relays`] (the upstreams a server relays to, for
//!   `/metrics` and `GET /api/upstreams`).

mod figures;
mod open;
mod pump;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls::ClientConfig;

use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use wscope_engine::SocketConfig;

use crate::forward::{forward_headers, Forwarding};
use crate::upgrade::WebSocketUpgrade;

pub use figures::{
    upstreams, FailureKind, InvalidUpstream, RelayRoute, Relays, Upstream, UpstreamFigures,
};

/// How a relay opens and runs its upstream hop.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RelayConfig {
    /// How long the upstream may take to accept TCP and answer the upgrade: past it, 504.
    pub timeout: Duration,
    /// How long a relay waits for the other side's close reply once it has passed a close on.
    pub close_timeout: Duration,
    /// The upstream hop's engine, limits and compression (the client hop's are the tracking
    /// layer's).
    pub socket: SocketConfig,
    /// `X-Forwarded-Proto` and `Forwarded`'s `proto`: the scheme the clients use.
    pub proto: &'static str,
    /// How `wss://` and `https://` upstreams are checked ([`crate::tls::client_config`]); none,
    /// and such an upstream gets the client 502.
    pub tls: Option<Arc<ClientConfig>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            close_timeout: Duration::from_secs(5),
            socket: SocketConfig::default(),
            proto: "http",
            tls: None,
        }
    }
}

impl RelayConfig {
    /// The upstream's time to answer, unless set.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Sets [`RelayConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`RelayConfig::socket`].
    pub fn socket(mut self, socket: SocketConfig) -> Self {
        self.socket = socket;
        self
    }

    /// Sets [`RelayConfig::tls`].
    pub fn tls(mut self, tls: Arc<ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`RelayConfig::proto`].
    pub fn proto(mut self, proto: &'static str) -> Self {
        self.proto = proto;
        self
    }
}

/// Relays the upgrade `ws` (whose request had `headers` and `uri`) to `upstream`, at the same path
/// and query: admission first (a refused client never reaches the upstream), then the upstream
/// opened with the client's end-to-end headers and the forwarding ones, then the client answered
/// as the upstream answered. See the module documentation.
pub async fn relay(
    ws: WebSocketUpgrade,
    headers: &HeaderMap,
    uri: &Uri,
    upstream: &Upstream,
    config: &RelayConfig,
) -> Response {
    let ws = ws.upstream(upstream.name());
    let admitted = match ws.admit() {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let fwd = Forwarding {
        client: admitted.remote_addr(),
        proto: config.proto,
    };
    let mut forwarded = forward_headers(headers, &fwd);
    // The client's own keepalive and limits are this side's: the upstream sees the proxy's.
    forwarded.remove(header::CONTENT_LENGTH);
    let target = match upstream.target(uri) {
        Ok(target) => target,
        Err(e) => return open::bad_gateway(&e),
    };
    let started = Instant::now();
    let opened = open::open(target, forwarded, config).await;
    let figures = upstream.figures();
    match opened {
        Ok(hop) => {
            figures.opened(started.elapsed());
            let protocol = hop.protocol.clone();
            let upstream = upstream.clone();
            let close_timeout = config.close_timeout;
            // The client's `memoryBytes` counts the upstream hop's engine too, from the moment
            // its entry is made, starting with what that engine holds by then.
            let admitted = admitted.with_hop(hop.gauge.clone());
            admitted.accept(protocol, move |socket| async move {
                let _active = upstream.track(socket.handle());
                pump::run(socket, hop.transport, hop.gauge, close_timeout).await;
            })
        }
        Err(failure) => {
            figures.failed(failure.kind());
            drop(admitted);
            failure.into_response(upstream.name(), config.timeout)
        }
    }
}
