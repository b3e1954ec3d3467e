//! The core driver over the in-process transport and over a scripted one: the state machine,
//! counters, close records, failing a connection by transport error kind, observers and the O(1)
//! aggregates, without sockets or HTTP.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::oneshot;
use wscope_core::query::ConnectionQuery;
use wscope_core::CallbackSocket;
use wscope_core::{
    memory, Bytes, Clock, CloseCode, CloseFrame, ClosedEvent, ConnectionMeta, ConnectionState,
    Halves, HopGauge, Initiator, Message, Observer, OpenedEvent, Refusal, RefusalKind,
    RefusedEvent, Registry, RegistryConfig, Role, Transport, TransportError, TransportErrorKind,
};

use wscope_testkit::{wait_until, WAIT};

fn registry() -> Registry {
    Registry::with_config(
        RegistryConfig::default()
            .instance_id("core-test")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .drain_timeout(Duration::from_secs(2)),
    )
}

/// Echoes until the connection is over, then reports how it ended.
async fn echo(mut socket: wscope_core::TrackedSocket) {
    while let Some(msg) = socket.recv().await {
        if socket.send(msg).await.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn memory_peer_echo_counts_data_only_and_closes_from_the_peer() {
    echo_counts_data_only_and_closes_from_the_peer(false).await;
}

#[tokio::test]
async fn a_callback_echo_counts_data_only_and_closes_from_the_peer() {
    echo_counts_data_only_and_closes_from_the_peer(true).await;
}

async fn echo_counts_data_only_and_closes_from_the_peer(callback: bool) {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    assert_eq!(reg.summary().connections_by_state.connecting, 1);
    let (transport, mut peer) = memory::pair();
    let task = tokio::spawn(run_echo(accepted, transport, callback));
    peer.send("héllo").unwrap();
    assert_eq!(peer.recv().await, Some(Message::text("héllo")));
    peer.send(vec![1u8, 2]).unwrap();
    assert_eq!(peer.recv().await, Some(Message::binary(vec![1u8, 2])));
    peer.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
    assert_eq!(
        peer.recv().await,
        Some(Message::Pong(Bytes::from_static(b"p")))
    );
    let c = &reg.snapshot().connections[0];
    assert_eq!((c.messages_in, c.bytes_in), (2, 8));
    assert_eq!((c.messages_out, c.bytes_out), (2, 8));
    assert_eq!(c.state, ConnectionState::Open);

    peer.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye").unwrap()))
        .unwrap();
    assert!(matches!(peer.recv().await, Some(Message::Close(Some(f))) if f.reason == "bye"));
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let s = reg.snapshot();
    assert_eq!((s.total_connections, s.total_connections_closed), (0, 1));
    assert_eq!(s.closed_by.client, 1);
}

#[tokio::test]
async fn a_vanished_peer_is_recorded_as_1006() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, peer) = memory::pair();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(accepted.run(transport, |mut socket| async move {
        while socket.recv().await.is_some() {}
        let _ = tx.send(socket.close_record());
    }));
    drop(peer);
    let record = tokio::time::timeout(WAIT, rx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(record.initiator, Initiator::Error);
    assert_eq!(record.code, Some(1006));
}

/// A transport that yields scripted frames, then an error of a given kind; it records what the
/// driver writes.
fn scripted(
    frames: Vec<Message>,
    kind: TransportErrorKind,
) -> (impl wscope_core::Transport, Arc<Mutex<Vec<Message>>>) {
    struct Script(VecDeque<Result<Message, TransportError>>);
    impl Stream for Script {
        type Item = Result<Message, TransportError>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.pop_front() {
                Some(item) => Poll::Ready(Some(item)),
                None => Poll::Pending, // the peer says nothing more
            }
        }
    }
    struct Record(Arc<Mutex<Vec<Message>>>);
    impl Sink<Message> for Record {
        type Error = TransportError;
        fn poll_ready(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), TransportError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), TransportError> {
            self.0.lock().unwrap().push(msg);
            Ok(())
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), TransportError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), TransportError>> {
            Poll::Ready(Ok(()))
        }
    }
    let mut items: VecDeque<_> = frames.into_iter().map(Ok).collect();
    items.push_back(Err(TransportError::new(kind, "scripted failure")));
    let written = Arc::new(Mutex::new(Vec::new()));
    let transport = Halves::new(Role::Server, Script(items), Record(written.clone()));
    (transport, written)
}

#[tokio::test]
async fn each_error_kind_fails_the_connection_the_same_way_for_every_engine() {
    each_error_kind_fails_the_connection(false).await;
}

#[tokio::test]
async fn each_error_kind_fails_a_callback_connection_the_same_way() {
    each_error_kind_fails_the_connection(true).await;
}

/// The callback echo: each message queued straight back.
fn echo_callback(socket: &CallbackSocket, msg: Message) {
    let _ = socket.send(msg);
}

/// `accepted` run with the async echo, or with the callback one.
fn run_echo(
    accepted: wscope_core::Accepted,
    transport: impl wscope_core::Transport,
    callback: bool,
) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    if callback {
        Box::pin(accepted.run_callback(transport, echo_callback))
    } else {
        Box::pin(accepted.run(transport, echo))
    }
}

