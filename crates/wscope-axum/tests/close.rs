//! Closing all connections and one by id, as the clients see it (items 5 and 6).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use wscope_core::{CloseCode, Initiator};

engine_tests!(
    close_all_with_a_custom_code_and_reason_reaches_every_client,
    close_all_default_is_1000_with_an_empty_reason,
    close_one_by_id_leaves_the_others_working,
    a_close_handle_reports_the_admin_initiator_to_the_handler,
    a_client_that_vanishes_without_a_close_frame_is_recorded_as_1006,
    admin_close_by_id_is_404_once_the_connection_has_ended,
);

async fn close_all_with_a_custom_code_and_reason_reaches_every_client() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut a = server.connect("/ws").await;
    let mut b = server.connect("/ws").await;
    let mut c = server.connect("/ws").await;
    wait_open(&reg, 3).await;

    let code = CloseCode::new(4001).unwrap();
    assert_eq!(reg.close_all(code, "maintenance"), Ok(3));
    // Already closing: a second close_all asks nobody.
    assert_eq!(reg.close_all(CloseCode::NORMAL, ""), Ok(0));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(expect_close(ws).await, (4001, "maintenance".to_owned()));
    }
    wait_count(&reg, 0).await;
    let s = reg.snapshot();
    assert_eq!(s.total_connections_closed, 3);
    assert_eq!(s.closed_by.admin, 3);
    assert_eq!(
        s.closed_by.client + s.closed_by.server + s.closed_by.error,
        0
    );

    server.shutdown().await;
}

async fn close_all_default_is_1000_with_an_empty_reason() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut a = server.connect("/ws").await;
    let mut b = server.connect("/ws").await;
    wait_open(&reg, 2).await;

    assert_eq!(reg.close_all(CloseCode::NORMAL, ""), Ok(2));
    assert_eq!(expect_close(&mut a).await, (1000, String::new()));
    assert_eq!(expect_close(&mut b).await, (1000, String::new()));
    wait_count(&reg, 0).await;
    assert_eq!(reg.snapshot().closed_by.admin, 2);

    // A reason that does not fit a close frame is refused before anything is closed.
    let mut d = server.connect("/ws").await;
    wait_open(&reg, 1).await;
    let long = "x".repeat(124);
    assert_eq!(
        reg.close_all(CloseCode::NORMAL, &long),
        Err(wscope_core::ReasonTooLong(124))
    );
    echo_roundtrip(&mut d, "still open").await;
    close_client(d).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn close_one_by_id_leaves_the_others_working() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut a = server.connect_as("/ws", "a").await;
    let mut b = server.connect_as("/ws", "b").await;
    let mut c = server.connect_as("/ws", "c").await;
    wait_open(&reg, 3).await;

    // Through the registry.
    let id_a = info(&reg, "a").id.to_string();
    assert_eq!(
        reg.close(&id_a, CloseCode::new(4002).unwrap(), "just you"),
        Ok(true)
    );
    assert_eq!(expect_close(&mut a).await, (4002, "just you".to_owned()));
    wait_count(&reg, 2).await;
    echo_roundtrip(&mut b, "b works").await;
    echo_roundtrip(&mut c, "c works").await;
    // The id is gone now.
    assert_eq!(reg.close(&id_a, CloseCode::NORMAL, ""), Ok(false));
    assert!(reg.connection(&id_a).is_none());

    // Through the admin API.
    let id_b = info(&reg, "b").id.to_string();
    let body = serde_json::json!({"action": "close", "id": id_b, "code": 4003, "reason": "admin says bye"});
    let response = admin_post(&server, &body.to_string()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), serde_json::json!({"success": true}));
    assert_eq!(
        expect_close(&mut b).await,
        (4003, "admin says bye".to_owned())
    );
    wait_count(&reg, 1).await;
    echo_roundtrip(&mut c, "c still works").await;
    assert_eq!(info(&reg, "c").state.as_str(), "OPEN");

    // Without code or reason: 1000 and "".
    let id_c = info(&reg, "c").id.to_string();
    let body = serde_json::json!({"action": "close", "id": id_c});
    assert_eq!(admin_post(&server, &body.to_string()).await.status, 200);
    assert_eq!(expect_close(&mut c).await, (1000, String::new()));
    wait_count(&reg, 0).await;

    let s = reg.snapshot();
    assert_eq!(s.closed_by.admin, 3);
    assert_eq!(s.total_connections_closed, 3);
    server.shutdown().await;
}

