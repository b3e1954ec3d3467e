//! Protocol enforcement on every engine, through raw TCP: what a client may not send (unmasked
//! frames, reserved bits and opcodes, broken fragmentation) closes with 1002; a frame or message
//! over the limits closes with 1009 as soon as its header says so, before its payload is read;
//! the shared budget of partly received bytes refuses large messages with 1013 while small ones
//! keep flowing. After each, the server still serves.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use axum::routing::get;
use axum::Router;
use common::raw::{self, frame, header, upgrade, BINARY, CONT, FIN, MASK, PING, PONG, TEXT};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::SocketConfig;
use wscope_core::MessageBudget;

engine_tests!(
    a_frame_declaring_2_pow_63_bytes_is_refused_with_1009_at_its_header,
    continuation_frames_past_the_limit_are_refused_at_their_header,
    one_byte_fragments_add_up_to_the_limit_and_one_more_is_refused,
    unmasked_client_frames_are_refused_with_1002,
    broken_framing_is_refused_with_1002,
    a_fragmented_message_with_a_ping_inside_echoes_whole,
    the_default_limit_is_one_mebibyte,
    the_budget_refuses_large_messages_with_1013_while_small_ones_echo,
    a_raised_message_limit_raises_an_unset_frame_limit,
    one_address_holds_at_most_its_share_of_the_budget,
    a_message_that_stalls_past_its_deadline_closes_with_1008,
);

/// `/ws` echo on the running test's engine with `socket` settings.
async fn echo_server(socket: SocketConfig) -> TestServer {
    let reg = test_registry();
    let tracking = tracking(&reg).socket_config(socket.engine(engine()));
    let app = tracked(Router::new().route("/ws", get(echo)), tracking);
    TestServer::start(reg, app).await
}

/// A fresh client still connects and echoes, and nothing is left charged to `budget`.
async fn still_serves(server: &TestServer, budget: &MessageBudget) {
    let mut ws = server.connect("/ws").await;
    echo_roundtrip(&mut ws, "still serving").await;
    close_client(ws).await;
    wait_until("the budget is free again", || budget.in_use() == 0).await;
}

/// An echo server with the default settings but a budget the test can read.
async fn default_server() -> (TestServer, MessageBudget) {
    let budget = MessageBudget::new(SocketConfig::DEFAULT_MAX_BUFFERED_BYTES);
    let server = echo_server(SocketConfig::default().message_budget(budget.clone())).await;
    (server, budget)
}

async fn a_frame_declaring_2_pow_63_bytes_is_refused_with_1009_at_its_header() {
    let (server, budget) = default_server().await;
    // Headers alone: had the server waited for the payload, no close would ever come.
    for declared in [1u64 << 63, (1 << 63) - 1, (1 << 20) + 1] {
        let mut ws = upgrade(server.addr, "/ws", &[]).await;
        ws.send(&header(FIN | BINARY, declared, Some(MASK))).await;
        assert_eq!(
            ws.expect_close().await,
            (1009, "Message too big".to_owned()),
            "{declared}"
        );
    }
    // The largest frame allowed is taken.
    let mut ws = server.connect("/ws").await;
    let max = vec![7u8; SocketConfig::DEFAULT_MAX_MESSAGE_SIZE];
    ws.send(WsMessage::binary(max.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(max)));
    close_client(ws).await;
    still_serves(&server, &budget).await;
    assert_eq!(server.registry.snapshot().closed_by.error, 3);
    server.shutdown().await;
}

/// The fastwebsockets engine alone once took 512 KiB continuation frames without end under a
/// 1 MiB limit: the running total is checked at each frame's header.
async fn continuation_frames_past_the_limit_are_refused_at_their_header() {
    let (server, budget) = default_server().await;
    let half = vec![1u8; 512 << 10];
    let mut ws = upgrade(server.addr, "/ws", &[]).await;
    ws.send(&frame(BINARY, &half)).await;
    ws.send(&frame(CONT, &half)).await; // 1 MiB so far: at the limit, still fine
    wait_until("the message is charged", || budget.in_use() == 1 << 20).await;
    ws.send(&header(CONT, 512 << 10, Some(MASK))).await;
    assert_eq!(
        ws.expect_close().await,
        (1009, "Message too big".to_owned())
    );
    still_serves(&server, &budget).await;
    server.shutdown().await;
}

/// 65,536 one-byte fragments: 65,535 make a message of the largest size allowed, which echoes;
/// one more is refused with 1009, however small each fragment.
async fn one_byte_fragments_add_up_to_the_limit_and_one_more_is_refused() {
    const LIMIT: usize = 65_535;
    let budget = MessageBudget::new(64 << 20);
    let socket = SocketConfig::default()
        .max_message_size(LIMIT)
        .message_budget(budget.clone());
    let server = echo_server(socket).await;
    let fragments = |n: usize, last_fin: bool| {
        let mut bytes = frame(BINARY, b"x");
        for i in 1..n {
            let fin = if last_fin && i == n - 1 { FIN } else { 0 };
            bytes.extend(frame(fin | CONT, b"x"));
        }
        bytes
    };

    let mut ws = upgrade(server.addr, "/ws", &[]).await;
    ws.send(&fragments(LIMIT, true)).await;
    let echoed = ws.read_message().await;
    assert_eq!((echoed.opcode, echoed.payload.len()), (BINARY, LIMIT));
    assert!(echoed.payload.iter().all(|&b| b == b'x'));
    ws.close().await;

    let mut ws = upgrade(server.addr, "/ws", &[]).await;
    ws.send(&fragments(LIMIT + 1, false)).await;
    assert_eq!(
        ws.expect_close().await,
        (1009, "Message too big".to_owned())
    );
    still_serves(&server, &budget).await;
    server.shutdown().await;
}

