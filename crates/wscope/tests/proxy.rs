//! `wscope proxy` in front of real upstreams: a Node.js server on the npm package `ws`
//! (`tests/node-upstream/`, installed by `npm ci`; skipped with one line without Node, required
//! in CI), `wscope serve` itself, an upstream that is down and one that never answers — all
//! through real sockets, the proxy spawned as a process.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wscope_testkit::node::NodeUpstream;
use wscope_testkit::raw::{self, Raw};
use wscope_testkit::served::Served;
use wscope_testkit::{http, http_get, http_post, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The Node upstream, or `None` (skipped) without Node.
fn node(test: &str) -> Option<NodeUpstream> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node-upstream");
    NodeUpstream::start_or_skip(test, &dir)
}

/// A proxy in front of `upstream`, with `extra` flags.
fn proxy(upstream: &str, extra: &[&str]) -> Served {
    let mut args = vec!["--upstream", upstream];
    args.extend_from_slice(extra);
    Served::proxy(BIN, &args)
}

async fn connect(served: &Served, path: &str) -> Client {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(served.url(path)))
        .await
        .expect("connected in time")
        .unwrap();
    ws
}

/// An upgrade of `path` by hand: the answer, whatever its status.
async fn upgrade_answer(main: SocketAddr, path: &str) -> wscope_testkit::HttpResponse {
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", raw::KEY),
    ];
    http(main, "GET", path, &headers, None).await
}

/// Reads to the end of the connection (a client replies to a close frame as it reads on).
async fn finish(mut ws: Client) {
    tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("the connection ended in time");
}

/// The next data or close message.
async fn next(ws: &mut Client) -> Message {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(msg)) => return msg,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    })
    .await
    .expect("a message in time")
}

async fn stats(admin: SocketAddr) -> serde_json::Value {
    http_get(admin, "/api/stats").await.json()
}

