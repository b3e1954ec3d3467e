//! How connections leave: stale sweep, abrupt disconnects, handler panics, shutdown and drain,
//! and handles used from other tasks (items 7, 8, 9 and 10).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::SinkExt;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::{CloseCode, ConnectionState, Message, Registry, SendError, ShutdownReport};

engine_tests!(
    cleanup_stale_removes_exactly_the_closed_entry_once,
    background_sweep_removes_stale_entries,
    abrupt_tcp_reset_removes_the_entry,
    handler_panic_sends_1011_and_removes_the_entry,
    shutdown_flushes_queued_messages_then_sends_1001_and_refuses_new_upgrades,
    shutdown_drops_a_silent_client_at_the_drain_deadline,
    handler_ends_and_closes_are_recorded_by_who_did_it,
    shutdown_does_not_wait_for_connections_whose_handshake_is_over,
);
engine_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    active_connection_handles_send_and_close_from_another_task
);

/// `/ws` echo and `/ws/hold`: a handler that keeps its socket after the stream ended until
/// `release` is notified, then drops it and reports on `dropped`.
fn hold_routes(release: Arc<Notify>, dropped: mpsc::UnboundedSender<()>) -> Router {
    Router::new().route("/ws", get(echo)).route(
        "/ws/hold",
        get(move |ws: WebSocketUpgrade| {
            let (release, dropped) = (release.clone(), dropped.clone());
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    while socket.recv().await.is_some() {}
                    release.notified().await;
                    drop(socket);
                    let _ = dropped.send(());
                })
            }
        }),
    )
}

