//! The client role: a wscope client connection to a wscope server, both ends tracked and run by
//! the same core driver — what a proxy's upstream side will be.
#![cfg(feature = "tungstenite")]
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use axum::routing::get;
use axum::Router;
use common::*;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wscope_axum::WebSocketUpgrade;
use wscope_core::{CloseCode, ConnectionState, Initiator, Message, Role};

engine_tests!(
    a_client_connection_echoes_counts_and_closes_through_the_driver,
    a_server_close_reaches_a_tracked_client,
    the_subprotocol_is_agreed_and_seen_on_both_ends,
);

/// Server on the test's engine; client always tungstenite (the client engine).
async fn a_client_connection_echoes_counts_and_closes_through_the_driver() {
    let server = TestServer::echo(test_registry()).await;
    let upstreams = test_registry();
    let url = format!("ws://{}/ws", server.addr);
    let connected = wscope_axum::connect(url.as_str(), &upstreams)
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
    let connected = wscope_axum::connect(url.as_str(), &upstreams)
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
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    // The client prefers v1: the client's order decides among those the server supports.
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "chat.v1, chat.v2".parse().unwrap(),
    );
    let connected = wscope_axum::connect(request, &upstreams).await.unwrap();
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
