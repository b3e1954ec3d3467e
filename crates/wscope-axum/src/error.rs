//! One error type for every HTTP answer that is not a success: a status and a JSON body
//! `{"error": "..."}` naming the problem ([`wscope_core::wire::ErrorBody`]); and the answer to an
//! upgrade that admission refused.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use wscope_core::wire::ErrorBody;
use wscope_core::Refusal;

/// An HTTP error with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The status sent.
    pub status: StatusCode,
    /// What went wrong, for the `error` field.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<wscope_core::AdminFailure> for ApiError {
    fn from(failure: wscope_core::AdminFailure) -> Self {
        let status =
            StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, failure.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// An upgrade refused at admission: the refusal's status, `Retry-After` where waiting helps, and
/// a JSON body naming the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRefused(pub Refusal);

impl IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut response = ApiError::new(status, self.0.to_string()).into_response();
        if let Some(wait) = self.0.retry_after() {
            // Whole seconds, rounded up: a client must not come back early.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
