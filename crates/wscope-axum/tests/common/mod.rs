//! Shared helpers for the integration tests: a test server on 127.0.0.1:0 (main listener with the
//! caller's routes, admin listener with `admin_router`) and a real WebSocket client; the raw
//! HTTP/1.1 client and the bounded wait come from `wscope-testkit`.

// Each test binary uses a subset of these helpers.
#![allow(dead_code, clippy::unwrap_used)]

#[allow(unused_imports)] // the raw-frame tests use it
pub use wscope_testkit::raw;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use wscope_axum::{admin_router, Engine, SocketConfig, Tracking, WebSocketUpgrade};
use wscope_cluster::Cluster;
use wscope_core::{ConnectionInfo, Registry, RegistryConfig, ShutdownReport};

/// A real WebSocket client over a plain TCP stream (so tests can reach the socket).
pub type Client = WebSocketStream<TcpStream>;

#[allow(unused_imports)] // each test binary uses some
pub use wscope_testkit::{http, http_get, http_post, wait_until, HttpResponse, WAIT};

/// The user agent header name.
pub const UA: &str = "user-agent";

/// A registry config for tests: a fixed instance id, no background sweep or stats logger (tests
/// drive those by hand), and a short drain deadline so a teardown can never hang for long.
pub fn test_config() -> RegistryConfig {
    RegistryConfig::default()
        .instance_id("test-node")
        .cleanup_interval(Duration::ZERO)
        .stats_interval(Duration::ZERO)
        .drain_timeout(Duration::from_secs(2))
}

/// A fresh registry with [`test_config`].
pub fn test_registry() -> Registry {
    Registry::with_config(test_config())
}

/// Runs each named test body (an `async fn name()` in the same file) once per engine compiled in
/// and per runtime layout, as the tests `name::tungstenite`, `name::tokio_websockets`,
/// `name::fastwebsockets` and `name::wscope` on a current-thread runtime (what each runtime of
/// `--runtime per-core` is), and the same four as `name::multi::…` on a two-worker multi-thread
/// runtime (`--runtime multi`'s layout: the server's tasks move between threads). A leading
/// `#[tokio::test(...)]` sets the runtime flavor for one test, which then runs on that runtime
/// only.
#[allow(unused_macros)] // global_registry.rs runs on the default engine only
macro_rules! engine_tests {
    (@engines #[$test:meta] $f:path) => {
        #[cfg(feature = "tungstenite")]
        #[$test]
        async fn tungstenite() {
            crate::common::with_engine(wscope_axum::Engine::Tungstenite, $f()).await
        }

        #[cfg(feature = "tokio-websockets")]
        #[$test]
        async fn tokio_websockets() {
            crate::common::with_engine(wscope_axum::Engine::TokioWebsockets, $f()).await
        }

        #[cfg(feature = "fastwebsockets")]
        #[$test]
        async fn fastwebsockets() {
            crate::common::with_engine(wscope_axum::Engine::Fastwebsockets, $f()).await
        }

        #[cfg(feature = "wscope")]
        #[$test]
        async fn wscope() {
            crate::common::with_engine(wscope_axum::Engine::Wscope, $f()).await
        }
    };
    (#[$test:meta] $name:ident) => {
        mod $name {
            engine_tests!(@engines #[$test] super::$name);
        }
    };
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                engine_tests!(@engines #[tokio::test] super::$name);

                mod multi {
                    engine_tests!(
                        @engines
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        super::super::$name
                    );
                }
            }
        )+
    };
}

tokio::task_local! {
    /// The engine the running test serves sockets with.
    static ENGINE: Engine;
}

/// Runs `test` with [`tracking`] choosing `engine`.
pub async fn with_engine<F: Future>(engine: Engine, test: F) -> F::Output {
    ENGINE.scope(engine, test).await
}

/// The engine of the running test (the library default outside [`with_engine`]).
pub fn engine() -> Engine {
    ENGINE.try_with(|e| *e).unwrap_or_default()
}

