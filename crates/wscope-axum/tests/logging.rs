//! The reference's three stats lines, captured from `tracing` (item 12).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use tracing_subscriber::EnvFilter;
use wscope_core::{
    log_connection_stats, memory, stats_lines, Clock, CloseCode, ConnectionMeta, ConnectionState,
    Registry, STATS_TARGET,
};

engine_tests!(log_connection_stats_prints_the_three_reference_lines,);
engine_tests!(
    #[tokio::test(flavor = "current_thread")]
    the_periodic_logger_logs_the_lines_by_itself
);

/// A subscriber that writes only the stats target's messages, one bare line each.
fn subscriber(out: &Captured) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_env_filter(EnvFilter::new(format!("{STATS_TARGET}=info")))
        .finish()
}

fn manual_registry(stats_interval: Duration) -> (Registry, wscope_core::ManualClock) {
    let (clock, manual) = Clock::manual();
    // The close timeout runs on tokio's clock: long enough that the CLOSING connection waits.
    let config = test_config()
        .clock(clock)
        .stats_interval(stats_interval)
        .drain_timeout(Duration::from_secs(30));
    let registry = Registry::with_config(config);
    (registry, manual)
}

async fn log_connection_stats_prints_the_three_reference_lines() {
    let (reg, clock) = manual_registry(Duration::ZERO);
    let server = TestServer::echo(reg.clone()).await;

    // Five clients open, three of them close again.
    let mut a = server.connect("/ws").await;
    let mut b = server.connect("/ws").await;
    let mut gone = Vec::new();
    for _ in 0..3 {
        gone.push(server.connect("/ws").await);
    }
    wait_open(&reg, 5).await;
    for ws in gone {
        close_client(ws).await;
    }
    wait_count(&reg, 2).await;
    // One upgrade accepted but not yet open; one whose server side sent a close that its
    // (in-process) peer never answers, so it stays CLOSING.
    let connecting = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let (transport, closing_peer) = memory::pair();
    let closing = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    tokio::spawn(closing.run(transport, |mut socket| async move {
        socket.close(CloseCode::NORMAL, "").unwrap();
        while socket.recv().await.is_some() {}
    }));
    let closing_idle = || {
        reg.snapshot()
            .connections
            .iter()
            .find(|c| c.state == ConnectionState::Closing)
            .map(|c| c.idle_time)
    };
    wait_until("one connection is CLOSING", || closing_idle().is_some()).await;

    clock.advance(Duration::from_secs(30));
    echo_roundtrip(&mut a, "a").await;
    echo_roundtrip(&mut b, "b").await;
    // A message is activity (the handler reads on while its close is unanswered).
    closing_peer.send("still here").unwrap();
    wait_until("the message reset the idle time", || {
        closing_idle() == Some(0)
    })
    .await;
    clock.advance(Duration::from_millis(15_200));
    // Ages: 45.2 s each. Idle: 15.2 s for three of them, 45.2 s for the connecting one;
    // the mean, 22.95 s, rounds to 23 s.

    let out = Captured::default();
    tracing::subscriber::with_default(subscriber(&out), || log_connection_stats(&reg));
    let expected = [
        "[WebSocket Stats] Active: 4, Total: 7, Closed: 3",
        "[WebSocket Stats] Avg Age: 45s, Avg Idle: 23s",
        "[WebSocket Stats] By State - Open: 2, Connecting: 1, Closing: 1",
    ];
    assert_eq!(out.lines(), expected);
    assert_eq!(stats_lines(&reg.summary()), expected);

    drop((connecting, closing_peer));
    close_client(a).await;
    close_client(b).await;
    wait_count(&reg, 0).await;
    let out = Captured::default();
    tracing::subscriber::with_default(subscriber(&out), || log_connection_stats(&reg));
    assert_eq!(
        out.lines(),
        [
            "[WebSocket Stats] Active: 0, Total: 7, Closed: 7",
            "[WebSocket Stats] Avg Age: 0s, Avg Idle: 0s",
            "[WebSocket Stats] By State - Open: 0, Connecting: 0, Closing: 0",
        ]
    );
    server.shutdown().await;
}

#[test]
fn seconds_are_rounded_like_math_round() {
    let (reg, clock) = manual_registry(Duration::ZERO);
    let _conn = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    clock.advance(Duration::from_millis(11_499));
    assert_eq!(
        stats_lines(&reg.summary())[1],
        "[WebSocket Stats] Avg Age: 11s, Avg Idle: 11s"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        stats_lines(&reg.summary())[1],
        "[WebSocket Stats] Avg Age: 12s, Avg Idle: 12s"
    );
}

// A current-thread runtime, so the registry's logger task runs on the thread whose default
// subscriber the guard below sets.
async fn the_periodic_logger_logs_the_lines_by_itself() {
    let (reg, clock) = manual_registry(Duration::from_millis(100));
    let server = TestServer::echo(reg.clone()).await;
    let ws = server.connect("/ws").await;
    wait_open(&reg, 1).await;
    clock.advance(Duration::from_secs(12));

    let out = Captured::default();
    let guard = tracing::subscriber::set_default(subscriber(&out));
    // Nobody calls log_connection_stats: wait for two rounds of the timer.
    wait_until("the logger wrote two rounds", || out.lines().len() >= 6).await;
    drop(guard);
    let expected = [
        "[WebSocket Stats] Active: 1, Total: 1, Closed: 0",
        "[WebSocket Stats] Avg Age: 12s, Avg Idle: 12s",
        "[WebSocket Stats] By State - Open: 1, Connecting: 0, Closing: 0",
    ];
    let lines = out.lines();
    assert_eq!(lines[..3], expected);
    assert_eq!(lines[3..6], expected);

    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

#[test]
fn a_zero_interval_turns_the_logger_off() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(&out));
    rt.block_on(async {
        let (reg, _clock) = manual_registry(Duration::ZERO);
        reg.start_background_tasks();
        // Paused time: this sleep is virtual and returns at once.
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    assert!(out.lines().is_empty(), "{:?}", out.lines());
}
