//! The client role: a wscope client connection to a wscope server, both ends tracked and run by
//! the same core driver, on the same engine, behind the same frame guard — what a proxy's
//! upstream side will be; and a wscope client against a raw server that sends what a server may
//! not (invalid UTF-8, a message over the client's limit, a masked frame).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use common::*;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use wscope_axum::engine::{http, ClientHandshake};
use wscope_axum::relay::{relay, RelayConfig, Upstream};
use wscope_axum::{SocketConfig, WebSocketUpgrade};
use wscope_core::{
    CloseCode, CloseRecord, ConnectionMeta, ConnectionState, Initiator, Message, Role,
};

engine_tests!(
    a_client_connection_echoes_counts_and_closes_through_the_driver,
    a_server_close_reaches_a_tracked_client,
    the_subprotocol_is_agreed_and_seen_on_both_ends,
    a_client_masks_what_it_sends_and_refuses_what_a_server_may_not_send,
    compression_is_agreed_and_used_both_ways_over_a_stream_of_the_callers,
    a_stalled_large_message_shows_in_the_client_entrys_memory_bytes_until_it_is_whole,
    a_relays_upstream_part_way_through_a_large_message_shows_in_the_clients_memory_bytes,
);

/// Client settings on the running test's engine.
fn client_config() -> SocketConfig {
    SocketConfig::default().engine(engine())
}

/// Both ends on the test's engine.
async fn a_client_connection_echoes_counts_and_closes_through_the_driver() {
    let server = TestServer::echo(test_registry()).await;
    let upstreams = test_registry();
    let url = format!("ws://{}/ws", server.addr);
    let connected = wscope_axum::connect_with(url.as_str(), &upstreams, &client_config())
        .await
        .unwrap();
    let (done_tx, done) = oneshot::channel();
    let task = tokio::spawn(connected.run(|mut socket| async move {
        assert_eq!(socket.role(), Role::Client);
        socket.send("hello").await.unwrap();
        let echoed = socket.recv().await;
        socket.send(vec![1u8, 2, 3]).await.unwrap();
        let echoed_bin = socket.recv().await;
        socket.close(CloseCode::NORMAL, "done").unwrap();
        // Read on until the server answers the close.
        while socket.recv().await.is_some() {}
        let _ = done_tx.send((echoed, echoed_bin, socket.close_record()));
    }));
    let (echoed, echoed_bin, record) = tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
    assert_eq!(echoed, Some(Message::text("hello")));
    assert_eq!(echoed_bin, Some(Message::binary(vec![1u8, 2, 3])));
    let record = record.unwrap();
    assert_eq!(
        record.initiator,
        Initiator::Server,
        "this side's handler closed"
    );
    assert_eq!((record.code, record.reason.as_str()), (Some(1000), "done"));
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();

    // Both ends were tracked: the client's registry counted what it sent and got back.
    wait_count(&upstreams, 0).await;
    wait_count(&server.registry, 0).await;
    let client_side = upstreams.snapshot();
    assert_eq!(client_side.total_connections_ever, 1);
    assert_eq!(client_side.closed_by.server, 1);
    let server_side = server.registry.snapshot();
    assert_eq!(server_side.total_connections_ever, 1);
    assert_eq!(
        server_side.closed_by.client, 1,
        "the server saw its peer close"
    );
    server.shutdown().await;
}

async fn a_server_close_reaches_a_tracked_client() {
    let server = TestServer::echo(test_registry()).await;
    let upstreams = test_registry();
    let url = format!("ws://{}/ws", server.addr);
    let connected = wscope_axum::connect_with(url.as_str(), &upstreams, &client_config())
        .await
        .unwrap();
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(connected.run(|mut socket| async move {
        while socket.recv().await.is_some() {}
        let _ = done_tx.send(socket.close_record());
    }));
    wait_open(&upstreams, 1).await;
    wait_open(&server.registry, 1).await;
    // The client side's own stats show the connection and the server it goes to.
    let c = &upstreams.snapshot().connections[0];
    assert_eq!(c.state, ConnectionState::Open);
    assert_eq!(&*c.path, "/ws");
    assert_eq!(c.remote_address, Some(server.addr.ip()));

    server
        .registry
        .close_all(CloseCode::GOING_AWAY, "bye")
        .unwrap();
    let record = tokio::time::timeout(WAIT, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        record.initiator,
        Initiator::Client,
        "the peer sent the close"
    );
    assert_eq!((record.code, record.reason.as_str()), (Some(1001), "bye"));
    wait_count(&upstreams, 0).await;
    wait_count(&server.registry, 0).await;
    assert_eq!(server.registry.snapshot().closed_by.admin, 1);
    server.shutdown().await;
}