/// `Tracking::new(registry)` on the running test's engine.
pub fn tracking(registry: &Registry) -> Tracking {
    Tracking::new(registry.clone()).socket_config(SocketConfig::default().engine(engine()))
}

/// A running test server: the main listener serves the caller's app, the admin listener serves
/// `admin_router(registry)`. Both are bound on 127.0.0.1:0 with connect info.
pub struct TestServer {
    /// The registry the admin listener reports on and `shutdown` drains.
    pub registry: Registry,
    /// The cluster node handed to the admin router, for a member of a cluster.
    pub cluster: Option<Cluster>,
    /// The main listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

/// `routes` with `Tracking::new(registry)` layered on, as a server would wire it.
pub fn tracked(routes: Router, tracking: Tracking) -> Router {
    routes.layer(tracking.layer())
}

/// The echo handler: each text or binary message sent back unchanged.
pub async fn echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(msg) = socket.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

/// `/ws`: echo.
pub fn echo_routes() -> Router {
    Router::new().route("/ws", get(echo))
}

async fn serve(
    app: Router,
    stop: watch::Receiver<bool>,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let mut stop = stop;
        let _ = stop.wait_for(|stop| *stop).await;
    });
    (addr, tokio::spawn(async move { server.await }))
}

impl TestServer {
    /// Serves `app` (already layered as the test wants) and `admin_router(registry)`.
    pub async fn start(registry: Registry, app: Router) -> Self {
        let admin = admin_router(registry.clone());
        Self::start_with_admin(registry, app, admin).await
    }

    /// Serves `app` and `admin` (an admin router layered as the test wants).
    pub async fn start_with_admin(registry: Registry, app: Router, admin: Router) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (addr, main) = serve(app, stopped.clone()).await;
        let (admin_addr, admin) = serve(admin, stopped).await;
        Self {
            registry,
            cluster: None,
            addr,
            admin_addr,
            stop,
            tasks: vec![main, admin],
        }
    }

    /// `/ws` echo tracked in `registry` with the default [`Tracking`] on the test's engine.
    pub async fn echo(registry: Registry) -> Self {
        let app = tracked(echo_routes(), tracking(&registry));
        Self::start(registry, app).await
    }

    /// As [`TestServer::echo`], for a member of a cluster: the admin router is handed `cluster`.
    pub async fn echo_member(registry: Registry, cluster: Cluster) -> Self {
        let app = tracked(echo_routes(), tracking(&registry));
        let admin = admin_router(registry.clone()).layer(axum::Extension(cluster.clone()));
        let mut server = Self::start_with_admin(registry, app, admin).await;
        server.cluster = Some(cluster);
        server
    }

    /// Connects a client to `path` on the main listener.
    pub async fn connect(&self, path: &str) -> Client {
        connect_with(self.addr, path, &[]).await
    }

    /// Connects a client to `path` with a user agent (tests find connections by it).
    pub async fn connect_as(&self, path: &str, user_agent: &str) -> Client {
        connect_with(self.addr, path, &[(UA, user_agent)]).await
    }

    /// Drains the registry, stops both listeners and joins them.
    pub async fn shutdown(self) -> ShutdownReport {
        let report = timeout(WAIT, self.registry.shutdown())
            .await
            .expect("registry drains in time");
        self.stop.send_replace(true);
        for task in self.tasks {
            timeout(WAIT, task)
                .await
                .expect("listener stops in time")
                .expect("listener task")
                .expect("listener");
        }
        report
    }
}