/// The closes the Node upstream received, as JSON.
async fn node_closes(node: &NodeUpstream) -> Vec<serde_json::Value> {
    http_get(node.addr, "/closes")
        .await
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (bounded) until the Node upstream has received `n` closes.
async fn wait_node_closes(node: &NodeUpstream, n: usize) -> Vec<serde_json::Value> {
    tokio::time::timeout(WAIT, async {
        loop {
            let closes = node_closes(node).await;
            if closes.len() >= n {
                return closes;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream saw the close in time")
}

#[tokio::test]
async fn a_node_ws_upstream_echoes_through_the_proxy_with_its_subprotocol_and_one_tracked_entry() {
    let Some(node) = node("a_node_ws_upstream_echoes_through_the_proxy") else {
        return;
    };
    let served = proxy(&node.url(), &[]);
    let mut request = served.url("/echo?room=1").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "chat.v1, chat.v2".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The upstream chose, the proxy passed its choice on.
    assert_eq!(
        response.headers()["sec-websocket-protocol"]
            .to_str()
            .unwrap(),
        "chat.v2"
    );
    for i in 0..5 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            next(&mut ws).await.into_text().unwrap().as_str(),
            format!("m{i}")
        );
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await.into_data().as_ref(), &[1u8, 2, 3]);

    // One entry, the client's, naming its upstream; each message counted once.
    let s = stats(served.admin).await;
    assert_eq!(s["totalConnections"], 1, "{s:#}");
    let entry = &s["connections"][0];
    assert_eq!(entry["upstream"], node.url(), "{entry:#}");
    assert_eq!(entry["path"], "/echo");
    assert_eq!(entry["messagesIn"], 6);
    assert_eq!(entry["messagesOut"], 6);
    let page = http_get(
        served.admin,
        &format!("/api/connections?upstream={}", node.url()),
    )
    .await
    .json();
    assert_eq!(page["total"], 1, "{page:#}");
    let routes = http_get(served.admin, "/api/upstreams").await.json();
    assert_eq!(routes["routes"][0]["activeConnections"], 1, "{routes:#}");
    let metrics = http_get(served.admin, "/metrics").await.text();
    let line = format!(
        "wscope_upstream_connections{{route=\"/\",upstream=\"{}\"}} 1",
        node.url()
    );
    assert!(metrics.contains(&line), "{metrics}");
    assert!(metrics.contains("wscope_upstream_handshake_seconds_count"));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn the_upstream_sees_the_clients_headers_and_the_forwarding_ones() {
    let Some(node) = node("the_upstream_sees_the_clients_headers_and_the_forwarding_ones") else {
        return;
    };
    let served = proxy(&node.url(), &[]);
    let mut request = served.url("/headers").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Cookie", "session=ok; theme=dark".parse().unwrap());
    headers.insert("Authorization", "Bearer abc".parse().unwrap());
    headers.insert("Origin", "http://app.example".parse().unwrap());
    headers.insert("X-Custom", "kept".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let seen: serde_json::Value =
        serde_json::from_str(next(&mut ws).await.into_text().unwrap().as_str()).unwrap();
    assert_eq!(seen["cookie"], "session=ok; theme=dark", "{seen:#}");
    assert_eq!(seen["authorization"], "Bearer abc");
    assert_eq!(seen["origin"], "http://app.example");
    assert_eq!(seen["x-custom"], "kept");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], served.main.to_string());
    assert!(seen["forwarded"]
        .as_str()
        .unwrap()
        .contains("for=127.0.0.1"));
    // The upstream's own Host; each hop's own handshake key.
    assert_eq!(seen["host"], node.addr.to_string());
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn an_upstream_refusal_reaches_the_client_with_its_status_headers_and_body() {
    let Some(node) = node("an_upstream_refusal_reaches_the_client") else {
        return;
    };
    let served = proxy(&node.url(), &[]);
    let mut refused = Raw::connect(served.main).await;
    refused
        .send(raw::upgrade_request(served.main, "/private", &[]).as_bytes())
        .await;
    assert_eq!(refused.response_head().await, 401, "{}", refused.response);
    assert!(
        refused
            .response
            .to_ascii_lowercase()
            .contains("www-authenticate: cookie"),
        "{}",
        refused.response
    );
    let mut body = vec![0u8; 10];
    tokio::io::AsyncReadExt::read_exact(&mut refused.tcp, &mut body)
        .await
        .unwrap();
    assert_eq!(body, b"no session");
    // Refused upstream: no entry was made; with the cookie, the same path upgrades.
    let s = stats(served.admin).await;
    assert_eq!(s["totalConnectionsEver"], 0, "{s:#}");
    let mut ok = raw::upgrade(served.main, "/private", &[("Cookie", "session=ok")]).await;
    ok.send(&raw::client_frame(raw::TEXT, b"in")).await;
    assert_eq!(ok.read_data().await.payload, b"in");
    let routes = http_get(served.admin, "/api/upstreams").await.json();
    assert_eq!(
        routes["routes"][0]["connectFailures"]["refused"], 1,
        "{routes:#}"
    );
}

#[tokio::test]
async fn closes_cross_the_proxy_both_ways_with_their_code_and_reason() {
    let Some(node) = node("closes_cross_the_proxy_both_ways") else {
        return;
    };
    let served = proxy(&node.url(), &[]);
    // The upstream closes: the client gets its code and reason, the entry says "upstream".
    let mut ws = connect(&served, "/echo").await;
    ws.send(Message::text("close-4001")).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye from node");
        }
        other => panic!("expected the upstream's close, got {other:?}"),
    }
    finish(ws).await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            let closed = http_get(served.admin, "/api/closed").await.json();
            if closed["total"] == 1 {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let record = &closed["connections"][0];
    assert_eq!(record["closedBy"], "upstream", "{record:#}");
    assert_eq!(record["code"], 4001);
    assert_eq!(record["reason"], "bye from node");

    // The client closes: the upstream gets its code and reason.
    let mut ws = connect(&served, "/echo").await;
    ws.send(Message::text("hi")).await.unwrap();
    next(&mut ws).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4321),
        reason: "bye from client".into(),
    }))
    .await
    .unwrap();
    let closes = wait_node_closes(&node, 2).await;
    assert_eq!(closes[1]["code"], 4321, "{closes:?}");
    assert_eq!(closes[1]["reason"], "bye from client");
}

