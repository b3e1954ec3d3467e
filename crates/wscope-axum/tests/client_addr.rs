//! The recorded client address and user agent (items 3 and 4).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::net::IpAddr;

use common::*;
use wscope_axum::{ClientIpHeader, TrustedProxies};
use wscope_core::Registry;

engine_tests!(
    without_forwarding_headers_the_peer_is_recorded,
    a_trusted_peer_forwarding_headers_are_honoured,
    the_client_ip_header_is_the_one_read_and_none_other,
    an_ipv4_mapped_trusted_network_is_trusted_as_ipv4,
    an_untrusted_peer_cannot_spoof_its_address,
    only_the_listed_proxies_are_trusted,
    the_user_agent_is_recorded_and_bounded,
);

/// Request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Connects with `headers`, returns the address the registry recorded, and disconnects.
async fn recorded_addr(server: &TestServer, headers: &[(&str, &str)]) -> Option<String> {
    let ws = connect_with(server.addr, "/ws", headers).await;
    wait_open(&server.registry, 1).await;
    let snapshot = server.registry.snapshot();
    let addr = snapshot.connections[0]
        .remote_address
        .map(|a| a.to_string());
    // The handle agrees with the snapshot.
    let handle = server.registry.active_connections().pop().unwrap();
    assert_eq!(
        handle.remote_addr().map(|a| a.to_string()),
        addr,
        "handle vs snapshot"
    );
    close_client(ws).await;
    wait_count(&server.registry, 0).await;
    addr
}

async fn without_forwarding_headers_the_peer_is_recorded() {
    let server = TestServer::echo(test_registry()).await;
    assert_eq!(
        recorded_addr(&server, &[]).await.as_deref(),
        Some("127.0.0.1")
    );
    // Also on the wire.
    let ws = server.connect("/ws").await;
    wait_open(&server.registry, 1).await;
    let json = http_get(server.admin_addr, "/api/stats").await.json();
    assert_eq!(json["connections"][0]["remoteAddress"], "127.0.0.1");
    close_client(ws).await;
    wait_count(&server.registry, 0).await;
    server.shutdown().await;
}

async fn a_trusted_peer_forwarding_headers_are_honoured() {
    // The default Tracking trusts loopback, and the test client is on loopback.
    let server = TestServer::echo(test_registry()).await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("X-Forwarded-For", "203.0.113.7")], "203.0.113.7"),
        // The chain is walked from the right, skipping trusted hops.
        (
            &[("X-Forwarded-For", "198.51.100.1, 203.0.113.8, 127.0.0.1")],
            "203.0.113.8",
        ),
        // Only X-Forwarded-For is read by default: a client's own Forwarded is not believed.
        (
            &[
                ("X-Forwarded-For", "198.51.100.9"),
                ("Forwarded", "for=6.6.6.6"),
            ],
            "198.51.100.9",
        ),
        // An obfuscated or unparsable hop ends the walk at the last trusted hop (the peer).
        (&[("X-Forwarded-For", "unknown")], "127.0.0.1"),
        // ... and is never passed to believe what the client wrote left of it.
        (&[("X-Forwarded-For", "6.6.6.6, _hidden")], "127.0.0.1"),
    ];
    for (headers, expected) in cases {
        assert_eq!(
            recorded_addr(&server, headers).await.as_deref(),
            Some(expected),
            "headers {headers:?}"
        );
    }
    server.shutdown().await;
}

