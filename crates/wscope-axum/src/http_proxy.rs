//! The plain-HTTP half of a reverse proxy: [`HttpProxy`] forwards any request that is not a
//! WebSocket upgrade to an upstream, bodies streamed both ways, over a keep-alive pool of
//! connections per upstream; failures answer as wscope's JSON errors (502, 504).
//!
//! ```no_run
//! use axum::{extract::Request, http::Uri, Router};
//! use wscope_axum::{serve, Forwarding, HttpProxy, HttpProxyConfig, ServeOptions};
//!
//! # async fn run() -> std::io::Result<()> {
//! let proxy = HttpProxy::new(HttpProxyConfig::default());
//! let upstream = Uri::from_static("http://127.0.0.1:3000");
//! let app = Router::new().fallback(move |request: Request| async move {
//!     let fwd = Forwarding { client: None, proto: "http" };
//!     proxy.forward(request, &upstream, &fwd).await
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, app, ServeOptions::default()).await
//! # }
//! ```

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::{Authority, Uri};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ApiError;
use crate::forward::{forward_headers, strip_hop_by_hop, Forwarding};
use crate::proxy_deadline::{within, Progress};

/// How an [`HttpProxy`] talks to its upstreams.
///
/// ```
/// use std::time::Duration;
/// use wscope_axum::HttpProxyConfig;
///
/// let config = HttpProxyConfig { timeout: Duration::from_secs(5), ..Default::default() };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProxyConfig {
    /// How long the upstream may take to send its response head, connecting included; past it
    /// the client gets 504. It counts from the request, and again from each chunk of the
    /// request body the upstream takes, so a long upload is not cut off while it moves. The
    /// body of the answer has no deadline (server-sent events, long downloads). A
    /// long-polling upstream holds its head back until it answers: keep this above its
    /// longest poll.
    pub timeout: Duration,
    /// How long a pooled keep-alive connection may stay idle before it is closed.
    pub pool_idle_timeout: Duration,
    /// The most idle connections kept per upstream.
    pub pool_max_idle_per_host: usize,
}

impl HttpProxyConfig {
    /// The default [`HttpProxyConfig::timeout`]: 60 s, as nginx's `proxy_read_timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default [`HttpProxyConfig::pool_idle_timeout`]: 90 s.
    pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// The default [`HttpProxyConfig::pool_max_idle_per_host`].
    pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 32;
}

impl Default for HttpProxyConfig {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            pool_idle_timeout: Self::DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: Self::DEFAULT_POOL_MAX_IDLE_PER_HOST,
        }
    }
}

