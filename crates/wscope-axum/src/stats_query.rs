//! [`StatsQuery`]: the query of `GET /api/stats` and `GET /api/cluster/stats`, and the one
//! parser of their `connections=N` and `fields=`.

use axum::extract::Query;
use serde::Deserialize;
use wscope_core::query::Fields;

use crate::error::ApiError;

/// The query of `GET /api/stats` and `GET /api/cluster/stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Most connections listed (the oldest first): `0` lists none (the O(1) summary); absent,
    /// every connection is listed, as the reference does (the cluster's stats list none).
    pub connections: Option<String>,
    /// The columns of each listed connection, comma-separated JSON names of a row
    /// (`age,idleTime,remoteAddress`), as `GET /api/connections?fields=` takes them; `id` is
    /// always there. Absent, every field.
    pub fields: Option<String>,
}

impl StatsQuery {
    /// The query of a request, or a 400 naming what is wrong with it.
    pub(crate) fn read(
        query: Result<Query<Self>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Self, ApiError> {
        query
            .map(|Query(q)| q)
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
    }

    /// `fields=…`, if given, else a 400 naming the unknown field (and the known ones).
    pub(crate) fn fields(&self) -> Result<Option<Fields>, ApiError> {
        self.fields
            .as_deref()
            .map(|raw| {
                raw.parse::<Fields>()
                    .map_err(|e| ApiError::bad_request(format!("fields: {e}")))
            })
            .transpose()
    }

    /// `connections=N`, if given: a whole number of at most `max`, else a 400 naming it.
    pub(crate) fn count(&self, max: usize) -> Result<Option<usize>, ApiError> {
        let Some(raw) = &self.connections else {
            return Ok(None);
        };
        match raw.trim().parse::<usize>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => {
                let range = if max == usize::MAX {
                    String::new()
                } else {
                    format!(" from 0 to {max}")
                };
                Err(ApiError::bad_request(format!(
                    "connections: invalid count {raw:?}: use a whole number{range} (0 lists none)"
                )))
            }
        }
    }
}
