//! Admission limits through real sockets: the global cap (503 + `Retry-After`), the per-address
//! cap (429), the per-address handshake rate (429 + `Retry-After`) and the `Origin` allow-list
//! (403); each refusal answered with a JSON body and counted by kind in the stats' `refused`.
//!
//! Client addresses other than 127.0.0.1 come from `X-Forwarded-For`, which the default tracking
//! believes from a loopback peer — as it would from a proxy in front of the server.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::wire::ErrorBody;
use wscope_core::{OriginPattern, RateLimit, Registry, RegistryConfig};

engine_tests!(
    past_max_connections_an_upgrade_gets_503_and_any_ended_connection_frees_its_slot,
    the_per_address_cap_counts_each_client_address,
    the_handshake_rate_refuses_with_429_and_retry_after_per_address,
    the_origin_allow_list_takes_exact_origins_and_subdomain_patterns,
    an_origin_can_be_required_of_every_client,
);

/// A raw upgrade request for `/ws` with extra headers; for refusals (a 101 would leave the
/// socket open).
async fn refused_upgrade(addr: SocketAddr, extra: &[(&str, &str)]) -> HttpResponse {
    let mut headers = UPGRADE_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    let response = http(addr, "GET", "/ws", &headers, None).await;
    assert_ne!(response.status, 101, "the upgrade was accepted");
    assert_eq!(response.header("content-type"), Some("application/json"));
    response
}

/// The `error` of a JSON error body.
fn error_of(response: &HttpResponse) -> String {
    response.parse::<ErrorBody>().error
}

/// The `refused` counts of `/api/stats`.
async fn refused(server: &TestServer) -> serde_json::Value {
    http_get(server.admin_addr, "/api/stats").await.json()["refused"].clone()
}

/// Connects as `ip` (by `X-Forwarded-For`).
async fn connect_from(server: &TestServer, ip: &str) -> Client {
    connect_with(server.addr, "/ws", &[("X-Forwarded-For", ip)]).await
}

/// Connects to `/ws` with `headers` as soon as admission lets it, within [`WAIT`]: a
/// connection's slot is released as its task ends, just after its entry leaves the count that
/// `wait_count` reads, so the first try may still find the slot held.
async fn connect_when_admitted(
    addr: SocketAddr,
    headers: &[(&'static str, &'static str)],
) -> Client {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        let tcp = TcpStream::connect(addr).await.unwrap();
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((ws, _)) => return ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if matches!(response.status().as_u16(), 429 | 503)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("not admitted again: {e}"),
        }
    }
}

/// `/ws` echo and `/ws/panicky`, whose handler panics when it receives "panic".
fn routes() -> Router {
    Router::new().route("/ws", get(echo)).route(
        "/ws/panicky",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(msg) = socket.recv().await {
                    if msg == wscope_core::Message::text("panic") {
                        panic!("the handler was asked to panic");
                    }
                }
            })
        }),
    )
}

async fn start(config: RegistryConfig) -> TestServer {
    let reg = Registry::with_config(config);
    let app = tracked(routes(), tracking(&reg));
    TestServer::start(reg, app).await
}

