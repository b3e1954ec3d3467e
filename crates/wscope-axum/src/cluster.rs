//! The cluster admin API on every instance's admin listener: `GET /api/cluster/stats`,
//! `GET /api/cluster/connections` and `POST /api/cluster/admin`. The surveys behind them are the
//! cluster crate's ([`wscope_cluster::Cluster`]); this file adapts them to HTTP. The node is
//! handed to the admin router as an [`Extension`] (`admin_router(registry).layer(Extension(cluster))`):
//! the registry does not know its cluster.
//!
//! Without cluster mode (no such extension) each answers 404 naming how to turn it on; while the instance is not a
//! connected member (engine unreachable, instance id refused, shutting down) each answers 503
//! with `{"error": ..., "cluster": "<state>"}`.

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use wscope_cluster::{Cluster, ClusterError, ClusterState};
use wscope_core::query::ConnectionQuery;
use wscope_core::wire::{AdminRequest, ErrorBody};

use crate::error::ApiError;
use crate::json_body::json_response;
use crate::stats_query::StatsQuery;

/// A cluster endpoint's failure: 404 without cluster mode, 503 while not connected.
fn cluster_of(cluster: Option<Extension<Cluster>>) -> Result<Cluster, ApiError> {
    cluster.map(|Extension(c)| c).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "cluster mode is off: start wscope serve with --redis-url (or join the registry to a \
             cluster with wscope_cluster::Cluster::join and give the admin router the node)",
        )
    })
}

/// A 503's body while the instance is not a connected member: the error and the node's state.
#[derive(Debug, Serialize)]
struct UnavailableBody {
    error: String,
    cluster: ClusterState,
}

/// The body of a failure of an action routed to one member: its error, and which member.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RoutedFailureBody<'a> {
    error: String,
    instance_id: &'a str,
}

/// The body of a 504: the routed action's member did not answer in time.
#[derive(Debug, Serialize)]
struct UnansweredBody<'a> {
    error: String,
    unanswered: &'a [String],
}

fn failure(error: ClusterError) -> Response {
    match error {
        ClusterError::Unavailable { state, .. } => {
            let body = UnavailableBody {
                error: error.to_string(),
                cluster: state,
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        ClusterError::BadQuery(message) => ApiError::bad_request(message).into_response(),
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(ErrorBody {
                error: other.to_string(),
            }),
        )
            .into_response(),
    }
}

/// `GET /api/cluster/stats[?connections=N&fields=…]`: a
/// [`ClusterStats`](wscope_cluster::ClusterStats) — the reference's `ConnectionStats`
/// summed over the members that answered the survey, weighted averages, and an `instances` table
/// (live, late and gone members; those that did not answer in time are also named in
/// `unanswered`). Its `connections` list is empty unless `connections=N` asks for the N oldest
/// across members (at most 10,000), each with only the columns `fields` names, if given.
pub async fn stats(
    cluster: Option<Extension<Cluster>>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let cluster = match cluster_of(cluster) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let read = StatsQuery::read(query)
        .and_then(|q| Ok((q.count(ConnectionQuery::MAX_LIMIT)?, q.fields()?)));
    let (listed, fields) = match read {
        Ok((n, fields)) => (n.unwrap_or(0), fields),
        Err(e) => return e.into_response(),
    };
    let mut stats = match cluster.stats().await {
        Ok(stats) => stats,
        Err(e) => return failure(e),
    };
    if listed > 0 {
        let limit = listed.to_string();
        let query = match ConnectionQuery::from_pairs([("limit", limit.as_str())]) {
            Ok(q) => q,
            Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
        };
        match cluster.connections(&query).await {
            Ok(page) => stats.connections = page.connections,
            Err(e) => return failure(e),
        }
    }
    let Some(fields) = fields else {
        return Json(stats).into_response();
    };
    // Rows cut to the fields asked for, as `GET /api/cluster/connections?fields=` cuts them. The
    // rest goes through a JSON value, as it always has with `fields`: its keys in name order.
    let rows = std::mem::take(&mut stats.connections);
    answer(serde_json::to_value(&stats).and_then(|envelope| {
        write_object_with_rows(&envelope, |out| fields.write_rows(&rows, out))
    }))
}

/// `envelope`, a JSON object, written as serde writes it, with the value of its
/// `connections` key written by `rows`.
fn write_object_with_rows(
    envelope: &Value,
    rows: impl FnOnce(&mut Vec<u8>),
) -> serde_json::Result<Vec<u8>> {
    let Value::Object(map) = envelope else {
        return Err(serde::ser::Error::custom("the answer is not a JSON object"));
    };
    let mut rows = Some(rows);
    let mut out = vec![b'{'];
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key)?;
        out.push(b':');
        match rows.take_if(|_| key == "connections") {
            Some(rows) => rows(&mut out),
            None => serde_json::to_writer(&mut out, value)?,
        }
    }
    out.push(b'}');
    Ok(out)
}

