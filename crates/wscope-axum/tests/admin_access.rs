//! Who may use the admin API: the bearer token, and the `Host`, `Origin`/`Sec-Fetch-Site` and
//! `Content-Type` checks that stop cross-site request forgery and DNS rebinding, with or without
//! a token. Each attack is reproduced as a browser would send it.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wscope_axum::{admin_router, AdminConfig};
use wscope_core::wire::ErrorBody;
use wscope_core::Registry;

/// Sends `method path` with exactly `headers` (a `Host` among them, or none) and `body`.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(WAIT, wscope_testkit::read_response(&mut tcp))
        .await
        .expect("a response in time")
}

/// Expects `status` with the JSON error `error`.
fn expect_refused(response: &HttpResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.parse::<ErrorBody>().error, error);
}

/// A server whose admin router has `config`.
async fn server_with(config: AdminConfig) -> TestServer {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let admin = admin_router(registry.clone()).layer(config.layer());
    TestServer::start_with_admin(registry, app, admin).await
}

/// Request headers, as `send` takes them.
type Headers<'a> = &'a [(&'a str, &'a str)];

const CLOSE_ALL: &str = r#"{"action":"close_all"}"#;

#[tokio::test]
async fn a_cross_site_form_post_cannot_close_connections() {
    for config in [AdminConfig::new(), AdminConfig::new().token("t0k3n")] {
        let server = server_with(config.clone()).await;
        let mut ws = server.connect("/ws").await;
        wait_open(&server.registry, 1).await;
        let host = server.admin_addr.to_string();
        let host = host.as_str();
        let auth = ("Authorization", "Bearer t0k3n");
        // What an `<form enctype="text/plain">` on evil.example posts to the admin port (a
        // browser sends no Authorization, but a forged request must fail even with one).
        let attacks: [(Headers, u16, &str); 4] = [
            (
                &[
                    ("Host", host),
                    ("Origin", "http://evil.example"),
                    ("Content-Type", "text/plain"),
                    auth,
                ],
                403,
                "cross-site request refused",
            ),
            (
                &[
                    ("Host", host),
                    ("Origin", "http://evil.example"),
                    ("Content-Type", "application/json"),
                    auth,
                ],
                403,
                "cross-site request refused",
            ),
            // No Origin, but the browser's fetch metadata gives it away.
            (
                &[
                    ("Host", host),
                    ("Sec-Fetch-Site", "cross-site"),
                    ("Content-Type", "application/json"),
                    auth,
                ],
                403,
                "cross-site request refused",
            ),
            // Neither: a body that is not declared JSON is refused all the same.
            (
                &[("Host", host), ("Content-Type", "text/plain"), auth],
                415,
                "Content-Type must be application/json",
            ),
        ];
        for (headers, status, error) in attacks {
            let response = send(server.admin_addr, "POST", "/api/admin", headers, CLOSE_ALL).await;
            expect_refused(&response, status, error);
        }
        // Nothing was closed: the client still echoes, and the admin closed nobody.
        echo_roundtrip(&mut ws, "still open").await;
        let stats = server.registry.snapshot();
        assert_eq!(stats.total_connections, 1);
        assert_eq!(stats.total_connections_closed, 0);

        // The same request from the admin's own origin is served.
        let own_origin = format!("http://{host}");
        let headers = [
            ("Host", host),
            ("Origin", own_origin.as_str()),
            ("Content-Type", "application/json"),
            auth,
        ];
        let response = send(server.admin_addr, "POST", "/api/admin", &headers, CLOSE_ALL).await;
        assert_eq!(response.status, 200, "{config:?}: {}", response.text());
        assert_eq!(expect_close(&mut ws).await.0, 1000);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_foreign_host_is_refused_with_or_without_a_token() {
    for config in [AdminConfig::new(), AdminConfig::new().token("t0k3n")] {
        let server = server_with(config).await;
        let port = server.admin_addr.port();
        let auth = ("Authorization", "Bearer t0k3n");
        // A DNS-rebinding page: its name now points at 127.0.0.1, but its Host is its own.
        for host in [
            "evil.example".to_owned(),
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
        ] {
            let headers = [("Host", host.as_str()), auth];
            let response = send(server.admin_addr, "GET", "/api/stats", &headers, "").await;
            expect_refused(&response, 421, "host not allowed");
        }
        // No Host at all.
        let response = send(server.admin_addr, "GET", "/api/stats", &[auth], "").await;
        expect_refused(&response, 421, "host not allowed");
        // Loopback names and the address itself are answered.
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            server.admin_addr.to_string(),
        ] {
            let headers = [("Host", host.as_str()), auth];
            let response = send(server.admin_addr, "GET", "/api/stats", &headers, "").await;
            assert_eq!(response.status, 200, "{host}: {}", response.text());
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn the_token_guards_every_route_but_health() {
    let server = server_with(AdminConfig::new().token("t0k3n")).await;
    let host = server.admin_addr.to_string();
    let host = ("Host", host.as_str());
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic t0k3n"),
        Some("t0k3n"),
    ] {
        let mut headers = vec![host];
        headers.extend(auth.map(|a| ("Authorization", a)));
        for (method, path, body) in [
            ("GET", "/api/stats", ""),
            ("POST", "/api/admin", CLOSE_ALL),
            ("GET", "/no/such/route", ""),
        ] {
            let mut headers = headers.clone();
            headers.push(("Content-Type", "application/json"));
            let response = send(server.admin_addr, method, path, &headers, body).await;
            // The same answer whatever is wrong: nothing about the server or the token.
            assert_eq!(response.status, 401, "{auth:?} {path}");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            assert_eq!(
                response.json(),
                serde_json::json!({"error": "unauthorized"})
            );
        }
    }
    let auth = ("Authorization", "Bearer t0k3n");
    let response = send(server.admin_addr, "GET", "/api/stats", &[host, auth], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let headers = [host, auth, ("Content-Type", "application/json")];
    let response = send(server.admin_addr, "POST", "/api/admin", &headers, CLOSE_ALL).await;
    assert_eq!(response.status, 200, "{}", response.text());
    // Health checks need no token, and without it learn no more than the main listener's
    // `/health` tells: not the instance id (by default the host name), nor the shutdown flag.
    for auth in [None, Some("Bearer wrong")] {
        let mut headers = vec![host];
        headers.extend(auth.map(|a| ("Authorization", a)));
        let response = send(server.admin_addr, "GET", "/health", &headers, "").await;
        assert_eq!(response.status, 200, "{}", response.text());
        let public: wscope_axum::PublicHealth = serde_json::from_value(response.json())
            .unwrap_or_else(|e| panic!("{auth:?}: {e}: {}", response.text()));
        assert!(public.is_healthy());
        assert!(
            !response.text().contains("test-node"),
            "{}",
            response.text()
        );
    }
    // With it, the full health.
    let response = send(server.admin_addr, "GET", "/health", &[host, auth], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["instanceId"], "test-node");
    assert_eq!(response.json()["shutDown"], false);
    server.shutdown().await;
}

#[tokio::test]
async fn allowed_hosts_and_origins_extend_the_defaults() {
    let config = AdminConfig::new()
        .allowed_hosts(["admin.example".parse().unwrap()])
        .allowed_origins(["https://ops.example"]);
    let server = server_with(config).await;
    let port = server.admin_addr.port();
    let listed = format!("admin.example:{port}");
    let response = send(
        server.admin_addr,
        "GET",
        "/api/stats",
        &[("Host", listed.as_str())],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    // A dashboard on a listed origin may post, though its browser calls it cross-site.
    let headers = [
        ("Host", listed.as_str()),
        ("Origin", "https://ops.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Content-Type", "application/json"),
    ];
    let body = r#"{"action":"cleanup"}"#;
    let response = send(server.admin_addr, "POST", "/api/admin", &headers, body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    // Another origin is not.
    let headers = [
        ("Host", listed.as_str()),
        ("Origin", "https://ops.example.evil"),
        ("Content-Type", "application/json"),
    ];
    let response = send(server.admin_addr, "POST", "/api/admin", &headers, body).await;
    expect_refused(&response, 403, "cross-site request refused");
    server.shutdown().await;
}

#[test]
fn the_config_never_shows_its_token() {
    let config = AdminConfig::new().token("t0k3n");
    assert!(config.has_token());
    let shown = format!("{config:?}");
    assert!(!shown.contains("t0k3n"), "{shown}");
    // A registry is not needed to build the router.
    let _ = admin_router(Registry::new()).layer(config.layer());
}
