//! The callback-style handler (`WebSocketUpgrade::on_message`) through real sockets, on every
//! engine: echo and counts, a close from either side, a panic closed with 1011, the message rate
//! limit, backpressure on a client that does not read, and the drain.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::{CloseCode, Initiator, Message, Registry};

engine_tests!(
    a_callback_echoes_and_closes_from_either_side,
    a_panicking_callback_is_closed_with_1011_and_not_called_again,
    a_client_over_its_message_rate_is_closed_with_1008_by_the_callback_driver,
    a_client_still_flooding_past_its_message_rate_gets_the_1008_close_not_a_reset,
    a_client_that_does_not_read_is_held_up_not_closed,
    a_shutdown_closes_callback_connections_with_1001,
);

/// `/ws`: echoes each message; "bye" closes with 1000 "bye", "boom" panics.
fn callback_routes() -> Router {
    Router::new().route(
        "/ws",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_message(|socket, msg| {
                if let Message::Text(t) = &msg {
                    match t.as_str() {
                        "bye" => {
                            socket.close(CloseCode::NORMAL, "bye").unwrap();
                            return;
                        }
                        "boom" => panic!("the callback panics"),
                        _ => {}
                    }
                }
                socket.send(msg).unwrap();
            })
        }),
    )
}

async fn server(registry: &Registry) -> TestServer {
    let app = tracked(callback_routes(), tracking(registry));
    TestServer::start(registry.clone(), app).await
}

async fn a_callback_echoes_and_closes_from_either_side() {
    let reg = test_registry();
    let server = server(&reg).await;
    let mut ws = server.connect_as("/ws", "client-closes").await;
    wait_open(&reg, 1).await;
    for i in 0..10 {
        echo_roundtrip(&mut ws, &format!("message {i}")).await;
    }
    ws.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(WsMessage::Binary(b))) => assert_eq!(&b[..], &[1, 2, 3]),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    let c = info(&reg, "client-closes");
    assert_eq!((c.messages_in, c.messages_out), (11, 11));
    close_client(ws).await;
    wait_count(&reg, 0).await;
    assert_eq!(reg.snapshot().closed_by.client, 1);

    let mut ws = server.connect_as("/ws", "server-closes").await;
    wait_open(&reg, 1).await;
    echo_roundtrip(&mut ws, "hello").await;
    ws.send(WsMessage::text("bye")).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, (1000, "bye".into()));
    wait_count(&reg, 0).await;
    let closed = &reg.recently_closed(Some(1))[0];
    assert_eq!(closed.closed_by, Initiator::Server);
    assert_eq!((closed.code, closed.reason.as_str()), (Some(1000), "bye"));
    assert_eq!(reg.snapshot().closed_by.server, 1);
    server.shutdown().await;
}

async fn a_panicking_callback_is_closed_with_1011_and_not_called_again() {
    let reg = test_registry();
    let server = server(&reg).await;
    let mut ws = server.connect_as("/ws", "panics").await;
    wait_open(&reg, 1).await;
    echo_roundtrip(&mut ws, "before").await;
    ws.send(WsMessage::text("boom")).await.unwrap();
    // Sent after the panic: no echo comes back, only the close.
    ws.send(WsMessage::text("after")).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, (1011, "Internal error".into()));
    wait_count(&reg, 0).await;
    let closed = &reg.recently_closed(Some(1))[0];
    assert_eq!(closed.closed_by, Initiator::Panic);
    assert_eq!(reg.snapshot().closed_by.panic, 1);
    // The server goes on serving.
    let mut other = server.connect_as("/ws", "next").await;
    echo_roundtrip(&mut other, "still serving").await;
    close_client(other).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn a_client_over_its_message_rate_is_closed_with_1008_by_the_callback_driver() {
    let reg = Registry::with_config(test_config().max_messages_per_second(20));
    let server = server(&reg).await;
    a_flooding_client_is_closed_with_1008(&server).await;
    server.shutdown().await;
}

async fn a_client_still_flooding_past_its_message_rate_gets_the_1008_close_not_a_reset() {
    let reg = Registry::with_config(test_config().max_messages_per_second(20));
    let server = server(&reg).await;
    a_client_still_flooding_gets_the_1008_close(&server).await;
    server.shutdown().await;
}

async fn a_client_that_does_not_read_is_held_up_not_closed() {
    const LIMIT: usize = 64 * 1024;
    let reg = Registry::with_config(test_config().max_queued_bytes(LIMIT));
    let server = server(&reg).await;
    // The callback driver stops reading while the queue is over its bound, so TCP pushes back on
    // the client.
    a_client_that_does_not_read_is_held_up(&server, LIMIT).await;
    server.shutdown().await;
}

async fn a_shutdown_closes_callback_connections_with_1001() {
    let reg = test_registry();
    let server = server(&reg).await;
    let mut ws = server.connect("/ws").await;
    wait_open(&reg, 1).await;
    echo_roundtrip(&mut ws, "hello").await;
    let shutdown = tokio::spawn({
        let reg = reg.clone();
        async move { reg.shutdown().await }
    });
    assert_eq!(
        expect_close(&mut ws).await,
        (1001, "Server shutting down".into())
    );
    let report = tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert_eq!((report.connections, report.dropped), (1, 0));
    server.shutdown().await;
}