/// `body` as the JSON answer, or a 500 naming what could not be written.
fn answer(body: serde_json::Result<Vec<u8>>) -> Response {
    match body {
        Ok(body) => json_response(body),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/cluster/connections`: a [`ClusterPage`](wscope_cluster::ClusterPage) — the
/// same query parameters as `GET /api/connections`, over every member. Pages follow the merged
/// order by position: pass the previous answer's `next` as `cursor` (or give `offset`);
/// `offset + limit` reaches at most 10,000 rows deep. `instances` gives each member's matching
/// count, `unanswered` the members that missed the survey's deadline.
pub async fn connections(
    cluster: Option<Extension<Cluster>>,
    pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let cluster = match cluster_of(cluster) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let query = match parse_query(pairs) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match cluster.connections(&query).await {
        Ok(page) => match &query.fields {
            None => Json(page).into_response(),
            Some(fields) => {
                answer(page.write_json_with(|out| fields.write_rows(&page.connections, out)))
            }
        },
        Err(e) => failure(e),
    }
}

/// The single-instance query, with the cluster's positional `cursor` read as an offset.
fn parse_query(
    pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<ConnectionQuery, ApiError> {
    let Query(pairs) =
        pairs.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let mut mapped = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key == "cursor" {
            if value.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "cursor: invalid cluster cursor {value:?}: pass the previous page's `next` \
                     unchanged"
                )));
            }
            mapped.push(("offset".to_owned(), value));
        } else {
            mapped.push((key, value));
        }
    }
    let query =
        ConnectionQuery::from_pairs(mapped).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let depth = match query.start {
        wscope_core::query::Start::Offset(n) => n.saturating_add(query.limit as u64),
        _ => query.limit as u64,
    };
    if depth > wscope_cluster::MAX_CLUSTER_DEPTH as u64 {
        return Err(ApiError::bad_request(format!(
            "offset: the cluster listing reaches {} rows deep (offset + limit); narrow the \
             filter",
            wscope_cluster::MAX_CLUSTER_DEPTH
        )));
    }
    Ok(query)
}

/// `POST /api/cluster/admin`: the same actions as `POST /api/admin`, carried out on every member
/// (`close` by id and `broadcast` to an `id`: on the member that holds it, 404 if no live member
/// does), answered with a
/// [`ClusterAdminAnswer`](wscope_cluster::ClusterAdminAnswer): one row per member with the
/// status and answer its own `/api/admin` would have given, sums of `closed` and `sent`, and
/// the members that did not answer in time.
///
/// An action on one id goes to one member and is answered as that member's `/api/admin` answers
/// when it fails: its status (404 for an id it does not hold) and `{"error": ...}`, with its
/// `instanceId`; 504 `{"error": ...}` if it does not answer within `--cluster-timeout`.
pub async fn admin(cluster: Option<Extension<Cluster>>, body: Bytes) -> Response {
    let cluster = match cluster_of(cluster) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let request = match AdminRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    if let Some(id) = request.connection_id() {
        if cluster.state() == ClusterState::Connected && cluster.holder_of(id).is_none() {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no live member of cluster {:?} holds connection {id:?}",
                    cluster.name()
                ),
            )
            .into_response();
        }
    }
    let routed = request.connection_id().is_some();
    match cluster.admin(request).await {
        Ok(answer) if routed => routed_answer(&cluster, answer),
        Ok(answer) => Json(answer).into_response(),
        Err(e) => failure(e),
    }
}

/// The answer to an action routed to one member: its failure as its own `/api/admin` would
/// answer it, a 504 if it did not answer, else the usual per-member answer.
fn routed_answer(cluster: &Cluster, answer: wscope_cluster::ClusterAdminAnswer) -> Response {
    if let [row] = answer.instances.as_slice() {
        if row.status == 200 {
            return Json(answer).into_response();
        }
        let status = StatusCode::from_u16(row.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let error = row.answer.error().map_or_else(
            || format!("instance {} answered {}", row.instance_id, row.status),
            str::to_owned,
        );
        let body = RoutedFailureBody {
            error,
            instance_id: &row.instance_id,
        };
        return (status, Json(body)).into_response();
    }
    if let Some(silent) = answer.unanswered.first() {
        let body = UnansweredBody {
            error: format!(
                "instance {silent} did not answer within {:?}: whether the connection was closed \
                 is unknown",
                cluster.config().survey_timeout
            ),
            unanswered: &answer.unanswered,
        };
        return (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response();
    }
    Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object written around the rows is serde's, byte for byte: keys in the map's order,
    /// escaped, the rows where `connections` was.
    #[test]
    fn an_object_written_with_its_rows_is_serde_object() {
        let rows = serde_json::json!([{"id": "a\"", "state": "open"}, {"id": "b"}]);
        let mut whole = serde_json::json!({
            "cluster": "c\\",
            "connections": rows,
            "zeta": {"x": [1, 2]},
            "alpha": null,
        });
        let mut envelope = whole.clone();
        envelope["connections"] = serde_json::json!([]);
        let mine = write_object_with_rows(&envelope, |out| {
            serde_json::to_writer(out, &rows).unwrap();
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(mine).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
        whole = serde_json::json!([1]);
        assert!(write_object_with_rows(&whole, |_| ()).is_err());
    }
}