#[tokio::test]
async fn admin_close_and_drain_act_on_proxied_clients_and_tell_the_upstream_1001() {
    let Some(node) = node("admin_close_ban_and_drain_act_on_proxied_clients") else {
        return;
    };
    let mut served = proxy(&node.url(), &["--drain-timeout", "5s"]);
    let mut a = connect(&served, "/echo").await;
    let mut b = connect(&served, "/echo").await;
    let id = stats(served.admin).await["connections"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = format!(r#"{{"action":"close","id":"{id}","code":4000,"reason":"maintenance"}}"#);
    let answer = http_post(served.admin, "/api/admin", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Whichever client it was gets wscope's code; its upstream gets 1001.
    let (closed, closing, mut open) = tokio::select! {
        m = next(&mut a) => (m, a, b),
        m = next(&mut b) => (m, b, a),
    };
    match closed {
        Message::Close(Some(f)) => assert_eq!(
            (u16::from(f.code), f.reason.as_str()),
            (4000, "maintenance")
        ),
        other => panic!("expected wscope's close, got {other:?}"),
    }
    finish(closing).await;
    let closes = wait_node_closes(&node, 1).await;
    assert_eq!(closes[0]["code"], 1001, "{closes:?}");

    // The drain: 1001 "Server shutting down" to the client, 1001 to its upstream, exit 0.
    open.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        next(&mut open).await.into_text().unwrap().as_str(),
        "still here"
    );
    served.signal("TERM");
    match next(&mut open).await {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Away);
            assert_eq!(f.reason.as_str(), "Server shutting down");
        }
        other => panic!("expected the drain's close, got {other:?}"),
    }
    finish(open).await;
    let closes = wait_node_closes(&node, 2).await;
    assert_eq!(closes[1]["code"], 1001, "{closes:?}");
    assert!(served.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_502_and_one_that_never_answers_504() {
    // A port nothing listens on: bound, then let go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    // A port that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let route = format!("/silent={silent_url}");
    let served = proxy(
        &dead_url,
        &["--route", &route, "--upstream-timeout", "300ms"],
    );
    let down = upgrade_answer(served.main, "/ws").await;
    assert_eq!(down.status, 502, "{}", down.text());
    assert!(down.json()["error"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    let hung = upgrade_answer(served.main, "/silent/ws").await;
    assert_eq!(hung.status, 504, "{}", hung.text());
    assert!(hung.json()["error"].as_str().unwrap().contains("300ms"));
    // Plain requests too.
    assert_eq!(http_get(served.main, "/page").await.status, 502);
    assert_eq!(http_get(served.main, "/silent/page").await.status, 504);
    let routes = http_get(served.admin, "/api/upstreams").await.json();
    let by_route = |prefix: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == prefix)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_route("/")["connectFailures"]["unreachable"],
        1,
        "{routes:#}"
    );
    assert_eq!(
        by_route("/silent")["connectFailures"]["timeout"],
        1,
        "{routes:#}"
    );
    let s = stats(served.admin).await;
    assert_eq!(s["totalConnectionsEver"], 0, "{s:#}");
    held.abort();
}

#[tokio::test]
async fn plain_http_reaches_the_node_app_get_post_and_sse() {
    let Some(node) = node("plain_http_reaches_the_node_app") else {
        return;
    };
    let served = proxy(&node.url(), &["--health-path", "/_wscope/health"]);
    let hello = http_get(served.main, "/hello").await;
    assert_eq!(
        (hello.status, hello.text()),
        (200, "hello from node".to_owned())
    );
    assert_eq!(hello.header("x-upstream"), Some("node"));
    let body = r#"{"large":"enough"}"#;
    let echoed = http_post(served.main, "/body", body).await;
    assert_eq!((echoed.status, echoed.text()), (200, body.to_owned()));
    assert_eq!(http_get(served.main, "/missing").await.status, 404);
    assert_eq!(http_get(served.main, "/_wscope/health").await.status, 200);
    // Server-sent events arrive one by one: the first before the second is even sent.
    let mut events = wscope_testkit::sse::open(served.main, "/sse", &[]).await;
    let first = events.next_event().await.unwrap();
    assert_eq!(first.data, "first");
    assert_eq!(http_get(node.addr, "/sse-next").await.status, 204);
    let second = events.next_event().await.unwrap();
    assert_eq!(second.data, "second");
}

#[tokio::test]
async fn wscope_serve_as_the_upstream_limits_and_bans_apply_at_the_proxy() {
    let upstream = Served::start(BIN, &[]);
    let url = format!("http://{}", upstream.main);
    let served = proxy(&url, &["--max-connections-per-ip", "1"]);
    let mut ws = connect(&served, "/ws").await;
    ws.send(Message::text("through")).await.unwrap();
    assert_eq!(next(&mut ws).await.into_text().unwrap().as_str(), "through");
    // The second from this address is refused at the proxy; the upstream never sees it.
    let second = tokio_tungstenite::connect_async(served.url("/ws")).await;
    assert!(second.is_err(), "{second:?}");
    assert_eq!(stats(upstream.admin).await["totalConnectionsEver"], 1);
    // A ban closes the client and refuses the next upgrade before any upstream is opened.
    let ban = r#"{"action":"ban","target":"127.0.0.1","duration":"1m"}"#;
    assert_eq!(http_post(served.admin, "/api/admin", ban).await.status, 200);
    let refused = upgrade_answer(served.main, "/echo").await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    assert_eq!(stats(upstream.admin).await["totalConnectionsEver"], 1);
    drop(ws);
}

/// Echoes one message on `ws` and checks it came back.
async fn echoes(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next(ws).await.into_text().unwrap().as_str(), text);
}

#[tokio::test]
async fn a_reload_drains_only_the_changed_route_and_a_broken_file_changes_nothing() {
    let a = Served::start(BIN, &[]);
    let b = Served::start(BIN, &[]);
    let c = Served::start(BIN, &[]);
    let dir = std::env::temp_dir().join(format!("wscope-proxy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.toml");
    let write = |chat: &Served| {
        let text = format!(
            "upstream = \"http://{}\"\nroute = [\"/ws/chat=http://{}\"]\n",
            a.main, chat.main
        );
        std::fs::write(&file, text).unwrap();
    };
    write(&b);
    let served = Served::proxy(BIN, &["--config", file.to_str().unwrap()]);
    let mut echo = connect(&served, "/ws").await;
    let mut chat = connect(&served, "/ws/chat").await;
    echoes(&mut echo, "before").await;
    echoes(&mut chat, "chat before").await;
    assert_eq!(stats(b.admin).await["totalConnections"], 1);

    // /ws/chat now goes to c: its client is drained, the echo client is left alone.
    write(&c);
    served.signal("HUP");
    match next(&mut chat).await {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Away);
            assert_eq!(f.reason.as_str(), "route reloaded");
        }
        other => panic!("expected the reload's close, got {other:?}"),
    }
    finish(chat).await;
    echoes(&mut echo, "during").await;
    let mut chat = connect(&served, "/ws/chat").await;
    echoes(&mut chat, "chat after").await;
    assert_eq!(stats(c.admin).await["totalConnections"], 1);
    assert_eq!(stats(a.admin).await["totalConnectionsEver"], 1);

    // A setting the reload cannot apply is named as needing a restart, and left as it runs.
    let text = format!(
        "upstream = \"http://{}\"\nroute = [\"/ws/chat=http://{}\"]\nmax_connections = 5\n",
        a.main, c.main
    );
    std::fs::write(&file, text).unwrap();
    served.signal("HUP");
    let line = wscope_testkit::served::wait_line(&served.lines, "need a restart", WAIT);
    assert!(line.contains("limits"), "{line}");
    echoes(&mut echo, "after a restart-only change").await;

    // A file that does not parse: one error line, nothing changes, nobody is closed.
    std::fs::write(&file, "route = [\"no-prefix\"]\n").unwrap();
    served.signal("HUP");
    let line = wscope_testkit::served::wait_line(&served.lines, "not reloaded", WAIT);
    assert!(line.contains("route"), "{line}");
    echoes(&mut echo, "after a bad file").await;
    echoes(&mut chat, "chat after a bad file").await;
    let answer = http_post(served.admin, "/api/admin", r#"{"action":"reload"}"#).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("reload: "));

    // The admin action reloads a good file; unchanged routes keep their sockets.
    write(&c);
    let answer = http_post(served.admin, "/api/admin", r#"{"action":"reload"}"#).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["routesRetired"], 0);
    echoes(&mut echo, "still").await;
    echoes(&mut chat, "chat still").await;
    let routes = http_get(served.admin, "/api/upstreams").await.json();
    assert_eq!(routes["routes"].as_array().unwrap().len(), 2, "{routes:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tls_on_both_hops_with_the_upstream_checked_against_its_ca() {
    use wscope_axum::tls::{client_config, connect_tls};
    use wscope_testkit::pki::TestCa;

    let ca = TestCa::new("wscope proxy test CA");
    let (back, front) = (ca.leaf("upstream"), ca.leaf("proxy"));
    let upstream = Served::start(
        BIN,
        &[
            "--tls-cert",
            back.cert.to_str().unwrap(),
            "--tls-key",
            back.key.to_str().unwrap(),
        ],
    );
    let url = format!("https://127.0.0.1:{}", upstream.main.port());
    let ca_path = ca.ca_path();
    let served = proxy(
        &url,
        &[
            "--upstream-ca",
            ca_path.to_str().unwrap(),
            "--tls-cert",
            front.cert.to_str().unwrap(),
            "--tls-key",
            front.key.to_str().unwrap(),
        ],
    );
    // wss:// to the proxy, wss:// from it to the upstream.
    let config = client_config(Some(&ca_path)).unwrap();
    let tcp = tokio::net::TcpStream::connect(served.main).await.unwrap();
    let stream = connect_tls(config.clone(), "localhost", tcp).await.unwrap();
    let wss = format!("wss://localhost:{}/ws", served.main.port());
    let (mut ws, _) = tokio_tungstenite::client_async(wss, stream).await.unwrap();
    ws.send(Message::text("over tls twice")).await.unwrap();
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("over tls twice"));
    let s = stats(served.admin).await;
    assert_eq!(s["connections"][0]["upstream"], url, "{s:#}");
    assert_eq!(stats(upstream.admin).await["totalConnections"], 1);

    // Plain HTTPS through it: the upstream's own JSON 404 comes back.
    let tcp = tokio::net::TcpStream::connect(served.main).await.unwrap();
    let mut stream = connect_tls(config, "localhost", tcp).await.unwrap();
    let request = "GET /nothing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("no route for GET /nothing"), "{answer}");

    // An upstream whose certificate this proxy does not trust: 502, nothing relayed.
    let stranger = TestCa::new("a CA nobody trusts");
    let other_ca = stranger.ca_path();
    let distrustful = proxy(&url, &["--upstream-ca", other_ca.to_str().unwrap()]);
    let refused = upgrade_answer(distrustful.main, "/ws").await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert_eq!(http_get(distrustful.main, "/page").await.status, 502);
    assert_eq!(stats(upstream.admin).await["totalConnectionsEver"], 1);
}

#[tokio::test]
async fn a_client_that_never_reads_behind_a_flooding_upstream_does_not_grow_the_proxy() {
    let Some(node) = node("a_client_that_never_reads_behind_a_flooding_upstream") else {
        return;
    };
    // The client's queue holds at most 1 MiB; the upstream would send 256 MiB.
    let served = proxy(&node.url(), &["--max-queued-bytes", "1MiB"]);
    let before = served.rss();
    // Upgraded, then never read from.
    let _stalled = raw::upgrade(served.main, "/flood", &[]).await;
    let mut peak = 0;
    let mut queued_seen = 0;
    // Bounded: 60 samples over about 3 s, while the upstream floods and the client reads nothing.
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(served.rss());
        let s = stats(served.admin).await;
        if let Some(q) = s["connections"][0]["queuedBytes"].as_u64() {
            queued_seen = queued_seen.max(q);
        }
    }
    let s = stats(served.admin).await;
    // Still open: the relay waited for room rather than dropping the client as a slow consumer.
    assert_eq!(s["totalConnections"], 1, "{s:#}");
    assert!(queued_seen > 0, "the client's queue never filled: {s:#}");
    assert!(
        queued_seen <= 1 << 20,
        "queue past its bound: {queued_seen}"
    );
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "the proxy grew by {} MiB holding what the client did not read",
        grown >> 20
    );
    // Other clients are unaffected.
    let mut other = connect(&served, "/echo").await;
    echoes(&mut other, "not held up").await;
}

