//! The admin API (`GET /api/stats`, `POST /api/admin`, and the routes of `closed`,
//! `connections` and `stream`), the health check (`GET /health`) and the dashboard (`GET /`,
//! [`crate::dashboard`]), answering with the wire types of [`wscope_core::wire`]. Every admin
//! route is behind
//! [`admin_guard`](crate::admin_guard) (token, `Host`, `Origin`, `Content-Type`; see
//! [`AdminConfig`](crate::AdminConfig)).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use wscope_cluster::{Cluster, ClusterHealth};
use wscope_core::wire::{AdminRequest, Health, PublicHealth};
use wscope_core::{AdminAnswer, Registry};

use crate::admin_access::Authenticated;
use crate::error::ApiError;
use crate::json_body::json_response;
use crate::stats_query::StatsQuery;

/// `GET /api/stats`, `POST /api/admin`, `GET /api/closed`, `GET /api/connections` (and
/// `/api/connections/{id}`), `GET /api/stats/stream` (live, SSE), `GET /api/upstreams`,
/// `GET /health`, `GET /metrics`
/// (Prometheus; its observer is registered on `registry` once, however often this is built) and the
/// dashboard (`GET /` and its assets under `/dashboard/`) over `registry`, behind
/// [`admin_guard`](crate::admin_guard). Serve it on a listener that only operators reach
/// (wscope serve puts it on 127.0.0.1:9090); set a token and further allowed hosts with
/// `.layer(AdminConfig::new().token(..).layer())` ([`AdminConfig`](crate::AdminConfig)).
///
/// Behind a proxy, hand it the proxy's routes with `.layer(axum::Extension(relays))` (a
/// [`crate::relay::Relays`]): `GET /api/upstreams` and the `wscope_upstream_*` metrics read
/// them; without them `/api/upstreams` lists no route.
///
/// In cluster mode, hand it the node with `.layer(axum::Extension(cluster))` (a
/// [`wscope_cluster::Cluster`]): the cluster routes (`/api/cluster/*`), the health answer's
/// `cluster` state and the `wscope_cluster_*` metrics read it; without it the cluster routes
/// answer 404.
pub fn admin_router(registry: Registry) -> Router {
    let routes = Router::new()
        .route("/api/stats", get(stats))
        .route("/api/admin", post(admin))
        .route("/api/closed", get(crate::closed::closed))
        .route("/api/connections", get(crate::connections::connections))
        .route("/api/connections/{id}", get(crate::connections::connection))
        .route("/api/stats/stream", get(crate::stream::stats_stream))
        .route("/api/cluster/stats", get(crate::cluster::stats))
        .route("/api/cluster/connections", get(crate::cluster::connections))
        .route("/api/cluster/admin", post(crate::cluster::admin))
        .route("/api/upstreams", get(crate::relay::upstreams))
        .route("/health", get(health))
        .route("/metrics", crate::metrics::route(&registry))
        .route("/", get(crate::dashboard::index))
        .route("/dashboard/{digest}/{file}", get(crate::dashboard::asset))
        .with_state(registry);
    // The router's own 404 and 405 in JSON, as every other answer of the API; inside the guard,
    // which refuses first (an unknown path without the token is a 401, as any other).
    crate::error::json_errors(routes)
        .layer(axum::middleware::from_fn(crate::admin_access::admin_guard))
}

/// The public `GET /health` over `registry` ([`public_health`]), to merge into a public router.
pub fn health_router(registry: Registry) -> Router {
    health_router_at(registry, "/health")
}

/// [`health_router`] at another path (`wscope serve --health-path`), so that the public health
/// check need not take a path the application uses. `path` must start with `/`.
pub fn health_router_at(registry: Registry, path: &str) -> Router {
    Router::new()
        .route(path, get(public_health))
        .with_state(registry)
}

/// `GET /api/stats`: the full [`Snapshot`](wscope_core::Snapshot); `?connections=N` lists at
/// most the `N` oldest connections (`0`: none), for servers too large to list whole;
/// `?fields=age,remoteAddress` lists only those columns of each (and `id`), for scrapers that
/// need a few of them. Another parameter, an `N` that is not a whole number or an unknown field
/// is a 400 naming it.
///
/// The JSON is written straight from the registry into one presized buffer
/// ([`Registry::snapshot_json`]): byte for byte serde's, without building the snapshot's list.
pub async fn stats(
    State(registry): State<Registry>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = StatsQuery::read(query)?;
    let (max, fields) = (query.count(usize::MAX)?, query.fields()?);
    Ok(json_response(registry.stats_json(max, fields.as_ref())))
}

