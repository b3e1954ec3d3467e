//! The admin API and health check over HTTP: happy paths and every bad input (item 11).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wscope_axum::health_router;
use wscope_core::{Clock, Registry};

engine_tests!(
    stats_and_get_stats_report_the_same_snapshot,
    admin_close_all_with_and_without_code_and_reason,
    health_reports_the_reference_fields_and_503_once_shutting_down,
    bad_admin_requests_get_400_naming_the_problem_and_change_nothing,
);

async fn stats_and_get_stats_report_the_same_snapshot() {
    let (clock, manual) = Clock::manual();
    let reg = Registry::with_config(test_config().clock(clock));
    let server = TestServer::echo(reg.clone()).await;
    let mut ws = server.connect_as("/ws", "admin-test").await;
    wait_open(&reg, 1).await;
    manual.advance(Duration::from_millis(1500));

    let stats = http_get(server.admin_addr, "/api/stats").await;
    assert_eq!(stats.status, 200);
    let posted = admin_post(&server, r#"{"action":"get_stats"}"#).await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.header("content-type"), Some("application/json"));
    // The clock stands still, so both reads are identical.
    assert_eq!(stats.json(), posted.json());
    let json = posted.json();
    assert_eq!(json["totalConnections"], 1);
    assert_eq!(json["averageAge"], 1500);
    assert_eq!(json["instanceId"], "test-node");
    assert_eq!(json["connections"][0]["userAgent"], "admin-test");
    assert_eq!(json["connections"][0]["age"], 1500);

    // Extra body fields that belong to other actions are accepted and ignored.
    let posted = admin_post(&server, r#"{"action":"get_stats","reason":"ignored"}"#).await;
    assert_eq!(posted.status, 200);

    echo_roundtrip(&mut ws, "unaffected").await;
    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn admin_close_all_with_and_without_code_and_reason() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();

    let mut a = server.connect("/ws").await;
    let mut b = server.connect("/ws").await;
    wait_open(&reg, 2).await;
    let response = admin_post(&server, r#"{"action":"close_all"}"#).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!({"success": true, "closed": 2}));
    assert_eq!(expect_close(&mut a).await, (1000, String::new()));
    assert_eq!(expect_close(&mut b).await, (1000, String::new()));
    wait_count(&reg, 0).await;

    let mut c = server.connect("/ws").await;
    wait_open(&reg, 1).await;
    let response = admin_post(
        &server,
        r#"{"action":"close_all","code":4001,"reason":"maintenance"}"#,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!({"success": true, "closed": 1}));
    assert_eq!(expect_close(&mut c).await, (4001, "maintenance".to_owned()));
    wait_count(&reg, 0).await;

    // Nobody left to close.
    let response = admin_post(&server, r#"{"action":"close_all"}"#).await;
    assert_eq!(response.json(), json!({"success": true, "closed": 0}));
    assert_eq!(reg.snapshot().closed_by.admin, 3);
    server.shutdown().await;
}

async fn health_reports_the_reference_fields_and_503_once_shutting_down() {
    let (clock, manual) = Clock::manual();
    let reg = Registry::with_config(test_config().clock(clock));
    // The main listener merges the health route too, as `wscope serve` does.
    let app = tracked(echo_routes(), tracking(&reg)).merge(health_router(reg.clone()));
    let server = TestServer::start(reg.clone(), app).await;
    let a = server.connect("/ws").await;
    wait_open(&reg, 1).await;
    manual.advance(Duration::from_millis(44_000));
    let b = server.connect("/ws").await;
    wait_open(&reg, 2).await;
    manual.advance(Duration::from_millis(2_600));
    // Ages 46.6 s and 2.6 s: the mean, 24.6 s, rounds to 25.

    // The admin listener: the reference's fields plus the instance id and the shutdown flag.
    let response = http_get(server.admin_addr, "/health").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({
            "status": "healthy",
            "activeConnections": 2,
            "averageAge": 25,
            "uptime": 46.6,
            "instanceId": "test-node",
            "shutDown": false,
        })
    );
    // The public one: the reference's fields only (the instance id defaults to the host name).
    let response = http_get(server.addr, "/health").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({
            "status": "healthy",
            "activeConnections": 2,
            "averageAge": 25,
            "uptime": 46.6,
        })
    );

    drop(a);
    drop(b);
    wait_count(&reg, 0).await;
    let report = reg.shutdown().await;
    assert_eq!(report.connections, 0);
    for addr in [server.admin_addr, server.addr] {
        let response = http_get(addr, "/health").await;
        assert_eq!(response.status, 503);
        let json = response.json();
        assert_eq!(json["status"], "shutting_down");
        assert_eq!(json["activeConnections"], 0);
    }
    let json = http_get(server.admin_addr, "/health").await.json();
    assert_eq!(json["shutDown"], true);
    server.shutdown().await;
}

/// Posts `body` and expects 400 with an `error` that contains `needle`.
async fn expect_400(server: &TestServer, body: &str, needle: &str) {
    let response = admin_post(server, body).await;
    assert_eq!(response.status, 400, "body {body}: {}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json: Value = response.json();
    let error = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {json}"));
    assert!(
        error.contains(needle),
        "body {body}: error {error:?} does not mention {needle:?}"
    );
}

async fn bad_admin_requests_get_400_naming_the_problem_and_change_nothing() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut ws = server.connect_as("/ws", "bystander").await;
    wait_open(&reg, 1).await;
    let id = info(&reg, "bystander").id.to_string();

    expect_400(&server, r#"{"action":"#, "malformed request body").await;
    expect_400(&server, "not json", "malformed request body").await;
    expect_400(
        &server,
        r#"{"action":"explode"}"#,
        "unknown action \"explode\": use get_stats, close_all, close, close_matching, cleanup",
    )
    .await;
    expect_400(&server, r#"{}"#, "missing field `action`").await;
    expect_400(
        &server,
        r#"{"action":"close_all","code":1005}"#,
        "invalid close code 1005",
    )
    .await;
    expect_400(
        &server,
        r#"{"action":"close_all","code":999}"#,
        "invalid close code 999",
    )
    .await;
    expect_400(
        &server,
        r#"{"action":"close_all","code":70000}"#,
        "invalid close code 70000",
    )
    .await;
    expect_400(
        &server,
        r#"{"action":"close_all","code":-1}"#,
        "invalid close code -1",
    )
    .await;
    let long = "r".repeat(124);
    expect_400(
        &server,
        &json!({"action": "close_all", "reason": long}).to_string(),
        "close reason is 124 bytes",
    )
    .await;
    expect_400(
        &server,
        &json!({"action": "close", "id": id, "reason": long}).to_string(),
        "close reason is 124 bytes",
    )
    .await;
    expect_400(
        &server,
        &json!({"action": "close", "id": id, "code": 1005}).to_string(),
        "invalid close code 1005",
    )
    .await;
    expect_400(&server, r#"{"action":"close"}"#, "missing field `id`").await;
    expect_400(
        &server,
        r#"{"action":"cleanup","bogus":1}"#,
        "unknown field `bogus`",
    )
    .await;

    // A reason of exactly 123 bytes fits (here, on an unknown id: 404, not 400).
    let response = admin_post(
        &server,
        &json!({"action": "close", "id": "test-node-0-999", "reason": "r".repeat(123)}).to_string(),
    )
    .await;
    assert_eq!(response.status, 404);
    let error = response.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("no connection with id"), "{error}");
    assert!(error.contains("test-node-0-999"), "{error}");

    // None of that touched the connection.
    assert_eq!(reg.snapshot().total_connections_closed, 0);
    echo_roundtrip(&mut ws, "untouched").await;

    // A GET on the admin action route is not allowed: 405 naming the method to use, in JSON
    // like every other error, with an `Allow` header.
    let response = http_get(server.admin_addr, "/api/admin").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        json!({"error": "GET /api/admin: method not allowed; use POST"})
    );
    let json_body = [("Content-Type", "application/json")];
    let response = http(server.admin_addr, "DELETE", "/api/stats", &json_body, None).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET,HEAD"));
    assert_eq!(
        response.json(),
        json!({"error": "DELETE /api/stats: method not allowed; use GET, HEAD"})
    );
    // A path no route takes: 404 in JSON.
    let response = http_get(server.admin_addr, "/api/nothing").await;
    assert_eq!(response.status, 404);
    assert_eq!(
        response.json(),
        json!({"error": "no route for GET /api/nothing"})
    );

    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}
