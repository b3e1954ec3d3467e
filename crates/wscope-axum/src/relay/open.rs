//! Opening a relay's upstream hop: TCP, then the client handshake carrying the forwarded
//! headers, within the relay's timeout; and, when that fails, the client's answer — the
//! upstream's own refusal, 502 or 504.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpStream;
use wscope_core::{BoxTransport, HopGauge};
use wscope_engine::{ClientHandshake, HandshakeError, RefusedAnswer};

use super::figures::FailureKind;
use super::RelayConfig;
use crate::error::ApiError;
use crate::forward::strip_hop_by_hop;

/// An open upstream hop, its handshake done.
pub(super) struct Hop {
    /// The upstream's engine, in the client role.
    pub(super) transport: BoxTransport,
    /// The subprotocol the upstream chose (among those the client offered).
    pub(super) protocol: Option<String>,
    /// Where the upstream's engine reports what it holds: kept here until the client's entry
    /// exists, then counted in it.
    pub(super) gauge: HopGauge,
}

/// Why the upstream hop could not be opened.
#[derive(Debug)]
pub(super) enum Failure {
    /// TCP failed (refused, unreachable, no such host).
    Unreachable(std::io::Error),
    /// No answer within the timeout.
    TimedOut,
    /// The upstream answered the upgrade with another status than 101.
    Refused(Box<RefusedAnswer>),
    /// The upstream's answer was not a valid WebSocket upgrade, or the stream failed during it.
    Invalid(HandshakeError),
}

impl Failure {
    /// The figure it counts in.
    pub(super) fn kind(&self) -> FailureKind {
        match self {
            Self::Unreachable(_) => FailureKind::Unreachable,
            Self::TimedOut => FailureKind::Timeout,
            Self::Refused(_) => FailureKind::Refused,
            Self::Invalid(_) => FailureKind::Invalid,
        }
    }

    /// The client's answer: the upstream's refusal as it came (hop-by-hop headers dropped), or
    /// 502 / 504 with a JSON body naming the upstream.
    pub(super) fn into_response(self, upstream: &str, timeout: Duration) -> Response {
        match self {
            Self::Refused(answer) => passed_on(*answer),
            Self::TimedOut => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "upstream {upstream} did not answer within {}",
                    humanize(timeout)
                ),
            )
            .into_response(),
            Self::Unreachable(e) => bad_gateway(&format!("upstream {upstream} unreachable: {e}")),
            Self::Invalid(e) => bad_gateway(&format!("upstream {upstream}: {e}")),
        }
    }
}

/// 502 with a JSON body.
pub(super) fn bad_gateway(message: &str) -> Response {
    ApiError::new(StatusCode::BAD_GATEWAY, message).into_response()
}

/// A duration as the flags take it: `5s`, `250ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The upstream's refusal, for the client: its status, its end-to-end headers, its body.
fn passed_on(answer: RefusedAnswer) -> Response {
    let mut headers: HeaderMap = answer.headers;
    strip_hop_by_hop(&mut headers);
    // The body is whole: its length is what was read, not what the upstream announced.
    headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = headers;
    response
}

/// Opens the upstream at `target` with `headers` (the client's, forwarded) within the relay's
/// timeout.
pub(super) async fn open(
    target: Uri,
    mut headers: HeaderMap,
    config: &RelayConfig,
) -> Result<Hop, Failure> {
    let opening = async {
        let (host, port) = authority(&target)?;
        let mut request = Request::get(target.clone())
            .body(())
            .map_err(|e| Failure::Invalid(HandshakeError::Request(e.to_string())))?;
        // The upstream's own Host, as a browser would send it.
        if let Some(authority) = target.authority() {
            if let Ok(value) = authority.as_str().parse() {
                headers.insert(header::HOST, value);
            }
        }
        *request.headers_mut() = headers;
        let handshake = ClientHandshake::new(request, &config.socket).map_err(Failure::Invalid)?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(Failure::Unreachable)?;
        // As on the client's side: small messages leave at once.
        let _ = tcp.set_nodelay(true);
        if target.scheme_str() != Some("wss") {
            return take_over(handshake, tcp, config).await;
        }
        let Some(tls) = config.tls.clone() else {
            let why = "a wss:// upstream needs a TLS client configuration".to_owned();
            return Err(Failure::Invalid(HandshakeError::Request(why)));
        };
        let stream = crate::tls::connect_tls(tls, &host, tcp)
            .await
            .map_err(|e| Failure::Invalid(HandshakeError::Io(e)))?;
        take_over(handshake, stream, config).await
    };
    match tokio::time::timeout(config.timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(Failure::TimedOut),
    }
}

/// The handshake over `io`, then the engine on it.
async fn take_over<S>(
    handshake: ClientHandshake,
    io: S,
    config: &RelayConfig,
) -> Result<Hop, Failure>
where
    S: wscope_engine::Io + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let upgraded = handshake.perform(io).await.map_err(|e| match e {
        HandshakeError::Refused(answer) => Failure::Refused(answer),
        other => Failure::Invalid(other),
    })?;
    let protocol = upgraded.protocol.clone();
    let deflate = upgraded.deflate;
    let cfg = &config.socket;
    // The client's entry does not exist yet (the upstream's answer decides whether it will):
    // the engine reports into a gauge of its own, attached to the entry once the client is
    // accepted (see "Memory" in the module docs).
    let gauge = HopGauge::new();
    let transport = cfg
        .engine
        .client(upgraded.stream, cfg, deflate, gauge.gauge())
        .await;
    Ok(Hop {
        transport,
        protocol,
        gauge,
    })
}

/// The host and port to connect to.
fn authority(target: &Uri) -> Result<(String, u16), Failure> {
    let host = target
        .host()
        .ok_or_else(|| Failure::Invalid(HandshakeError::Request(format!("no host in {target}"))))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let default_port = if target.scheme_str() == Some("wss") {
        443
    } else {
        80
    };
    Ok((host, target.port_u16().unwrap_or(default_port)))
}
