//! Admission's second pass (issue 13) through real sockets: labels from the URL capped (400
//! naming the cap, nothing stored), and at run time too; an IPv6 host's /64 counted as one client
//! by the per-address cap and by bans; the handshake-rate table left alone by upgrades that a
//! cheaper check refuses, and capped (503 when full, counted).
//!
//! Client addresses other than 127.0.0.1 come from `X-Forwarded-For`, which the default tracking
//! believes from a loopback peer. Admission does not depend on the engine, so these run on the
//! default one.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::wire::ErrorBody;
use wscope_core::{Ipv6Prefix, Message, RateLimit, Registry, RegistryConfig};

/// `/ws`: echo, labelled from `?user=` and `?tag=a,b` as `wscope serve` labels its connections;
/// `/ws/labels`: `user:ID` and `tag:T` messages label the connection at run time, answered `ok`
/// or with the error.
fn routes() -> Router {
    Router::new()
        .route("/ws", get(labelled))
        .route("/ws/labels", get(runtime_labels))
}

async fn labelled(Query(query): Query<HashMap<String, String>>, ws: WebSocketUpgrade) -> Response {
    let mut ws = ws;
    if let Some(user) = query.get("user") {
        ws = ws.user(user.clone());
    }
    for tag in query.get("tag").into_iter().flat_map(|t| t.split(',')) {
        ws = ws.tag(tag);
    }
    echo(ws).await
}

async fn runtime_labels(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(msg) = socket.recv().await {
            let Message::Text(text) = &msg else { continue };
            let text = text.as_str();
            let answer = if let Some(user) = text.strip_prefix("user:") {
                socket.set_user(user).map(|()| "ok".to_owned())
            } else if let Some(tag) = text.strip_prefix("tag:") {
                socket.tag(tag).map(|new| format!("ok {new}"))
            } else {
                continue;
            };
            let answer = answer.unwrap_or_else(|e| e.to_string());
            if socket.send(Message::text(answer)).await.is_err() {
                break;
            }
        }
    })
}

async fn start(config: RegistryConfig) -> TestServer {
    let reg = Registry::with_config(config);
    let app = tracked(routes(), tracking(&reg));
    TestServer::start(reg, app).await
}

/// An upgrade of `path` that must be refused: its status and JSON error.
async fn refused(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut headers = UPGRADE_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    let response = http(addr, "GET", path, &headers, None).await;
    assert_ne!(response.status, 101, "{path}: the upgrade was accepted");
    (response.status, response.parse::<ErrorBody>().error)
}

/// The `refused` counts of `/api/stats`.
async fn refusals(server: &TestServer) -> serde_json::Value {
    http_get(server.admin_addr, "/api/stats").await.json()["refused"].clone()
}