async fn each_error_kind_fails_the_connection(callback: bool) {
    for (kind, close) in [
        (TransportErrorKind::Protocol, Some(1002)),
        (TransportErrorKind::InvalidUtf8, Some(1007)),
        (TransportErrorKind::TooBig, Some(1009)),
        (TransportErrorKind::Overloaded, Some(1013)),
        (TransportErrorKind::TimedOut, Some(1008)),
        (TransportErrorKind::FailedByEngine, None),
        (TransportErrorKind::Gone, None),
    ] {
        let reg = registry();
        let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
        // One message that the echo queues before the failure is read.
        let (transport, written) = scripted(vec![Message::text("first")], kind);
        tokio::time::timeout(WAIT, run_echo(accepted, transport, callback))
            .await
            .unwrap();
        wait_until("the entry leaves", || reg.connection_count() == 0).await;
        let written = written.lock().unwrap().clone();
        let s = reg.snapshot();
        // A message that took too long is a timeout's doing; every other kind an error's.
        let by = if kind == TransportErrorKind::TimedOut {
            s.closed_by.timeout
        } else {
            s.closed_by.error
        };
        assert_eq!(by, 1, "{kind:?}");
        match close {
            Some(code) => {
                // What was queued first, then the close naming the violation; no handshake wait.
                assert_eq!(written.len(), 2, "{kind:?}: {written:?}");
                assert_eq!(written[0], Message::text("first"));
                match &written[1] {
                    Message::Close(Some(f)) => assert_eq!(f.code.as_u16(), code, "{kind:?}"),
                    other => panic!("{kind:?}: expected a close, got {other:?}"),
                }
            }
            None => assert!(
                !written.iter().any(|m| matches!(m, Message::Close(_))),
                "{kind:?}: the driver must not send a close: {written:?}"
            ),
        }
    }
}

#[derive(Default)]
struct Seen {
    opened: Mutex<Vec<String>>,
    closed: Mutex<Vec<(Initiator, Duration, Duration, u64)>>,
    refused: Mutex<Vec<RefusalKind>>,
    ticks: Mutex<u64>,
}

impl Observer for Seen {
    fn opened(&self, event: &OpenedEvent<'_>) {
        self.opened.lock().unwrap().push(event.path.to_owned());
    }
    fn closed(&self, event: &ClosedEvent<'_>) {
        self.closed.lock().unwrap().push((
            event.record.initiator,
            event.lifetime,
            event.idle,
            event.counts.messages_in,
        ));
    }
    fn refused(&self, event: &RefusedEvent<'_>) {
        self.refused.lock().unwrap().push(event.reason.kind());
    }
    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(10))
    }
    fn tick(&self, summary: &wscope_core::Snapshot) {
        assert!(summary.connections.is_empty(), "a tick gets the summary");
        *self.ticks.lock().unwrap() += 1;
    }
}

