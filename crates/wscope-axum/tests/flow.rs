//! Liveness and flow control through real sockets (issue 7, items 5, 6, 8, 9 and the message
//! rate): server pings and their round trip, the ping and idle timeouts, slow consumers,
//! backpressure on a handler's own sends, the per-connection message rate, the recently closed
//! list, `/ready` and the paced drain.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::{ready_router, WebSocketUpgrade};
use wscope_core::wire::{ClosedList, ErrorBody, Ready};
use wscope_core::{Initiator, Message, Registry};

engine_tests!(
    server_pings_time_the_round_trip_and_an_unanswered_ping_closes_with_1011,
    the_idle_timeout_closes_a_silent_connection_with_1000,
    a_broadcast_closes_a_client_that_does_not_read_as_a_slow_consumer,
    a_broadcast_made_after_the_101_but_before_the_connection_runs_reaches_it,
    a_handler_s_own_sends_wait_for_a_client_that_does_not_read,
    a_client_over_its_message_rate_is_closed_with_1008,
    a_client_still_flooding_past_its_message_rate_gets_the_1008_close_not_a_reset,
    recently_closed_connections_are_listed_newest_first,
    ready_turns_503_as_the_paced_drain_begins,
    a_shutdown_delivers_every_queued_message_before_1001,
);

/// Reads (answering pings, as tungstenite does while it reads) until a text "stop" comes.
fn keep_reading(ws: Client) -> tokio::task::JoinHandle<Client> {
    keep_reading_counted(ws, Arc::default())
}

/// [`keep_reading`], counting the binary messages read in `read`.
fn keep_reading_counted(mut ws: Client, read: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(50), ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "stop" => break,
                Ok(Some(Ok(WsMessage::Binary(_)))) => {
                    read.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(_) => break,
            }
        }
        ws
    })
}

