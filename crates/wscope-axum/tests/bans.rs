//! Runtime bans and kicks through the admin API and real sockets: a ban closes the connections it
//! covers with 1008 and its reason and refuses new upgrades from them with 403 until it expires
//! or is lifted; a kick closes once; bad input gets 400 naming the field.
//!
//! Client addresses come from `X-Forwarded-For`, which the default tracking believes from a
//! loopback peer — as it would from a proxy in front of the server.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use wscope_core::wire::{BanAnswer, BansAnswer, ErrorBody, KickAnswer, UnbanAnswer};
use wscope_core::{Clock, Registry};

engine_tests!(
    a_ban_closes_its_connections_with_1008_refuses_new_ones_and_unban_restores,
    a_ban_expires_on_the_registry_clock,
    a_kick_closes_once_without_banning,
    bad_ban_kick_and_unban_requests_get_400_naming_the_field,
);

/// Connects as `ip` (by `X-Forwarded-For`).
async fn connect_from(server: &TestServer, ip: &str) -> Client {
    connect_with(server.addr, "/ws", &[("X-Forwarded-For", ip)]).await
}

/// A raw upgrade from `ip` that must be refused; its response.
async fn refused_from(addr: SocketAddr, ip: &str) -> HttpResponse {
    let mut headers = UPGRADE_HEADERS.to_vec();
    headers.push(("X-Forwarded-For", ip));
    let response = http(addr, "GET", "/ws", &headers, None).await;
    assert_ne!(response.status, 101, "the upgrade from {ip} was accepted");
    response
}