/// `GET /health`: 200 while serving, 503 once shutdown has begun (so a load balancer stops
/// sending new clients while the drain runs). Reads the O(1) summary. Behind a token
/// ([`AdminConfig::token`](crate::AdminConfig::token)), a request without it gets the public
/// fields only ([`public_health`]): a probe needs no token, the instance id (by default the host
/// name), the shutdown flag and the cluster state ([`ClusterHealth`], with the node handed to the
/// router as an extension) are for those who have it.
pub async fn health(State(registry): State<Registry>, extensions: Extensions) -> Response {
    if extensions
        .get::<Authenticated>()
        .is_some_and(|proved| !proved.0)
    {
        return public_health(State(registry)).await;
    }
    let health = ClusterHealth::new(
        Health::from_summary(&registry.summary()),
        extensions.get::<Cluster>(),
    );
    let status = if health.health.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// The public `GET /health`: as [`health`], with the reference's fields only
/// ([`PublicHealth`]): no instance id (by default the host name) for anyone who asks.
pub async fn public_health(State(registry): State<Registry>) -> Response {
    let health = PublicHealth::from_summary(&registry.summary());
    let status = if health.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// `POST /api/admin`: an [`AdminRequest`] (`{"action": "get_stats" | "close_all" | "close" | "close_matching" |
/// "cleanup" | "ban" | "unban" | "list_bans" | "kick" | "broadcast", ...}`), carried out by
/// [`Registry::apply`].
///
/// - `get_stats` → the [`Snapshot`](wscope_core::Snapshot);
/// - `close_all` with optional `code` (default 1000) and `reason` → [`CloseAllAnswer`](wscope_core::wire::CloseAllAnswer);
/// - `close` with `id` and optional `code`/`reason` → [`CloseAnswer`](wscope_core::wire::CloseAnswer), 404 if no such id
///   or its connection has ended;
/// - `close_matching` with `filter` (an object with at least one of `state`, `min_idle`, `ip`,
///   `ua`, `path`, `tag`, `user`) and optional `code` (default 1000)/`reason` →
///   [`CloseMatchingAnswer`](wscope_core::wire::CloseMatchingAnswer);
/// - `cleanup` → [`CleanupAnswer`](wscope_core::wire::CleanupAnswer);
/// - `ban` with `target` (IP or CIDR), `duration` (required) and optional `reason` →
///   [`BanAnswer`](wscope_core::wire::BanAnswer); `unban` with `target` → [`UnbanAnswer`](wscope_core::wire::UnbanAnswer); `list_bans` → [`BansAnswer`](wscope_core::wire::BansAnswer);
/// - `kick` with `target` and optional `code` (default 1008) and `reason` (default "kicked") →
///   [`KickAnswer`](wscope_core::wire::KickAnswer);
/// - `broadcast` with `text` or `binary` (base64) and at most one target — `path`, `id` (404 as
///   for `close`), `user` or `filter` (as `close_matching`'s); none sends to every open
///   connection → [`BroadcastAnswer`](wscope_core::wire::BroadcastAnswer).
///
/// - `reload` → [`ReloadAnswer`](crate::ReloadAnswer), on a server that handed the router a
///   [`ReloadHook`](crate::ReloadHook) (`wscope proxy`: its routes reread); elsewhere a 400.
///
/// A malformed body, an unknown action (the answer lists the valid ones) or a bad field is a 400
/// naming the problem.
pub async fn admin(
    State(registry): State<Registry>,
    hook: Option<axum::Extension<crate::reload::ReloadHook>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if crate::reload::is_reload(&body) {
        return Ok(crate::reload::reload(
            hook.as_ref().map(|axum::Extension(h)| h),
        ));
    }
    let request =
        AdminRequest::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    match registry.apply(request) {
        Ok(AdminAnswer::Stats(snapshot)) => {
            let mut body = Vec::new();
            snapshot.write_json(&mut body);
            Ok(json_response(body))
        }
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(failure) => Err(ApiError::from(failure)),
    }
}
