//! permessage-deflate (RFC 7692) on every engine, with a client written by hand over raw TCP
//! (the test compresses and inflates with flate2): the negotiation with and without
//! `SocketConfig::permessage_deflate`, compressed echoes both ways, the server's window limit, a
//! deflate bomb closed with 1009, and no inflating state held between messages.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use axum::routing::get;
use axum::Router;
use common::raw::{frame, upgrade, Raw, BINARY, CONT, FIN, PING, PONG, RSV1, TEXT};
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use wscope_axum::SocketConfig;
use wscope_core::MessageBudget;

engine_tests!(
    deflate_is_agreed_only_when_the_server_enables_it,
    compressed_messages_echo_and_the_replies_are_compressed,
    the_window_the_client_allows_the_server_is_honoured,
    a_deflate_bomb_closes_with_1009_before_inflating_past_the_limit,
    inflating_state_is_held_only_while_a_compressed_message_comes_in,
);

const OFFER: (&str, &str) = (
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
);

/// `/ws` echo on the running test's engine; compression on or off, and its budget, to read.
async fn start(deflate: bool, socket: SocketConfig) -> (TestServer, MessageBudget) {
    let socket = socket.engine(engine()).permessage_deflate(deflate);
    let budget = socket.message_budget.clone();
    let reg = test_registry();
    let app = tracked(
        Router::new().route("/ws", get(echo)),
        tracking(&reg).socket_config(socket),
    );
    (TestServer::start(reg, app).await, budget)
}

/// `payload` deflated as a permessage-deflate message body (RFC 7692 §7.2.1).
fn deflate(payload: &[u8], level: Compression) -> Vec<u8> {
    let mut z = Compress::new(level, false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    loop {
        out.reserve(64 << 10);
        let done = z.total_in() as usize;
        z.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if z.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A message body inflated (with a `window_bits` window, as a client that allowed the server
/// no more would).
fn inflate(body: &[u8], window_bits: u8) -> Vec<u8> {
    let mut z = Decompress::new_with_window_bits(false, window_bits);
    let mut input = body.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    loop {
        out.reserve(1 << 20);
        let used = z.total_in() as usize;
        z.decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if z.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// Text that compresses well, as JSON does.
fn json(records: usize) -> Vec<u8> {
    let rows: Vec<String> = (0..records)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"user-{i}","active":true,"score":{}}}"#,
                i * 7 % 100
            )
        })
        .collect();
    format!("[{}]", rows.join(",")).into_bytes()
}

/// The next data message, which must be a compressed `opcode` message; inflated.
async fn compressed_reply(ws: &mut Raw, opcode: u8, window_bits: u8) -> Vec<u8> {
    let f = ws.read_message().await;
    assert!(f.rsv1, "a compressed message: {f:?}");
    assert_eq!(f.opcode, opcode);
    inflate(&f.payload, window_bits)
}

async fn deflate_is_agreed_only_when_the_server_enables_it() {
    let (plain, _) = start(false, SocketConfig::default()).await;
    let mut ws = upgrade(plain.addr, "/ws", &[OFFER]).await;
    assert_eq!(ws.header("sec-websocket-extensions"), None);
    // Not agreed: a compressed frame is a protocol error.
    ws.send(&frame(
        FIN | RSV1 | TEXT,
        &deflate(b"hello", Compression::default()),
    ))
    .await;
    assert_eq!(ws.expect_close().await.0, 1002);
    plain.shutdown().await;

    let (deflating, _) = start(true, SocketConfig::default()).await;
    let ws = upgrade(deflating.addr, "/ws", &[OFFER]).await;
    assert_eq!(
        ws.header("sec-websocket-extensions").as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    ws.close().await;
    // An offer with a parameter wscope does not know is declined; the next one is taken.
    let ws = upgrade(
        deflating.addr,
        "/ws",
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; x-unknown, permessage-deflate; server_max_window_bits=10",
        )],
    )
    .await;
    assert_eq!(
        ws.header("sec-websocket-extensions").as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        )
    );
    ws.close().await;
    let mut ws = upgrade(
        deflating.addr,
        "/ws",
        &[("Sec-WebSocket-Extensions", "permessage-deflate; x-unknown")],
    )
    .await;
    assert_eq!(ws.header("sec-websocket-extensions"), None);
    // A client that offers nothing talks plainly.
    let mut plain_client = deflating.connect("/ws").await;
    echo_roundtrip(&mut plain_client, &"no compression ".repeat(20)).await;
    ws.send(&frame(FIN | TEXT, b"uncompressed")).await;
    assert_eq!(ws.read_data().await.payload, b"uncompressed");
    ws.close().await;
    close_client(plain_client).await;
    deflating.shutdown().await;
}