async fn cleanup_stale_removes_exactly_the_closed_entry_once() {
    let reg = test_registry();
    let release = Arc::new(Notify::new());
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let app = tracked(hold_routes(release.clone(), dropped_tx), tracking(&reg));
    let server = TestServer::start(reg.clone(), app).await;
    let mut live = server.connect_as("/ws", "live").await;
    let held = server.connect_as("/ws/hold", "held").await;
    wait_open(&reg, 2).await;

    close_client(held).await;
    wait_until("the held entry is CLOSED", || {
        reg.summary().connections_by_state.closed == 1
    })
    .await;
    assert_eq!(info(&reg, "held").state, ConnectionState::Closed);
    assert_eq!(reg.connection_count(), 2);
    assert_eq!(reg.snapshot().total_connections_closed, 0);

    assert_eq!(reg.cleanup_stale(), 1);
    assert_eq!(reg.connection_count(), 1);
    let s = reg.snapshot();
    assert_eq!(s.total_connections_closed, 1);
    assert_eq!(s.closed_by.client, 1);
    assert_eq!(s.connections.len(), 1);
    assert_eq!(s.connections[0].user_agent.as_deref(), Some("live"));
    assert_eq!(reg.cleanup_stale(), 0);

    // The handler drops its socket later: nothing is counted twice.
    release.notify_one();
    tokio::time::timeout(WAIT, dropped.recv())
        .await
        .unwrap()
        .unwrap();
    let s = reg.snapshot();
    assert_eq!(
        (
            s.total_connections,
            s.total_connections_ever,
            s.total_connections_closed
        ),
        (1, 2, 1)
    );
    assert_eq!(s.closed_by.client, 1);

    // The same through the admin API.
    let held = server.connect_as("/ws/hold", "held-2").await;
    wait_open(&reg, 2).await;
    close_client(held).await;
    wait_until("the held entry is CLOSED", || {
        reg.summary().connections_by_state.closed == 1
    })
    .await;
    let response = admin_post(&server, r#"{"action":"cleanup"}"#).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), serde_json::json!({"cleaned": 1}));
    let response = admin_post(&server, r#"{"action":"cleanup"}"#).await;
    assert_eq!(response.json(), serde_json::json!({"cleaned": 0}));
    release.notify_one();
    tokio::time::timeout(WAIT, dropped.recv())
        .await
        .unwrap()
        .unwrap();
    let s = reg.snapshot();
    assert_eq!(
        (
            s.total_connections,
            s.total_connections_ever,
            s.total_connections_closed
        ),
        (1, 3, 2)
    );

    echo_roundtrip(&mut live, "unaffected").await;
    close_client(live).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn background_sweep_removes_stale_entries() {
    let reg = Registry::with_config(test_config().cleanup_interval(Duration::from_millis(50)));
    let release = Arc::new(Notify::new());
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let app = tracked(hold_routes(release.clone(), dropped_tx), tracking(&reg));
    let server = TestServer::start(reg.clone(), app).await;
    let held = server.connect("/ws/hold").await;
    wait_open(&reg, 1).await;
    close_client(held).await;
    // The sweep runs by itself: the stale entry leaves while the handler still holds it.
    wait_count(&reg, 0).await;
    assert_eq!(reg.snapshot().total_connections_closed, 1);
    release.notify_one();
    tokio::time::timeout(WAIT, dropped.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reg.snapshot().total_connections_closed, 1);
    server.shutdown().await;
}

async fn abrupt_tcp_reset_removes_the_entry() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut keep = server.connect("/ws").await;
    let gone = server.connect("/ws").await;
    wait_open(&reg, 2).await;

    // SO_LINGER 0: closing the socket sends RST, no close frame, no FIN.
    socket2::SockRef::from(gone.get_ref())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(gone);

    wait_count(&reg, 1).await;
    let s = reg.snapshot();
    assert_eq!(s.total_connections_closed, 1);
    assert_eq!(s.closed_by.error, 1);
    assert_eq!(s.closed_by.client + s.closed_by.server, 0);
    echo_roundtrip(&mut keep, "still fine").await;

    close_client(keep).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn handler_panic_sends_1011_and_removes_the_entry() {
    let reg = test_registry();
    let routes = Router::new().route("/ws", get(echo)).route(
        "/ws/panicky",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(msg) = socket.recv().await {
                    if msg == Message::text("panic") {
                        panic!("the handler was asked to panic");
                    }
                    let _ = socket.send(msg).await;
                }
            })
        }),
    );
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let mut other = server.connect("/ws").await;
    let mut doomed = server.connect("/ws/panicky").await;
    wait_open(&reg, 2).await;
    echo_roundtrip(&mut doomed, "fine so far").await;

    doomed
        .send(WsMessage::text("panic".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        expect_close(&mut doomed).await,
        (1011, "Internal error".to_owned())
    );
    wait_count(&reg, 1).await;
    let s = reg.snapshot();
    assert_eq!(s.closed_by.panic, 1);
    assert_eq!(s.total_connections_closed, 1);
    echo_roundtrip(&mut other, "others keep working").await;
    let mut again = server.connect("/ws/panicky").await;
    echo_roundtrip(&mut again, "new ones too").await;

    close_client(other).await;
    close_client(again).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn shutdown_flushes_queued_messages_then_sends_1001_and_refuses_new_upgrades() {
    // The handler queues more than the socket buffers hold (the client reads through a small
    // window and not at all until the shutdown), so its writer is stuck mid-way and later
    // messages are still queued when the shutdown asks for the close.
    const BIG: usize = 24;
    const BIG_LEN: usize = 512 * 1024;
    // Room for all of it in the queue (12 MiB), so the handler's sends never wait. The drain
    // may take its time: what is tested is that everything queued leaves before the 1001, not how
    // fast 12 MiB crosses a small window (with four engines' copies of this test at once on a
    // busy 2-core machine, the common 2 s ran out and the rest was counted dropped).
    let reg = Registry::with_config(
        test_config()
            .max_queued_bytes(64 << 20)
            .drain_timeout(Duration::from_secs(60)),
    );
    let (queued_tx, mut queued) = mpsc::unbounded_channel();
    let routes = Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade| {
            let queued_tx = queued_tx.clone();
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    while let Some(msg) = socket.recv().await {
                        if msg == Message::text("burst") {
                            for i in 0..BIG {
                                let mut payload = vec![0u8; BIG_LEN];
                                payload[0] = i as u8;
                                socket.send(Message::binary(payload)).await.unwrap();
                            }
                            for i in 0..20 {
                                socket.send(Message::text(format!("m{i}"))).await.unwrap();
                            }
                            let _ = queued_tx.send(());
                        }
                    }
                })
            }
        }),
    );
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;
    let mut ws = connect_small_window(server.addr, "/ws").await;
    wait_open(&reg, 1).await;

    ws.send(WsMessage::text("burst".to_owned())).await.unwrap();
    tokio::time::timeout(WAIT, queued.recv())
        .await
        .unwrap()
        .unwrap();
    // Queued from another side too, behind the handler's: these cannot have left yet.
    let handle = reg.active_connections().pop().unwrap();
    for i in 20..25 {
        handle.send(Message::text(format!("m{i}"))).unwrap();
    }
    let before = reg.snapshot().connections[0].clone();
    assert!(before.queued_messages >= 5, "{before:?}");

    let client = async {
        let mut got = Vec::new();
        for i in 0..BIG {
            match next_msg(&mut ws).await {
                Some(WsMessage::Binary(b)) => {
                    assert_eq!((b.len(), b[0]), (BIG_LEN, i as u8), "big message {i}");
                }
                other => panic!("expected big message {i}, got {other:?}"),
            }
        }
        for _ in 0..25 {
            got.push(recv_text(&mut ws).await);
        }
        (got, expect_close(&mut ws).await)
    };
    let (report, (got, close)) = tokio::join!(reg.shutdown(), client);
    let expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    assert_eq!(close, (1001, "Server shutting down".to_owned()));
    assert_eq!(
        report,
        ShutdownReport {
            connections: 1,
            dropped: 0
        }
    );
    assert!(reg.is_shut_down());
    assert_eq!(reg.connection_count(), 0);
    assert_eq!(reg.snapshot().closed_by.shutdown, 1);

    // New upgrades get 503 with a JSON body, and are counted as refused.
    let refused = http(server.addr, "GET", "/ws", &UPGRADE_HEADERS, None).await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.json(),
        serde_json::json!({"error": "server shutting down"})
    );
    let s = reg.snapshot();
    assert_eq!(s.refused.get(wscope_core::RefusalKind::ShuttingDown), 1);
    assert!(s.shut_down);
    assert_eq!(s.total_connections_ever, 1);

    // Shutdown is idempotent: the same report every time.
    assert_eq!(reg.shutdown().await, report);
    assert_eq!(server.shutdown().await, report);
}

