//! The dashboard's files as the admin router serves them: the page and its assets without a
//! token (the page must load to ask for one) but under the `Host` and `Origin` checks, the API
//! still behind the token, content types, the Content-Security-Policy and cache headers. The page
//! itself runs in a real browser in `crates/wscope/tests/dashboard.rs`.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use wscope_axum::{admin_router, AdminConfig};
use wscope_testkit::http;

async fn server(token: &str) -> TestServer {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let admin = admin_router(registry.clone()).layer(AdminConfig::new().token(token).layer());
    TestServer::start_with_admin(registry, app, admin).await
}

/// The `dashboard/<digest>/<name>` URLs the page loads, in order.
fn asset_urls(page: &str) -> Vec<String> {
    page.split(['"', '\''])
        .filter(|s| s.starts_with("dashboard/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_page_and_its_assets_load_without_the_token_and_the_api_does_not() {
    let server = server("t0k3n").await;
    let admin = server.admin_addr;

    let page = http(admin, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));

    let urls = asset_urls(&page.text());
    let names: Vec<&str> = urls.iter().map(|u| u.rsplit('/').next().unwrap()).collect();
    assert_eq!(
        names,
        ["uPlot.min.css", "app.css", "uPlot.iife.min.js", "app.js"]
    );
    for url in &urls {
        let asset = http(admin, "GET", &format!("/{url}"), &[], None).await;
        assert_eq!(asset.status, 200, "{url}: {}", asset.text());
        let expected = if url.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(asset.header("content-type"), Some(expected), "{url}");
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{url}"
        );
        assert!(!asset.body.is_empty());
    }

    // The data is not public: every API route still wants the token.
    for path in ["/api/stats", "/api/closed"] {
        let refused = http(admin, "GET", path, &[], None).await;
        assert_eq!(refused.status, 401, "{path}");
        let allowed = http(
            admin,
            "GET",
            path,
            &[("Authorization", "Bearer t0k3n")],
            None,
        )
        .await;
        assert_eq!(allowed.status, 200, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn only_the_current_build_s_assets_are_served() {
    let server = server("t0k3n").await;
    let admin = server.admin_addr;
    let page = http(admin, "GET", "/", &[], None).await;
    let app_js = asset_urls(&page.text())
        .into_iter()
        .find(|u| u.ends_with("/app.js"))
        .unwrap();
    let digest = app_js.split('/').nth(1).unwrap();
    // Another build's digest: same length, one digit different.
    let other = if digest.starts_with('0') { "1" } else { "0" };
    let stale = format!("/dashboard/{other}{}/app.js", &digest[1..]);
    for path in [
        stale,
        format!("/{}", app_js.replace("app.js", "secret.js")),
        "/dashboard/app.js".to_owned(),
    ] {
        let missing = http(admin, "GET", &path, &[], None).await;
        assert_eq!(missing.status, 404, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_is_revalidated_by_its_etag() {
    let server = server("t0k3n").await;
    let admin = server.admin_addr;
    let page = http(admin, "GET", "/", &[], None).await;
    let etag = page.header("etag").unwrap().to_owned();
    // A 304 has no body length to read by: the connection's end marks it.
    let close = ("Connection", "close");
    let again = http(admin, "GET", "/", &[("If-None-Match", &etag), close], None).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let weak = format!("\"other\", W/{etag}");
    let again = http(admin, "GET", "/", &[("If-None-Match", &weak), close], None).await;
    assert_eq!(again.status, 304);
    let changed = http(admin, "GET", "/", &[("If-None-Match", "\"other\"")], None).await;
    assert_eq!(changed.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_is_under_the_host_and_origin_checks() {
    let server = server("t0k3n").await;
    let admin = server.admin_addr;
    // A DNS-rebinding page reaches the listener under its own name.
    let rebinding = wscope_testkit::send_raw(
        admin,
        b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(rebinding.starts_with("HTTP/1.1 421"), "{rebinding}");
    // Another site's script may not read the page (or anything else) ...
    let fetched = [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Dest", "empty"),
    ];
    assert_eq!(http(admin, "GET", "/", &fetched, None).await.status, 403);
    // ... nor frame it ...
    let framed = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Dest", "iframe"),
    ];
    assert_eq!(http(admin, "GET", "/", &framed, None).await.status, 403);
    // ... but a link on another site (a runbook, a wiki) opens the page, which holds no data;
    // the page only, not the API.
    let opened = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Dest", "document"),
    ];
    assert_eq!(http(admin, "GET", "/", &opened, None).await.status, 200);
    let mut to_api = opened.to_vec();
    to_api.push(("Authorization", "Bearer t0k3n"));
    let api = http(admin, "GET", "/api/stats", &to_api, None).await;
    assert_eq!(api.status, 403);
    server.shutdown().await;
}
