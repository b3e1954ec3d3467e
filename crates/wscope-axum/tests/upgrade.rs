//! Plain requests on WebSocket routes, and which registry a socket lands in (items 13 and 14).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::Registry;

engine_tests!(
    a_plain_get_on_a_websocket_route_gets_426,
    is_upgrade_request_lets_one_handler_serve_both,
    the_router_layer_and_an_explicit_registry_pick_where_sockets_land,
    a_shut_down_registry_refuses_upgrades_with_503,
    malformed_handshakes_get_400_and_are_counted,
    builder_methods_set_the_limits_of_one_route,
);

async fn a_plain_get_on_a_websocket_route_gets_426() {
    let server = TestServer::echo(test_registry()).await;
    let response = http_get(server.addr, "/ws").await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        serde_json::json!({"error": "Upgrade required"})
    );
    // Nothing was registered for it.
    let s = server.registry.snapshot();
    assert_eq!((s.total_connections, s.total_connections_ever), (0, 0));
    server.shutdown().await;
}

/// Serves plain GETs itself and upgrades the rest, like the reference's
/// `if (ctx.locals.isUpgradeRequest) { ... } return new Response(...)`.
async fn either(ws: WebSocketUpgrade) -> Response {
    if !ws.is_upgrade_request() {
        return (
            axum::http::StatusCode::OK,
            format!("plain request on {}", ws.path()),
        )
            .into_response();
    }
    echo(ws).await
}

async fn is_upgrade_request_lets_one_handler_serve_both() {
    let reg = test_registry();
    let routes = Router::new().route("/maybe", get(either));
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;

    let plain = http_get(server.addr, "/maybe").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), "plain request on /maybe");
    assert_eq!(reg.snapshot().total_connections_ever, 0);

    let mut ws = server.connect("/maybe").await;
    wait_open(&reg, 1).await;
    assert_eq!(&*reg.snapshot().connections[0].path, "/maybe");
    echo_roundtrip(&mut ws, "upgraded").await;
    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn the_router_layer_and_an_explicit_registry_pick_where_sockets_land() {
    let layer_reg = test_registry();
    let explicit_reg = test_registry();
    let routes = Router::new().route("/ws", get(echo)).route(
        "/ws/explicit",
        get(
            |ws: WebSocketUpgrade, Extension(explicit): Extension<Registry>| async move {
                echo(ws.registry(&explicit)).await
            },
        ),
    );
    let app = tracked(routes, tracking(&layer_reg)).layer(Extension(explicit_reg.clone()));
    let server = TestServer::start(layer_reg.clone(), app).await;

    let mut via_layer = server.connect("/ws").await;
    let mut explicit = server.connect("/ws/explicit").await;
    wait_open(&layer_reg, 1).await;
    wait_open(&explicit_reg, 1).await;
    assert_eq!(&*layer_reg.snapshot().connections[0].path, "/ws");
    assert_eq!(
        &*explicit_reg.snapshot().connections[0].path,
        "/ws/explicit"
    );
    // The explicit registry keeps the layer's proxy settings: the address is still recorded.
    assert_eq!(
        explicit_reg.snapshot().connections[0].remote_address,
        Some([127, 0, 0, 1].into())
    );
    echo_roundtrip(&mut via_layer, "layer").await;
    echo_roundtrip(&mut explicit, "explicit").await;

    // Closing everything in one registry leaves the other alone.
    explicit_reg
        .close_all(wscope_core::CloseCode::NORMAL, "")
        .unwrap();
    assert_eq!(expect_close(&mut explicit).await, (1000, String::new()));
    wait_count(&explicit_reg, 0).await;
    echo_roundtrip(&mut via_layer, "layer still open").await;
    assert_eq!(layer_reg.connection_count(), 1);

    close_client(via_layer).await;
    wait_count(&layer_reg, 0).await;
    assert_eq!(explicit_reg.snapshot().total_connections_ever, 1);
    assert_eq!(layer_reg.snapshot().total_connections_ever, 1);
    explicit_reg.shutdown().await;
    server.shutdown().await;
}

async fn a_shut_down_registry_refuses_upgrades_with_503() {
    let server = TestServer::echo(test_registry()).await;
    server.registry.shutdown().await;
    let response = http(server.addr, "GET", "/ws", &UPGRADE_HEADERS, None).await;
    assert_eq!(response.status, 503);
    let body: wscope_core::wire::ErrorBody = serde_json::from_str(&response.text()).unwrap();
    assert_eq!(body.error, "server shutting down");
    // A plain GET still gets 426: it is not an upgrade.
    assert_eq!(http_get(server.addr, "/ws").await.status, 426);
    assert_eq!(
        server
            .registry
            .snapshot()
            .refused
            .get(wscope_core::RefusalKind::ShuttingDown),
        1
    );
    server.shutdown().await;
}

