//! Runs that are refused before any load, or that find nothing to load: one clear line naming
//! the flag or URL, and nothing sent. No server needed: ports are held closed, addresses refused.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wscope_bench::{
    broadcast, churn, echo, idle, BenchError, BroadcastOptions, ChurnOptions, CommonOptions,
    EchoOptions, IdleOptions,
};

fn common() -> CommonOptions {
    CommonOptions {
        timeout: Some(Duration::from_secs(15)),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A loopback port with nothing listening on it, held (bound, not listening) for as long as the
/// socket lives, so no other test's server can be given it meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_give_one_clear_line() {
    let (_held, port) = closed_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let want = format!("cannot connect to {url}: connection refused");
    let e = echo(EchoOptions {
        url: url.clone(),
        connections: 2,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(e, BenchError::Unreachable { .. }));
    assert_eq!(e.to_string(), want);
    let e = idle(IdleOptions {
        url: url.clone(),
        connections: 2,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), want);
    let e = churn(ChurnOptions {
        url: url.clone(),
        connections: 2,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), want);
    let e = broadcast(BroadcastOptions {
        url: url.clone(),
        connections: 2,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_than_the_fd_limit_is_an_error_naming_c() {
    // Far past any hard limit: refused before the first socket is opened.
    let (_held, port) = closed_port();
    let e = idle(IdleOptions {
        url: format!("ws://127.0.0.1:{port}/ws"),
        connections: 1 << 40,
        common: common(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(e, BenchError::FdLimit { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("-c 1099511627776: needs about") && text.contains("open files"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_targets_are_refused_before_any_traffic() {
    // Documentation address (TEST-NET-1): refused by parsing, never contacted.
    for url in ["ws://192.0.2.1:8080/ws", "ws://example.com/ws"] {
        let e = idle(IdleOptions {
            url: url.to_owned(),
            connections: 1,
            common: common(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(matches!(e, BenchError::NotLoopback { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("--url {url}: only loopback targets are allowed (127.0.0.0/8, ::1, localhost)")
        );
        let e = echo(EchoOptions {
            url: url.to_owned(),
            connections: 1,
            common: common(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(matches!(e, BenchError::NotLoopback { .. }), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sender_url_is_refused_naming_the_flag() {
    // Checked with --url, before any connect: the --url port is closed and never reached.
    let (_held, port) = closed_port();
    let url = format!("ws://127.0.0.1:{port}/ws/chat");
    for (sender, reason) in [
        (
            "ws://192.0.2.1:8080/ws/chat",
            "only loopback targets are allowed (127.0.0.0/8, ::1, localhost)",
        ),
        ("http://127.0.0.1:8080/ws/chat", "the scheme must be ws://"),
        ("127.0.0.1:8080", "the scheme must be ws://"),
    ] {
        let e = broadcast(BroadcastOptions {
            url: url.clone(),
            sender_url: Some(sender.to_owned()),
            connections: 2,
            common: common(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), format!("--sender-url {sender}: {reason}"));
    }
}