#[tokio::test]
async fn observers_hear_opens_closes_with_lifetime_and_refusals_and_get_ticks() {
    let (clock, manual) = Clock::manual();
    let reg = Registry::with_config(
        RegistryConfig::default()
            .instance_id("observed")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .clock(clock),
    );
    let seen = Arc::new(Seen::default());
    reg.observe(seen.clone());

    let accepted = reg.accept(ConnectionMeta::new("/ws/observed")).unwrap();
    let (transport, mut peer) = memory::pair();
    let task = tokio::spawn(accepted.run(transport, echo));
    manual.advance(Duration::from_secs(3));
    peer.send("x").unwrap();
    assert_eq!(peer.recv().await, Some(Message::text("x")));
    manual.advance(Duration::from_secs(2));
    peer.close(None).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();

    assert_eq!(*seen.opened.lock().unwrap(), ["/ws/observed"]);
    assert_eq!(
        *seen.closed.lock().unwrap(),
        [(
            Initiator::Client,
            Duration::from_secs(5),
            Duration::from_secs(2),
            1
        )]
    );
    wait_until("two ticks", || *seen.ticks.lock().unwrap() >= 2).await;

    let shutdown = tokio::spawn({
        let reg = reg.clone();
        async move { reg.shutdown().await }
    });
    wait_until("shutdown began", || reg.is_shut_down()).await;
    let refusal = reg.admit(&ConnectionMeta::new("/ws")).unwrap_err();
    assert_eq!(refusal, Refusal::ShuttingDown);
    assert_eq!(*seen.refused.lock().unwrap(), [RefusalKind::ShuttingDown]);
    assert_eq!(reg.summary().refused.get(RefusalKind::ShuttingDown), 1);
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_summary_is_o1_yet_agrees_with_the_walk() {
    let (clock, manual) = Clock::manual();
    let reg = Registry::with_config(
        RegistryConfig::default()
            .instance_id("sums")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .drain_timeout(Duration::from_secs(30))
            .clock(clock),
    );
    let mut peers = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
        let (transport, peer) = memory::pair();
        tasks.push(tokio::spawn(accepted.run(transport, echo)));
        peers.push(peer);
        manual.advance(Duration::from_millis(250 * (i + 1)));
    }
    let _connecting = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    wait_until("six open", || reg.summary().connections_by_state.open == 6).await;
    // Some activity at different times.
    for (i, peer) in peers.iter_mut().enumerate().take(4) {
        peer.send(format!("m{i}")).unwrap();
        assert!(peer.recv().await.is_some());
        manual.advance(Duration::from_millis(333));
    }
    // Two leave.
    for peer in peers.drain(..2) {
        drop(peer);
    }
    wait_until("two left", || reg.connection_count() == 5).await;
    manual.advance(Duration::from_millis(1234));

    let full = reg.snapshot();
    let summary = reg.summary();
    let n = full.connections.len() as u64;
    let mean = |f: fn(&wscope_core::ConnectionInfo) -> u64| {
        full.connections.iter().map(f).sum::<u64>() / n
    };
    assert_eq!(summary.total_connections, n);
    assert_eq!(summary.average_age, mean(|c| c.age));
    assert_eq!(summary.average_idle_time, mean(|c| c.idle_time));
    let mut by_state = wscope_core::StateCounts::default();
    for c in &full.connections {
        match c.state {
            ConnectionState::Connecting => by_state.connecting += 1,
            ConnectionState::Open => by_state.open += 1,
            ConnectionState::Closing => by_state.closing += 1,
            ConnectionState::Closed => by_state.closed += 1,
        }
    }
    assert_eq!(summary.connections_by_state, by_state);
    assert_eq!((by_state.connecting, by_state.open), (1, 4), "{by_state:?}");
    drop(peers);
    for task in tasks {
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn the_socket_reaches_its_registry_and_handles_take_any_message() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, mut peer) = memory::pair();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(accepted.run(transport, |mut socket| async move {
        let registry = socket.registry();
        for member in registry.active_connections() {
            member.send("to everyone").unwrap();
            member.send(Bytes::from_static(b"bin")).unwrap();
        }
        let _ = tx.send(registry.instance_id().to_owned());
        while socket.recv().await.is_some() {}
    }));
    assert_eq!(rx.await.unwrap(), "core-test");
    assert_eq!(peer.recv().await, Some(Message::text("to everyone")));
    assert_eq!(peer.recv().await, Some(Message::binary(&b"bin"[..])));
}

#[tokio::test]
async fn a_broadcast_to_a_path_reaches_only_that_path() {
    let reg = registry();
    let mut peers = Vec::new();
    for path in ["/room/a", "/room/a", "/room/b", "/other"] {
        let accepted = reg.accept(ConnectionMeta::new(path)).unwrap();
        let (transport, peer) = memory::pair();
        tokio::spawn(accepted.run(transport, echo));
        peers.push((path, peer));
    }
    wait_until("four open", || reg.summary().connections_by_state.open == 4).await;
    let outcome = reg.broadcast(Some("/room/a"), &Message::text("to a"));
    assert_eq!((outcome.sent, outcome.slow), (2, 0));
    assert_eq!(reg.connections_on("/room/a").len(), 2);
    assert_eq!(reg.connections_on("/nowhere").len(), 0);
    assert_eq!(reg.broadcast(None, &Message::text("to all")).sent, 4);
    for (path, peer) in &mut peers {
        if *path == "/room/a" {
            assert_eq!(peer.recv().await, Some(Message::text("to a")));
        }
        assert_eq!(peer.recv().await, Some(Message::text("to all")));
    }
    // A member that leaves leaves its path.
    let (_, gone) = peers.remove(0);
    drop(gone);
    wait_until("one left", || reg.connection_count() == 3).await;
    assert_eq!(reg.broadcast(Some("/room/a"), &Message::text("x")).sent, 1);
}

/// A connection whose 101 was given but that does not run yet (its client may have read the
/// 101 already) is a broadcast member: what is queued to it is sent first once it runs, and
/// its state stays CONNECTING until then. One not answered yet is not a member.
#[tokio::test]
async fn a_broadcast_reaches_a_member_answered_but_not_running_yet() {
    let reg = registry();
    let answered = reg.accept(ConnectionMeta::new("/chat")).unwrap();
    let unanswered = reg.accept(ConnectionMeta::new("/chat")).unwrap();
    answered.mark_answered();
    let outcome = reg.broadcast(Some("/chat"), &Message::text("early"));
    assert_eq!((outcome.sent, outcome.slow), (1, 0));
    assert_eq!(reg.connections_on("/chat").len(), 1);
    assert_eq!(reg.active_connections().len(), 1);
    assert_eq!(reg.summary().connections_by_state.connecting, 2);
    assert_eq!(reg.traffic().queued_messages, 1);
    drop(unanswered);
    let (transport, mut peer) = memory::pair();
    // The handler's own first message goes after what was queued before it ran.
    tokio::spawn(answered.run(transport, |socket| async move {
        let _ = socket.send(Message::text("from the handler")).await;
        echo(socket).await;
    }));
    assert_eq!(peer.recv().await, Some(Message::text("early")));
    assert_eq!(peer.recv().await, Some(Message::text("from the handler")));
    assert_eq!(reg.summary().connections_by_state.open, 1);
}