async fn shutdown_drops_a_silent_client_at_the_drain_deadline() {
    let reg = Registry::with_config(test_config().drain_timeout(Duration::from_millis(300)));
    let server = TestServer::echo(reg.clone()).await;
    let mut polite = server.connect("/ws").await;
    // This client is never polled again: it never answers the close.
    let silent = server.connect("/ws").await;
    wait_open(&reg, 2).await;

    let started = Instant::now();
    let (report, close) = tokio::join!(reg.shutdown(), expect_close(&mut polite));
    let took = started.elapsed();
    assert_eq!(close, (1001, "Server shutting down".to_owned()));
    assert_eq!(
        report,
        ShutdownReport {
            connections: 2,
            dropped: 1
        }
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "shutdown took {took:?}"
    );
    assert_eq!(reg.connection_count(), 0);
    let s = reg.snapshot();
    assert_eq!((s.closed_by.shutdown, s.closed_by.deadline), (1, 1));
    drop(silent);
    assert_eq!(server.shutdown().await, report);
}

async fn active_connection_handles_send_and_close_from_another_task() {
    let server = TestServer::echo(test_registry()).await;
    let reg = server.registry.clone();
    let mut a = server.connect_as("/ws", "a").await;
    let mut b = server.connect_as("/ws", "b").await;
    let mut c = server.connect_as("/ws", "c").await;
    wait_open(&reg, 3).await;

    let handles = reg.active_connections();
    assert_eq!(handles.len(), 3);
    let task = tokio::spawn(async move {
        for h in &handles {
            assert_eq!(h.state(), ConnectionState::Open);
            assert_eq!(h.path(), "/ws");
            assert_eq!(h.remote_addr(), Some([127, 0, 0, 1].into()));
            h.send(Message::text(format!("hello {}", h.user_agent().unwrap())))
                .unwrap();
        }
        let c = handles
            .iter()
            .find(|h| h.user_agent() == Some("c"))
            .unwrap()
            .clone();
        assert_eq!(c.close(CloseCode::new(4000).unwrap(), "bye c"), Ok(true));
        assert_eq!(c.close(CloseCode::NORMAL, ""), Ok(false));
        assert_eq!(c.send(Message::text("too late")), Err(SendError::Closed));
        c
    });
    let c_handle = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();

    assert_eq!(recv_text(&mut a).await, "hello a");
    assert_eq!(recv_text(&mut b).await, "hello b");
    assert_eq!(recv_text(&mut c).await, "hello c");
    assert_eq!(expect_close(&mut c).await, (4000, "bye c".to_owned()));
    wait_count(&reg, 2).await;
    assert_eq!(reg.active_connections().len(), 2);
    assert_eq!(reg.snapshot().closed_by.admin, 1);
    // A handle outliving its connection is harmless.
    assert_eq!(c_handle.state(), ConnectionState::Closed);
    assert_eq!(c_handle.send(Message::text("x")), Err(SendError::Closed));
    assert!(reg.connection(&c_handle.id().to_string()).is_none());
    echo_roundtrip(&mut a, "a echoes").await;
    echo_roundtrip(&mut b, "b echoes").await;

    close_client(a).await;
    close_client(b).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

async fn handler_ends_and_closes_are_recorded_by_who_did_it() {
    let reg = test_registry();
    let (records_tx, mut records) = mpsc::unbounded_channel();
    let routes = Router::new()
        // Says goodbye and returns: dropping the socket closes it with 1000.
        .route(
            "/ws/brief",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|socket| async move {
                    socket.send(Message::text("bye")).await.unwrap();
                })
            }),
        )
        // Closes on "close" and sees the handshake through; reports its close record.
        .route(
            "/ws/closer",
            get(move |ws: WebSocketUpgrade| {
                let records_tx = records_tx.clone();
                async move {
                    ws.on_upgrade(move |mut socket| async move {
                        while let Some(msg) = socket.recv().await {
                            if msg == Message::text("close") {
                                let code = CloseCode::new(4100).unwrap();
                                assert_eq!(socket.close(code, "server done"), Ok(true));
                            }
                        }
                        let _ = records_tx.send(socket.close_record().unwrap());
                    })
                }
            }),
        );
    let server = TestServer::start(reg.clone(), tracked(routes, tracking(&reg))).await;

    let mut brief = server.connect("/ws/brief").await;
    assert_eq!(recv_text(&mut brief).await, "bye");
    assert_eq!(expect_close(&mut brief).await, (1000, String::new()));
    wait_count(&reg, 0).await;
    assert_eq!(reg.snapshot().closed_by.server, 1);

    let mut closer = server.connect("/ws/closer").await;
    closer
        .send(WsMessage::text("close".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        expect_close(&mut closer).await,
        (4100, "server done".to_owned())
    );
    let record = tokio::time::timeout(WAIT, records.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.initiator, wscope_core::Initiator::Server);
    assert_eq!(record.code, Some(4100));
    wait_count(&reg, 0).await;
    assert_eq!(reg.snapshot().closed_by.server, 2);

    // The client closes with its own code: recorded as the client's.
    let mut client = server.connect("/ws/closer").await;
    wait_open(&reg, 1).await;
    client
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4200.into(),
            reason: "client done".into(),
        }))
        .await
        .unwrap();
    // The server answers with the same code, then hangs up.
    assert!(matches!(
        next_msg(&mut client).await,
        Some(WsMessage::Close(_))
    ));
    let record = tokio::time::timeout(WAIT, records.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.initiator, wscope_core::Initiator::Client);
    assert_eq!(record.code, Some(4200));
    assert_eq!(record.reason, "client done");
    wait_count(&reg, 0).await;
    let s = reg.snapshot();
    assert_eq!((s.closed_by.client, s.closed_by.server), (1, 2));
    assert_eq!(s.total_connections_closed, 3);
    server.shutdown().await;
}

