//! [`Upstream`]: where a relay goes and what happened there — connections relayed now and since
//! start, upstream handshakes and their latency, failures by reason — and [`Relays`], the
//! upstreams a server relays to, which `/metrics` and `GET /api/upstreams` read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use wscope_core::ConnectionHandle;

/// Upper bounds (s) of the upstream-handshake latency buckets.
pub(crate) const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Why an upstream could not be opened, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// TCP failed: refused, unreachable, no such host (502).
    Unreachable,
    /// No answer within the timeout (504).
    Timeout,
    /// The upstream answered the upgrade with another status (passed on).
    Refused,
    /// The upstream's answer was no valid upgrade, or its stream failed during it (502).
    Invalid,
}

impl FailureKind {
    /// Every kind, in counting order.
    pub const ALL: [FailureKind; 4] = [
        Self::Unreachable,
        Self::Timeout,
        Self::Refused,
        Self::Invalid,
    ];

    /// The label value in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
        }
    }
}

/// An upstream URL that cannot be relayed to.
#[derive(Debug, thiserror::Error)]
#[error("upstream {url}: {why}")]
pub struct InvalidUpstream {
    url: String,
    why: &'static str,
}

/// Where a relay goes: an upstream's base URL (`http://` or `ws://`; the request's path and query
/// are appended to its path) and its figures, shared by every relay to it (cheap to clone).
#[derive(Clone, Debug)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// As given, for the stats and the errors.
    name: String,
    /// The base, as a `ws://` (or `wss://`) URL.
    base: Uri,
    /// The base, as an `http://` (or `https://`) URL (for plain requests, [`crate::HttpProxy`]).
    http: Uri,
    figures: UpstreamFigures,
    /// The client connections relayed here now, by a number of the relay's own: what a reload
    /// that retires this upstream closes.
    live: Mutex<HashMap<u64, ConnectionHandle>>,
    /// The next relay's number.
    next: AtomicU64,
}

impl Upstream {
    /// An upstream at `url`: `http://` or `ws://`, or over TLS `https://` or `wss://` (relayed
    /// with [`RelayConfig::tls`](super::RelayConfig::tls)), with a host.
    pub fn new(url: Uri) -> Result<Self, InvalidUpstream> {
        let invalid = |why| InvalidUpstream {
            url: url.to_string(),
            why,
        };
        let (ws, http) = match url.scheme_str() {
            Some("http" | "ws") => ("ws", "http"),
            Some("https" | "wss") => ("wss", "https"),
            _ => return Err(invalid("use http://, https://, ws:// or wss:// and a host")),
        };
        let authority = url.authority().ok_or_else(|| invalid("no host"))?.clone();
        if url.query().is_some() {
            return Err(invalid("a query has no place in an upstream's base URL"));
        }
        let path = url.path().trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        let with_scheme = |scheme: &str| {
            Uri::builder()
                .scheme(scheme)
                .authority(authority.clone())
                .path_and_query(path)
                .build()
                .map_err(|_| invalid("not a URL"))
        };
        let base = with_scheme(ws)?;
        let http = with_scheme(http)?;
        let name = url.to_string();
        let name = name.strip_suffix('/').unwrap_or(&name).to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                base,
                http,
                figures: UpstreamFigures::default(),
                live: Mutex::default(),
                next: AtomicU64::new(0),
            }),
        })
    }

    /// The URL as given (without a trailing `/`): what the entries name as their `upstream`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The base as an `http://` (or `https://`) URL, for plain requests.
    pub fn http_base(&self) -> &Uri {
        &self.inner.http
    }

    /// Its figures.
    pub fn figures(&self) -> &UpstreamFigures {
        &self.inner.figures
    }

    /// Whether it is reached over TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.inner.base.scheme_str() == Some("wss")
    }

    /// Whether both name the same place (the same URL).
    pub fn same_place(&self, other: &Upstream) -> bool {
        self.inner.base == other.inner.base
    }

    /// The `ws://` URL a request for `uri` is relayed to: the base's path, then `uri`'s path and
    /// query.
    pub(crate) fn target(&self, uri: &Uri) -> Result<Uri, String> {
        let base = &self.inner.base;
        let prefix = base.path().trim_end_matches('/');
        let tail = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = format!("{prefix}{tail}");
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(
            path.parse()
                .map_err(|_| format!("cannot relay {tail} to {}", self.name()))?,
        );
        Uri::from_parts(parts).map_err(|e| e.to_string())
    }
}

/// What happened at one upstream since start. Counters and one histogram: reading them costs
/// the relays nothing.
#[derive(Debug)]
pub struct UpstreamFigures {
    /// Relays open now.
    active: AtomicU64,
    /// Relays opened since start.
    opened: AtomicU64,
    /// Failures to open, by [`FailureKind`].
    failures: [AtomicU64; FailureKind::ALL.len()],
    /// Upstream handshakes (TCP and upgrade), by latency.
    pub(crate) handshakes: Histogram,
}