/// A broadcast queued to an answered member whose upgrade then fails is dropped with it: the
/// entry leaves, nothing stays queued, nothing counts as sent out.
#[tokio::test]
async fn a_broadcast_queued_to_an_upgrade_that_fails_is_dropped_with_it() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/chat")).unwrap();
    accepted.mark_answered();
    let handle = accepted.handle();
    assert_eq!(reg.broadcast(None, &Message::text("lost")).sent, 1);
    assert_eq!(reg.traffic().queued_bytes, 4);
    accepted.fail("upgrade failed: connection reset");
    assert_eq!(reg.connection_count(), 0);
    let traffic = reg.traffic();
    assert_eq!((traffic.queued_messages, traffic.queued_bytes), (0, 0));
    assert_eq!(traffic.messages_out, 0);
    assert_eq!(handle.state(), ConnectionState::Closed);
    assert_eq!(reg.broadcast(None, &Message::text("after")).sent, 0);
}

#[tokio::test]
async fn traffic_totals_add_open_and_closed_connections_and_never_go_down() {
    let reg = registry();
    assert_eq!(reg.traffic(), wscope_core::Traffic::default());
    let mut peers = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
        let (transport, peer) = memory::pair();
        tasks.push(tokio::spawn(accepted.run(transport, echo)));
        peers.push(peer);
    }
    // Each peer sends i + 1 messages of 10 bytes and reads the echoes.
    for (i, peer) in peers.iter_mut().enumerate() {
        for _ in 0..=i {
            peer.send(vec![7u8; 10]).unwrap();
            assert!(peer.recv().await.is_some());
        }
    }
    let t = reg.traffic();
    assert_eq!((t.messages_in, t.messages_out), (6, 6));
    assert_eq!((t.bytes_in, t.bytes_out), (60, 60));
    assert_eq!((t.queued_messages, t.queued_bytes), (0, 0));
    // The busiest one leaves: its figures move to the closed sums, the totals stay.
    let mut last = peers.pop().unwrap();
    last.send(Message::Close(None)).unwrap();
    while last.recv().await.is_some() {}
    tasks.pop().unwrap().await.unwrap();
    wait_until("the busiest connection left", || {
        reg.connection_count() == 2
    })
    .await;
    assert_eq!(reg.traffic(), t);
    // One more message on a survivor moves the totals on by exactly that.
    peers[0].send("abc").unwrap();
    assert!(peers[0].recv().await.is_some());
    let after = reg.traffic();
    assert_eq!((after.messages_in, after.bytes_in), (7, 63));
    assert_eq!((after.messages_out, after.bytes_out), (7, 63));
}

#[tokio::test]
async fn labels_given_at_registration_are_there_before_the_handler_runs() {
    let reg = registry();
    let meta = ConnectionMeta::new("/ws")
        .user("ann")
        .and_then(|m| m.tag("red"))
        .and_then(|m| m.tag("blue"))
        .unwrap();
    let accepted = reg.accept(meta).unwrap();
    let c = &reg.snapshot().connections[0];
    assert_eq!(c.user.as_deref(), Some("ann"));
    let tags: Vec<&str> = c.tags.iter().map(|t| t.as_ref()).collect();
    assert_eq!(tags, ["red", "blue"]);
    drop(accepted);
}

#[tokio::test]
async fn what_an_engine_reports_holding_shows_as_memory_bytes_and_in_the_traffic_total() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let gauge = accepted.memory_gauge();
    let id = accepted.id();
    let (transport, _peer) = memory::pair();
    tokio::spawn(accepted.run(transport, echo));
    wait_until("registered", || reg.connection_count() == 1).await;
    let memory = |reg: &Registry| {
        let snapshot = reg.snapshot();
        let info = snapshot.connections.iter().find(|c| c.id == id).unwrap();
        (info.memory_bytes, reg.traffic().memory_bytes)
    };
    assert_eq!(memory(&reg), (0, 0));
    // A partly received message of 512 KiB, as an engine reports it, then its end.
    gauge.set(512 << 10);
    assert_eq!(gauge.get(), 512 << 10);
    assert_eq!(memory(&reg), (512 << 10, 512 << 10));
    let json = serde_json::to_value(reg.snapshot()).unwrap();
    assert_eq!(json["connections"][0]["memoryBytes"], 512 << 10);
    gauge.set(0);
    assert_eq!(memory(&reg), (0, 0));
    // A detached gauge reports nowhere.
    let detached = wscope_core::MemoryGauge::detached();
    detached.set(7);
    assert_eq!(detached.get(), 0);
}

