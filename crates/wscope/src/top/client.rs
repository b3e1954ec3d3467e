//! The admin API as `wscope top` reads it: plain HTTP/1.1 GETs over hyper with the bearer token,
//! JSON answers read as `wscope_core::wire` types, and the live stream read as it arrives. Each
//! error is one line that says what to do.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wscope_core::wire::ErrorBody;

use super::sse::{SseEvent, SseParser};

/// How long connecting and reading a response head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JSON answer read (a page of connections is far smaller).
const MAX_BODY: usize = 16 << 20;

/// Why a request to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `--admin-url` is not an `http://host:port` URL.
    #[error("--admin-url {url:?}: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// No TCP connection, or no answer in time.
    #[error("cannot reach the admin API at {url}: {why}")]
    Unreachable {
        /// The admin URL.
        url: String,
        /// The I/O error or timeout.
        why: String,
    },
    /// 401: no token, or the wrong one.
    #[error("the admin API at {url} refused the token (401): {hint}")]
    Unauthorized {
        /// The admin URL.
        url: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// 404: the server has no such route (an older wscope, or not wscope at all).
    #[error("{path}: not served here (404)")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// Any other answer that is not a success.
    #[error("{path}: {status}: {message}")]
    Status {
        /// The path asked for.
        path: String,
        /// The status answered.
        status: StatusCode,
        /// The `error` of its body, or the body.
        message: String,
    },
    /// The connection failed after it was made, or the answer did not parse.
    #[error("{path}: {why}")]
    Broken {
        /// The path asked for.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct AdminClient {
    /// The URL as given, for messages.
    url: String,
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// A path prefix (for an admin API behind a reverse proxy), without the trailing slash.
    prefix: String,
    /// The bearer token, if any.
    token: Option<String>,
}

impl AdminClient {
    /// A client for `url` (`http://host[:port][/prefix]`; port 80 when not given).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, AdminError> {
        let bad = |why| AdminError::BadUrl {
            url: url.to_owned(),
            why,
        };
        if url.starts_with("https://") {
            return Err(bad(
                "https is not supported: reach the admin listener over http (an SSH tunnel works)",
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or(bad("use http://HOST:PORT"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains('@') {
            return Err(bad("use http://HOST:PORT"));
        }
        let authority = if host.ends_with(']') || !host.contains(':') {
            format!("{host}:80")
        } else {
            host.to_owned()
        };
        let prefix = path.trim_end_matches('/');
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            authority,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The URL as given (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET path` read as JSON `T`.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let response = self.get(path, "application/json").await?;
        let body = read_body(path, response.into_body()).await?;
        serde_json::from_slice(&body).map_err(|e| AdminError::Broken {
            path: path.to_owned(),
            why: format!("unexpected answer: {e}"),
        })
    }

    /// Opens the live stream at `path` (its head read, a success): its events come from
    /// [`EventStream::next`].
    pub async fn stream(&self, path: &str) -> Result<EventStream, AdminError> {
        let response = self.get(path, "text/event-stream").await?;
        Ok(EventStream {
            path: path.to_owned(),
            body: response.into_body(),
            parser: SseParser::default(),
        })
    }

    /// Sends `GET path` on a new connection and reads the head: a success, or the error it names.
    async fn get(&self, path: &str, accept: &str) -> Result<Response<Incoming>, AdminError> {
        let unreachable = |why: String| AdminError::Unreachable {
            url: self.url.clone(),
            why,
        };
        let response = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            // Drives the connection; it ends with the response body (or its reader).
            tokio::spawn(connection);
            let mut request = Request::get(format!("{}{path}", self.prefix))
                .header(HOST, &self.authority)
                .header(ACCEPT, accept);
            if let Some(token) = &self.token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|e| unreachable(e.to_string()))?;
            sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::UNAUTHORIZED => Err(AdminError::Unauthorized {
                url: self.url.clone(),
                hint: if self.token.is_some() {
                    "check --token or WSCOPE_ADMIN_TOKEN"
                } else {
                    "set --token or WSCOPE_ADMIN_TOKEN"
                },
            }),
            StatusCode::NOT_FOUND => Err(AdminError::NotFound {
                path: path.to_owned(),
            }),
            status => {
                let body = read_body(path, response.into_body())
                    .await
                    .unwrap_or_default();
                let message = serde_json::from_slice::<ErrorBody>(&body)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
                Err(AdminError::Status {
                    path: path.to_owned(),
                    status,
                    message: one_line(&message),
                })
            }
        }
    }
}

/// An open live stream.
#[derive(Debug)]
pub struct EventStream {
    path: String,
    body: Incoming,
    parser: SseParser,
}

impl EventStream {
    /// The next event; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, AdminError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(AdminError::Broken {
                        path: self.path.clone(),
                        why: e.to_string(),
                    })
                }
            }
        }
    }
}

/// The whole body, up to [`MAX_BODY`].
async fn read_body(path: &str, mut body: Incoming) -> Result<Vec<u8>, AdminError> {
    let broken = |why: String| AdminError::Broken {
        path: path.to_owned(),
        why,
    };
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if all.len() + data.len() > MAX_BODY {
                return Err(broken(format!("answer larger than {MAX_BODY} bytes")));
            }
            all.extend_from_slice(&data);
        }
    }
    Ok(all)
}

/// `text` on one line, cut to a readable length.
fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_and_bad_ones_named() {
        let c = AdminClient::new("http://127.0.0.1:9090", Some("t".into())).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.prefix.as_str()),
            ("127.0.0.1:9090", "")
        );
        let c = AdminClient::new("http://admin.example/wscope/", None).unwrap();
        assert_eq!(c.authority, "admin.example:80");
        assert_eq!(c.prefix, "/wscope");
        assert_eq!(c.url(), "http://admin.example/wscope");
        let c = AdminClient::new("http://[::1]:9090/", Some(String::new())).unwrap();
        assert_eq!(c.authority, "[::1]:9090");
        assert_eq!(c.token, None);
        assert_eq!(
            AdminClient::new("http://[::1]", None).unwrap().authority,
            "[::1]:80"
        );
        for bad in ["127.0.0.1:9090", "ftp://x", "http://", "http://u@h:1"] {
            let err = AdminClient::new(bad, None).unwrap_err().to_string();
            assert!(err.starts_with("--admin-url "), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = AdminClient::new("https://h:1", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("https is not supported"), "{err}");
    }

    #[test]
    fn error_bodies_become_one_short_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        let long = "x ".repeat(300);
        assert_eq!(one_line(&long).chars().count(), 201);
    }
}