async fn a_close_handle_reports_the_admin_initiator_to_the_handler() {
    // The handler sees who closed it through its socket's close record.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let routes = axum::Router::new().route(
        "/ws",
        axum::routing::get(move |ws: wscope_axum::WebSocketUpgrade| {
            let tx = tx.clone();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    while socket.recv().await.is_some() {}
                    let _ = tx.send(socket.close_record());
                })
            }
        }),
    );
    let reg = test_registry();
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let mut ws = server.connect("/ws").await;
    wait_open(&reg, 1).await;
    reg.close_all(CloseCode::new(3000).unwrap(), "x").unwrap();
    assert_eq!(expect_close(&mut ws).await, (3000, "x".to_owned()));
    let record = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(record.initiator, Initiator::Admin);
    assert_eq!(record.code, Some(3000));
    assert_eq!(record.reason, "x");
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// RFC 6455 §7.1.5: a connection lost without a close frame has the close code 1006, whatever
/// the engine reports (tungstenite calls it a protocol error, others an I/O error or the end of
/// the stream). `/api/closed` and `/metrics` show it as such, and the server sends no close frame
/// of its own to a peer that is gone.
async fn a_client_that_vanishes_without_a_close_frame_is_recorded_as_1006() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut fin = server.connect_as("/ws", "fin").await;
    let mut reset = server.connect_as("/ws", "reset").await;
    let mut mid_frame = server.connect_as("/ws", "mid-frame").await;
    wait_open(&reg, 3).await;
    echo_roundtrip(&mut fin, "one").await;
    echo_roundtrip(&mut reset, "two").await;
    echo_roundtrip(&mut mid_frame, "three").await;

    // Goes away with a FIN and no close frame (a killed process, a closed laptop lid).
    drop(fin);
    wait_count(&reg, 2).await;
    // Goes away with a reset.
    reset.get_ref().set_zero_linger().unwrap();
    drop(reset);
    wait_count(&reg, 1).await;
    // Goes away in the middle of a frame: two bytes of a masked text frame's header.
    use tokio::io::AsyncWriteExt;
    let mut tcp = mid_frame.into_inner();
    tcp.write_all(&[0x81, 0x85]).await.unwrap();
    drop(tcp);
    wait_count(&reg, 0).await;

    let closed = http_get(server.admin_addr, "/api/closed").await;
    assert_eq!(closed.status, 200);
    let closed = closed.json();
    let rows = closed["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{closed}");
    for row in rows {
        assert_eq!(row["closedBy"], "error", "{row}");
        assert_eq!(row["code"], 1006, "{row}");
    }
    let s = reg.summary();
    assert_eq!(s.closed_by.error, 3);

    let metrics = http_get(server.admin_addr, "/metrics").await.text();
    let closes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wscope_connections_closed_total{"))
        .collect();
    assert_eq!(
        closes,
        [r#"wscope_connections_closed_total{code_class="abnormal",closed_by="error"} 3"#],
        "{metrics}"
    );
    server.shutdown().await;
}

/// `close` by id answers from what the close request met: asked (200 true), a close already under
/// way (200 false), or a connection that has ended (404, as an unknown id), even while its entry
/// is still tracked because its handler holds the finished socket.
async fn admin_close_by_id_is_404_once_the_connection_has_ended() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let routes = axum::Router::new().route(
        "/ws",
        axum::routing::get(move |ws: wscope_axum::WebSocketUpgrade| {
            let held = held.clone();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    while socket.recv().await.is_some() {}
                    // The connection is over; the handler keeps its socket a while longer.
                    held.notified().await;
                    drop(socket);
                })
            }
        }),
    );
    let reg = test_registry();
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let close = |id: &str| {
        let body = serde_json::json!({"action": "close", "id": id, "reason": "bye"}).to_string();
        let server = &server;
        async move { admin_post(server, &body).await }
    };

    // A client that does not answer the close yet: the first close asks, the second finds a
    // close under way.
    let mut slow = server.connect_as("/ws", "slow").await;
    wait_open(&reg, 1).await;
    let id = info(&reg, "slow").id.to_string();
    let first = close(&id).await;
    assert_eq!(
        (first.status, first.json()),
        (200, serde_json::json!({"success": true}))
    );
    let second = close(&id).await;
    assert_eq!(
        (second.status, second.json()),
        (200, serde_json::json!({"success": false}))
    );
    // The client answers: the connection is over, but its handler still holds the socket, so
    // the entry is still tracked (CLOSED) — and there is nothing left to close.
    assert_eq!(expect_close(&mut slow).await, (1000, "bye".to_owned()));
    wait_until("the connection is CLOSED", || {
        reg.summary().connections_by_state.closed == 1
    })
    .await;
    assert_eq!(reg.connection_count(), 1);
    let ended = close(&id).await;
    assert_eq!(ended.status, 404, "{}", ended.text());
    assert!(
        ended.json()["error"].as_str().unwrap().contains(&id),
        "{}",
        ended.text()
    );

    release.notify_one();
    wait_count(&reg, 0).await;
    let gone = close(&id).await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert_eq!(reg.summary().closed_by.admin, 1);
    server.shutdown().await;
}
