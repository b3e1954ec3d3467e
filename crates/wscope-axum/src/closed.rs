//! `GET /api/closed?limit=N`: the recently closed connections (newest first) with who closed
//! them, the code and reason, how long they lived and what they moved.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use wscope_core::wire::ClosedList;
use wscope_core::Registry;

use crate::error::ApiError;

/// The query of `GET /api/closed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosedQuery {
    /// Most entries to answer (default: all kept).
    pub limit: Option<String>,
}

/// `GET /api/closed`: [`ClosedList`]; a `limit` that is not a whole number ≥ 1 is a 400 naming it.
pub async fn closed(
    State(registry): State<Registry>,
    query: Result<Query<ClosedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let limit = query
        .limit
        .map(|l| {
            wscope_core::units::parse_count(&l)
                .map_err(|e| ApiError::bad_request(format!("limit: {e}")))
        })
        .transpose()?;
    let list = ClosedList::new(
        registry.recently_closed_count(),
        registry.recently_closed(limit),
    );
    Ok(Json(list).into_response())
}
