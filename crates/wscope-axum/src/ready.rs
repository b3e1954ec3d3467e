//! `GET /ready` for load balancers: 200 while serving, 503 from the moment a drain begins, so no
//! new client is sent here while the connections already here are closed at the drain's pace.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wscope_core::wire::Ready;
use wscope_core::Registry;

/// `GET /ready` over `registry`, to merge into the public router.
pub fn ready_router(registry: Registry) -> Router {
    ready_router_at(registry, "/ready")
}

/// [`ready_router`] at another path (`wscope serve --ready-path`). `path` must start with `/`.
pub fn ready_router_at(registry: Registry, path: &str) -> Router {
    Router::new().route(path, get(ready)).with_state(registry)
}

/// `GET /ready`: `{"ready":true}` (200) while serving, `{"ready":false}` (503) once shutdown began.
pub async fn ready(State(registry): State<Registry>) -> Response {
    let ready = !registry.is_shut_down();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Ready::new(ready))).into_response()
}