fn tags(n: usize, len: usize) -> String {
    (0..n)
        .map(|i| format!("{i:0len$}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The issue's cases — 3,950 tags (15.8 KB), a 15.9 KB user — and one past each cap are refused
/// with 400 naming the cap before anything is registered; labels at the caps are kept, a repeated
/// tag once.
#[tokio::test]
async fn labels_past_their_caps_are_refused_with_400_naming_the_cap() {
    let server = start(test_config()).await;
    let reg = server.registry.clone();
    let cases = [
        (format!("/ws?tag={}", tags(3950, 3)), "more than 32 tags"),
        (format!("/ws?tag={}", tags(33, 2)), "more than 32 tags"),
        (
            format!("/ws?tag={}", "t".repeat(65)),
            "tag longer than 64 bytes",
        ),
        (
            format!("/ws?user={}", "u".repeat(15_900)),
            "user longer than 256 bytes",
        ),
        (
            format!("/ws?user={}", "u".repeat(257)),
            "user longer than 256 bytes",
        ),
    ];
    for (path, why) in &cases {
        let (status, error) = refused(server.addr, path, &[]).await;
        assert_eq!(
            (status, error.as_str()),
            (400, format!("invalid labels: {why}").as_str()),
            "{}",
            &path[..40]
        );
    }
    assert_eq!(refusals(&server).await["invalidLabels"], cases.len());
    assert_eq!(
        reg.summary().total_connections_ever,
        0,
        "nothing registered"
    );

    // At the caps, and a repeat: admitted, each tag once.
    let at_caps = format!(
        "/ws?user={}&tag={},{}",
        "u".repeat(256),
        tags(32, 64),
        "0".repeat(64)
    );
    let mut ws = server.connect(&at_caps).await;
    echo_roundtrip(&mut ws, "labelled").await;
    let row = &reg.snapshot().connections[0];
    assert_eq!(row.user.as_deref().map(str::len), Some(256));
    assert_eq!(row.tags.len(), 32);
    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// Sends `text` and reads the answer.
async fn say(ws: &mut Client, text: String) -> String {
    ws.send(WsMessage::text(text)).await.unwrap();
    recv_text(ws).await
}

/// `set_user` and `tag` on a running connection have the same caps: an error naming the cap,
/// the labels unchanged.
#[tokio::test]
async fn labels_set_at_run_time_are_capped_too() {
    let server = start(test_config()).await;
    let mut ws = server.connect("/ws/labels").await;
    assert_eq!(say(&mut ws, "user:ann".into()).await, "ok");
    assert_eq!(
        say(&mut ws, format!("user:{}", "u".repeat(257))).await,
        "user longer than 256 bytes"
    );
    assert_eq!(
        say(&mut ws, format!("tag:{}", "t".repeat(65))).await,
        "tag longer than 64 bytes"
    );
    for i in 0..32 {
        assert_eq!(say(&mut ws, format!("tag:t{i}")).await, "ok true");
    }
    assert_eq!(
        say(&mut ws, "tag:t0".into()).await,
        "ok false",
        "a repeat at the cap"
    );
    assert_eq!(
        say(&mut ws, "tag:one-more".into()).await,
        "more than 32 tags"
    );
    let row = &server.registry.snapshot().connections[0];
    assert_eq!((row.user.as_deref(), row.tags.len()), (Some("ann"), 32));
    close_client(ws).await;
    wait_count(&server.registry, 0).await;
    server.shutdown().await;
}

/// The issue's case: 50 upgrades from one /64 under a per-address cap of 2. A host holds its
/// whole /64, so two are let in; another /64 is another client.
#[tokio::test]
async fn an_ipv6_hosts_whole_64_is_one_client_to_the_per_address_cap() {
    let server = start(test_config().max_connections_per_ip(2)).await;
    let reg = server.registry.clone();
    let mut admitted = Vec::new();
    let mut refused_with = Vec::new();
    for i in 1..=50 {
        let forwarded = format!("X-Forwarded-For: 2001:db8:1:2::{i:x}");
        let mut raw = raw::Raw::connect(server.addr).await;
        raw.send(raw::upgrade_request(server.addr, "/ws", &[&forwarded]).as_bytes())
            .await;
        match raw.response_head().await {
            101 => admitted.push(raw),
            status => refused_with.push(status),
        }
    }
    assert_eq!(admitted.len(), 2, "refused: {refused_with:?}");
    assert!(refused_with.iter().all(|s| *s == 429), "{refused_with:?}");
    assert_eq!(refusals(&server).await["tooManyFromAddress"], 48);
    // Another /64 is another client.
    let mut other = connect_with(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:3::1")],
    )
    .await;
    echo_roundtrip(&mut other, "another host").await;
    close_client(other).await;
    for raw in admitted {
        raw.close().await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// With `ipv6_prefix(128)` every IPv6 address counts alone, as before the grouping.
#[tokio::test]
async fn a_128_prefix_counts_each_ipv6_address_alone() {
    let config = test_config()
        .max_connections_per_ip(1)
        .ipv6_prefix(Ipv6Prefix::new(128).unwrap());
    let server = start(config).await;
    let a = connect_with(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:2::1")],
    )
    .await;
    let b = connect_with(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:2::2")],
    )
    .await;
    let (status, _) = refused(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:2::1")],
    )
    .await;
    assert_eq!(status, 429);
    close_client(a).await;
    close_client(b).await;
    wait_count(&server.registry, 0).await;
    server.shutdown().await;
}

/// A ban of one IPv6 address bans its /64: its host's other addresses get 403, the listing
/// shows the group, and unbanning any address of the group lifts it.
#[tokio::test]
async fn a_ban_of_one_ipv6_address_covers_its_64() {
    let server = start(test_config()).await;
    let reg = server.registry.clone();
    let mut sibling = connect_with(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:2::99")],
    )
    .await;
    let outcome = reg
        .ban(
            wscope_core::units::parse_net("2001:db8:1:2::7").unwrap(),
            Duration::from_secs(60),
            "",
        )
        .unwrap();
    assert_eq!(outcome.ban.target.to_string(), "2001:db8:1:2::/64");
    assert_eq!(outcome.closed, 1, "the open connection from the group");
    assert_eq!(expect_close(&mut sibling).await.0, 1008);
    let listed = admin_post(&server, r#"{"action":"list_bans"}"#)
        .await
        .json();
    assert_eq!(listed["bans"][0]["target"], "2001:db8:1:2::/64", "{listed}");
    for ip in ["2001:db8:1:2::7", "2001:db8:1:2:abcd::1"] {
        let (status, error) = refused(server.addr, "/ws", &[("X-Forwarded-For", ip)]).await;
        assert_eq!((status, error.as_str()), (403, "address banned"), "{ip}");
    }
    let mut other = connect_with(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:3::7")],
    )
    .await;
    echo_roundtrip(&mut other, "another /64").await;
    assert!(reg.unban(wscope_core::units::parse_net("2001:db8:1:2::1234").unwrap()));
    let mut back = connect_with(
        server.addr,
        "/ws",
        &[("X-Forwarded-For", "2001:db8:1:2::7")],
    )
    .await;
    echo_roundtrip(&mut back, "unbanned").await;
    close_client(other).await;
    close_client(back).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// The issue's case, scaled down: a full server refuses upgrades from distinct addresses under
/// a 1/h handshake rate. The global cap now refuses before a token is taken, so none of them
/// spent its token (or left a bucket): each connects as soon as there is room.
#[tokio::test]
async fn an_upgrade_a_full_server_refuses_takes_no_handshake_token() {
    let rate = RateLimit::new(1, Duration::from_secs(3600)).unwrap();
    let config = test_config().max_connections(1).handshake_rate_per_ip(rate);
    let server = start(config).await;
    let reg = server.registry.clone();
    let held = server.connect("/ws").await;
    let addrs: Vec<String> = (1..=20).map(|i| format!("2001:db8:{i:x}::1")).collect();
    for ip in &addrs {
        let (status, error) = refused(server.addr, "/ws", &[("X-Forwarded-For", ip)]).await;
        assert_eq!((status, error.as_str()), (503, "too many connections"));
    }
    assert_eq!(refusals(&server).await["handshakeRate"], 0);
    close_client(held).await;
    wait_count(&reg, 0).await;
    for ip in &addrs[..3] {
        admitted_when_room(server.addr, ip).await.close().await;
        wait_count(&reg, 0).await;
    }
    server.shutdown().await;
}

/// A WebSocket to `/ws` from `ip` (by `X-Forwarded-For`), opened as soon as the global cap lets
/// it (a closed connection's slot is released just after its entry leaves the count), within
/// [`WAIT`]; panics on any other answer than 101 or the global cap's 503.
async fn admitted_when_room(addr: SocketAddr, ip: &str) -> raw::Raw {
    let forwarded = format!("X-Forwarded-For: {ip}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut raw = raw::Raw::connect(addr).await;
        raw.send(raw::upgrade_request(addr, "/ws", &[&forwarded]).as_bytes())
            .await;
        match raw.response_head().await {
            101 => return raw,
            503 if raw.response.contains("retry-after")
                && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            status => panic!("{ip} not admitted: {status} {}", raw.response),
        }
    }
}

/// The rate's table holds at most `handshake_rate_addresses` clients: past it, a new address
/// gets 503 with `Retry-After` (counted as `rateTableFull`), the addresses held keep their
/// buckets.
#[tokio::test]
async fn a_full_rate_table_refuses_new_addresses_with_503() {
    let rate = RateLimit::new(10, Duration::from_secs(3600)).unwrap();
    let config = test_config()
        .handshake_rate_per_ip(rate)
        .handshake_rate_addresses(3);
    let server = start(config).await;
    let reg = server.registry.clone();
    for i in 1..=3 {
        let ip = format!("198.51.100.{i}");
        let ws = connect_with(server.addr, "/ws", &[("X-Forwarded-For", &ip)]).await;
        close_client(ws).await;
    }
    let mut headers = UPGRADE_HEADERS.to_vec();
    headers.push(("X-Forwarded-For", "198.51.100.4"));
    let full = http(server.addr, "GET", "/ws", &headers, None).await;
    assert_eq!(full.status, 503);
    assert_eq!(
        full.parse::<ErrorBody>().error,
        "too many client addresses to track"
    );
    let retry: u64 = full.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=360).contains(&retry), "Retry-After: {retry}");
    assert_eq!(refusals(&server).await["rateTableFull"], 1);
    // An address the table holds still has its bucket.
    let ws = connect_with(server.addr, "/ws", &[("X-Forwarded-For", "198.51.100.2")]).await;
    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}