async fn the_subprotocol_is_agreed_and_seen_on_both_ends() {
    let reg = test_registry();
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
    let routes = Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade| {
            let seen_tx = seen_tx.clone();
            async move {
                let ws = ws.protocols(["chat.v2", "chat.v1"]);
                ws.on_upgrade(move |mut socket| async move {
                    let _ = seen_tx.send(socket.protocol().map(str::to_owned));
                    while socket.recv().await.is_some() {}
                })
            }
        }),
    );
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let upstreams = test_registry();
    // The client prefers v1: the client's order decides among those the server supports.
    let request = http::Request::get(format!("ws://{}/ws", server.addr))
        .header("sec-websocket-protocol", "chat.v1, chat.v2")
        .body(())
        .unwrap();
    let connected = wscope_axum::connect_with(request, &upstreams, &client_config())
        .await
        .unwrap();
    let (client_tx, client_seen) = oneshot::channel();
    tokio::spawn(connected.run(|socket| async move {
        let _ = client_tx.send(socket.protocol().map(str::to_owned));
    }));
    let mut seen = seen;
    let server_seen = tokio::time::timeout(WAIT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server_seen.as_deref(), Some("chat.v1"));
    let client_seen = tokio::time::timeout(WAIT, client_seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client_seen.as_deref(), Some("chat.v1"));
    wait_count(&upstreams, 0).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// A server that speaks raw frames: it takes one WebSocket (tungstenite does the handshake) and
/// hands the test the TCP stream, to write what a server may not and read what the client sends
/// as it is on the wire.
async fn raw_server() -> (String, tokio::task::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/raw", listener.local_addr().unwrap());
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(tcp)
            .await
            .unwrap()
            .into_inner()
    });
    (url, accepted)
}

