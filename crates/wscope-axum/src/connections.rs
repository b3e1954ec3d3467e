//! `GET /api/connections` (one page of the connections: filtered, sorted, paged, with chosen
//! columns) and `GET /api/connections/{id}` (one connection). The query model and its answer are
//! the core's ([`ConnectionQuery`],
//! [`ConnectionPage`](wscope_core::wire::ConnectionPage)); this file only adapts them to HTTP.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wscope_core::query::ConnectionQuery;
use wscope_core::Registry;

use crate::error::ApiError;
use crate::json_body::json_response;

/// `GET /api/connections?limit=&cursor=|offset=&sort=&order=&fields=&state=&min_idle=&ip=&ua=&path=&tag=&user=&upstream=`:
/// a [`ConnectionPage`](wscope_core::wire::ConnectionPage) (`{"total", "connections", "next"}`).
/// A parameter that is unknown, repeated or does not parse is a 400 whose `error` starts with
/// its name (`"sort: ..."`).
///
/// The JSON is written straight from the registry ([`Registry::connections_json`]): serde's
/// bytes, rows cut by `fields` included, without a row or a map built per connection.
pub async fn connections(
    State(registry): State<Registry>,
    pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) =
        pairs.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let query =
        ConnectionQuery::from_pairs(pairs).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(json_response(registry.connections_json(&query)))
}

/// `GET /api/connections/{id}`: the connection as the stats list it, or 404.
pub async fn connection(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    registry
        .connection_info(&id)
        .map(|info| Json(info).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no connection with id {id:?}"),
            )
        })
}
