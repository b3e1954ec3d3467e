//! Counts, totals and every stats field, through real sockets (items 1 and 2).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::SinkExt;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::{Bytes, Clock, CloseCode, Message, Registry, StateCounts};

engine_tests!(
    counts_and_totals_across_opens_and_closes,
    ages_and_idle_times_follow_the_clock_and_reset_on_activity,
    message_and_byte_counters,
    connections_by_state_counts_every_state,
    stats_json_uses_the_reference_field_names,
);

fn manual_registry() -> (Registry, wscope_core::ManualClock) {
    let (clock, manual) = Clock::manual();
    let registry = Registry::with_config(test_config().clock(clock));
    (registry, manual)
}

async fn counts_and_totals_across_opens_and_closes() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let check = |current: u64, ever: u64, closed: u64| {
        let s = reg.snapshot();
        assert_eq!(reg.connection_count(), current);
        assert_eq!(
            (
                s.total_connections,
                s.total_connections_ever,
                s.total_connections_closed
            ),
            (current, ever, closed)
        );
        assert_eq!(s.connections.len() as u64, current);
        assert_eq!(
            s.total_connections_ever,
            s.total_connections + s.total_connections_closed
        );
    };
    check(0, 0, 0);

    let a = server.connect("/ws").await;
    let mut b = server.connect("/ws").await;
    let c = server.connect("/ws").await;
    wait_open(&reg, 3).await;
    check(3, 3, 0);

    close_client(a).await;
    wait_count(&reg, 2).await;
    check(2, 3, 1);

    // An abrupt drop (no close frame) counts as a close too.
    drop(c);
    wait_count(&reg, 1).await;
    check(1, 3, 2);

    let d = server.connect("/ws").await;
    wait_open(&reg, 2).await;
    check(2, 4, 2);
    echo_roundtrip(&mut b, "still here").await;

    close_client(b).await;
    close_client(d).await;
    wait_count(&reg, 0).await;
    check(0, 4, 4);
    let by = reg.snapshot().closed_by;
    assert_eq!((by.client, by.error), (3, 1));

    server.shutdown().await;
}

async fn ages_and_idle_times_follow_the_clock_and_reset_on_activity() {
    let (reg, clock) = manual_registry();
    let server = TestServer::echo(reg.clone()).await;

    let mut a = server.connect_as("/ws", "a").await;
    wait_open(&reg, 1).await;
    clock.advance(Duration::from_secs(1));
    let mut b = server.connect_as("/ws", "b").await;
    wait_open(&reg, 2).await;
    clock.advance(Duration::from_secs(4));

    let ages = |ua: &str| {
        let c = info(&reg, ua);
        (c.age, c.idle_time)
    };
    assert_eq!(ages("a"), (5000, 5000));
    assert_eq!(ages("b"), (4000, 4000));
    let s = reg.snapshot();
    assert_eq!((s.average_age, s.average_idle_time), (4500, 4500));
    assert_eq!(s.uptime, 5000);

    // A message resets that connection's idle time only; age keeps counting.
    echo_roundtrip(&mut a, "x").await;
    assert_eq!(ages("a"), (5000, 0));
    assert_eq!(ages("b"), (4000, 4000));
    let s = reg.snapshot();
    assert_eq!((s.average_age, s.average_idle_time), (4500, 2000));

    clock.advance(Duration::from_secs(2));
    assert_eq!(ages("a"), (7000, 2000));
    assert_eq!(ages("b"), (6000, 6000));
    let s = reg.snapshot();
    assert_eq!((s.average_age, s.average_idle_time), (6500, 4000));

    // A ping from the client is not a message: idle time counts from the last message, so
    // that keepalive pings (the server's own, every 30 s) leave idle connections looking idle.
    b.send(WsMessage::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut b).await,
        Some(WsMessage::Pong(Bytes::from_static(b"hi")))
    );
    assert_eq!(ages("b"), (6000, 6000));
    echo_roundtrip(&mut b, "y").await;
    assert_eq!(ages("b"), (6000, 0));
    assert_eq!(ages("a"), (7000, 2000));
    let s = reg.snapshot();
    assert_eq!((s.average_age, s.average_idle_time), (6500, 1000));

    // The same figures on the wire, in milliseconds.
    clock.advance(Duration::from_millis(250));
    let stats = http_get(server.admin_addr, "/api/stats").await;
    assert_eq!(stats.status, 200);
    let json = stats.json();
    assert_eq!(json["averageAge"], 6750);
    assert_eq!(json["averageIdleTime"], 1250);
    let wire = |ua: &str| {
        let c = json["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["userAgent"] == ua)
            .unwrap()
            .clone();
        (c["age"].as_u64().unwrap(), c["idleTime"].as_u64().unwrap())
    };
    assert_eq!(wire("a"), (7250, 2250));
    assert_eq!(wire("b"), (6250, 250));

    close_client(a).await;
    close_client(b).await;
    wait_count(&reg, 0).await;
    let s = reg.snapshot();
    assert_eq!((s.average_age, s.average_idle_time), (0, 0));
    server.shutdown().await;
}