#[tokio::test]
async fn a_client_flooding_an_upstream_that_never_reads_does_not_grow_the_proxy() {
    let Some(node) = node("a_client_flooding_an_upstream_that_never_reads") else {
        return;
    };
    let served = proxy(&node.url(), &[]);
    let before = served.rss();
    let mut ws = connect(&served, "/deaf").await;
    let chunk = vec![7u8; 64 << 10];
    // Up to 256 MiB, for at most 3 s: the sends stop going through once the upstream's window,
    // the proxy's bounded buffers and this socket's window are full.
    let mut sent = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while sent < 256 << 20 {
            ws.send(Message::binary(chunk.clone())).await.unwrap();
            sent += chunk.len();
        }
    })
    .await;
    let grown = served.rss().saturating_sub(before);
    assert!(sent < 256 << 20, "the proxy took everything: {sent} B");
    assert!(
        grown < 48 << 20,
        "the proxy grew by {} MiB holding what the upstream did not read",
        grown >> 20
    );
    let mut other = connect(&served, "/echo").await;
    echoes(&mut other, "not held up").await;
}

#[tokio::test]
async fn pings_are_answered_per_hop_and_close_all_reaches_every_proxied_client() {
    let Some(node) = node("pings_are_answered_per_hop") else {
        return;
    };
    let served = proxy(&node.url(), &["--ping-interval", "100ms"]);
    let mut pinged = connect(&served, "/pinger").await;
    let mut echo = connect(&served, "/echo").await;
    // The upstream's pings are answered by the proxy's upstream hop (the client never sees them
    // and need not answer), and the proxy's own pings to the client time its round trip.
    tokio::time::timeout(WAIT, async {
        loop {
            let pongs = http_get(node.addr, "/pongs").await.json()["pongs"]
                .as_u64()
                .unwrap();
            let s = stats(served.admin).await;
            let timed = s["connections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["rttMs"].is_u64());
            if pongs >= 3 && timed {
                return;
            }
            // Keep both clients reading, so that they answer the proxy's pings.
            let _ = tokio::time::timeout(Duration::from_millis(50), pinged.next()).await;
            let _ = tokio::time::timeout(Duration::from_millis(50), echo.next()).await;
        }
    })
    .await
    .expect("pongs on both hops in time");
    let body = r#"{"action":"close_all","code":4002,"reason":"all out"}"#;
    let answer = http_post(served.admin, "/api/admin", body).await;
    assert_eq!(answer.json()["closed"], 2, "{}", answer.text());
    for mut ws in [pinged, echo] {
        match next(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4002),
            other => panic!("expected close_all's close, got {other:?}"),
        }
        finish(ws).await;
    }
    let closes = wait_node_closes(&node, 2).await;
    assert!(closes.iter().all(|c| c["code"] == 1001), "{closes:?}");
}