/// Two engines on one connection (a proxy's client and upstream hops): the upstream's reports
/// before the entry exists show once it is attached, added to the own engine's in the row, the
/// process total and the `memory` order; each engine's later reports replace its own part only.
#[tokio::test]
async fn a_second_hop_attached_late_adds_what_it_holds_to_the_entrys_memory_bytes() {
    let reg = registry();
    let hop = HopGauge::new();
    let upstream = hop.gauge();
    // The upstream's engine is part-way through a message before the client's entry exists.
    upstream.set(600 << 10);
    assert_eq!((upstream.get(), hop.get()), (600 << 10, 600 << 10));

    let plain = reg.accept(ConnectionMeta::new("/plain")).unwrap();
    plain.memory_gauge().set(400 << 10);
    let proxied = reg.accept(ConnectionMeta::new("/proxied")).unwrap();
    let memory = |reg: &Registry| {
        let snapshot = reg.snapshot();
        let row = snapshot.connections.iter().find(|c| *c.path == *"/proxied");
        (row.unwrap().memory_bytes, reg.traffic().memory_bytes)
    };
    let first_by_memory = |reg: &Registry| {
        let query = ConnectionQuery::from_pairs([("sort", "memory")]).unwrap();
        reg.connections(&query).connections[0].path.to_string()
    };
    assert_eq!(memory(&reg), (0, 400 << 10));
    assert_eq!(first_by_memory(&reg), "/plain");

    let own = proxied.memory_gauge_with(&hop);
    assert_eq!(
        memory(&reg),
        (600 << 10, 1000 << 10),
        "what it held already"
    );
    assert_eq!(first_by_memory(&reg), "/proxied");
    own.set(100);
    assert_eq!(
        memory(&reg),
        (100 + (600 << 10), 100 + (1000 << 10)),
        "both hops"
    );
    let json = serde_json::to_value(reg.snapshot()).unwrap();
    let rows = json["connections"].as_array().unwrap();
    let row = rows.iter().find(|c| c["path"] == "/proxied").unwrap();
    assert_eq!(row["memoryBytes"], 100 + (600 << 10), "{row}");

    // Each engine's report replaces its own part, not the other's.
    own.set(7);
    assert_eq!(memory(&reg).0, 7 + (600 << 10));
    upstream.set(10);
    assert_eq!(memory(&reg).0, 7 + 10);
    assert_eq!((own.get(), upstream.get()), (7, 10));
    upstream.set(300 << 10);
    assert_eq!(memory(&reg).0, 7 + (300 << 10));
    drop((plain, proxied));
}

/// The other hop's share goes back to 0 when it is detached (that hop is over) while the
/// connection stays, and its later reports reach no reader; the entry removed, nothing of either
/// hop is left in the process total, whatever they report after.
#[tokio::test]
async fn a_second_hops_share_leaves_on_detach_and_nothing_stays_with_the_entry_removed() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let hop = HopGauge::new();
    let upstream = hop.gauge();
    let own = accepted.memory_gauge_with(&hop);
    let memory = |reg: &Registry| {
        let row = reg.snapshot().connections[0].memory_bytes;
        assert_eq!(row, reg.traffic().memory_bytes, "one connection");
        row
    };
    own.set(100);
    upstream.set(5000);
    assert_eq!(memory(&reg), 5100);
    hop.detach();
    assert_eq!(memory(&reg), 100, "detached: the hop's share is gone");
    upstream.set(6000);
    own.set(200);
    assert_eq!(
        memory(&reg),
        200,
        "a detached hop reports nowhere, the own engine still does"
    );
    assert_eq!(hop.get(), 6000, "it still keeps its own figure");

    drop(accepted);
    assert_eq!(reg.connection_count(), 0);
    assert_eq!(reg.traffic().memory_bytes, 0);
    own.set(11_000);
    upstream.set(12_000);
    assert_eq!(
        reg.traffic().memory_bytes,
        0,
        "late reports reach no reader"
    );
}

/// A sink that is not ready every other time it is asked, waking the writer at once: the writer
/// must resume a batch where it stopped, in order, with the close last.
struct Hesitant {
    written: Arc<Mutex<Vec<Message>>>,
    ready: bool,
}

