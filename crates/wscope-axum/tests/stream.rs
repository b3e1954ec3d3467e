//! `GET /api/stats/stream` over real sockets: a raw HTTP client reads the Server-Sent Events as
//! the admin listener sends them while real WebSocket clients come and go.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use wscope_core::wire::LiveStats;
use wscope_testkit::sse::{self, SseEvent};

/// The event's data as [`LiveStats`], checking that its SSE id is its `seq`.
fn stats(event: &SseEvent) -> LiveStats {
    assert_eq!(event.event, "stats");
    let stats: LiveStats = event.parse();
    assert_eq!(event.id, stats.seq.to_string());
    stats
}

#[tokio::test]
async fn counts_follow_clients_connecting_and_leaving_with_ids_counting_up() {
    let server = TestServer::echo(test_registry()).await;
    let mut stream = sse::open(server.admin_addr, "/api/stats/stream?interval=100ms", &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));

    let first = stats(&stream.next_event().await.unwrap());
    assert_eq!(first.seq, 1);
    assert_eq!(first.total_connections, 0);
    assert_eq!(first.instance_id, "test-node");
    assert!(!first.shut_down);

    let mut a = server.connect("/ws").await;
    let b = server.connect("/ws").await;
    let mut last = first.seq;
    let mut next = |event: &SseEvent| {
        let s = stats(event);
        assert_eq!(s.seq, last + 1, "ids count up by one");
        last = s.seq;
        s
    };
    let two = loop {
        let s = next(&stream.next_event().await.unwrap());
        if s.total_connections == 2 {
            break s;
        }
    };
    assert_eq!(two.connections_by_state.open, 2);
    assert_eq!(two.total_connections_ever, 2);

    echo_roundtrip(&mut a, "counted").await;
    let moved = loop {
        let s = next(&stream.next_event().await.unwrap());
        if s.traffic.messages_in == 1 {
            break s;
        }
    };
    assert_eq!(moved.traffic.bytes_in, "counted".len() as u64);
    assert_eq!(moved.traffic.messages_out, 1);

    close_client(b).await;
    let one = loop {
        let s = next(&stream.next_event().await.unwrap());
        if s.total_connections == 1 {
            break s;
        }
    };
    assert_eq!(one.total_connections_closed, 1);
    assert_eq!(one.total_connections_ever, 2);

    close_client(a).await;
    loop {
        if next(&stream.next_event().await.unwrap()).total_connections == 0 {
            break;
        }
    }
    drop(stream);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_the_numbers_after_it() {
    let server = TestServer::echo(test_registry()).await;
    let path = "/api/stats/stream?interval=100ms";
    let mut stream = sse::open(server.admin_addr, path, &[("Last-Event-ID", "41")]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stats(&stream.next_event().await.unwrap()).seq, 42);
    assert_eq!(stats(&stream.next_event().await.unwrap()).seq, 43);
    drop(stream);

    // For clients that cannot set the header; the header wins when both are given.
    let path = "/api/stats/stream?interval=100ms&lastEventId=9";
    let mut stream = sse::open(server.admin_addr, path, &[]).await;
    assert_eq!(stats(&stream.next_event().await.unwrap()).seq, 10);
    drop(stream);
    let mut stream = sse::open(server.admin_addr, path, &[("Last-Event-ID", "100")]).await;
    assert_eq!(stats(&stream.next_event().await.unwrap()).seq, 101);
    drop(stream);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_intervals_and_ids_get_400_naming_the_parameter() {
    let server = TestServer::echo(test_registry()).await;
    for (path, headers, named) in [
        ("/api/stats/stream?interval=soon", &[][..], "interval: "),
        ("/api/stats/stream?interval=10ms", &[][..], "interval: "),
        ("/api/stats/stream?interval=2m", &[][..], "interval: "),
        ("/api/stats/stream?lastEventId=x", &[][..], "lastEventId: "),
        (
            "/api/stats/stream",
            &[("Last-Event-ID", "-1")][..],
            "Last-Event-ID: ",
        ),
        ("/api/stats/stream?every=1s", &[][..], "every"),
    ] {
        let response = sse::open(server.admin_addr, path, headers).await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&response.body().await).unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(named), "{path}: {error}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn streams_end_when_shutdown_begins_so_the_http_server_can_stop() {
    let server = TestServer::echo(test_registry()).await;
    // A long interval: only the start of shutdown can end the stream in time.
    let mut stream = sse::open(server.admin_addr, "/api/stats/stream?interval=60s", &[]).await;
    let first = stats(&stream.next_event().await.unwrap());
    assert!(!first.shut_down);
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = stream.next_event().await {
            events.push(stats(&event));
        }
        events
    });
    // Drains the registry, then stops the listeners gracefully: this waits for the stream's
    // response, and panics if it does not end in time.
    server.shutdown().await;
    let events = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    let last = events.last().expect("a last event once shutdown began");
    assert!(last.shut_down);
    assert_eq!(last.seq, first.seq + 1);
}

#[tokio::test]
async fn a_stream_opened_during_shutdown_sends_one_event_and_ends() {
    let server = TestServer::echo(test_registry()).await;
    server.registry.shutdown().await;
    let mut stream = sse::open(server.admin_addr, "/api/stats/stream", &[]).await;
    assert_eq!(stream.status, 200);
    let only = stats(&stream.next_event().await.unwrap());
    assert!(only.shut_down);
    assert_eq!(stream.next_event().await, None);
    server.shutdown().await;
}

#[tokio::test]
async fn the_stream_wants_the_admin_token_like_every_admin_route() {
    let registry = test_registry();
    let admin = wscope_axum::admin_router(registry.clone())
        .layer(wscope_axum::AdminConfig::new().token("t0k3n").layer());
    let app = tracked(echo_routes(), tracking(&registry));
    let server = TestServer::start_with_admin(registry, app, admin).await;
    let refused = sse::open(server.admin_addr, "/api/stats/stream", &[]).await;
    assert_eq!(refused.status, 401);
    let wrong = [("Authorization", "Bearer nope")];
    let refused = sse::open(server.admin_addr, "/api/stats/stream", &wrong).await;
    assert_eq!(refused.status, 401);
    let right = [("Authorization", "Bearer t0k3n")];
    let mut stream = sse::open(server.admin_addr, "/api/stats/stream", &right).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stats(&stream.next_event().await.unwrap()).seq, 1);
    drop(stream);
    server.shutdown().await;
}

// Current-thread: the runtime's task count is this test's alone.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_whose_client_went_leaves_nothing_running() {
    let server = TestServer::echo(test_registry()).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut stream = sse::open(server.admin_addr, "/api/stats/stream?interval=60s", &[]).await;
        stats(&stream.next_event().await.unwrap());
        streams.push(stream);
    }
    // One connection task per stream while the clients read (and whatever the server started
    // once, which stays).
    let open = tasks();
    assert!(open >= before + 5, "{open} tasks, {before} before");
    drop(streams);
    // With a minute between events, nothing is written to the gone clients: the server sees
    // them go from the connection itself, and each task ends with its stream at once.
    wait_until("the streams' tasks end", || tasks() == open - 5).await;
    server.shutdown().await;
}