/// The connector the pool dials upstreams with: TCP, and TLS for `https://` upstreams when the
/// proxy was given a client configuration ([`HttpProxy::with_tls`]).
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A reverse proxy for plain HTTP requests: one keep-alive pool shared by every clone (cheap:
/// an `Arc` inside).
#[derive(Debug, Clone)]
pub struct HttpProxy {
    inner: Arc<Inner>,
}

/// What every clone of an [`HttpProxy`] shares.
#[derive(Debug)]
struct Inner {
    client: Client<Connector, Body>,
    timeout: Duration,
    /// Whether `https://` upstreams can be dialled.
    tls: bool,
}

impl HttpProxy {
    /// A proxy with `config`; it connects to nothing until a request comes.
    pub fn new(config: HttpProxyConfig) -> Self {
        Self::build(config, None)
    }

    /// A proxy with `config` that also dials `https://` upstreams, checking their certificates
    /// with `tls` ([`crate::tls::client_config`]: the system's roots or one CA bundle).
    pub fn with_tls(config: HttpProxyConfig, tls: Arc<rustls::ClientConfig>) -> Self {
        Self::build(config, Some(tls))
    }

    fn build(config: HttpProxyConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        // `https://` needs a client configuration; without one such upstreams are refused
        // before they are dialled (`check_scheme`), and this one, trusting nothing, is unused.
        let enabled = tls.is_some();
        let mut tls = tls.map_or_else(crate::tls::trusting_nothing, |c| (*c).clone());
        // The connector offers the protocols it speaks itself (HTTP/1.1), and refuses a
        // configuration that offers some already.
        tls.alpn_protocols.clear();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                client,
                timeout: config.timeout,
                tls: enabled,
            }),
        }
    }

    /// Forwards `req` to `upstream` (a base such as `http://127.0.0.1:3000`, or with a path
    /// prefix, `http://app:3000/prefix`, prepended to the request's path) and returns the
    /// upstream's answer. The method, path, query and body go as they came, the body streamed;
    /// the headers through [`forward_headers`] with `fwd`, and `Host` the upstream's. The
    /// answer streams back with its hop-by-hop headers stripped ([`strip_hop_by_hop`]). A
    /// non-WebSocket `Upgrade` (h2c, …) goes as a plain request, its `Upgrade` dropped.
    ///
    /// Failures are JSON errors (`{"error": "..."}`): an upstream that cannot be reached
    /// (refused, unresolved) gets 502 `upstream unreachable: …`; no response head within
    /// [`HttpProxyConfig::timeout`] (of the request, or of the last chunk of its body the
    /// upstream took), 504 `upstream timed out after …`; any other failure of
    /// the exchange, or an upstream that is not `http://`, 502.
    pub async fn forward(&self, req: Request, upstream: &Uri, fwd: &Forwarding<'_>) -> Response {
        match self.try_forward(req, upstream, fwd).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%upstream, %error, "proxied request failed");
                ApiError::from(error).into_response()
            }
        }
    }

    /// [`HttpProxy::forward`], its failures as [`UpstreamError`].
    async fn try_forward(
        &self,
        req: Request,
        upstream: &Uri,
        fwd: &Forwarding<'_>,
    ) -> Result<Response, UpstreamError> {
        let progress = Progress::new();
        let request =
            upstream_request(req, upstream, fwd, self.inner.tls)?.map(|body| progress.watch(body));
        let timeout = self.inner.timeout;
        let response = within(self.inner.client.request(request), timeout, &progress)
            .await
            .ok_or(UpstreamError::TimedOut(timeout))?
            .map_err(|e| UpstreamError::from_client(&e))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The upstream's URI cannot be proxied to (a scheme not supported, no authority).
    #[error("{0}")]
    Unsupported(String),
    /// No connection could be made (refused, unresolved, unroutable).
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No response head came within the timeout.
    #[error("upstream timed out after {}", human(*.0))]
    TimedOut(Duration),
    /// The exchange failed after connecting (the upstream hung up, sent no HTTP, …).
    #[error("upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    /// The failure of the pool's client, sorted: a failure to connect, or any other.
    fn from_client(error: &hyper_util::client::legacy::Error) -> Self {
        // The client's own text is only its kind ("client error (Connect)"): what happened is
        // in the chain below it.
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let detail = if causes.is_empty() {
            error.to_string()
        } else {
            causes.join(": ")
        };
        if error.is_connect() {
            Self::Unreachable(detail)
        } else {
            Self::Failed(detail)
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        let status = match error {
            UpstreamError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, error.to_string())
    }
}

/// The request to send `upstream` for `req`: its URI rebased, its headers forwarded, `Host`
/// the upstream's, HTTP/1.1 (the pool's protocol, whatever the client spoke).
fn upstream_request(
    req: Request,
    upstream: &Uri,
    fwd: &Forwarding<'_>,
    tls: bool,
) -> Result<Request, UpstreamError> {
    let authority = check_scheme(upstream, tls)?;
    let uri = target_uri(upstream, authority, req.uri())?;
    let host = host_value(authority)?;
    let (parts, body) = req.into_parts();
    let mut headers = forward_headers(&parts.headers, fwd);
    headers.insert(header::HOST, host);
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The authority of `upstream` if the pool can dial it: `http://`, and `https://` when the
/// proxy has a TLS client configuration (`tls`).
fn check_scheme(upstream: &Uri, tls: bool) -> Result<&Authority, UpstreamError> {
    let unsupported = |why: String| Err(UpstreamError::Unsupported(why));
    match upstream.scheme_str() {
        Some("http") => {}
        Some("https") if tls => {}
        Some("https") => {
            return unsupported(format!(
                "upstream {upstream}: https upstreams need a TLS client configuration \
                 (HttpProxy::with_tls)"
            ))
        }
        Some(other) => {
            return unsupported(format!("upstream {upstream}: scheme {other} is not http"))
        }
        None => return unsupported(format!("upstream {upstream} has no scheme (http://…)")),
    }
    match upstream.authority() {
        Some(authority) => Ok(authority),
        None => unsupported(format!("upstream {upstream} has no host")),
    }
}

/// `request`'s path and query on `base`: `base`'s path is a prefix (its trailing `/` not
/// doubled); a query of `base`'s own is not kept.
fn target_uri(base: &Uri, authority: &Authority, request: &Uri) -> Result<Uri, UpstreamError> {
    let prefix = base.path().trim_end_matches('/');
    let path = request.path();
    let query = request.query();
    let mut target =
        String::with_capacity(prefix.len() + path.len() + 2 + query.map_or(0, str::len));
    target.push_str(prefix);
    if !path.starts_with('/') {
        target.push('/');
    }
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(authority.clone())
        .path_and_query(target)
        .build()
        .map_err(|e| UpstreamError::Unsupported(format!("upstream {base}: {e}")))
}

/// The `Host` header for `authority`: host and port, without any user information.
fn host_value(authority: &Authority) -> Result<HeaderValue, UpstreamError> {
    let host = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    HeaderValue::from_str(&host)
        .map_err(|e| UpstreamError::Unsupported(format!("upstream host {host}: {e}")))
}

/// `duration` as people write it: `5s`, `300ms`, `1500ms`.
fn human(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{duration:?}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn target(base: &str, request: &str) -> String {
        let base: Uri = base.parse().unwrap();
        let authority = check_scheme(&base, false).unwrap();
        target_uri(&base, authority, &request.parse().unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_request_path_and_query_go_on_the_base() {
        assert_eq!(
            target("http://127.0.0.1:3000", "/a/b?x=1&y=2"),
            "http://127.0.0.1:3000/a/b?x=1&y=2"
        );
        assert_eq!(target("http://app:3000/", "/"), "http://app:3000/");
        assert_eq!(target("http://app/prefix", "/a?q"), "http://app/prefix/a?q");
        assert_eq!(target("http://app/prefix/", "/a"), "http://app/prefix/a");
        assert_eq!(target("http://app/p?base=1", "/a"), "http://app/p/a");
    }

    #[test]
    fn only_http_upstreams_are_dialled() {
        let refused = |uri: &str| {
            check_scheme(&uri.parse().unwrap(), false)
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused("https://app:443").contains("https upstreams need a TLS client configuration")
        );
        assert!(check_scheme(&"https://app:443".parse().unwrap(), true).is_ok());
        assert!(refused("ftp://app").contains("scheme ftp is not http"));
        assert!(refused("/just/a/path").contains("has no scheme"));
    }

    #[test]
    fn host_is_the_upstreams_authority_without_user_information() {
        let host = |uri: &str| {
            let uri: Uri = uri.parse().unwrap();
            host_value(uri.authority().unwrap()).unwrap()
        };
        assert_eq!(host("http://user:pw@app:3000/x"), "app:3000");
        assert_eq!(host("http://[::1]:8080"), "[::1]:8080");
        assert_eq!(host("http://app"), "app");
    }

    #[test]
    fn errors_get_their_status_and_message() {
        let timed_out = ApiError::from(UpstreamError::TimedOut(Duration::from_secs(5)));
        assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timed_out.message, "upstream timed out after 5s");
        let unreachable = ApiError::from(UpstreamError::Unreachable("refused".into()));
        assert_eq!(unreachable.status, StatusCode::BAD_GATEWAY);
        assert_eq!(unreachable.message, "upstream unreachable: refused");
        let failed = ApiError::from(UpstreamError::Failed("hung up".into()));
        assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
        let unsupported = ApiError::from(UpstreamError::Unsupported("https".into()));
        assert_eq!(unsupported.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_micros(1500)), "1.5ms");
    }
}
