//! `wscope_axum::serve`: the bound on request heads, the handshake timeout (slowloris), the
//! addresses each request carries, a graceful stop that leaves WebSockets to the registry, and
//! the direct upgrade path (a first request that is a WebSocket upgrade answered without hyper,
//! everything else hyper's). Malformed input goes over raw TCP.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wscope_axum::{admin_router, serve, ServeOptions};
use wscope_core::Registry;

engine_tests!(
    frames_sent_with_the_request_before_the_101_are_read_first,
    a_head_split_across_reads_still_upgrades,
    an_upgrade_after_a_plain_request_is_taken_over_from_hyper,
);

/// A server for `app` through `wscope_axum::serve` with `options`, stopped by the sender.
async fn start(
    app: Router,
    options: ServeOptions,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = serve(listener, app, options).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    (addr, stop, tokio::spawn(server.into_future()))
}

/// Stops a server and joins it.
async fn stop(stop: oneshot::Sender<()>, task: JoinHandle<std::io::Result<()>>) {
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the server stops in time")
        .unwrap()
        .unwrap();
}

/// Writes `request` and reads what comes back until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    wscope_testkit::send_raw(addr, request).await
}

/// An upgrade request for `/ws` with one extra header of `padding` bytes.
fn upgrade_with_padding(addr: SocketAddr, padding: usize) -> Vec<u8> {
    let mut request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    request.push_str(&format!("X-Padding: {}\r\n", "a".repeat(padding)));
    request.push_str("\r\n");
    request.into_bytes()
}

#[tokio::test]
async fn a_head_larger_than_the_limit_gets_431() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;
    assert_eq!(ServeOptions::default().max_header_size, 16 << 10);

    // 64 KiB of headers: refused before any route sees it.
    let answer = exchange(addr, &upgrade_with_padding(addr, 64 << 10)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // Just over the limit, whole.
    let answer = exchange(addr, &upgrade_with_padding(addr, 16 << 10)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // Under it: served (a plain GET on the WebSocket route gets its 426).
    let answer = exchange(addr, &upgrade_with_padding(addr, 12 << 10)).await;
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");

    // A smaller limit, set as a library option.
    let app = tracked(echo_routes(), tracking(&registry));
    let (small, small_stopper, small_task) =
        start(app, ServeOptions::default().max_header_size(2 << 10)).await;
    let answer = exchange(small, &upgrade_with_padding(small, 4 << 10)).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    let answer = exchange(small, &upgrade_with_padding(small, 1 << 10)).await;
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");

    // An upgrade request over the limit, whole, in one write: 431 too, never the route's 101.
    for padding in [17 << 10, 40 << 10] {
        let pad = format!("X-Padding: {}", "a".repeat(padding));
        let mut upgrade = raw::upgrade_request(addr, "/ws", &[&pad]);
        upgrade = upgrade.replace("Connection: Upgrade", "Connection: Upgrade, close");
        let answer = exchange(addr, upgrade.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{padding}: {answer}");
    }
    // A limit that is no power of two: a head read in two pieces that ends past it.
    let app = tracked(echo_routes(), tracking(&registry));
    let (odd, odd_stopper, odd_task) =
        start(app, ServeOptions::default().max_header_size(3000)).await;
    let pad = format!("X-Padding: {}", "a".repeat(3300));
    let upgrade = raw::upgrade_request(odd, "/ws", &[&pad]);
    let answer = exchange(odd, upgrade.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    stop(odd_stopper, odd_task).await;

    // A WebSocket client still gets through.
    let mut ws = connect_with(addr, "/ws", &[]).await;
    echo_roundtrip(&mut ws, "after the flood").await;
    close_client(ws).await;
    stop(stopper, task).await;
    stop(small_stopper, small_task).await;
}

#[tokio::test]
async fn a_byte_a_tick_slowloris_is_cut_off_at_the_handshake_timeout() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let options = ServeOptions::default().handshake_timeout(Duration::from_millis(300));
    let (addr, stopper, task) = start(app, options).await;

    let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    let closed = tokio::spawn(async move {
        let mut chunk = [0u8; 256];
        while let Ok(1..) = reader.read(&mut chunk).await {}
    });
    // A head that would take 20 s to finish at this pace; the server must hang up long before.
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(200)
    );
    let mut sent = 0;
    for byte in head.as_bytes() {
        if closed.is_finished() || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sent < head.len(),
        "the whole head went through, byte by byte"
    );
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the server closed the connection")
        .unwrap();

    // A connection that sends nothing at all is dropped too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("a silent connection is dropped");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Well-behaved clients are still served, and nothing was registered for the slow ones.
    let mut ws = connect_with(addr, "/ws", &[]).await;
    echo_roundtrip(&mut ws, "on time").await;
    close_client(ws).await;
    assert_eq!(registry.snapshot().total_connections_ever, 1);
    stop(stopper, task).await;
}

#[tokio::test]
async fn the_client_and_local_addresses_reach_the_handlers() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;

    // The peer address (ConnectInfo) reaches the extractor ...
    let ws = connect_with(addr, "/ws", &[]).await;
    wait_open(&registry, 1).await;
    let recorded = registry.snapshot().connections[0].remote_address;
    assert_eq!(recorded, Some("127.0.0.1".parse().unwrap()));
    close_client(ws).await;
    wait_count(&registry, 0).await;
    // ... so a trusted (loopback) peer's forwarding header is believed.
    let ws = connect_with(addr, "/ws", &[("X-Forwarded-For", "203.0.113.7")]).await;
    wait_open(&registry, 1).await;
    let recorded = registry.snapshot().connections[0].remote_address;
    assert_eq!(recorded, Some("203.0.113.7".parse().unwrap()));
    close_client(ws).await;
    wait_count(&registry, 0).await;

    // The local address (LocalAddr) reaches the admin guard: a loopback name is answered at
    // the listener's own port only.
    let (admin, admin_stopper, admin_task) =
        start(admin_router(registry.clone()), ServeOptions::default()).await;
    let own = format!("localhost:{}", admin.port());
    let other = format!("localhost:{}", admin.port().wrapping_add(1).max(1));
    for (host, status) in [(own.as_str(), 200), (other.as_str(), 421)] {
        let raw = format!("GET /api/stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = exchange(admin, raw.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{host}: {answer}"
        );
    }
    stop(stopper, task).await;
    stop(admin_stopper, admin_task).await;
}