async fn compressed_messages_echo_and_the_replies_are_compressed() {
    let (server, budget) = start(true, SocketConfig::default()).await;
    let mut ws = upgrade(server.addr, "/ws", &[OFFER]).await;
    let text = json(2000);
    let body = deflate(&text, Compression::default());
    assert!(body.len() * 4 < text.len(), "the test data compresses");

    // One frame.
    ws.send(&frame(FIN | RSV1 | TEXT, &body)).await;
    assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, text);

    // Fragments, a ping among them; larger than the frames the guard hands the engine.
    let big = json(10_000);
    assert!(big.len() > 64 << 10);
    let body = deflate(&big, Compression::default());
    let (head, tail) = body.split_at(body.len() / 3);
    let mut bytes = frame(RSV1 | BINARY, head);
    bytes.extend(frame(FIN | PING, b"are you there"));
    bytes.extend(frame(CONT, &tail[..10]));
    bytes.extend(frame(FIN | CONT, &tail[10..]));
    ws.send(&bytes).await;
    let pong = ws.read_frame().await;
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"are you there"[..])
    );
    assert_eq!(compressed_reply(&mut ws, BINARY, 15).await, big);

    // Uncompressed messages still pass on a compressing connection; every reply is compressed,
    // however small.
    ws.send(&frame(FIN | TEXT, b"short")).await;
    assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, b"short");
    ws.send(&frame(FIN | BINARY, b"")).await;
    assert_eq!(compressed_reply(&mut ws, BINARY, 15).await, b"");
    ws.send(&frame(FIN | TEXT, &text)).await;
    assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, text);

    // No context is kept: the same message compresses to the same bytes again.
    ws.send(&frame(
        FIN | RSV1 | TEXT,
        &deflate(&text, Compression::fast()),
    ))
    .await;
    let first = ws.read_message().await.payload;
    ws.send(&frame(
        FIN | RSV1 | TEXT,
        &deflate(&text, Compression::fast()),
    ))
    .await;
    assert_eq!(ws.read_message().await.payload, first);
    assert_eq!(budget.in_use(), 0);
    ws.close().await;
    server.shutdown().await;
}

/// With `server_max_window_bits=9` the server may look back 512 bytes at most: data that repeats
/// only 1 KiB apart, which a full window shrinks eightfold and more, does not shrink at all
/// (zlib's inflater reads any window whatever bits it is given, so the size is what tells).
async fn the_window_the_client_allows_the_server_is_honoured() {
    let (server, _) = start(true, SocketConfig::default()).await;
    let block: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data = block.repeat(16);
    let sent = frame(FIN | RSV1 | BINARY, &deflate(&data, Compression::default()));
    let echo = |offer: &'static str| {
        let sent = sent.clone();
        let addr = server.addr;
        async move {
            let mut ws = upgrade(addr, "/ws", &[("Sec-WebSocket-Extensions", offer)]).await;
            ws.send(&sent).await;
            let reply = ws.read_message().await;
            assert_eq!(reply.opcode, BINARY);
            let agreed = ws.header("sec-websocket-extensions").unwrap();
            ws.close().await;
            (agreed, reply)
        }
    };

    let (_, full) = echo("permessage-deflate").await;
    assert!(
        full.rsv1 && full.payload.len() < data.len() / 8,
        "{}",
        full.payload.len()
    );
    assert_eq!(inflate(&full.payload, 15), data);

    let (agreed, narrow) = echo("permessage-deflate; server_max_window_bits=9").await;
    assert!(agreed.ends_with("; server_max_window_bits=9"), "{agreed}");
    assert!(
        narrow.rsv1 && narrow.payload.len() > data.len() / 2,
        "{}",
        narrow.payload.len()
    );
    assert_eq!(inflate(&narrow.payload, 9), data);

    // Eight bits, which zlib cannot make: agreed, and the server sends uncompressed.
    let (agreed, eight) = echo("permessage-deflate; server_max_window_bits=8").await;
    assert!(agreed.ends_with("; server_max_window_bits=8"), "{agreed}");
    assert_eq!((eight.rsv1, eight.payload), (false, data));
    server.shutdown().await;
}