impl Sink<Message> for Hesitant {
    type Error = TransportError;
    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        self.ready = !self.ready;
        if self.ready {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), TransportError> {
        self.written.lock().unwrap().push(msg);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_batch_interrupted_by_a_busy_sink_is_written_in_order_with_the_close_last() {
    struct Silent;
    impl Stream for Silent {
        type Item = Result<Message, TransportError>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let handle = accepted.handle();
    for i in 0..5 {
        handle.send(format!("m{i}")).unwrap();
    }
    handle.send(Bytes::from_static(b"bin")).unwrap();
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Hesitant {
        written: written.clone(),
        ready: false,
    };
    let transport = Halves::new(Role::Server, Silent, sink);
    tokio::spawn(accepted.run(transport, |mut socket| async move {
        socket.close(CloseCode::NORMAL, "done").unwrap();
        while socket.recv().await.is_some() {}
    }));
    wait_until("the batch and the close written", || {
        written.lock().unwrap().len() == 7
    })
    .await;
    let written = written.lock().unwrap().clone();
    let mut expected: Vec<Message> = (0..5).map(|i| Message::text(format!("m{i}"))).collect();
    expected.push(Message::binary(&b"bin"[..]));
    assert_eq!(written[..6], expected[..]);
    assert!(matches!(&written[6], Message::Close(Some(f)) if f.reason == "done"));
    let c = &reg.snapshot().connections[0];
    assert_eq!((c.messages_out, c.bytes_out), (6, 13));
    assert_eq!(c.state, ConnectionState::Closing);
}

#[test]
fn an_idle_connection_future_stays_small() {
    // The future `run` returns is what every idle connection's task holds: the writer's batch
    // state, kept there while idle, once made it 200 B larger (unoptimised build: 1,120 B against
    // 920 B without it). The bound leaves room for compiler changes, not for another such state.
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, _peer) = memory::pair();
    let fut = accepted.run(transport, echo);
    let size = std::mem::size_of_val(&fut);
    println!("connection future: {size} B");
    assert!(size <= 1000, "the connection future grew to {size} B");
}

#[tokio::test]
async fn a_callback_closes_the_connection_and_its_sends_then_fail() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, mut peer) = memory::pair();
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(accepted.run_callback(
        transport,
        move |socket: &CallbackSocket, msg: Message| {
            if msg == Message::text("bye") {
                assert!(socket.close(CloseCode::NORMAL, "bye").unwrap());
                assert!(!socket.close(CloseCode::GOING_AWAY, "again").unwrap());
            }
            // After the close: refused, never queued.
            tx.send(socket.send(msg)).unwrap();
        },
    ));
    peer.send("bye").unwrap();
    assert!(matches!(peer.recv().await, Some(Message::Close(Some(f))) if f.reason == "bye"));
    assert_eq!(rx.recv().unwrap(), Err(wscope_core::SendError::Closed));
    // What comes before the peer answers still reaches the callback.
    peer.send("late").unwrap();
    peer.close(Some(CloseFrame::new(CloseCode::NORMAL, "").unwrap()))
        .unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(rx.recv().unwrap(), Err(wscope_core::SendError::Closed));
    let s = reg.snapshot();
    assert_eq!((s.total_connections, s.closed_by.server), (0, 1));
    let closed = &reg.recently_closed(None)[0];
    assert_eq!((closed.code, closed.reason.as_str()), (Some(1000), "bye"));
}

#[tokio::test]
async fn a_panicking_callback_is_closed_with_1011_and_not_called_again() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, mut peer) = memory::pair();
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let task = tokio::spawn(accepted.run_callback(
        transport,
        move |socket: &CallbackSocket, msg: Message| {
            *counted.lock().unwrap() += 1;
            if msg == Message::text("boom") {
                panic!("the callback panics");
            }
            let _ = socket.send(msg);
        },
    ));
    peer.send("one").unwrap();
    assert_eq!(peer.recv().await, Some(Message::text("one")));
    peer.send("boom").unwrap();
    peer.send("after").unwrap();
    match peer.recv().await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(
                (f.code.as_u16(), f.reason.as_str()),
                (1011, "Internal error")
            );
        }
        other => panic!("expected the 1011 close, got {other:?}"),
    }
    peer.close(None).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(*calls.lock().unwrap(), 2, "not called after the panic");
    let s = reg.snapshot();
    assert_eq!((s.total_connections, s.closed_by.panic), (0, 1));
    // Every message read is counted, the one after the panic too.
    assert_eq!(reg.recently_closed(None)[0].messages_in, 3);
}

#[tokio::test]
async fn a_connection_over_its_message_rate_is_read_out_after_its_entry_is_gone() {
    a_connection_over_its_rate_is_read_out_after_its_entry_is_gone(false).await;
}

#[tokio::test]
async fn a_callback_connection_over_its_message_rate_is_read_out_after_its_entry_is_gone() {
    a_connection_over_its_rate_is_read_out_after_its_entry_is_gone(true).await;
}

/// A connection over its message rate is failed with 1008 and leaves the registry at once, yet
/// what its peer still sends is read (the memory transport refuses a peer's frame once its reader is dropped,
/// as a socket with unread bytes is reset) until the peer answers the close.
async fn a_connection_over_its_rate_is_read_out_after_its_entry_is_gone(callback: bool) {
    let (clock, _manual) = Clock::manual();
    let reg = Registry::with_config(
        RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .max_messages_per_second(3)
            .drain_timeout(Duration::from_secs(30))
            .clock(clock),
    );
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, mut peer) = memory::pair();
    let task = tokio::spawn(run_echo(accepted, transport, callback));
    // The clock stands still: a burst of a second's worth, then over the rate.
    for i in 0..4 {
        peer.send(format!("{i}")).unwrap();
    }
    for i in 0..3 {
        assert_eq!(peer.recv().await, Some(Message::text(format!("{i}"))));
    }
    read_out_after_its_entry_is_gone(&reg, &mut peer, "message rate exceeded", task).await;
    assert_eq!(reg.recently_closed(None)[0].messages_in, 4);
}

#[tokio::test]
async fn a_slow_consumer_is_read_out_after_its_entry_is_gone() {
    a_slow_consumer_is_read_out_after_its_entry_is_gone_on(false).await;
}

#[tokio::test]
async fn a_callback_slow_consumer_is_read_out_after_its_entry_is_gone() {
    a_slow_consumer_is_read_out_after_its_entry_is_gone_on(true).await;
}