async fn server_pings_time_the_round_trip_and_an_unanswered_ping_closes_with_1011() {
    let reg = Registry::with_config(
        test_config()
            .ping_interval(Duration::from_millis(100))
            .ping_timeout(Duration::from_millis(300)),
    );
    let server = TestServer::echo(reg.clone()).await;
    let answering = keep_reading(server.connect_as("/ws", "answers").await);
    // This one is never read, so its client never answers a ping.
    let mut silent = server.connect_as("/ws", "silent").await;
    wait_open(&reg, 2).await;

    wait_until("the answering client has a round-trip time", || {
        info(&reg, "answers").rtt_ms.is_some()
    })
    .await;
    wait_until("the silent one is closed", || reg.connection_count() == 1).await;
    let closed = reg.recently_closed(None);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].user_agent.as_deref(), Some("silent"));
    assert_eq!(closed[0].closed_by, Initiator::Timeout);
    assert_eq!(
        (closed[0].code, closed[0].reason.as_str()),
        (Some(1011), "ping timeout")
    );
    // What the silent client finds when it reads at last: pings, then the close.
    assert_eq!(
        expect_close(&mut silent).await,
        (1011, "ping timeout".into())
    );
    let s = reg.snapshot();
    assert_eq!(s.closed_by.timeout, 1);
    assert!(s.average_rtt_ms.is_some(), "{s:?}");
    // Pings are not messages and do not make a connection look busy.
    let c = info(&reg, "answers");
    assert_eq!((c.messages_in, c.messages_out), (0, 0));
    assert!(c.idle_time >= 300 || c.age < 300, "{c:?}");

    let mut answering = answering.await.unwrap();
    echo_roundtrip(&mut answering, "still here").await;
    close_client(answering).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn the_idle_timeout_closes_a_silent_connection_with_1000() {
    let reg = Registry::with_config(
        test_config()
            .ping_interval(Duration::ZERO)
            .idle_timeout(Duration::from_millis(300)),
    );
    let server = TestServer::echo(reg.clone()).await;
    let mut busy = server.connect_as("/ws", "busy").await;
    let mut quiet = server.connect_as("/ws", "quiet").await;
    wait_open(&reg, 2).await;
    // The busy one talks more often than the timeout; the quiet one says nothing.
    let quiet_open = || info(&reg, "quiet").state == wscope_core::ConnectionState::Open;
    let mut closing = false;
    for i in 0..40 {
        echo_roundtrip(&mut busy, &format!("tick {i}")).await;
        if !quiet_open() {
            closing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closing,
        "the quiet connection outlived 40 of the busy one's messages: {:?}",
        reg.snapshot()
    );
    assert_eq!(
        expect_close(&mut quiet).await,
        (1000, "idle timeout".into())
    );
    assert_eq!(info(&reg, "busy").state, wscope_core::ConnectionState::Open);
    let last = &reg.recently_closed(Some(1))[0];
    assert_eq!(last.closed_by, Initiator::Timeout);
    // Once the busy one falls silent, it goes the same way.
    assert_eq!(expect_close(&mut busy).await, (1000, "idle timeout".into()));
    wait_count(&reg, 0).await;
    assert_eq!(reg.snapshot().closed_by.timeout, 2);
    server.shutdown().await;
}

/// The route of the test below: answers the upgrade (the handler, once it runs, sends "from the
/// handler"), then broadcasts to `/chat` before returning the 101 — so before the connection's
/// task can have run, whatever the scheduling — and says in a header how many it reached.
fn broadcast_before_it_runs(ws: WebSocketUpgrade, registry: &Registry) -> Response {
    let mut response = ws.on_upgrade(|mut socket| async move {
        if socket.send("from the handler").await.is_err() {
            return;
        }
        while socket.recv().await.is_some() {}
    });
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let outcome = registry.broadcast(Some("/chat"), &Message::text("before it ran"));
    assert_eq!(registry.summary().connections_by_state.open, 0);
    assert_eq!(registry.connections_on("/chat").len(), 1);
    let sent = HeaderValue::from(outcome.sent);
    response.headers_mut().insert("x-broadcast-sent", sent);
    response
}

/// A client that has its 101 gets every broadcast queued after it, even one made before the
/// server's connection task started (the connection still CONNECTING): the broadcast comes
/// first, then what the handler sends.
async fn a_broadcast_made_after_the_101_but_before_the_connection_runs_reaches_it() {
    let reg = test_registry();
    let members = reg.clone();
    let route = move |ws: WebSocketUpgrade| {
        let members = members.clone();
        async move { broadcast_before_it_runs(ws, &members) }
    };
    let app = tracked(Router::new().route("/chat", get(route)), tracking(&reg));
    let server = TestServer::start(reg.clone(), app).await;
    let url = format!("ws://{}/chat", server.addr);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(response.headers()["x-broadcast-sent"], "1");
    assert_eq!(recv_text(&mut ws).await, "before it ran");
    assert_eq!(recv_text(&mut ws).await, "from the handler");
    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn a_broadcast_closes_a_client_that_does_not_read_as_a_slow_consumer() {
    let reg = Registry::with_config(test_config().max_queued_bytes(64 * 1024));
    let server = TestServer::echo(reg.clone()).await;
    let read = Arc::new(AtomicUsize::new(0));
    let reader = keep_reading_counted(server.connect_as("/ws", "reader").await, read.clone());
    // A small receive window and no reads: the server's socket buffer fills, then its queue.
    let _stuck = connect_small_window(server.addr, "/ws").await;
    wait_open(&reg, 2).await;

    let payload = Message::binary(vec![7u8; 16 * 1024]);
    let mut slow = 0;
    for sent in 1..=400 {
        // Never waits, whatever the stuck client does.
        slow += reg.broadcast(None, &payload).slow;
        if slow > 0 {
            break;
        }
        // The next one once the reader has this one: on a multi-thread runtime the broadcasts
        // would otherwise outrun the reader's writer (another thread) and overflow its queue
        // (4 messages) too.
        let deadline = tokio::time::Instant::now() + WAIT;
        while read.load(Ordering::Relaxed) < sent && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(slow, 1, "the stuck client overflowed its queue");
    wait_count(&reg, 1).await;
    let closed = &reg.recently_closed(None)[0];
    assert_eq!(closed.closed_by, Initiator::Limit);
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(1008), "slow consumer")
    );
    assert_eq!(reg.snapshot().closed_by.limit, 1);
    // The reader was not held up, and is still served.
    reg.broadcast(None, &Message::text("stop"));
    let mut reader = reader.await.unwrap();
    echo_roundtrip(&mut reader, "unaffected").await;
    close_client(reader).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn a_handler_s_own_sends_wait_for_a_client_that_does_not_read() {
    const LIMIT: usize = 64 * 1024;
    let reg = Registry::with_config(test_config().max_queued_bytes(LIMIT));
    let server = TestServer::echo(reg).await;
    // The echo handler blocks on its full queue and stops reading, so TCP pushes back on the
    // client.
    a_client_that_does_not_read_is_held_up(&server, LIMIT).await;
    server.shutdown().await;
}

async fn a_client_over_its_message_rate_is_closed_with_1008() {
    let reg = Registry::with_config(test_config().max_messages_per_second(20));
    let server = TestServer::echo(reg).await;
    a_flooding_client_is_closed_with_1008(&server).await;
    server.shutdown().await;
}

async fn a_client_still_flooding_past_its_message_rate_gets_the_1008_close_not_a_reset() {
    let reg = Registry::with_config(test_config().max_messages_per_second(20));
    let server = TestServer::echo(reg).await;
    // The async echo's driver reads the client out after the close, as the callback one does.
    a_client_still_flooding_gets_the_1008_close(&server).await;
    server.shutdown().await;
}

async fn recently_closed_connections_are_listed_newest_first() {
    let reg = Registry::with_config(test_config().recent_closed(3));
    let server = TestServer::echo(reg.clone()).await;
    for i in 0..5 {
        let mut ws = server.connect_as("/ws", &format!("c{i}")).await;
        wait_open(&reg, 1).await;
        echo_roundtrip(&mut ws, "hi").await;
        close_client(ws).await;
        wait_count(&reg, 0).await;
    }
    let response = http_get(server.admin_addr, "/api/closed").await;
    assert_eq!(response.status, 200);
    let list: ClosedList = response.parse();
    assert_eq!(list.total, 3);
    let names: Vec<_> = list
        .connections
        .iter()
        .map(|c| c.user_agent.as_deref().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["c4", "c3", "c2"]);
    let newest = &list.connections[0];
    assert_eq!(newest.closed_by, Initiator::Client);
    assert_eq!((newest.messages_in, newest.messages_out), (1, 1));
    assert_eq!((newest.bytes_in, newest.bytes_out), (2, 2));
    assert!(newest.closed_at >= newest.connected_at);
    assert_eq!(&*newest.path, "/ws");

    let one: ClosedList = http_get(server.admin_addr, "/api/closed?limit=1")
        .await
        .parse();
    assert_eq!(one.connections.len(), 1);
    for bad in [
        "/api/closed?limit=0",
        "/api/closed?limit=x",
        "/api/closed?bogus=1",
    ] {
        let response = http_get(server.admin_addr, bad).await;
        assert_eq!(response.status, 400, "{bad}");
        let body: ErrorBody = response.parse();
        assert!(!body.error.is_empty());
    }
    server.shutdown().await;
}

async fn ready_turns_503_as_the_paced_drain_begins() {
    const N: usize = 10;
    let reg = Registry::with_config(
        test_config()
            .drain_rate(5)
            .drain_timeout(Duration::from_secs(4)),
    );
    let app = tracked(echo_routes(), tracking(&reg)).merge(ready_router(reg.clone()));
    let server = TestServer::start(reg.clone(), app).await;
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(server.connect("/ws").await);
    }
    wait_open(&reg, N as u64).await;
    let ready: Ready = http_get(server.addr, "/ready").await.parse();
    assert!(ready.ready);

    let shutdown = tokio::spawn({
        let reg = reg.clone();
        async move { reg.shutdown().await }
    });
    wait_until("the drain began", || reg.is_shut_down()).await;
    let response = http_get(server.addr, "/ready").await;
    assert_eq!(response.status, 503);
    assert!(!response.parse::<Ready>().ready);

    // At 5 a second, when the first client gets its 1001 most of the others are still open.
    let mut first = clients.remove(0);
    let mut still_open = 0;
    let got = tokio::time::timeout(WAIT, async {
        loop {
            match first.next().await {
                Some(Ok(WsMessage::Close(Some(f)))) => {
                    still_open = reg.summary().connections_by_state.open;
                    break u16::from(f.code);
                }
                Some(Ok(_)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, 1001);
    assert!(still_open >= (N / 2) as u64, "{still_open} still open");
    // Read on: the client's close reply goes out as it reads, completing the handshake.
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = first.next().await {}
    })
    .await;
    for mut ws in clients {
        assert_eq!(expect_close(&mut ws).await.0, 1001);
    }
    let report = tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert_eq!((report.connections, report.dropped), (N as u64, 0));
    server.shutdown().await;
}

/// A shutdown with 1,000 messages queued to a client that has not read them delivers all 1,000,
/// in order, before the 1001 close.
async fn a_shutdown_delivers_every_queued_message_before_1001() {
    let reg = test_registry();
    let server = TestServer::echo(reg.clone()).await;
    let mut ws = connect_small_window(server.addr, "/ws").await;
    wait_open(&reg, 1).await;
    let handle = reg.active_connections().pop().unwrap();
    for i in 0..1000 {
        handle.send(format!("queued {i:04}")).unwrap();
    }
    let shutdown = tokio::spawn({
        let reg = reg.clone();
        async move { reg.shutdown().await }
    });
    for i in 0..1000 {
        assert_eq!(recv_text(&mut ws).await, format!("queued {i:04}"));
    }
    assert_eq!(
        expect_close(&mut ws).await,
        (1001, "Server shutting down".into())
    );
    let report = tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert_eq!((report.connections, report.dropped), (1, 0));
    server.shutdown().await;
}