/// Opens a WebSocket to `ws://{addr}{path}` with extra request headers; panics unless it gets 101.
pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Client {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Opens a WebSocket to `path` through a client socket with a tiny receive buffer, so that what
/// the server sends piles up on the server's side while the test does not read.
pub async fn connect_small_window(addr: SocketAddr, path: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let request = format!("ws://{addr}{path}").into_client_request().unwrap();
    let (ws, response) = timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// A client behind a small receive window that sends far more to `server`'s `/ws` than it reads
/// (the route sends each message back; the registry bounds each queue at `limit` bytes): the
/// server holds it up instead of closing it — its queue never holds more than the bound and the
/// one message that crossed it, the connection stays — and once it reads, every message comes
/// back in order, and it closes with no limit's close counted.
pub async fn a_client_that_does_not_read_is_held_up(server: &TestServer, limit: usize) {
    let registry = &server.registry;
    let ws = connect_small_window(server.addr, "/ws").await;
    wait_open(registry, 1).await;
    // Far more than the socket buffers and the queue hold.
    const COUNT: usize = 2048;
    let chunk = "x".repeat(8 * 1024);
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        for i in 0..COUNT {
            let text = format!("{i:04}{chunk}");
            if sink.send(WsMessage::text(text)).await.is_err() {
                break;
            }
        }
        sink
    });
    let mut peak = 0;
    wait_until("the queue fills", || {
        peak = peak.max(registry.snapshot().connections[0].queued_bytes);
        peak > limit as u64 / 2
    })
    .await;
    for _ in 0..20 {
        peak = peak.max(registry.snapshot().connections[0].queued_bytes);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        peak <= (limit + 8 * 1024 + 4) as u64,
        "queue held {peak} bytes"
    );
    assert_eq!(registry.connection_count(), 1, "backpressure, not a close");
    // Now read: every echo arrives, in order.
    for i in 0..COUNT {
        match timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(WsMessage::Text(t))) => assert_eq!(&t.as_str()[..4], format!("{i:04}")),
            other => panic!("echo {i}: {other:?}"),
        }
    }
    let sink = writer.await.unwrap();
    close_client(sink.reunite(stream).unwrap()).await;
    wait_count(registry, 0).await;
    assert_eq!(registry.snapshot().closed_by.limit, 0);
}

/// A client that floods `server`'s `/ws` (the route sends each message back; the registry allows
/// 20 messages a second) is closed with 1008 "message rate exceeded", counted as closed by a
/// limit, while another client on the route is still served.
pub async fn a_flooding_client_is_closed_with_1008(server: &TestServer) {
    let registry = &server.registry;
    let mut flood = server.connect_as("/ws", "flood").await;
    let mut polite = server.connect_as("/ws", "polite").await;
    wait_open(registry, 2).await;
    for i in 0..200 {
        if flood.send(WsMessage::text(format!("{i}"))).await.is_err() {
            break;
        }
    }
    let mut code = None;
    while let Some(Ok(msg)) = timeout(WAIT, flood.next()).await.unwrap() {
        if let WsMessage::Close(Some(f)) = msg {
            code = Some((u16::from(f.code), f.reason.as_str().to_owned()));
            break;
        }
    }
    assert_eq!(code, Some((1008, "message rate exceeded".into())));
    wait_count(registry, 1).await;
    assert_eq!(registry.snapshot().closed_by.limit, 1);
    // One message well within the rate is fine.
    echo_roundtrip(&mut polite, "hello").await;
    close_client(polite).await;
    wait_count(registry, 0).await;
}