async fn shutdown_does_not_wait_for_connections_whose_handshake_is_over() {
    let reg = Registry::with_config(test_config().drain_timeout(Duration::from_secs(3)));
    let release = Arc::new(Notify::new());
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let app = tracked(hold_routes(release.clone(), dropped_tx), tracking(&reg));
    let server = TestServer::start(reg.clone(), app).await;
    // One connection is over before the shutdown (its handler still holds the socket) ...
    let stale = server.connect("/ws/hold").await;
    // ... and one is open; its handler will also hold on once the shutdown closed it.
    let mut open = server.connect("/ws/hold").await;
    wait_open(&reg, 2).await;
    close_client(stale).await;
    wait_until("the stale entry is CLOSED", || {
        reg.summary().connections_by_state.closed == 1
    })
    .await;

    // Both close handshakes finish well before the deadline: nothing to wait for, nothing
    // dropped, and each keeps the cause it had.
    let started = Instant::now();
    let (report, close) = tokio::join!(reg.shutdown(), expect_close(&mut open));
    assert_eq!(close, (1001, "Server shutting down".to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?} for connections that had closed",
        started.elapsed()
    );
    assert_eq!(
        report,
        ShutdownReport {
            connections: 2,
            dropped: 0
        }
    );
    assert_eq!(reg.connection_count(), 0);
    let s = reg.snapshot();
    assert_eq!(
        (
            s.closed_by.client,
            s.closed_by.shutdown,
            s.closed_by.deadline
        ),
        (1, 1, 0)
    );
    assert_eq!(s.total_connections_closed, 2);

    // The handlers let go later: nothing is counted twice.
    for _ in 0..2 {
        release.notify_one();
        tokio::time::timeout(WAIT, dropped.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(reg.snapshot().total_connections_closed, 2);
    server.shutdown().await;
}