/// A connection failed from outside its task — a broadcast finds its queue full — is read out
/// too: an async handler's socket, waiting in `recv`, sees the connection end and lets go of
/// its reader to the read-out rather than dropping it.
async fn a_slow_consumer_is_read_out_after_its_entry_is_gone_on(callback: bool) {
    let reg = Registry::with_config(
        RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .queue_capacity(2)
            .drain_timeout(Duration::from_secs(30)),
    );
    let accepted = reg.accept(ConnectionMeta::new("/chat")).unwrap();
    let handle = accepted.handle();
    // Queued before the connection runs, past its capacity.
    for i in 0..3 {
        let _ = handle.send(format!("{i}"));
    }
    let (transport, mut peer) = memory::pair();
    let task = tokio::spawn(run_echo(accepted, transport, callback));
    read_out_after_its_entry_is_gone(&reg, &mut peer, "slow consumer", task).await;
}

/// `peer` gets the 1008 close (with `reason`) of a connection failed for a limit; the entry
/// leaves, counted as closed by the limit, while what the peer still sends is read and dropped,
/// not refused; the peer's answer ends the read-out (`task` runs the connection), and with it
/// the transport.
async fn read_out_after_its_entry_is_gone(
    reg: &Registry,
    peer: &mut memory::MemoryPeer,
    reason: &str,
    task: tokio::task::JoinHandle<()>,
) {
    match peer.recv().await {
        Some(Message::Close(Some(f))) => {
            assert_eq!((f.code.as_u16(), f.reason.as_str()), (1008, reason))
        }
        other => panic!("expected the 1008 close, got {other:?}"),
    }
    wait_until("the entry leaves", || reg.connection_count() == 0).await;
    let s = reg.snapshot();
    assert_eq!((s.total_connections, s.closed_by.limit), (0, 1));
    assert_eq!(reg.recently_closed(None)[0].code, Some(1008));
    for i in 0..100 {
        peer.send(format!("{i}")).expect("the peer is still read");
    }
    peer.close(None).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    wait_until("the transport is dropped", || peer.send("late").is_err()).await;
}

#[tokio::test]
async fn a_drain_closes_a_callback_connection_with_1001() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, mut peer) = memory::pair();
    let task = tokio::spawn(accepted.run_callback(transport, echo_callback));
    peer.send("hello").unwrap();
    assert_eq!(peer.recv().await, Some(Message::text("hello")));
    let shutdown = tokio::spawn({
        let reg = reg.clone();
        async move { reg.shutdown().await }
    });
    match peer.recv().await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code.as_u16(), 1001),
        other => panic!("expected the 1001 close, got {other:?}"),
    }
    peer.close(None).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let report = tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert_eq!((report.connections, report.dropped), (1, 0));
}

/// A reader with `count` messages ready, then silence.
struct Ready(std::ops::Range<usize>);

impl Stream for Ready {
    type Item = Result<Message, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.next() {
            Some(i) => Poll::Ready(Some(Ok(Message::text(format!("{i}"))))),
            None => Poll::Pending,
        }
    }
}

/// A sink that takes nothing until its gate opens.
struct Gated {
    open: Arc<Mutex<(bool, Option<std::task::Waker>)>>,
    written: Arc<Mutex<Vec<Message>>>,
}

impl Sink<Message> for Gated {
    type Error = TransportError;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let mut gate = self.open.lock().unwrap();
        if gate.0 {
            Poll::Ready(Ok(()))
        } else {
            gate.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), TransportError> {
        self.written.lock().unwrap().push(msg);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.poll_ready(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.poll_ready(cx)
    }
}

#[tokio::test]
async fn a_full_queue_stops_the_callback_driver_reading_not_its_sends() {
    const CAPACITY: usize = 4;
    const COUNT: usize = 100;
    let reg = Registry::with_config(
        RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .queue_capacity(CAPACITY),
    );
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let open = Arc::new(Mutex::new((false, None)));
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Gated {
        open: open.clone(),
        written: written.clone(),
    };
    let transport = Halves::new(Role::Server, Ready(0..COUNT), sink);
    // Two sends per message: a queue with room for one message's more fills all the same.
    let task = tokio::spawn(accepted.run_callback(
        transport,
        |socket: &CallbackSocket, msg: Message| {
            socket.send(msg.clone()).unwrap();
            socket.send(msg).unwrap();
        },
    ));
    wait_until("the queue fills", || {
        reg.snapshot().connections[0].queued_messages >= CAPACITY as u64
    })
    .await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let c = &reg.snapshot().connections[0];
    // The writer holds one batch (taken before the gate stopped it), the queue the rest: reading
    // stopped once the queue was over its bound.
    assert!(c.messages_in <= 2 * CAPACITY as u64, "read on: {c:?}");
    assert!(c.queued_messages <= CAPACITY as u64 + 1, "{c:?}");
    assert_eq!(c.state, ConnectionState::Open, "backpressure, not a close");
    // Open the gate: everything is read and written, in order.
    let waker = {
        let mut gate = open.lock().unwrap();
        gate.0 = true;
        gate.1.take()
    };
    waker.unwrap().wake();
    wait_until("every echo written", || {
        written.lock().unwrap().len() == 2 * COUNT
    })
    .await;
    let expected: Vec<Message> = (0..COUNT)
        .flat_map(|i| [Message::text(format!("{i}")), Message::text(format!("{i}"))])
        .collect();
    assert_eq!(*written.lock().unwrap(), expected);
    assert_eq!(reg.snapshot().connections[0].messages_in, COUNT as u64);
    task.abort();
}

#[test]
fn an_idle_callback_connection_future_is_smaller_than_an_async_handler_s() {
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    // Boxed, as a server choosing its engine at run time has it.
    let (transport, _peer) = memory::pair();
    let callback = std::mem::size_of_val(&accepted.run_callback(transport.boxed(), echo_callback));
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, _peer) = memory::pair();
    let handler = std::mem::size_of_val(&accepted.run(transport.boxed(), echo));
    println!("connection future: callback {callback} B, async handler {handler} B");
    assert!(callback < handler, "{callback} B against {handler} B");
    // One waiter (the queue's, which an abort wakes too) rather than a cancellation waiter
    // beside it: 584 B with both (64-bit, this toolchain).
    #[cfg(target_pointer_width = "64")]
    assert!(callback <= 480, "{callback} B");
}

