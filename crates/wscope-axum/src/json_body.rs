//! A JSON body the core already wrote (the stats, a page of connections, the cluster's page),
//! as a response: the bytes as they are, with `Content-Type: application/json`. The admin,
//! connections and cluster routes all answer through it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// `body`, JSON already, as the response.
pub(crate) fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