/// 64 MiB of zeros deflated to some 64 KiB: under a 1 MiB limit the server closes with 1009,
/// and holds nothing afterwards.
async fn a_deflate_bomb_closes_with_1009_before_inflating_past_the_limit() {
    let (server, budget) = start(true, SocketConfig::default()).await;
    // A flushed deflate stream may follow another: 64 copies of 1 MiB of zeros, deflated once.
    let mebibyte = deflate(&vec![0u8; 1 << 20], Compression::best());
    let mut bomb = Vec::new();
    for _ in 0..64 {
        bomb.extend_from_slice(&mebibyte);
        bomb.extend_from_slice(&[0, 0, 0xff, 0xff]);
    }
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 128 << 10, "{} bytes", bomb.len());
    assert_eq!(
        inflate(&bomb, 15).len(),
        64 << 20,
        "the bomb is what it says"
    );

    let mut ws = upgrade(server.addr, "/ws", &[OFFER]).await;
    ws.send(&frame(FIN | RSV1 | BINARY, &bomb)).await;
    assert_eq!(
        ws.expect_close().await,
        (1009, "Message too big".to_owned())
    );
    wait_until("the budget is free", || budget.in_use() == 0).await;
    let mut ws = upgrade(server.addr, "/ws", &[OFFER]).await;
    ws.send(&frame(
        FIN | RSV1 | TEXT,
        &deflate(&json(100), Compression::fast()),
    ))
    .await;
    assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, json(100));
    ws.close().await;
    server.shutdown().await;
}

/// A compressed message half sent is charged for the inflater its connection keeps meanwhile;
/// once whole, nothing is: between messages a compressing connection keeps no inflating state.
/// A small compressed message that comes whole passes even a spent budget. wscope's own engine
/// keeps no inflater while a message comes in (it inflates a message once whole, with the
/// thread's inflater): it is charged the compressed bytes it holds, as declared, and a slow
/// message within the budget passes.
async fn inflating_state_is_held_only_while_a_compressed_message_comes_in() {
    #[cfg(feature = "wscope")]
    let own = engine() == wscope_axum::Engine::Wscope;
    #[cfg(not(feature = "wscope"))]
    let own = false;
    let (server, budget) = start(true, SocketConfig::default()).await;
    let mut ws = upgrade(server.addr, "/ws", &[OFFER]).await;
    // wscope's own engine is charged for the compressed bytes: enough of them to be charged.
    let text = json(if own { 5000 } else { 500 });
    let body = deflate(&text, Compression::default());
    let whole = frame(FIN | RSV1 | TEXT, &body);
    let (first, rest) = whole.split_at(whole.len() / 2);
    ws.send(first).await;
    if own {
        assert!(body.len() > MessageBudget::SMALL_MESSAGE, "charged at all");
        wait_until("the compressed bytes are charged", || {
            budget.in_use() == body.len()
        })
        .await;
    } else {
        wait_until("the inflater is charged", || budget.in_use() >= 64 << 10).await;
    }
    ws.send(rest).await;
    assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, text);
    assert_eq!(budget.in_use(), 0);
    ws.close().await;
    server.shutdown().await;

    // A budget smaller than one inflater: slow compressed messages are refused, whole ones pass.
    let (server, budget) = start(
        true,
        SocketConfig::default().message_budget(
            // wscope's own: room for the compressed bytes and what they inflate to, held
            // together for a moment once the message is whole.
            MessageBudget::new(if own {
                body.len() + text.len()
            } else {
                32 << 10
            })
            .per_address(0),
        ),
    )
    .await;
    let mut ws = upgrade(server.addr, "/ws", &[OFFER]).await;
    ws.send(&whole).await;
    assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, text);
    ws.send(first).await;
    if own {
        ws.send(rest).await;
        assert_eq!(compressed_reply(&mut ws, TEXT, 15).await, text);
        ws.close().await;
    } else {
        assert_eq!(
            ws.expect_close().await,
            (1013, "Try again later".to_owned())
        );
    }
    assert_eq!(budget.in_use(), 0);
    server.shutdown().await;
}