async fn past_max_connections_an_upgrade_gets_503_and_any_ended_connection_frees_its_slot() {
    let server = start(test_config().max_connections(2)).await;
    let reg = server.registry.clone();
    let a = server.connect("/ws").await;
    let mut panicky = server.connect("/ws/panicky").await;
    wait_open(&reg, 2).await;

    let full = refused_upgrade(server.addr, &[]).await;
    assert_eq!(full.status, 503);
    assert_eq!(full.header("retry-after"), Some("1"));
    assert_eq!(error_of(&full), "too many connections");
    // Another address fares no better: the cap is global.
    let full = refused_upgrade(server.addr, &[("X-Forwarded-For", "198.51.100.1")]).await;
    assert_eq!(full.status, 503);
    assert_eq!(refused(&server).await["tooManyConnections"], 2);
    assert_eq!(
        reg.summary().total_connections_ever,
        2,
        "refusals register nothing"
    );

    // A client close frees a slot.
    close_client(a).await;
    wait_count(&reg, 1).await;
    let b = connect_when_admitted(server.addr, &[]).await;
    wait_open(&reg, 2).await;

    // So does a reset (no close frame).
    socket2::SockRef::from(b.get_ref())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(b);
    wait_count(&reg, 1).await;
    let mut c = connect_when_admitted(server.addr, &[]).await;
    wait_open(&reg, 2).await;

    // And a handler panic.
    panicky.send(WsMessage::text("panic")).await.unwrap();
    assert_eq!(expect_close(&mut panicky).await.0, 1011);
    wait_count(&reg, 1).await;
    let d = connect_when_admitted(server.addr, &[]).await;
    wait_open(&reg, 2).await;
    assert_eq!(refused_upgrade(server.addr, &[]).await.status, 503);

    echo_roundtrip(&mut c, "admitted connections work").await;
    close_client(c).await;
    close_client(d).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn the_per_address_cap_counts_each_client_address() {
    let server = start(test_config().max_connections_per_ip(2)).await;
    let reg = server.registry.clone();
    let first = connect_from(&server, "198.51.100.1").await;
    let second = connect_from(&server, "198.51.100.1").await;
    wait_open(&reg, 2).await;

    let capped = refused_upgrade(server.addr, &[("X-Forwarded-For", "198.51.100.1")]).await;
    assert_eq!(capped.status, 429);
    assert_eq!(capped.header("retry-after"), None);
    assert_eq!(error_of(&capped), "too many connections from this address");
    assert_eq!(refused(&server).await["tooManyFromAddress"], 1);

    // Other addresses have their own count: another forwarded one, and the loopback peer itself.
    let mut other = connect_from(&server, "198.51.100.2").await;
    let third = connect_from(&server, "198.51.100.2").await;
    let local = server.connect("/ws").await;
    wait_open(&reg, 5).await;
    echo_roundtrip(&mut other, "unaffected").await;

    // A closed connection gives its address a slot back.
    close_client(first).await;
    wait_count(&reg, 4).await;
    let again = connect_when_admitted(server.addr, &[("x-forwarded-for", "198.51.100.1")]).await;
    wait_open(&reg, 5).await;
    for ws in [second, other, third, local, again] {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn the_handshake_rate_refuses_with_429_and_retry_after_per_address() {
    // Two at once, then one a minute: the test never waits for a token.
    let rate = RateLimit::new(1, Duration::from_secs(60))
        .unwrap()
        .with_burst(2);
    let server = start(test_config().handshake_rate_per_ip(rate)).await;
    let reg = server.registry.clone();
    let a = connect_from(&server, "198.51.100.1").await;
    close_client(a).await;
    let b = connect_from(&server, "198.51.100.1").await;

    let limited = refused_upgrade(server.addr, &[("X-Forwarded-For", "198.51.100.1")]).await;
    assert_eq!(limited.status, 429);
    assert_eq!(error_of(&limited), "too many handshakes from this address");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    // Closing connections gives no token back: the rate counts handshakes, not connections.
    assert_eq!(
        refused_upgrade(server.addr, &[("X-Forwarded-For", "198.51.100.1")])
            .await
            .status,
        429
    );
    assert_eq!(refused(&server).await["handshakeRate"], 2);

    // Another address has its own bucket.
    let mut other = connect_from(&server, "198.51.100.2").await;
    echo_roundtrip(&mut other, "unaffected").await;
    let local = server.connect("/ws").await;
    wait_open(&reg, 3).await;
    for ws in [b, other, local] {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn the_origin_allow_list_takes_exact_origins_and_subdomain_patterns() {
    let allowed: Vec<OriginPattern> = ["https://app.example.com", "https://*.example.org"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let server = start(test_config().allowed_origins(allowed)).await;
    let reg = server.registry.clone();

    for origin in [
        "https://app.example.com",
        "HTTPS://APP.EXAMPLE.COM",
        "https://a.example.org",
        "https://a.b.example.org",
    ] {
        let mut ws = connect_with(server.addr, "/ws", &[("Origin", origin)]).await;
        echo_roundtrip(&mut ws, origin).await;
        close_client(ws).await;
    }
    // No Origin: a non-browser client, allowed by default.
    let ws = server.connect("/ws").await;
    close_client(ws).await;

    let denied = [
        "https://evil.example",
        "https://example.org",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.example",
        "null",
    ];
    for origin in denied {
        let response = refused_upgrade(server.addr, &[("Origin", origin)]).await;
        assert_eq!(response.status, 403, "{origin}");
        assert_eq!(error_of(&response), "origin not allowed");
    }
    assert_eq!(refused(&server).await["originNotAllowed"], denied.len());
    assert_eq!(reg.summary().total_connections_ever, 5);
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn an_origin_can_be_required_of_every_client() {
    let config = test_config()
        .allowed_origin("https://app.example.com".parse().unwrap())
        .allow_missing_origin(false);
    let server = start(config).await;
    let missing = refused_upgrade(server.addr, &[]).await;
    assert_eq!(missing.status, 403);
    assert_eq!(error_of(&missing), "origin not allowed");
    let mut ws = connect_with(server.addr, "/ws", &[("Origin", "https://app.example.com")]).await;
    echo_roundtrip(&mut ws, "with an origin").await;
    close_client(ws).await;
    assert_eq!(refused(&server).await["originNotAllowed"], 1);
    wait_count(&server.registry, 0).await;
    server.shutdown().await;
}