async fn the_client_ip_header_is_the_one_read_and_none_other() {
    let spoofed: &[(&str, &str)] = &[
        ("Forwarded", "for=6.6.6.6"),
        ("X-Forwarded-For", "198.51.100.7"),
        ("X-Real-IP", "6.6.6.7"),
    ];
    let cases: [(ClientIpHeader, Headers, &str); 6] = [
        (ClientIpHeader::XForwardedFor, spoofed, "198.51.100.7"),
        (ClientIpHeader::Forwarded, spoofed, "6.6.6.6"),
        (ClientIpHeader::XRealIp, spoofed, "6.6.6.7"),
        (
            ClientIpHeader::Forwarded,
            &[("Forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https")],
            "2001:db8:cafe::17",
        ),
        // The chosen header is absent: the peer, never another header's word.
        (
            ClientIpHeader::Forwarded,
            &[("X-Forwarded-For", "6.6.6.6")],
            "127.0.0.1",
        ),
        (
            ClientIpHeader::XRealIp,
            &[("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "6.6.6.6")],
            "127.0.0.1",
        ),
    ];
    for (header, headers, expected) in cases {
        let reg = test_registry();
        let proxies = TrustedProxies::default().header(header);
        let app = tracked(echo_routes(), tracking(&reg).trusted_proxies(proxies));
        let server = TestServer::start(reg, app).await;
        assert_eq!(
            recorded_addr(&server, headers).await.as_deref(),
            Some(expected),
            "{header}: headers {headers:?}"
        );
        server.shutdown().await;
    }
}

async fn an_ipv4_mapped_trusted_network_is_trusted_as_ipv4() {
    // The test client is 127.0.0.1; trusting it written as an IPv4-mapped network works.
    let reg = test_registry();
    let proxies: TrustedProxies = "::ffff:127.0.0.0/104".parse().unwrap();
    let app = tracked(echo_routes(), tracking(&reg).trusted_proxies(proxies));
    let server = TestServer::start(reg, app).await;
    assert_eq!(
        recorded_addr(&server, &[("X-Forwarded-For", "203.0.113.7")])
            .await
            .as_deref(),
        Some("203.0.113.7")
    );
    server.shutdown().await;
}

async fn an_untrusted_peer_cannot_spoof_its_address() {
    let reg = test_registry();
    let app = tracked(
        echo_routes(),
        tracking(&reg).trusted_proxies(TrustedProxies::none()),
    );
    let server = TestServer::start(reg, app).await;
    for headers in [
        [("X-Forwarded-For", "6.6.6.6")],
        [("Forwarded", "for=6.6.6.6")],
        [("X-Real-IP", "6.6.6.6")],
    ] {
        assert_eq!(
            recorded_addr(&server, &headers).await.as_deref(),
            Some("127.0.0.1"),
            "headers {headers:?}"
        );
    }
    server.shutdown().await;
}

async fn only_the_listed_proxies_are_trusted() {
    // Trusting another network than loopback: the loopback peer is not a proxy.
    let reg = test_registry();
    let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
    let app = tracked(echo_routes(), tracking(&reg).trusted_proxies(proxies));
    let server = TestServer::start(reg, app).await;
    assert_eq!(
        recorded_addr(&server, &[("X-Forwarded-For", "203.0.113.7")])
            .await
            .as_deref(),
        Some("127.0.0.1")
    );
    server.shutdown().await;
}

async fn the_user_agent_is_recorded_and_bounded() {
    let reg = Registry::with_config(test_config().max_user_agent_len(64));
    let server = TestServer::echo(reg.clone()).await;

    let short = server.connect_as("/ws", "Mozilla/5.0 (wscope test)").await;
    wait_open(&reg, 1).await;
    let c = &reg.snapshot().connections[0];
    assert_eq!(c.user_agent.as_deref(), Some("Mozilla/5.0 (wscope test)"));
    assert_eq!(
        reg.active_connections()[0].user_agent(),
        Some("Mozilla/5.0 (wscope test)")
    );
    close_client(short).await;
    wait_count(&reg, 0).await;

    // Longer than the bound: cut to exactly 64 bytes.
    let long = format!("agent-{}", "x".repeat(2000));
    let ws = server.connect_as("/ws", &long).await;
    wait_open(&reg, 1).await;
    let stored = reg.snapshot().connections[0].user_agent.clone().unwrap();
    assert_eq!(stored.len(), 64);
    assert_eq!(&*stored, &long[..64]);
    let json = http_get(server.admin_addr, "/api/stats").await.json();
    assert_eq!(json["connections"][0]["userAgent"], long[..64]);
    close_client(ws).await;
    wait_count(&reg, 0).await;

    // Exactly at the bound: kept whole.
    let exact = "y".repeat(64);
    let ws = server.connect_as("/ws", &exact).await;
    wait_open(&reg, 1).await;
    assert_eq!(
        reg.snapshot().connections[0].user_agent.as_deref(),
        Some(exact.as_str())
    );
    close_client(ws).await;
    wait_count(&reg, 0).await;

    // Multi-byte text is cut at a character boundary, never inside a character.
    let odd = format!("a{}", "é".repeat(40)); // 81 bytes; byte 64 falls inside an 'é'
    let ws = server.connect_as("/ws", &odd).await;
    wait_open(&reg, 1).await;
    let stored = reg.snapshot().connections[0].user_agent.clone().unwrap();
    assert_eq!(&*stored, &odd[..63]);
    close_client(ws).await;
    wait_count(&reg, 0).await;

    server.shutdown().await;
}

#[test]
fn loopback_is_trusted_by_default() {
    let t = TrustedProxies::default();
    assert!(t.contains(IpAddr::from([127, 0, 0, 1])));
    assert!(t.contains("::1".parse().unwrap()));
    assert!(!TrustedProxies::none().contains(IpAddr::from([127, 0, 0, 1])));
}