async fn a_ban_closes_its_connections_with_1008_refuses_new_ones_and_unban_restores() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut one = connect_from(&server, "203.0.113.7").await;
    let mut two = connect_from(&server, "203.0.113.8").await;
    let mut other = connect_from(&server, "198.51.100.1").await;
    wait_open(&reg, 3).await;

    let response = admin_post(
        &server,
        r#"{"action":"ban","target":"203.0.113.0/24","duration":"10m","reason":"flooding"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let answer: BanAnswer = response.parse();
    assert_eq!(
        (answer.success, answer.closed, answer.replaced),
        (true, 2, false)
    );
    assert_eq!(answer.ban.target.to_string(), "203.0.113.0/24");
    assert_eq!(answer.ban.reason, "flooding");
    assert_eq!(answer.ban.expires_in, 600_000);
    assert_eq!(expect_close(&mut one).await, (1008, "flooding".to_owned()));
    assert_eq!(expect_close(&mut two).await, (1008, "flooding".to_owned()));
    wait_count(&reg, 1).await;
    echo_roundtrip(&mut other, "other addresses are unaffected").await;

    let banned = refused_from(server.addr, "203.0.113.9").await;
    assert_eq!(banned.status, 403);
    assert_eq!(banned.parse::<ErrorBody>().error, "address banned");
    let mut fresh = connect_from(&server, "198.51.100.2").await;
    echo_roundtrip(&mut fresh, "new ones too").await;

    let listed: BansAnswer = admin_post(&server, r#"{"action":"list_bans"}"#)
        .await
        .parse();
    assert_eq!(listed.bans.len(), 1);
    assert_eq!(listed.bans[0].target, answer.ban.target);
    assert!(listed.bans[0].expires_in <= 600_000);
    let stats = http_get(server.admin_addr, "/api/stats").await.json();
    assert_eq!(stats["refused"]["banned"], 1);
    assert_eq!(stats["closedBy"]["admin"], 2);

    // Lifting it lets the network back in; lifting it again removes nothing.
    let lifted: UnbanAnswer =
        admin_post(&server, r#"{"action":"unban","target":"203.0.113.0/24"}"#)
            .await
            .parse();
    assert_eq!((lifted.success, lifted.removed), (true, true));
    let mut back = connect_from(&server, "203.0.113.7").await;
    echo_roundtrip(&mut back, "welcome back").await;
    let again: UnbanAnswer = admin_post(&server, r#"{"action":"unban","target":"203.0.113.0/24"}"#)
        .await
        .parse();
    assert!(!again.removed);
    let listed: BansAnswer = admin_post(&server, r#"{"action":"list_bans"}"#)
        .await
        .parse();
    assert!(listed.bans.is_empty());

    for ws in [other, fresh, back] {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn a_ban_expires_on_the_registry_clock() {
    let (clock, manual) = Clock::manual();
    let server = TestServer::echo(Registry::with_config(test_config().clock(clock))).await;
    let response = admin_post(
        &server,
        r#"{"action":"ban","target":"203.0.113.7","duration":60}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(refused_from(server.addr, "203.0.113.7").await.status, 403);
    manual.advance(Duration::from_secs(59));
    assert_eq!(refused_from(server.addr, "203.0.113.7").await.status, 403);
    manual.advance(Duration::from_secs(1));
    let mut ws = connect_from(&server, "203.0.113.7").await;
    echo_roundtrip(&mut ws, "expired").await;
    let listed: BansAnswer = admin_post(&server, r#"{"action":"list_bans"}"#)
        .await
        .parse();
    assert!(listed.bans.is_empty(), "the expired ban is gone");
    close_client(ws).await;
    wait_count(&server.registry, 0).await;
    server.shutdown().await;
}

async fn a_kick_closes_once_without_banning() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut kicked = connect_from(&server, "2001:db8::1").await;
    let mut other = connect_from(&server, "198.51.100.1").await;
    wait_open(&reg, 2).await;

    let answer: KickAnswer = admin_post(&server, r#"{"action":"kick","target":"2001:db8::/32"}"#)
        .await
        .parse();
    assert_eq!((answer.success, answer.closed), (true, 1));
    assert_eq!(expect_close(&mut kicked).await, (1008, "kicked".to_owned()));
    echo_roundtrip(&mut other, "unaffected").await;

    // Not banned: it comes straight back, and a kick may say why with its own code.
    let mut back = connect_from(&server, "2001:db8::1").await;
    wait_open(&reg, 2).await;
    let answer: KickAnswer = admin_post(
        &server,
        r#"{"action":"kick","target":"2001:db8::1","code":4000,"reason":"rebalancing"}"#,
    )
    .await
    .parse();
    assert_eq!(answer.closed, 1);
    assert_eq!(
        expect_close(&mut back).await,
        (4000, "rebalancing".to_owned())
    );
    let nobody: KickAnswer = admin_post(&server, r#"{"action":"kick","target":"192.0.2.0/24"}"#)
        .await
        .parse();
    assert_eq!(nobody.closed, 0);
    let listed: BansAnswer = admin_post(&server, r#"{"action":"list_bans"}"#)
        .await
        .parse();
    assert!(listed.bans.is_empty());

    close_client(other).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn bad_ban_kick_and_unban_requests_get_400_naming_the_field() {
    let server = TestServer::echo(test_registry()).await;
    let mut ws = connect_from(&server, "203.0.113.7").await;
    wait_open(&server.registry, 1).await;
    let long = "x".repeat(124);
    let cases = [
        (
            json!({"action":"ban","target":"nope","duration":"1m"}),
            "target",
        ),
        (
            json!({"action":"ban","target":"203.0.113.0/33","duration":"1m"}),
            "target",
        ),
        (json!({"action":"ban","target":7,"duration":"1m"}), "target"),
        (
            json!({"action":"ban","duration":"1m"}),
            "missing field `target`",
        ),
        (
            json!({"action":"ban","target":"203.0.113.7","duration":"soon"}),
            "duration",
        ),
        (
            json!({"action":"ban","target":"203.0.113.7","duration":-5}),
            "duration",
        ),
        (
            json!({"action":"ban","target":"203.0.113.7"}),
            "missing field `duration`",
        ),
        (
            json!({"action":"ban","target":"203.0.113.7","duration":"0s"}),
            "duration must be more than zero",
        ),
        (
            json!({"action":"ban","target":"203.0.113.7","duration":"1m","reason":long}),
            "close reason",
        ),
        (
            json!({"action":"unban","target":"203.0.113.7/99"}),
            "target",
        ),
        (json!({"action":"kick","target":"somewhere"}), "target"),
        (
            json!({"action":"kick","target":"203.0.113.7","code":1005}),
            "invalid close code",
        ),
        (
            json!({"action":"kick","target":"203.0.113.7","reason":long}),
            "close reason",
        ),
        (
            json!({"action":"ban","target":"203.0.113.7","duration":"1m","until":"never"}),
            "unknown field `until`",
        ),
    ];
    for (body, wanted) in cases {
        let response = admin_post(&server, &body.to_string()).await;
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let error = response.parse::<ErrorBody>().error;
        assert!(error.contains(wanted), "{body}: {error}");
    }
    // Nothing was banned or closed.
    let listed: BansAnswer = admin_post(&server, r#"{"action":"list_bans"}"#)
        .await
        .parse();
    assert!(listed.bans.is_empty());
    echo_roundtrip(&mut ws, "still open").await;
    close_client(ws).await;
    wait_count(&server.registry, 0).await;
    server.shutdown().await;
}