/// The next frame a client sent, read raw: its first byte, whether it was masked, its payload
/// (unmasked).
async fn read_client_frame(tcp: &mut TcpStream) -> (u8, bool, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.unwrap();
    let len = match head[1] & 0x7f {
        126 => usize::from(tcp.read_u16().await.unwrap()),
        127 => tcp.read_u64().await.unwrap() as usize,
        n => usize::from(n),
    };
    let masked = head[1] & 0x80 != 0;
    let mut key = [0u8; 4];
    if masked {
        tcp.read_exact(&mut key).await.unwrap();
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    (head[0], masked, payload)
}

/// A client on the test's engine that sends "hello" and reads until the connection is over;
/// its close record once it is.
fn hello_client(connected: wscope_axum::Connected) -> oneshot::Receiver<Option<CloseRecord>> {
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(connected.run(|mut socket| async move {
        socket.send("hello").await.unwrap();
        while socket.recv().await.is_some() {}
        let _ = done_tx.send(socket.close_record());
    }));
    done
}

/// What a client sends is masked (RFC 6455 §5.1); a server's text that is not UTF-8 fails the
/// client with 1007, a message over the client's limit with 1009 (refused from its header), a
/// masked frame from the server with 1002 — each close frame sent, masked, to the server.
async fn a_client_masks_what_it_sends_and_refuses_what_a_server_may_not_send() {
    let mut over_limit = vec![0x82, 126, 0, 200];
    over_limit.extend([7u8; 200]);
    let cases: [(&[u8], u16); 3] = [
        (&[0x81, 0x02, 0xff, 0xfe], 1007),
        (&over_limit, 1009),
        (&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2], 1002),
    ];
    for (frame, code) in cases {
        let (url, accepted) = raw_server().await;
        let upstreams = test_registry();
        let cfg = client_config().max_message_size(100);
        let connected = wscope_axum::connect_with(url.as_str(), &upstreams, &cfg)
            .await
            .unwrap();
        let done = hello_client(connected);
        let mut tcp = tokio::time::timeout(WAIT, accepted).await.unwrap().unwrap();
        let (first, masked, payload) = read_client_frame(&mut tcp).await;
        assert_eq!((first, masked, &payload[..]), (0x81, true, &b"hello"[..]));
        tcp.write_all(frame).await.unwrap();
        let (first, masked, payload) = tokio::time::timeout(WAIT, read_client_frame(&mut tcp))
            .await
            .unwrap();
        assert_eq!((first, masked), (0x88, true), "a masked close frame");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
        drop(tcp);
        let record = tokio::time::timeout(WAIT, done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(record.initiator, Initiator::Error, "{code}");
        // tokio-websockets fails the connection itself (its own close frame, checked above).
        assert!(record.code.is_none_or(|c| c == code), "{record:?}");
        wait_count(&upstreams, 0).await;
    }
}

/// A tracked client's row shows what its engine holds, as an accepted connection's does: a server
/// that sends half of a large binary message and stalls leaves the client's entry with
/// `memoryBytes` of at least that half (the engines behind the guard count the declared size),
/// and 0 once the message is whole.
async fn a_stalled_large_message_shows_in_the_client_entrys_memory_bytes_until_it_is_whole() {
    let (message, framed) = large_message();
    let (head, rest) = framed.split_at(framed.len() - SIZE / 2);
    let (url, accepted) = raw_server().await;
    let upstreams = test_registry();
    let connected = wscope_axum::connect_with(url.as_str(), &upstreams, &client_config())
        .await
        .unwrap();
    let (got_tx, got) = oneshot::channel();
    let task = tokio::spawn(connected.run(|mut socket| async move {
        let _ = got_tx.send(socket.recv().await);
        while socket.recv().await.is_some() {}
    }));
    let mut tcp = tokio::time::timeout(WAIT, accepted).await.unwrap().unwrap();
    let held = || {
        let connections = upstreams.snapshot().connections;
        assert_eq!(connections.len(), 1, "the client's entry");
        connections[0].memory_bytes
    };
    assert_eq!(held(), 0, "nothing held before the message");

    tcp.write_all(head).await.unwrap();
    wait_until("the client's entry holds the half received", || {
        held() >= (SIZE / 2) as u64
    })
    .await;
    tcp.write_all(rest).await.unwrap();
    let got = tokio::time::timeout(WAIT, got).await.unwrap().unwrap();
    assert_eq!(got, Some(Message::binary(message)));
    wait_until("the client's entry holds nothing", || held() == 0).await;

    // The server closes; the client answers (masked) and its entry leaves.
    let close = raw::close_payload(1000, b"done");
    tcp.write_all(&raw::frame_with(raw::FIN | raw::CLOSE, &close, None))
        .await
        .unwrap();
    let (first, masked, _) = tokio::time::timeout(WAIT, read_client_frame(&mut tcp))
        .await
        .unwrap();
    assert_eq!((first, masked), (0x88, true), "the client's close reply");
    drop(tcp);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    wait_count(&upstreams, 0).await;
}

/// The size of the message the stalling servers send half of.
const SIZE: usize = 600 << 10;

/// A binary message of [`SIZE`] bytes that do not repeat in a short period (a payload of zeros
/// would read the same), and its frame as a server sends it.
fn large_message() -> (Vec<u8>, Vec<u8>) {
    let message: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let framed = raw::frame_with(raw::FIN | raw::BINARY, &message, None);
    (message, framed)
}

/// A relay's upstream hop counts in its client's row: an upstream that sends the first part of a
/// large binary message and stalls leaves the client's `memoryBytes` (in the registry, the
/// connections API and the process total) at least that part above what it was, and back once
/// the message is whole; an upstream that vanishes part-way takes its share with it at once,
/// while the client's connection is still closing.
async fn a_relays_upstream_part_way_through_a_large_message_shows_in_the_clients_memory_bytes() {
    let (message, framed) = large_message();
    let (head, rest) = framed.split_at(framed.len() - SIZE / 2);
    let (url, accepted) = raw_server().await;
    let upstream = Upstream::new(url.trim_end_matches("/raw").parse().unwrap()).unwrap();
    let config = RelayConfig::default().socket(client_config());
    let registry = test_registry();
    let app = Router::new().route(
        "/raw",
        get(move |ws: WebSocketUpgrade, request: Request| async move {
            relay(ws, request.headers(), request.uri(), &upstream, &config).await
        }),
    );
    let server = TestServer::start(registry.clone(), tracked(app, tracking(&registry))).await;
    let mut client = server.connect("/raw").await;
    let mut tcp = tokio::time::timeout(WAIT, accepted).await.unwrap().unwrap();
    wait_open(&registry, 1).await;
    let held = || {
        let connections = registry.snapshot().connections;
        assert_eq!(connections.len(), 1, "the client's entry, and only it");
        connections[0].memory_bytes
    };
    let idle = held();
    assert!(idle < 64 << 10, "an idle relay holds {idle} B");

    tcp.write_all(head).await.unwrap();
    let half = (SIZE / 2) as u64;
    wait_until("the client's row holds the half the upstream sent", || {
        held() >= idle + half
    })
    .await;
    assert!(registry.traffic().memory_bytes >= idle + half);
    let page = http_get(server.admin_addr, "/api/connections?sort=memory").await;
    let row = &page.json()["connections"][0];
    assert!(row["memoryBytes"].as_u64().unwrap() >= idle + half, "{row}");

    tcp.write_all(rest).await.unwrap();
    let got = next_msg(&mut client).await.unwrap();
    assert_eq!(got.into_data().as_ref(), message.as_slice());
    wait_until("the client's row is back to idle", || held() == idle).await;

    // Part of another, then the upstream is gone: while the client has not answered the close
    // it is sent (its entry still there, closing), the upstream's share is gone already.
    tcp.write_all(head).await.unwrap();
    wait_until("the client's row holds the half again", || {
        held() >= idle + half
    })
    .await;
    drop(tcp);
    wait_until("the vanished upstream's share is gone", || held() <= idle).await;
    expect_close(&mut client).await;
    wait_count(&registry, 0).await;
    assert_eq!(registry.traffic().memory_bytes, 0);
    server.shutdown().await;
}

/// A stream that counts the bytes that go through it: a stream of the caller's, as
/// `Engine::client` takes any.
struct Counted {
    tcp: TcpStream,
    read: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// permessage-deflate offered by the client and agreed by the server; a 100 KB text goes to the
/// server and back in a few hundred bytes each way, and arrives whole — over a stream the test
/// opened, through `ClientHandshake` and `Engine::client`.
async fn compression_is_agreed_and_used_both_ways_over_a_stream_of_the_callers() {
    let reg = test_registry();
    let app = tracked(
        Router::new().route("/ws", get(echo)),
        tracking(&reg).socket_config(
            SocketConfig::default()
                .engine(engine())
                .permessage_deflate(true),
        ),
    );
    let server = TestServer::start(reg, app).await;
    let (read, written) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let io = Counted {
        tcp: TcpStream::connect(server.addr).await.unwrap(),
        read: read.clone(),
        written: written.clone(),
    };
    let cfg = client_config().permessage_deflate(true);
    let request = http::Request::get(format!("ws://{}/ws", server.addr))
        .body(())
        .unwrap();
    let upgraded = ClientHandshake::new(request, &cfg)
        .unwrap()
        .perform(io)
        .await
        .unwrap();
    let deflate = upgraded.deflate.expect("agreed");
    assert_eq!(deflate.compress_window_bits(), Some(15));
    let upstreams = test_registry();
    let meta = ConnectionMeta::new("/ws");
    let permit = upstreams.admit(&meta).unwrap();
    let accepted = upstreams.register(meta, permit);
    let gauge = accepted.memory_gauge();
    let transport = cfg
        .engine
        .client(upgraded.stream, &cfg, Some(deflate), gauge)
        .await;
    let (after_handshake_read, after_handshake_written) = (
        read.load(Ordering::Relaxed),
        written.load(Ordering::Relaxed),
    );
    let text = "compress me, ".repeat(8_000);
    let (done_tx, done) = oneshot::channel();
    let sent = text.clone();
    tokio::spawn(accepted.run(transport, |mut socket| async move {
        socket.send(sent.as_str()).await.unwrap();
        let echoed = socket.recv().await;
        socket.close(CloseCode::NORMAL, "done").unwrap();
        while socket.recv().await.is_some() {}
        let _ = done_tx.send(echoed);
    }));
    let echoed = tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
    assert_eq!(echoed, Some(Message::text(text.as_str())));
    let on_wire_out = written.load(Ordering::Relaxed) - after_handshake_written;
    let on_wire_in = read.load(Ordering::Relaxed) - after_handshake_read;
    assert!(
        on_wire_out < 2_000,
        "{on_wire_out} bytes sent for {}",
        text.len()
    );
    assert!(
        on_wire_in < 2_000,
        "{on_wire_in} bytes received for {}",
        text.len()
    );
    wait_count(&upstreams, 0).await;
    server.shutdown().await;
}