#[tokio::test]
async fn a_callback_connection_whose_peer_never_answers_the_close_is_dropped_in_time() {
    let reg = Registry::with_config(
        RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .drain_timeout(Duration::from_millis(100)),
    );
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, peer) = memory::pair();
    let task = tokio::spawn(accepted.run_callback(
        transport,
        |socket: &CallbackSocket, _: Message| {
            socket.close(CloseCode::NORMAL, "bye").unwrap();
        },
    ));
    peer.send("close, please").unwrap();
    // The peer reads nothing and answers nothing: the writer gives up after the close timeout
    // and aborts, and the reader, which keeps no waiter of its own, ends with it.
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let closed = &reg.recently_closed(None)[0];
    assert_eq!(closed.closed_by, Initiator::Deadline, "{closed:?}");
    assert_eq!(closed.reason, "close handshake timed out");
    drop(peer);
}

#[tokio::test]
async fn a_callback_connection_whose_peer_never_answers_is_dropped_at_the_drain_deadline() {
    let reg = Registry::with_config(
        RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .drain_timeout(Duration::from_millis(100)),
    );
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, peer) = memory::pair();
    let task = tokio::spawn(accepted.run_callback(transport, echo_callback));
    wait_until("open", || reg.summary().connections_by_state.open == 1).await;
    // The peer never answers the 1001: the drain's deadline aborts the connection from outside
    // its task, and the reader must hear of it through the writer.
    let report = tokio::time::timeout(WAIT, reg.shutdown()).await.unwrap();
    assert_eq!(report.connections, 1);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    drop(peer);
}

/// The callback driver is woken once per message it echoes — by the message coming in — and not
/// a second time by its own handler's reply, which it takes from the queue itself once the
/// handler returns (a wake-up for it would only poll the connection's task again for nothing).
#[tokio::test]
async fn a_callback_echo_wakes_its_task_once_a_message() {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct Wakes(AtomicUsize);
    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    const COUNT: usize = 20;
    let reg = registry();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, mut peer) = memory::pair();
    let mut task = Box::pin(accepted.run_callback(transport, echo_callback));
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(task.as_mut().poll(&mut cx).is_pending());
    for i in 0..COUNT {
        peer.send(format!("{i}")).unwrap();
        assert!(task.as_mut().poll(&mut cx).is_pending());
        assert_eq!(peer.recv().await, Some(Message::text(format!("{i}"))));
    }
    assert_eq!(
        wakes.0.load(Ordering::Relaxed),
        COUNT,
        "wake-ups for {COUNT} echoes"
    );
    assert_eq!(reg.snapshot().connections[0].messages_out, COUNT as u64);
}

/// Every broadcast queued from another task reaches a callback connection, however the
/// wake-ups fall: a wake-up whose messages an earlier drain already took must still leave the
/// driver waiting for the next (it once stalled after the first few, here after 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_connection_gets_every_broadcast_queued_from_another_task() {
    const COUNT: usize = 2000;
    // Room for every broadcast: a driver held off its core while the sender runs must not make
    // a slow consumer of the connection (that is another test's matter).
    let reg = Registry::with_config(
        RegistryConfig::default()
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .queue_capacity(COUNT),
    );
    let accepted = reg.accept(ConnectionMeta::new("/chat")).unwrap();
    let (transport, mut peer) = memory::pair();
    tokio::spawn(accepted.run_callback(transport, |_: &CallbackSocket, _: Message| {}));
    // OPEN, not only registered: a broadcast skips a connection still CONNECTING whose 101 was
    // not given, so one sent before the driver runs would never reach it.
    wait_until("open", || reg.summary().connections_by_state.open == 1).await;
    let sender = {
        let reg = reg.clone();
        tokio::spawn(async move {
            for i in 0..COUNT {
                reg.broadcast(Some("/chat"), &Message::text(format!("{i}")));
                // Bursts of 7: several wake-ups' messages taken by one drain.
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for i in 0..COUNT {
        let got = tokio::time::timeout(WAIT, peer.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled after {i} broadcasts"));
        assert_eq!(got, Some(Message::text(format!("{i}"))));
    }
    sender.await.unwrap();
}