/// `max_message_size` on one upgrade, as on axum's: a larger message closes that socket with
/// 1009; the route without it takes the same message.
async fn builder_methods_set_the_limits_of_one_route() {
    let reg = test_registry();
    let routes = Router::new().route("/ws", get(echo)).route(
        "/ws/small",
        get(|ws: WebSocketUpgrade| async move {
            echo(ws.max_message_size(16).read_buffer_size(64)).await
        }),
    );
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let mut small = server.connect("/ws/small").await;
    let mut big = server.connect("/ws").await;
    echo_roundtrip(&mut small, "sixteen bytes ok").await;
    let text = "seventeen bytes!!";
    echo_roundtrip(&mut big, text).await;
    small.send(WsMessage::text(text)).await.unwrap();
    let (code, _) = expect_close(&mut small).await;
    assert_eq!(code, 1009);
    echo_roundtrip(&mut big, "still open").await;
    close_client(big).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// The upgrade headers with `name` set to `value` (or left out, with `None`).
fn upgrade_headers_with(
    name: &str,
    value: Option<&'static str>,
) -> Vec<(&'static str, &'static str)> {
    let mut headers: Vec<_> = UPGRADE_HEADERS
        .iter()
        .copied()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .collect();
    if let Some(value) = value {
        let name = UPGRADE_HEADERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("Sec-WebSocket-Key", |(n, _)| *n);
        headers.push((name, value));
    }
    headers
}

async fn malformed_handshakes_get_400_and_are_counted() {
    let server = TestServer::echo(test_registry()).await;
    let key = "Sec-WebSocket-Key";
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (upgrade_headers_with(key, None), "missing Sec-WebSocket-Key"),
        // 15 and 17 bytes, no padding, not base64.
        (
            upgrade_headers_with(key, Some("dGhlIHNhbXBsZSBub25j")),
            "not 16 bytes",
        ),
        (
            upgrade_headers_with(key, Some("dGhlIHNhbXBsZSBub25jZSE=")),
            "not 16 bytes",
        ),
        (
            upgrade_headers_with(key, Some("dGhlIHNhbXBsZSBub25jZQ")),
            "not 16 bytes",
        ),
        (
            upgrade_headers_with(key, Some("!!!!!!!!!!!!!!!!!!!!!!==")),
            "not 16 bytes",
        ),
    ];
    for (headers, why) in &cases {
        let response = http(server.addr, "GET", "/ws", headers, None).await;
        assert_eq!(response.status, 400, "{headers:?}: {}", response.text());
        let body: wscope_core::wire::ErrorBody = response.parse();
        assert!(
            body.error.starts_with("invalid handshake: "),
            "{}",
            body.error
        );
        assert!(body.error.contains(why), "{headers:?}: {}", body.error);
    }
    // Two keys.
    let mut two = UPGRADE_HEADERS.to_vec();
    two.push(("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="));
    let response = http(server.addr, "GET", "/ws", &two, None).await;
    assert_eq!(response.status, 400, "{}", response.text());

    // HTTP/1.0 cannot upgrade.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut request = format!("GET /ws HTTP/1.0\r\nHost: {}\r\n", server.addr);
    for (name, value) in UPGRADE_HEADERS {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
        .await
        .unwrap();
    let response = tokio::time::timeout(WAIT, wscope_testkit::read_response(&mut tcp))
        .await
        .unwrap();
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("HTTP/1.1 is required"),
        "{}",
        response.text()
    );

    // Another version than 13 is told which one to use (426), as RFC 6455 §4.4 asks.
    let response = http(
        server.addr,
        "GET",
        "/ws",
        &upgrade_headers_with("Sec-WebSocket-Version", Some("12")),
        None,
    )
    .await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));

    let s = server.registry.snapshot();
    assert_eq!(
        s.refused.get(wscope_core::RefusalKind::InvalidHandshake),
        cases.len() as u64 + 2
    );
    assert_eq!(s.total_connections_ever, 0);
    // A well-formed handshake is still served.
    let mut ws = server.connect("/ws").await;
    echo_roundtrip(&mut ws, "still fine").await;
    close_client(ws).await;
    server.shutdown().await;
}
