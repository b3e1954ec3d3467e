//! Without a `Tracking` layer, sockets go to `Registry::global()` (item 14). This is the only test
//! in its binary, so nothing else touches the global registry while it runs.
#![allow(clippy::unwrap_used)]

mod common;

use axum::routing::get;
use axum::Router;
use common::*;
use wscope_axum::{Tracking, WebSocketUpgrade};
use wscope_core::Registry;

#[tokio::test]
async fn without_a_layer_sockets_go_to_the_global_registry() {
    let global = Registry::global();
    let before = global.snapshot().total_connections_ever;
    assert_eq!(global.connection_count(), 0);

    let layered = test_registry();
    // `/plain` has no layer; `/tracked` has one. An explicit registry beats both.
    let explicit = test_registry();
    let explicit_route = {
        let explicit = explicit.clone();
        move |ws: WebSocketUpgrade| async move { echo(ws.registry(&explicit)).await }
    };
    let app = Router::new()
        .route("/plain", get(echo))
        .route("/plain/explicit", get(explicit_route))
        .merge(tracked(
            Router::new().route("/tracked", get(echo)),
            Tracking::new(layered.clone()),
        ));
    let server = TestServer::start(layered.clone(), app).await;

    // The fallback is not silent: the first socket without a layer logs a warning saying so.
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let mut g = server.connect("/plain").await;
    let mut t = server.connect("/tracked").await;
    let mut e = server.connect("/plain/explicit").await;
    wait_open(global, 1).await;
    drop(guard);
    let warned: Vec<String> = out
        .lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("without a Tracking layer"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", out.lines());
    assert!(warned[0].contains("Registry::global()"), "{warned:?}");
    wait_open(&layered, 1).await;
    wait_open(&explicit, 1).await;
    assert_eq!(&*global.snapshot().connections[0].path, "/plain");
    assert_eq!(global.snapshot().total_connections_ever, before + 1);
    assert_eq!(&*layered.snapshot().connections[0].path, "/tracked");
    assert_eq!(&*explicit.snapshot().connections[0].path, "/plain/explicit");
    // The global Tracking trusts loopback and records the peer, like the default.
    assert_eq!(
        global.snapshot().connections[0].remote_address,
        Some([127, 0, 0, 1].into())
    );
    for ws in [&mut g, &mut t, &mut e] {
        echo_roundtrip(ws, "hi").await;
    }

    close_client(g).await;
    close_client(t).await;
    close_client(e).await;
    wait_count(global, 0).await;
    wait_count(&layered, 0).await;
    wait_count(&explicit, 0).await;
    assert_eq!(global.snapshot().total_connections_closed, before + 1);
    assert!(!global.is_shut_down());
    explicit.shutdown().await;
    server.shutdown().await;
}