async fn unmasked_client_frames_are_refused_with_1002() {
    let (server, budget) = default_server().await;
    for first in [FIN | TEXT, FIN | PING, BINARY] {
        let mut ws = upgrade(server.addr, "/ws", &[]).await;
        ws.send(&raw::frame_with(first, b"no mask", None)).await;
        // Nothing echoed, no pong: the close comes first.
        let f = ws.read_frame().await;
        assert_eq!(f.opcode, raw::CLOSE, "{first:#x}: {f:?}");
        assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), 1002);
    }
    still_serves(&server, &budget).await;
    server.shutdown().await;
}

async fn broken_framing_is_refused_with_1002() {
    let (server, budget) = default_server().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("RSV1 without compression", frame(FIN | 0x40 | TEXT, b"a")),
        ("RSV2", frame(FIN | 0x20 | TEXT, b"a")),
        ("RSV3", frame(FIN | 0x10 | BINARY, b"a")),
        ("reserved data opcode", frame(FIN | 0x3, b"a")),
        ("reserved control opcode", frame(FIN | 0xb, b"a")),
        ("fragmented ping", frame(PING, b"a")),
        ("ping over 125 bytes", frame(FIN | PING, &[0; 126])),
        ("continuation outside a message", frame(FIN | CONT, b"a")),
        ("new message inside a fragmented one", {
            let mut b = frame(TEXT, b"a");
            b.extend(frame(FIN | TEXT, b"b"));
            b
        }),
    ];
    for (what, bytes) in cases {
        let mut ws = upgrade(server.addr, "/ws", &[]).await;
        ws.send(&bytes).await;
        assert_eq!(
            ws.expect_close().await,
            (1002, "Protocol error".to_owned()),
            "{what}"
        );
    }
    still_serves(&server, &budget).await;
    server.shutdown().await;
}

async fn a_fragmented_message_with_a_ping_inside_echoes_whole() {
    let (server, _budget) = default_server().await;
    let mut ws = upgrade(server.addr, "/ws", &[]).await;
    let mut bytes = frame(TEXT, b"hel");
    bytes.extend(frame(FIN | PING, b"p"));
    bytes.extend(frame(CONT, b""));
    bytes.extend(frame(FIN | CONT, b"lo"));
    ws.send(&bytes).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let f = ws.read_frame().await;
        got.push((f.opcode, f.payload));
    }
    got.sort();
    assert_eq!(got, vec![(TEXT, b"hello".to_vec()), (PONG, b"p".to_vec())]);
    ws.close().await;
    server.shutdown().await;
}

async fn the_default_limit_is_one_mebibyte() {
    let (server, _budget) = default_server().await;
    let mut ws = server.connect("/ws").await;
    let max = vec![3u8; 1 << 20];
    ws.send(WsMessage::binary(max.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(WsMessage::binary(max)));
    ws.send(WsMessage::binary(vec![3u8; (1 << 20) + 1]))
        .await
        .unwrap();
    assert_eq!(
        expect_close(&mut ws).await,
        (1009, "Message too big".to_owned())
    );
    server.shutdown().await;
}

/// Two connections send large messages in slow 64 KiB fragments into a 200 KiB budget: each in
/// turn hits it and gets 1013, while a third connection's small messages keep echoing; once
/// they are gone the budget is whole again.
async fn the_budget_refuses_large_messages_with_1013_while_small_ones_echo() {
    const PART: usize = 64 << 10;
    let budget = MessageBudget::new(200 << 10).per_address(0);
    let server = echo_server(SocketConfig::default().message_budget(budget.clone())).await;
    let part = vec![9u8; PART];
    let mut small = server.connect("/ws").await;
    let mut a = upgrade(server.addr, "/ws", &[]).await;
    let mut b = upgrade(server.addr, "/ws", &[]).await;
    let charged = |n: usize| {
        let budget = budget.clone();
        async move {
            wait_until(&format!("{n} parts are charged"), || {
                budget.in_use() == n * PART
            })
            .await
        }
    };

    a.send(&frame(BINARY, &part)).await;
    charged(1).await;
    b.send(&frame(BINARY, &part)).await;
    charged(2).await;
    a.send(&frame(CONT, &part)).await;
    charged(3).await;
    echo_roundtrip(&mut small, "small messages pass").await;
    // A fourth part does not fit: b's message is refused, and what it held is given back.
    b.send(&frame(CONT, &part)).await;
    assert_eq!(b.expect_close().await, (1013, "Try again later".to_owned()));
    charged(2).await;
    echo_roundtrip(&mut small, "still passing").await;
    a.send(&frame(CONT, &part)).await;
    charged(3).await;
    a.send(&frame(CONT, &part)).await;
    assert_eq!(a.expect_close().await, (1013, "Try again later".to_owned()));
    charged(0).await;

    // With the budget free, a large message passes again.
    echo_roundtrip(&mut small, "and after").await;
    let large = vec![5u8; 150 << 10];
    small.send(WsMessage::binary(large.clone())).await.unwrap();
    assert_eq!(next_msg(&mut small).await, Some(WsMessage::binary(large)));
    close_client(small).await;
    assert_eq!(budget.in_use(), 0);
    server.shutdown().await;
}

/// With the message limit raised and no frame limit set, a message larger than the default limit
/// sent as one frame (as browsers send every message) echoes; a frame limit that is set still
/// holds.
async fn a_raised_message_limit_raises_an_unset_frame_limit() {
    let big = vec![3u8; 4 << 20];
    let server = echo_server(SocketConfig::default().max_message_size(8 << 20)).await;
    let mut ws = server.connect("/ws").await;
    ws.send(WsMessage::binary(big.clone())).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(WsMessage::binary(big.clone()))
    );
    close_client(ws).await;
    server.shutdown().await;

    let server = echo_server(
        SocketConfig::default()
            .max_message_size(8 << 20)
            .max_frame_size(1 << 20),
    )
    .await;
    let mut ws = upgrade(server.addr, "/ws", &[]).await;
    ws.send(&header(FIN | BINARY, big.len() as u64, Some(MASK)))
        .await;
    assert_eq!(
        ws.expect_close().await,
        (1009, "Message too big".to_owned())
    );
    server.shutdown().await;
}

