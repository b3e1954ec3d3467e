//! `HttpProxy` between real sockets: an upstream axum app on 127.0.0.1:0, the proxy (a router
//! whose fallback forwards) served by `wscope_axum::serve`, and clients that are the raw
//! HTTP/1.1 client of wscope-testkit or hyper-util's client (for streamed bodies).
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::timeout;
use wscope_axum::{serve, Forwarding, HttpProxy, HttpProxyConfig, ServeOptions};
use wscope_testkit::{http, read_response, HttpResponse, WAIT};

/// What the upstream app shares with the test.
#[derive(Clone, Default)]
struct Upstream {
    /// TCP connections the upstream's listener accepted.
    accepted: Arc<AtomicUsize>,
    /// Lets the event stream send its second event.
    release: Arc<Notify>,
}

/// The request as the upstream saw it: method, URI and every header, as JSON, with a status,
/// an end-to-end header and hop-by-hop headers of its own for the proxy to strip.
async fn inspect(request: Request) -> Response {
    let headers: Vec<Value> = request
        .headers()
        .iter()
        .map(|(name, value)| json!([name.as_str(), value.to_str().unwrap()]))
        .collect();
    let body = json!({
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "headers": headers,
    });
    let hop_headers = [
        ("x-upstream", "yes"),
        ("connection", "x-upstream-hop"),
        ("x-upstream-hop", "1"),
        ("keep-alive", "timeout=99"),
    ];
    (
        StatusCode::NON_AUTHORITATIVE_INFORMATION,
        hop_headers,
        Json(body),
    )
        .into_response()
}

/// The request body back, streamed as it comes.
async fn echo(request: Request) -> Body {
    Body::new(request.into_body())
}

/// One event, then a second once the test releases it.
async fn events(
    State(upstream): State<Upstream>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = stream::once(async { Ok(Event::default().data("one")) });
    let second = stream::once(async move {
        upstream.release.notified().await;
        Ok(Event::default().data("two"))
    });
    Sse::new(first.chain(second))
}