#[tokio::test]
async fn a_graceful_stop_finishes_http_and_leaves_websockets_to_the_registry() {
    let registry = Registry::with_config(test_config());
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;
    let mut ws = connect_with(addr, "/ws", &[]).await;
    wait_open(&registry, 1).await;
    // The server stops without waiting for the WebSocket ...
    stop(stopper, task).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    echo_roundtrip(&mut ws, "still here").await;
    // ... which the registry's own drain closes.
    let drained = tokio::spawn({
        let registry = registry.clone();
        async move { registry.shutdown().await }
    });
    assert_eq!(expect_close(&mut ws).await.0, 1001);
    let report = tokio::time::timeout(WAIT, drained).await.unwrap().unwrap();
    assert_eq!((report.connections, report.dropped), (1, 0));
}

/// A client that sends its first frames in the same write as its upgrade request, before the
/// 101 comes: hyper reads them with the request head, and the engine, handed the TCP stream
/// itself by `wscope_axum::serve`, must read those bytes before the socket's (they are echoed first, in order). A
/// second message after the 101 comes from the socket.
async fn frames_sent_with_the_request_before_the_101_are_read_first() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;
    let mut bytes = raw::upgrade_request(addr, "/ws", &[]).into_bytes();
    for text in ["early one", "early two"] {
        bytes.extend(raw::frame_with(
            raw::FIN | raw::TEXT,
            text.as_bytes(),
            Some(raw::MASK),
        ));
    }
    let mut client = raw::Raw::connect(addr).await;
    client.send(&bytes).await;
    assert_eq!(client.response_head().await, 101);
    for text in ["early one", "early two"] {
        let frame = client.read_frame().await;
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (raw::TEXT, text.as_bytes())
        );
    }
    client
        .send(&raw::frame_with(
            raw::FIN | raw::TEXT,
            b"after",
            Some(raw::MASK),
        ))
        .await;
    let frame = client.read_frame().await;
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (raw::TEXT, &b"after"[..])
    );
    client
        .send(&raw::frame_with(
            raw::FIN | raw::CLOSE,
            &1000u16.to_be_bytes(),
            Some(raw::MASK),
        ))
        .await;
    assert_eq!(client.read_frame().await.opcode, raw::CLOSE);
    wait_count(&registry, 0).await;
    let closed = &registry.recently_closed(None)[0];
    assert_eq!((closed.messages_in, closed.messages_out), (3, 3));
    stop(stopper, task).await;
}