/// Eight clients forwarded from one IPv6 host (eight addresses of one /64, the default grouping)
/// each start a 1 MiB message under an 8 MiB budget: two fit the host's quarter, the others are
/// refused with 1013 at their header, and a client from another address still gets its 100 KB
/// message through (before, all eight were held and every other large message was refused).
async fn one_address_holds_at_most_its_share_of_the_budget() {
    let budget = MessageBudget::new(8 << 20);
    let server = echo_server(SocketConfig::default().message_budget(budget.clone())).await;
    let part = vec![1u8; 1 << 20];
    let mut holders = Vec::new();
    for i in 0..8 {
        let address = format!("2001:db8:6:6::{i:x}");
        let attacker = [("X-Forwarded-For", address.as_str())];
        let mut ws = upgrade(server.addr, "/ws", &attacker).await;
        ws.send(&frame(BINARY, &part)).await;
        if i < 2 {
            wait_until("the message is charged", || {
                budget.in_use() == (i + 1) << 20
            })
            .await;
            holders.push(ws);
        } else {
            let (code, reason) = ws.expect_close().await;
            assert_eq!((code, reason.as_str()), (1013, "Try again later"));
        }
    }
    let ip = server
        .registry
        .client_key("2001:db8:6:6::1".parse().unwrap());
    assert_eq!(budget.held_by(ip), 2 << 20);
    let mut other = upgrade(server.addr, "/ws", &[("X-Forwarded-For", "10.0.0.1")]).await;
    let message = vec![2u8; 100_000];
    other.send(&frame(FIN | BINARY, &message)).await;
    assert_eq!(other.read_message().await.payload, message);
    let closed = server.registry.recently_closed(None);
    assert!(
        closed
            .iter()
            .all(|c| c.reason.contains("one address may hold")),
        "{closed:?}"
    );
    drop(holders);
    wait_until("the share is given back", || budget.held_by(ip) == 0).await;
    server.shutdown().await;
}

/// A message whose rest does not come within the deadline is failed with 1008, counted as a
/// timeout, and its bytes leave the budget; one that completes in time echoes.
async fn a_message_that_stalls_past_its_deadline_closes_with_1008() {
    let budget = MessageBudget::new(64 << 20);
    let socket = SocketConfig::default()
        .message_budget(budget.clone())
        .message_timeout(std::time::Duration::from_millis(300));
    let server = echo_server(socket).await;
    let whole = frame(FIN | BINARY, &vec![4u8; 200_000]);
    let mut stalled = upgrade(server.addr, "/ws", &[]).await;
    stalled.send(&whole[..100_000]).await;
    wait_until("the message is charged", || budget.in_use() == 200_000).await;
    assert_eq!(
        stalled.expect_close().await,
        (1008, "Message timeout".to_owned())
    );
    wait_until("the budget is free", || budget.in_use() == 0).await;
    let record = &server.registry.recently_closed(None)[0];
    assert_eq!(record.reason, "message not received in full within 300ms");
    assert_eq!(server.registry.snapshot().closed_by.timeout, 1);

    let mut prompt = upgrade(server.addr, "/ws", &[]).await;
    prompt.send(&whole).await;
    assert_eq!(prompt.read_message().await.payload.len(), 200_000);
    prompt.close().await;
    server.shutdown().await;
}