/// The upstream app on 127.0.0.1:0, counting the connections it accepts.
async fn start_upstream() -> (SocketAddr, Upstream) {
    let upstream = Upstream::default();
    let app = Router::new()
        .route("/inspect", get(inspect))
        .route("/app/inspect", get(inspect))
        .route("/echo", post(echo))
        .route("/events", get(events))
        .with_state(upstream.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = upstream.accepted.clone();
    let listener = listener.tap_io(move |_| {
        accepted.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(axum::serve(listener, app).into_future());
    (addr, upstream)
}

/// The proxy to `upstream` (a base URI) on 127.0.0.1:0, served by `wscope_axum::serve`: every
/// request goes to [`HttpProxy::forward`] with the peer as the client.
async fn start_proxy(upstream: &str, config: HttpProxyConfig) -> SocketAddr {
    let proxy = HttpProxy::new(config);
    let upstream: Uri = upstream.parse().unwrap();
    let app = Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request| async move {
            let fwd = Forwarding {
                client: Some(peer.ip()),
                proto: "http",
            };
            proxy.forward(request, &upstream, &fwd).await
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app, ServeOptions::default()).into_future());
    addr
}

/// An upstream and a proxy in front of it with the default config.
async fn start_pair() -> (SocketAddr, Upstream) {
    let (upstream_addr, upstream) = start_upstream().await;
    let proxy = start_proxy(
        &format!("http://{upstream_addr}"),
        HttpProxyConfig::default(),
    )
    .await;
    (proxy, upstream)
}

/// The value of `name` among the headers the upstream reported, if it saw one.
fn seen<'a>(report: &'a Value, name: &str) -> Option<&'a str> {
    report["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
}

/// A hyper client for requests with bodies streamed.
fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Reads `body` into `text` until `text` holds `wanted`; panics after [`WAIT`].
async fn read_until(body: &mut BodyDataStream, text: &mut String, wanted: &str) {
    let read = async {
        while !text.contains(wanted) {
            let data = body.next().await.expect("the body goes on").unwrap();
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    };
    if timeout(WAIT, read).await.is_err() {
        panic!("{wanted:?} in time, got {text:?}");
    }
}

/// The `error` field of a JSON error answer.
fn error_text(response: &HttpResponse) -> String {
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_get_with_a_query_passes_and_its_answer_comes_back() {
    let (proxy, _) = start_pair().await;
    let response = http(proxy, "GET", "/inspect?x=1&y=two", &[], None).await;
    assert_eq!(response.status, 203);
    assert_eq!(response.header("x-upstream"), Some("yes"));
    let report = response.json();
    assert_eq!(report["method"], "GET");
    assert_eq!(report["uri"], "/inspect?x=1&y=two");
    // The upstream's own hop-by-hop headers stay on its hop.
    assert_eq!(response.header("x-upstream-hop"), None);
    assert_ne!(response.header("keep-alive"), Some("timeout=99"));
}

#[tokio::test]
async fn a_base_path_on_the_upstream_is_prepended() {
    let (upstream_addr, _) = start_upstream().await;
    let config = HttpProxyConfig::default();
    let proxy = start_proxy(&format!("http://{upstream_addr}/app/"), config).await;
    let response = http(proxy, "GET", "/inspect?q", &[], None).await;
    assert_eq!(response.status, 203);
    assert_eq!(response.json()["uri"], "/app/inspect?q");
}

#[tokio::test]
async fn a_one_mib_post_streams_through_and_is_echoed() {
    let (proxy, _) = start_pair().await;
    let body: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let request = Request::post(format!("http://{proxy}/echo"))
        .body(Body::from(body.clone()))
        .unwrap();
    let echoed = timeout(WAIT, async {
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = Body::new(response.into_body()).into_data_stream();
        let mut echoed = Vec::with_capacity(body.len());
        while let Some(chunk) = stream.next().await {
            echoed.extend_from_slice(&chunk.unwrap());
        }
        echoed
    })
    .await
    .expect("the echo in time");
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "the echoed body differs");
}

#[tokio::test]
async fn the_upstream_sees_forwarding_headers_and_no_hop_by_hop_ones() {
    let (proxy, _) = start_pair().await;
    let headers = [
        ("X-Forwarded-For", "203.0.113.1"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
        ("TE", "trailers"),
    ];
    let response = http(proxy, "GET", "/inspect", &headers, None).await;
    let report = response.json();
    let host = proxy.to_string();
    assert_eq!(
        seen(&report, "x-forwarded-for"),
        Some("203.0.113.1, 127.0.0.1")
    );
    assert_eq!(seen(&report, "x-forwarded-proto"), Some("http"));
    assert_eq!(seen(&report, "x-forwarded-host"), Some(host.as_str()));
    let forwarded = format!("for=127.0.0.1;proto=http;host=\"{host}\"");
    assert_eq!(seen(&report, "forwarded"), Some(forwarded.as_str()));
    for hop in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert_eq!(seen(&report, hop), None, "{hop} reached the upstream");
    }
}

#[tokio::test]
async fn host_is_the_upstreams_and_cookies_and_authorization_reach_it() {
    let (upstream_addr, _) = start_upstream().await;
    let proxy = start_proxy(
        &format!("http://{upstream_addr}"),
        HttpProxyConfig::default(),
    )
    .await;
    let headers = [
        ("Cookie", "session=abc; theme=dark"),
        ("Authorization", "Bearer t0k3n"),
        ("User-Agent", "proxy-test/1.0"),
    ];
    let report = http(proxy, "GET", "/inspect", &headers, None).await.json();
    let host = upstream_addr.to_string();
    assert_eq!(seen(&report, "host"), Some(host.as_str()));
    assert_eq!(seen(&report, "cookie"), Some("session=abc; theme=dark"));
    assert_eq!(seen(&report, "authorization"), Some("Bearer t0k3n"));
    assert_eq!(seen(&report, "user-agent"), Some("proxy-test/1.0"));
}

#[tokio::test]
async fn an_upgrade_that_is_not_websocket_passes_as_a_plain_request() {
    let (proxy, _) = start_pair().await;
    let headers = [
        ("Connection", "Upgrade, HTTP2-Settings"),
        ("Upgrade", "h2c"),
        ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
    ];
    let response = http(proxy, "GET", "/inspect", &headers, None).await;
    assert_eq!(response.status, 203);
    let report = response.json();
    for hop in ["connection", "upgrade", "http2-settings"] {
        assert_eq!(seen(&report, hop), None, "{hop} reached the upstream");
    }
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let (proxy, upstream) = start_pair().await;
    let request = Request::get(format!("http://{proxy}/events"))
        .body(Body::empty())
        .unwrap();
    let response = timeout(WAIT, client().request(request))
        .await
        .expect("the stream's head in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = Body::new(response.into_body()).into_data_stream();
    let mut text = String::new();
    // The second event is not sent yet: the first came through on its own.
    read_until(&mut stream, &mut text, "data: one\n\n").await;
    assert!(!text.contains("two"));
    upstream.release.notify_one();
    read_until(&mut stream, &mut text, "data: two\n\n").await;
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (proxy, upstream) = start_pair().await;
    for _ in 0..2 {
        let response = http(proxy, "GET", "/inspect", &[("Connection", "close")], None).await;
        assert_eq!(response.status, 203);
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
}

/// What the proxy to `upstream` with `config` answers to a GET: the status and the JSON error.
async fn failure(upstream: &str, config: HttpProxyConfig) -> (u16, String) {
    let proxy = start_proxy(upstream, config).await;
    let response = http(proxy, "GET", "/anything", &[], None).await;
    (response.status, error_text(&response))
}

/// A listener on 127.0.0.1:0 that speaks no HTTP: it accepts every connection and holds it
/// (reading nothing, answering nothing), or closes it at once.
async fn mute_upstream(hold: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if hold {
                held.push(tcp);
            }
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_502() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let (status, error) = failure(&format!("http://{dead_addr}"), Default::default()).await;
    assert_eq!(status, 502);
    assert!(error.starts_with("upstream unreachable: "), "{error}");
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504() {
    let config = HttpProxyConfig {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (status, error) = failure(&mute_upstream(true).await, config).await;
    assert_eq!(status, 504);
    assert_eq!(error, "upstream timed out after 300ms");
}

#[tokio::test]
async fn an_upstream_that_hangs_up_gets_502() {
    let (status, error) = failure(&mute_upstream(false).await, Default::default()).await;
    assert_eq!(status, 502);
    assert!(error.starts_with("upstream failed: "), "{error}");
}

#[tokio::test]
async fn an_https_upstream_without_a_tls_configuration_gets_502_naming_it() {
    let (status, error) = failure("https://127.0.0.1:1", Default::default()).await;
    assert_eq!(status, 502);
    let unsupported = "https upstreams need a TLS client configuration";
    assert!(error.contains(unsupported), "{error}");
}

#[tokio::test]
async fn a_head_request_gets_the_head_and_no_body() {
    let (proxy, _) = start_pair().await;
    let request = format!("HEAD /inspect HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
    let answer = wscope_testkit::send_raw(proxy, request.as_bytes()).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 203 "), "{head}");
    assert_eq!(body, "", "a body after HEAD");
    // The length the GET would have, as the upstream said it.
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    assert!(length.parse::<u64>().unwrap() > 0, "{head}");
}

#[tokio::test]
async fn a_request_body_streams_through_chunk_by_chunk() {
    let (proxy, _) = start_pair().await;
    let (chunks, rx) = tokio::sync::mpsc::channel::<&'static str>(1);
    let body = stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(chunk), rx))
    });
    let request = Request::post(format!("http://{proxy}/echo"))
        .body(Body::from_stream(body))
        .unwrap();
    chunks.send("first;").await.unwrap();
    let response = timeout(WAIT, client().request(request))
        .await
        .expect("the echo's head in time")
        .unwrap();
    let mut echoed = Body::new(response.into_body()).into_data_stream();
    let mut text = String::new();
    // Each chunk comes back before the next is sent: neither hop waits for the whole body.
    read_until(&mut echoed, &mut text, "first;").await;
    chunks.send("second;").await.unwrap();
    read_until(&mut echoed, &mut text, "first;second;").await;
    drop(chunks);
    let rest = timeout(WAIT, echoed.next()).await.expect("the end in time");
    assert!(rest.is_none(), "more after the body ended");
    assert_eq!(text, "first;second;");
}

#[tokio::test]
async fn a_body_sent_after_100_continue_reaches_the_upstream() {
    let (proxy, _) = start_pair().await;
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: {proxy}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The body goes only once the proxy asks for it, as curl does.
    let mut interim = Vec::new();
    timeout(WAIT, async {
        while !interim.ends_with(b"\r\n\r\n") {
            interim.push(tcp.read_u8().await.unwrap());
        }
    })
    .await
    .expect("100 Continue in time");
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue\r\n"));
    tcp.write_all(b"hello").await.unwrap();
    let response = timeout(WAIT, read_response(&mut tcp))
        .await
        .expect("the echo in time");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello");
}
