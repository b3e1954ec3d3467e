//! The admin API and the close records against a hostile caller: what an unauthenticated prober
//! of the admin listener learns, and how clients that cut their connection (between frames, in a
//! header, in a payload, with a reset) are recorded, on every engine.

use std::time::Duration;

use wscope_testkit::raw::{client_frame, header, upgrade, BINARY, FIN, MASK, TEXT};
use wscope_testkit::served::Served;
use wscope_testkit::{http, http_get};

use super::{still_serves, BIN};

/// With a token set, a prober without it (or with a wrong one) reads from the admin listener's
/// `/health` no more than the public health says — no instance id (the host name by default),
/// no shutdown flag, no cluster state — and every other admin path, known or not, is the same
/// 401, so it cannot map the API; with the token it gets the full health, JSON 404s and 405s.
#[tokio::test]
async fn an_admin_prober_without_the_token_learns_no_host_name_and_no_routes() {
    let served = Served::start(
        BIN,
        &["--instance-id", "secret-host-7", "--admin-token", "t0k3n"],
    );
    let host = served.admin.to_string();
    for auth in [None, Some("Bearer wrong"), Some("Basic t0k3n")] {
        let mut headers = vec![("Host", host.as_str())];
        headers.extend(auth.map(|a| ("Authorization", a)));
        let health = http(served.admin, "GET", "/health", &headers, None).await;
        assert_eq!(health.status, 200, "{auth:?}");
        let body = health.json();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["activeConnections", "averageAge", "status", "uptime"],
            "{auth:?}"
        );
        assert!(!health.text().contains("secret-host-7"), "{auth:?}");
        for (method, path) in [
            ("GET", "/api/stats"),
            ("GET", "/api/admin"),
            ("GET", "/api/no-such-route"),
            ("POST", "/api/admin"),
        ] {
            let mut headers = headers.clone();
            headers.push(("Content-Type", "application/json"));
            let refused = http(served.admin, method, path, &headers, None).await;
            assert_eq!(refused.status, 401, "{auth:?} {method} {path}");
            assert_eq!(refused.json(), serde_json::json!({"error": "unauthorized"}));
        }
    }
    let auth = [("Host", host.as_str()), ("Authorization", "Bearer t0k3n")];
    let health = http(served.admin, "GET", "/health", &auth, None).await;
    assert_eq!(health.json()["instanceId"], "secret-host-7");
    let missing = http(served.admin, "GET", "/api/no-such-route", &auth, None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    let get_admin = http(served.admin, "GET", "/api/admin", &auth, None).await;
    assert_eq!(get_admin.status, 405);
    assert_eq!(get_admin.header("allow"), Some("POST"));
    assert!(get_admin.json()["error"].is_string());
    // The main listener's health never names the host.
    let public = http_get(served.main, "/health").await;
    assert!(!public.text().contains("secret-host-7"));
    still_serves(&served).await;
}

/// Clients that cut their connection without a close frame — after a message, inside a frame's
/// header, inside its payload, or with a reset — are recorded as RFC 6455 §7.1.5 says: 1006,
/// closed by `error`, and counted as `abnormal` (not as a protocol error), on every engine; the
/// server sends nothing to them and goes on serving.
#[tokio::test]
async fn clients_that_cut_the_connection_are_recorded_as_1006_on_every_engine() {
    for engine in wscope_axum::Engine::ALL.iter().map(|e| e.as_str()) {
        let served = Served::start(BIN, &["--engine", engine]);
        let cuts: [(&str, Vec<u8>, bool); 4] = [
            ("after a message", client_frame(TEXT, b"bye"), false),
            (
                "in a header",
                header(FIN | BINARY, 300, Some(MASK))[..3].to_vec(),
                false,
            ),
            (
                "in a payload",
                client_frame(BINARY, &[7u8; 300])[..100].to_vec(),
                false,
            ),
            ("with a reset", Vec::new(), true),
        ];
        for (what, bytes, reset) in &cuts {
            let mut raw = upgrade(served.main, "/ws", &[("User-Agent", what)]).await;
            if !bytes.is_empty() {
                raw.send(bytes).await;
            }
            if *what == "after a message" {
                // Read the echo, so that the hang-up is a FIN and not a reset over unread data.
                assert_eq!(raw.read_data().await.payload, b"bye");
            }
            if *reset {
                raw.tcp.set_zero_linger().unwrap();
            }
            drop(raw);
        }
        let admin = served.admin;
        let closed = || async move {
            http_get(admin, "/api/closed").await.json()["connections"]
                .as_array()
                .unwrap()
                .clone()
        };
        let mut rows = Vec::new();
        for _ in 0..500 {
            rows = closed().await;
            if rows.len() == cuts.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rows.len(), cuts.len(), "{engine}: {rows:#?}");
        for row in &rows {
            assert_eq!(row["closedBy"], "error", "{engine}: {row}");
            assert_eq!(row["code"], 1006, "{engine}: {row}");
        }
        let metrics = http_get(served.admin, "/metrics").await.text();
        let closes: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("wscope_connections_closed_total{"))
            .collect();
        assert_eq!(
            closes,
            [r#"wscope_connections_closed_total{code_class="abnormal",closed_by="error"} 4"#],
            "{engine}"
        );
        still_serves(&served).await;
    }
}