/// Sends `bytes` in pieces of `piece` bytes, each after a pause (so each is a read of its own).
async fn send_in_pieces(client: &mut raw::Raw, bytes: &[u8], piece: usize) {
    for chunk in bytes.chunks(piece) {
        client.send(chunk).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Echoes one text frame over a raw, upgraded connection and closes it.
async fn raw_echo_and_close(client: &mut raw::Raw, text: &str) {
    let frame = raw::frame_with(raw::FIN | raw::TEXT, text.as_bytes(), Some(raw::MASK));
    client.send(&frame).await;
    let echoed = client.read_frame().await;
    assert_eq!(
        (echoed.opcode, echoed.payload.as_slice()),
        (raw::TEXT, text.as_bytes())
    );
    let close = raw::frame_with(
        raw::FIN | raw::CLOSE,
        &1000u16.to_be_bytes(),
        Some(raw::MASK),
    );
    client.send(&close).await;
    assert_eq!(client.read_frame().await.opcode, raw::CLOSE);
}

/// The direct path reads a head that arrives a few bytes at a time (the blank line itself split
/// across reads) and upgrades it.
async fn a_head_split_across_reads_still_upgrades() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;
    let request = raw::upgrade_request(addr, "/ws", &["User-Agent: piecemeal"]);
    for piece in [1, 7, 64] {
        let mut client = raw::Raw::connect(addr).await;
        send_in_pieces(&mut client, request.as_bytes(), piece).await;
        assert_eq!(client.response_head().await, 101, "pieces of {piece}");
        wait_open(&registry, 1).await;
        assert_eq!(
            registry.snapshot().connections[0].user_agent.as_deref(),
            Some("piecemeal")
        );
        raw_echo_and_close(&mut client, "whole").await;
        wait_count(&registry, 0).await;
    }
    stop(stopper, task).await;
}

/// A keep-alive connection whose first request is plain HTTP is hyper's; an upgrade that follows
/// on it is hyper's too, and the engine still takes over the stream hyper was given (the one
/// the direct path read the first head from), hyper's read-ahead first.
async fn an_upgrade_after_a_plain_request_is_taken_over_from_hyper() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;
    let mut client = raw::Raw::connect(addr).await;
    // A plain GET on the WebSocket route: 426, and the connection stays open.
    let plain = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    client.send(plain.as_bytes()).await;
    assert_eq!(client.response_head().await, 426, "{}", client.response);
    let length: usize = client.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; length];
    client.tcp.read_exact(&mut body).await.unwrap();
    // Then the upgrade, with a frame in the same write.
    let mut bytes = raw::upgrade_request(addr, "/ws", &[]).into_bytes();
    bytes.extend(raw::frame_with(
        raw::FIN | raw::TEXT,
        b"early",
        Some(raw::MASK),
    ));
    client.send(&bytes).await;
    assert_eq!(client.response_head().await, 101, "{}", client.response);
    let early = client.read_frame().await;
    assert_eq!(early.payload.as_slice(), b"early");
    raw_echo_and_close(&mut client, "later").await;
    wait_count(&registry, 0).await;
    assert_eq!(registry.snapshot().total_connections_ever, 1);
    stop(stopper, task).await;
}

/// An upgrade request the route refuses is answered on the direct path in full (status, JSON
/// body, its length, a date), and HTTP goes on over the connection: the request pipelined
/// behind it is answered too; unless the request asked to close, among its `Connection` tokens.
#[tokio::test]
async fn a_refused_upgrade_is_answered_and_the_next_request_served() {
    let registry = test_registry();
    let app = tracked(echo_routes(), tracking(&registry));
    let (addr, stopper, task) = start(app, ServeOptions::default()).await;
    let bad_key = raw::upgrade_request(addr, "/ws", &[]).replace(raw::KEY, "short");
    let next = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let answer = exchange(addr, format!("{bad_key}{next}").as_bytes()).await;
    let (first, second) = answer
        .split_once("HTTP/1.1 426 ")
        .unwrap_or_else(|| panic!("two answers: {answer}"));
    assert!(first.starts_with("HTTP/1.1 400 "), "{first}");
    let lower = first.to_ascii_lowercase();
    assert!(lower.contains("\r\ndate: "), "{first}");
    let (head, body) = first.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\ncontent-length: {}", body.len())),
        "{first}"
    );
    assert!(body.contains("Sec-WebSocket-Key"), "{body}");
    assert!(second.contains("Upgrade required"), "{second}");
    // `close` among the `Connection` tokens: the connection ends after the answer (else this
    // waits for a close that never comes, and fails).
    let closing = bad_key.replace("Connection: Upgrade", "Connection: Upgrade, close");
    let answer = exchange(addr, closing.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert_eq!(registry.snapshot().total_connections_ever, 0);
    stop(stopper, task).await;
}

/// axum's own `WebSocketUpgrade` needs hyper's upgrade: with the direct path (the default) it
/// answers 426; with `direct_upgrades(false)` it upgrades.
#[tokio::test]
async fn axum_s_own_upgrade_works_with_direct_upgrades_off() {
    use axum::extract::ws::WebSocketUpgrade as AxumUpgrade;
    let app = || {
        Router::new().route(
            "/axum",
            axum::routing::get(|ws: AxumUpgrade| async move { ws.on_upgrade(|_socket| async {}) }),
        )
    };
    for (direct, status) in [(true, 426), (false, 101)] {
        let options = ServeOptions::default().direct_upgrades(direct);
        let (addr, stopper, task) = start(app(), options).await;
        let mut client = raw::Raw::connect(addr).await;
        client
            .send(raw::upgrade_request(addr, "/axum", &[]).as_bytes())
            .await;
        assert_eq!(client.response_head().await, status, "direct {direct}");
        drop(client);
        stop(stopper, task).await;
    }
}