/// A client that floods `server`'s `/ws` (the registry allows 20 messages a second) and goes on
/// sending while it reads, as a client that does not wait for answers does, gets the 1008
/// "message rate exceeded" close and its reason — not a reset, which a server dropping a socket
/// with unread bytes sends, and which can overtake the close frame.
pub async fn a_client_still_flooding_gets_the_1008_close(server: &TestServer) {
    const FLOOD: usize = 10_000;
    let registry = &server.registry;
    let ws = server.connect_as("/ws", "flood").await;
    wait_open(registry, 1).await;
    let (mut sink, mut stream) = ws.split();
    // Until the client's own side has the close (its sends fail then), or the socket is reset.
    let flood = tokio::spawn(async move {
        // Large enough to fill the socket buffers while the server writes its close.
        let chunk = "x".repeat(64 * 1024);
        for i in 0..FLOOD {
            if sink
                .send(WsMessage::text(format!("{i} {chunk}")))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut close = None;
    for _ in 0..FLOOD {
        match timeout(WAIT, stream.next())
            .await
            .expect("the close in time")
        {
            Some(Ok(WsMessage::Close(Some(f)))) => {
                close = Some((u16::from(f.code), f.reason.as_str().to_owned()));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the client read failed before the close came: {e}"),
            None => panic!("the stream ended before the close came"),
        }
    }
    assert_eq!(close, Some((1008, "message rate exceeded".into())));
    timeout(WAIT, flood).await.unwrap().unwrap();
    wait_count(registry, 0).await;
    assert_eq!(registry.snapshot().closed_by.limit, 1);
}

/// The next message the client reads (pings and pongs included); `None` when the stream ended.
pub async fn next_msg(ws: &mut Client) -> Option<WsMessage> {
    timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .map(|r| r.expect("client read"))
}

/// The next text message; panics on anything else but pings/pongs.
pub async fn recv_text(ws: &mut Client) -> String {
    for _ in 0..100 {
        match next_msg(ws).await {
            Some(WsMessage::Text(t)) => return t.as_str().to_owned(),
            Some(WsMessage::Ping(_) | WsMessage::Pong(_)) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
    panic!("no text message among 100 control frames");
}

/// Sends `text` and expects it echoed back.
pub async fn echo_roundtrip(ws: &mut Client, text: &str) {
    ws.send(WsMessage::text(text.to_owned())).await.unwrap();
    assert_eq!(recv_text(ws).await, text);
}

/// Reads until the stream ends, ignoring anything but a protocol error; bounded.
async fn read_to_end(ws: &mut Client) {
    for _ in 0..1000 {
        match timeout(WAIT, ws.next()).await.expect("stream ends in time") {
            None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
    }
    panic!("stream did not end within 1000 messages");
}

/// Expects the next data-less frame to be a close; returns its code and reason, then finishes the
/// handshake (the client's automatic reply) and reads until the server hangs up.
pub async fn expect_close(ws: &mut Client) -> (u16, String) {
    for _ in 0..100 {
        match next_msg(ws).await {
            Some(WsMessage::Close(frame)) => {
                let got = frame
                    .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                    .unwrap_or((1005, String::new()));
                read_to_end(ws).await;
                return got;
            }
            Some(WsMessage::Ping(_) | WsMessage::Pong(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    panic!("no close frame among 100 control frames");
}

/// Closes from the client side (1000) and reads until the server hangs up.
pub async fn close_client(mut ws: Client) {
    ws.close(None).await.unwrap();
    read_to_end(&mut ws).await;
}

/// Waits until the registry tracks exactly `n` connections, all OPEN.
pub async fn wait_open(registry: &Registry, n: u64) {
    wait_until(&format!("{n} connections are open"), || {
        let s = registry.summary();
        s.total_connections == n && s.connections_by_state.open == n
    })
    .await;
}

/// Waits until the registry tracks exactly `n` connections.
pub async fn wait_count(registry: &Registry, n: u64) {
    wait_until(&format!("{n} connections are tracked"), || {
        registry.connection_count() == n
    })
    .await;
}

/// The tracked connection whose user agent is `ua`.
pub fn info(registry: &Registry, ua: &str) -> ConnectionInfo {
    registry
        .snapshot()
        .connections
        .into_iter()
        .find(|c| c.user_agent.as_deref() == Some(ua))
        .unwrap_or_else(|| panic!("no connection with user agent {ua:?}"))
}

/// `POST /api/admin` on the admin listener.
pub async fn admin_post(server: &TestServer, body: &str) -> HttpResponse {
    http_post(server.admin_addr, "/api/admin", body).await
}

/// The raw request of a WebSocket handshake for `path` (for checking refusals as plain HTTP).
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
