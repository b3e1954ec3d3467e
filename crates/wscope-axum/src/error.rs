//! One error type for every HTTP answer that is not a success: a status and a JSON body
//! `{"error": "..."}` naming the problem ([`wscope_core::wire::ErrorBody`]); the answer to an
//! upgrade that admission refused; and [`json_errors`], which gives a router's own bodiless 404
//! and 405 the same JSON body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::{Json, Router};
use tower_service::Service;
use wscope_core::wire::ErrorBody;
use wscope_core::{AdminFailure, AdminFailureKind, Refusal, RefusalKind};

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

impl From<AdminFailure> for ApiError {
    fn from(failure: AdminFailure) -> Self {
        let status = match failure.kind {
            AdminFailureKind::BadRequest => StatusCode::BAD_REQUEST,
            AdminFailureKind::NotFound => StatusCode::NOT_FOUND,
        };
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

impl UpgradeRefused {
    /// The status the refusal gets: 503 while the server cannot take more (shutting down, full,
    /// its rate table full), 429 for one client asking too much, 403 for a client not allowed,
    /// 400 for a request that is wrong.
    pub fn status(&self) -> StatusCode {
        match self.0.kind() {
            RefusalKind::TooManyFromAddress | RefusalKind::HandshakeRate => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RefusalKind::OriginNotAllowed | RefusalKind::Banned => StatusCode::FORBIDDEN,
            RefusalKind::InvalidHandshake | RefusalKind::InvalidLabels => StatusCode::BAD_REQUEST,
            // ShuttingDown, TooManyConnections, RateTableFull, and any kind added later: the
            // server cannot take the connection now.
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        let status = self.status();
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

/// `router` with a JSON body on its own answers for a path no route takes (404) and a method a
/// route does not take (405), as every other error of wscope's has: `{"error": "..."}` naming the
/// request, and for a 405 the methods of its `Allow` header, which it keeps. Answers that already
/// have a body (a handler's own 404) pass unchanged. The admin router has it; wrap a router of
/// your own the same way (after its layers: it must see the router's final answer, `Allow`
/// included, which axum adds outside every layer of a route).
///
/// ```
/// use axum::{routing::post, Router};
/// let app: Router = wscope_axum::json_errors(Router::new().route("/api/things", post(|| async { "made" })));
/// // GET /api/things → 405, Allow: POST, {"error":"GET /api/things: method not allowed; use POST"}
/// // GET /nothing    → 404, {"error":"no route for GET /nothing"}
/// ```
pub fn json_errors(router: Router) -> Router {
    // The router is finalized here (every handler made a route once, as `axum::serve` does):
    // behind the fallback it is opaque to whoever serves the outer one, and served as built it
    // would clone and box each handler and its layers on every request.
    Router::new().fallback_service(JsonErrors(router.with_state(())))
}

/// The service behind [`json_errors`]: the router, its answers looked at on the way out. Written
/// by hand rather than with `axum::middleware::from_fn`, which boxes each request's future (over
/// 1 KiB) and clones the next service into a box of its own.
#[derive(Clone)]
struct JsonErrors(Router);

impl Service<Request> for JsonErrors {
    type Response = Response;
    type Error = Infallible;
    type Future = JsonErrorsFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<Request>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: Request) -> JsonErrorsFuture {
        // Cheap to keep (a method is inline, a URI shares its bytes): only a 404 or 405 reads them.
        let asked = (request.method().clone(), request.uri().clone());
        JsonErrorsFuture {
            inner: self.0.call(request),
            asked: Some(asked),
        }
    }
}

/// The router's answer to a request, given a JSON body if it is one of the router's own.
struct JsonErrorsFuture {
    inner: RouteFuture<Infallible>,
    /// The request's method and URI, taken when the answer is ready.
    asked: Option<(Method, Uri)>,
}

impl Future for JsonErrorsFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(response) = ready!(Pin::new(&mut this.inner).poll(cx));
        Poll::Ready(Ok(match this.asked.take() {
            Some((method, uri)) => json_error_body(response, &method, &uri),
            // Polled again after it answered: nothing left to look at.
            None => response,
        }))
    }
}

/// `response` to `method` `uri`, with a JSON body if it is a bodiless 404 or 405.
fn json_error_body(response: Response, method: &Method, uri: &Uri) -> Response {
    let status = response.status();
    let bodiless = response.body().size_hint().exact() == Some(0)
        && !response.headers().contains_key(header::CONTENT_TYPE);
    if !bodiless {
        return response;
    }
    let path = uri.path();
    let message = match status {
        StatusCode::NOT_FOUND => format!("no route for {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .replace(',', ", ");
            format!("{method} {path}: method not allowed; use {allowed}")
        }
        _ => return response,
    };
    let mut json = ApiError::new(status, message).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        json.headers_mut().insert(header::ALLOW, allow.clone());
    }
    json
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wscope_core::{LabelError, MAX_TAGS};

    use super::*;

    fn status(refusal: Refusal) -> StatusCode {
        UpgradeRefused(refusal).status()
    }

    #[test]
    fn each_refusal_gets_its_status() {
        let wait = Duration::from_secs(3);
        assert_eq!(
            status(Refusal::ShuttingDown),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(Refusal::TooManyConnections { retry_after: wait }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(Refusal::RateTableFull { retry_after: wait }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(Refusal::TooManyFromAddress),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(Refusal::HandshakeRate { retry_after: wait }),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status(Refusal::OriginNotAllowed), StatusCode::FORBIDDEN);
        assert_eq!(status(Refusal::Banned), StatusCode::FORBIDDEN);
        assert_eq!(
            status(Refusal::InvalidHandshake("bad key")),
            StatusCode::BAD_REQUEST
        );
        let labels = Refusal::InvalidLabels(LabelError::TooManyTags { max: MAX_TAGS });
        assert_eq!(status(labels), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn each_admin_failure_kind_gets_its_status() {
        let failure = |kind| AdminFailure {
            kind,
            message: "m".to_owned(),
        };
        let bad = ApiError::from(failure(AdminFailureKind::BadRequest));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let missing = ApiError::from(failure(AdminFailureKind::NotFound));
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
    }
}