impl Default for UpstreamFigures {
    fn default() -> Self {
        Self {
            active: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            failures: Default::default(),
            handshakes: Histogram::new(HANDSHAKE_BUCKETS),
        }
    }
}

/// One relay, counted as active and listed among the upstream's live connections until dropped.
#[derive(Debug)]
pub(crate) struct Active {
    upstream: Upstream,
    key: u64,
}

impl Drop for Active {
    fn drop(&mut self) {
        let inner = &self.upstream.inner;
        inner.figures.active.fetch_sub(1, Ordering::Relaxed);
        inner.live().remove(&self.key);
    }
}

impl Inner {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ConnectionHandle>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Upstream {
    /// Counts the relay of `client` as active, and lists it, for as long as the guard lives.
    pub(crate) fn track(&self, client: ConnectionHandle) -> Active {
        let inner = &self.inner;
        inner.figures.active.fetch_add(1, Ordering::Relaxed);
        let key = inner.next.fetch_add(1, Ordering::Relaxed);
        inner.live().insert(key, client);
        Active {
            upstream: self.clone(),
            key,
        }
    }

    /// The client connections relayed here now (to close them when a reload retires it).
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        self.inner.live().values().cloned().collect()
    }
}

impl UpstreamFigures {
    /// Counts an upstream opened after `took`.
    pub(crate) fn opened(&self, took: Duration) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.handshakes.observe(took.as_secs_f64());
    }

    /// Counts a failure to open.
    pub(crate) fn failed(&self, kind: FailureKind) {
        let at = FailureKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.failures[at].fetch_add(1, Ordering::Relaxed);
    }

    /// Relays open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Relays opened since start.
    pub fn total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Failures to open of `kind` since start.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        let at = FailureKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.failures[at].load(Ordering::Relaxed)
    }
}

/// A route of a proxy: the path prefix it covers and its upstream.
#[derive(Clone, Debug)]
pub struct RelayRoute {
    /// The path prefix (`/` for the fallback).
    pub prefix: String,
    /// Where its upgrades go.
    pub upstream: Upstream,
}

/// The upstreams a server relays to, by route, for `/metrics` and `GET /api/upstreams`: hand it
/// to the admin router as an `Extension`. A proxy that reloads its routes replaces them here;
/// upstreams with relays still open stay listed until the last ends.
#[derive(Clone, Debug, Default)]
pub struct Relays {
    routes: Arc<RwLock<Vec<RelayRoute>>>,
    /// Upstreams no route names any more whose relays are still draining.
    retired: Arc<RwLock<Vec<RelayRoute>>>,
}

impl Relays {
    /// Sets the routes; those that leave are kept as retired while relays remain on them.
    pub fn set(&self, routes: Vec<RelayRoute>) {
        let mut current = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *current, routes);
        let mut retired = self.retired.write().unwrap_or_else(|e| e.into_inner());
        retired.retain(|r| r.upstream.figures().active() > 0);
        for route in old {
            let kept = current.iter().any(|r| {
                r.prefix == route.prefix && Arc::ptr_eq(&r.upstream.inner, &route.upstream.inner)
            });
            if !kept {
                retired.push(route);
            }
        }
    }

    /// The routes now, then the retired ones with relays still open (flagged).
    pub fn list(&self) -> Vec<(RelayRoute, bool)> {
        let current = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        current
            .iter()
            .map(|r| (r.clone(), false))
            .chain(
                retired
                    .iter()
                    .filter(|r| r.upstream.figures().active() > 0)
                    .map(|r| (r.clone(), true)),
            )
            .collect()
    }
}

/// One route's row in `GET /api/upstreams`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteRow {
    route: String,
    upstream: String,
    /// Whether the route was removed or changed by a reload (its relays are draining).
    retired: bool,
    active_connections: u64,
    total_connections: u64,
    connect_failures: std::collections::BTreeMap<&'static str, u64>,
}

/// `GET /api/upstreams`'s answer.
#[derive(Debug, Serialize)]
struct UpstreamsAnswer {
    routes: Vec<RouteRow>,
}

/// `GET /api/upstreams`: per route and upstream, the relays open now and since start and the
/// failures to open by reason (`{"routes": [...]}`); an empty list without a [`Relays`].
pub async fn upstreams(relays: Option<Extension<Relays>>) -> Response {
    let rows: Vec<RouteRow> = relays
        .map(|Extension(r)| r.list())
        .unwrap_or_default()
        .into_iter()
        .map(|(route, retired)| {
            let figures = route.upstream.figures();
            RouteRow {
                route: route.prefix,
                upstream: route.upstream.name().to_owned(),
                retired,
                active_connections: figures.active(),
                total_connections: figures.total(),
                connect_failures: FailureKind::ALL
                    .iter()
                    .map(|k| (k.as_str(), figures.failures(*k)))
                    .collect(),
            }
        })
        .collect();
    Json(UpstreamsAnswer { routes: rows }).into_response()
}