async fn message_and_byte_counters() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut ws = server.connect_as("/ws", "counted").await;
    wait_open(&reg, 1).await;
    let counters = || {
        let c = info(&reg, "counted");
        (c.messages_in, c.bytes_in, c.messages_out, c.bytes_out)
    };
    assert_eq!(counters(), (0, 0, 0, 0));

    echo_roundtrip(&mut ws, "hello").await;
    assert_eq!(counters(), (1, 5, 1, 5));

    ws.send(WsMessage::Binary(Bytes::from_static(&[1, 2, 3])))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(WsMessage::Binary(Bytes::from_static(&[1, 2, 3])))
    );
    assert_eq!(counters(), (2, 8, 2, 8));

    // Control frames are activity, not messages, in either direction: the client's ping and the
    // engine's pong, and a ping the server sends, leave every counter as it was.
    ws.send(WsMessage::Ping(Bytes::from_static(b"pp")))
        .await
        .unwrap();
    assert!(matches!(next_msg(&mut ws).await, Some(WsMessage::Pong(_))));
    let handle = reg.active_connections().pop().unwrap();
    handle
        .send(Message::Ping(Bytes::from_static(b"sp")))
        .unwrap();
    assert!(matches!(next_msg(&mut ws).await, Some(WsMessage::Ping(_))));
    assert_eq!(counters(), (2, 8, 2, 8));

    // A message queued through a handle counts out.
    handle.send("abcd").unwrap();
    assert_eq!(recv_text(&mut ws).await, "abcd");
    assert_eq!(counters(), (2, 8, 3, 12));
    let c = info(&reg, "counted");
    assert_eq!((c.queued_messages, c.queued_bytes), (0, 0));
    assert_eq!(&*c.path, "/ws");

    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// One connection in each state at once: CONNECTING (the handler has not returned its 101 yet),
