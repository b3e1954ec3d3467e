//! The admin API (`GET /api/stats`, `POST /api/admin`) and the health check (`GET /health`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use wscope_core::{CloseCode, Registry, Snapshot};

use crate::error::ApiError;

/// `GET /api/stats`, `POST /api/admin` and `GET /health` over `registry`. Serve it on a listener
/// that only operators reach (wscope serve puts it on 127.0.0.1:9090).
pub fn admin_router(registry: Registry) -> Router {
    Router::new()
        .route("/api/stats", get(stats))
        .route("/api/admin", post(admin))
        .route("/health", get(health))
        .with_state(registry)
}

/// `GET /health` over `registry`, to merge into a public router.
pub fn health_router(registry: Registry) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(registry)
}

/// `GET /api/stats`: the full [`Snapshot`].
pub async fn stats(State(registry): State<Registry>) -> Response {
    snapshot_response(&registry.snapshot())
}

/// The snapshot as a JSON response, written into one buffer sized for it up front: at 10k
/// connections the body is ~2.3 MB, and growing a buffer by doubling (as `Json` does) costs
/// more than the serialization itself.
fn snapshot_response(snapshot: &Snapshot) -> Response {
    /// A little more than one connection's JSON takes, so the buffer never regrows.
    const PER_CONNECTION: usize = 320;
    let mut body = Vec::with_capacity(1024 + snapshot.connections.len() * PER_CONNECTION);
    match serde_json::to_writer(&mut body, snapshot) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The health check: the reference's fields plus the instance id and the shutdown flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `"healthy"`, or `"shutting_down"` once a drain has begun.
    pub status: String,
    /// Connections tracked now.
    pub active_connections: u64,
    /// Mean connection age in whole seconds (rounded).
    pub average_age: u64,
    /// Seconds since the registry started.
    pub uptime: f64,
    /// The instance id.
    pub instance_id: String,
    /// Whether the registry is shut down (refusing upgrades).
    pub shut_down: bool,
}

/// `GET /health`: 200 while serving, 503 once shutdown has begun (so a load balancer stops
/// sending new clients while the drain runs).
pub async fn health(State(registry): State<Registry>) -> Response {
    let s = registry.summary();
    let health = Health {
        status: if s.shut_down {
            "shutting_down"
        } else {
            "healthy"
        }
        .to_owned(),
        active_connections: s.total_connections,
        average_age: (s.average_age + 500) / 1000,
        uptime: s.uptime as f64 / 1000.0,
        instance_id: s.instance_id,
        shut_down: s.shut_down,
    };
    let status = if health.shut_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

/// A `POST /api/admin` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminRequest {
    action: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// `POST /api/admin`: `{"action": "get_stats" | "close_all" | "close" | "cleanup", ...}`.
///
/// - `get_stats` → the [`Snapshot`];
/// - `close_all` with optional `code` (default 1000) and `reason` → `{"success":true,"closed":N}`;
/// - `close` with `id` and optional `code`/`reason` → `{"success":true}`, 404 if no such id;
/// - `cleanup` → `{"cleaned":N}`.
pub async fn admin(State(registry): State<Registry>, body: Bytes) -> Result<Response, ApiError> {
    let req: AdminRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))?;
    let code = match req.code {
        None => CloseCode::NORMAL,
        Some(c) => u16::try_from(c)
            .ok()
            .and_then(|c| CloseCode::new(c).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid close code {c}: use 1000-1003, 1007-1014 or 3000-4999"
                ))
            })?,
    };
    let reason = req.reason.unwrap_or_default();
    let bad_reason = |e: wscope_core::ReasonTooLong| ApiError::bad_request(e.to_string());
    let json = |v: serde_json::Value| Json(v).into_response();
    match req.action.as_str() {
        "get_stats" => Ok(snapshot_response(&registry.snapshot())),
        "close_all" => {
            let closed = registry.close_all(code, &reason).map_err(bad_reason)?;
            Ok(json(
                serde_json::json!({ "success": true, "closed": closed }),
            ))
        }
        "close" => {
            let id = req
                .id
                .ok_or_else(|| ApiError::bad_request("action \"close\" needs an \"id\""))?;
            if registry.connection(&id).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no connection with id {id:?}"),
                ));
            }
            let closed = registry.close(&id, code, &reason).map_err(bad_reason)?;
            Ok(json(serde_json::json!({ "success": closed })))
        }
        "cleanup" => {
            let cleaned = registry.cleanup_stale();
            Ok(json(serde_json::json!({ "cleaned": cleaned })))
        }
        other => Err(ApiError::bad_request(format!(
            "unknown action {other:?}: use get_stats, close_all, close or cleanup"
        ))),
    }
}