/// OPEN, CLOSING (the server sent a close the client has not answered) and CLOSED (the handler
/// still holds a socket whose stream ended).
async fn connections_by_state_counts_every_state() {
    let reg = test_registry();
    let gate = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let routes = Router::new()
        .route("/ws", get(echo))
        .route(
            "/ws/gated",
            get({
                let gate = gate.clone();
                move |ws: WebSocketUpgrade| async move {
                    let response = ws.on_upgrade(|mut socket| async move {
                        while let Some(msg) = socket.recv().await {
                            let _ = socket.send(msg).await;
                        }
                    });
                    gate.notified().await;
                    response
                }
            }),
        )
        .route(
            "/ws/hold",
            get({
                let release = release.clone();
                move |ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|mut socket| async move {
                        while socket.recv().await.is_some() {}
                        release.notified().await;
                        drop(socket);
                    })
                }
            }),
        );
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let states = || reg.summary().connections_by_state;
    let counts = |connecting, open, closing, closed| StateCounts {
        connecting,
        open,
        closing,
        closed,
    };

    // OPEN
    let mut open = server.connect_as("/ws", "open").await;
    wait_open(&reg, 1).await;
    assert_eq!(states(), counts(0, 1, 0, 0));

    // CONNECTING
    let addr = server.addr;
    let connecting = tokio::spawn(async move { connect_with(addr, "/ws/gated", &[]).await });
    wait_until("a connection is CONNECTING", || states().connecting == 1).await;
    assert_eq!(states(), counts(1, 1, 0, 0));

    // CLOSED (stale): the client closes, the handler keeps its socket.
    let held = server.connect_as("/ws/hold", "held").await;
    wait_until("two are open", || states().open == 2).await;
    close_client(held).await;
    wait_until("one is CLOSED", || states().closed == 1).await;
    assert_eq!(states(), counts(1, 1, 0, 1));

    // CLOSING: the server closes; this client does not read, so it never answers.
    let mut closing = server.connect_as("/ws", "closing").await;
    wait_until("two are open", || states().open == 2).await;
    let id = info(&reg, "closing").id.to_string();
    assert_eq!(reg.close(&id, CloseCode::NORMAL, "bye"), Ok(true));
    wait_until("one is CLOSING", || states().closing == 1).await;
    assert_eq!(states(), counts(1, 1, 1, 1));
    let s = reg.snapshot();
    assert_eq!(s.total_connections, 4);
    let state_of = |ua: &str| info(&reg, ua).state.as_str();
    assert_eq!((state_of("open"), state_of("closing")), ("OPEN", "CLOSING"));

    // Resolve each one.
    assert_eq!(expect_close(&mut closing).await, (1000, "bye".to_owned()));
    gate.notify_one();
    let mut late = connecting.await.unwrap();
    echo_roundtrip(&mut late, "late").await;
    release.notify_one();
    wait_until("only the two open are left", || {
        states() == counts(0, 2, 0, 0)
    })
    .await;
    echo_roundtrip(&mut open, "open").await;

    close_client(open).await;
    close_client(late).await;
    wait_count(&reg, 0).await;
    assert_eq!(states(), counts(0, 0, 0, 0));
    server.shutdown().await;
}

async fn stats_json_uses_the_reference_field_names() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut ws = server.connect_as("/ws", "wire-test/1.0").await;
    wait_open(&reg, 1).await;
    echo_roundtrip(&mut ws, "ping").await;

    let response = http_get(server.admin_addr, "/api/stats").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json = response.json();
    for key in [
        "totalConnections",
        "totalConnectionsEver",
        "totalConnectionsClosed",
        "averageAge",
        "averageIdleTime",
        "connectionsByState",
        "connections",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["totalConnections"], 1);
    assert_eq!(json["totalConnectionsEver"], 1);
    assert_eq!(json["totalConnectionsClosed"], 0);
    assert_eq!(
        json["connectionsByState"],
        serde_json::json!({"CONNECTING": 0, "OPEN": 1, "CLOSING": 0, "CLOSED": 0})
    );
    let conns = json["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    for key in [
        "id",
        "age",
        "idleTime",
        "state",
        "remoteAddress",
        "userAgent",
    ] {
        assert!(c.get(key).is_some(), "missing {key} in {c}");
    }
    assert_eq!(c["id"], reg.snapshot().connections[0].id.to_string());
    assert!(c["id"].as_str().unwrap().starts_with("test-node-"));
    assert_eq!(c["state"], "OPEN");
    assert_eq!(c["remoteAddress"], "127.0.0.1");
    assert_eq!(c["userAgent"], "wire-test/1.0");
    assert_eq!(c["messagesIn"], 1);
    assert_eq!(c["bytesOut"], 4);
    assert!(c["age"].is_u64() && c["idleTime"].is_u64());

    // Without a user agent the field is left out, as in the reference (`userAgent?`).
    let anon = server.connect("/ws").await;
    wait_open(&reg, 2).await;
    let json = http_get(server.admin_addr, "/api/stats").await.json();
    let without: Vec<_> = json["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("userAgent").is_none())
        .collect();
    assert_eq!(without.len(), 1);

    close_client(ws).await;
    close_client(anon).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}
