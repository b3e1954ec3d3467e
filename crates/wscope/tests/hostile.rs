//! The hostile-input suite: the real `wscope serve` process attacked over raw TCP and with a real
//! client — malformed handshakes, slow and silent connections, frames that break the protocol,
//! floods, clients that never read, a disallowed Origin. For each: the documented refusal or close
//! code, memory bounded by the limits, and afterwards a fresh client still connects and echoes.
//! The server's RSS before and after the heavy cases is printed (`--nocapture` shows it).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wscope_testkit::raw::{
    self, close_payload, frame, frame_with, header, upgrade, upgrade_request, Raw, BINARY, CLOSE,
    CONT, FIN, PING, TEXT,
};
use wscope_testkit::served::Served;
use wscope_testkit::{http, WAIT};

/// How many of the recently closed connections (`/api/closed`) ended with `code`.
async fn closed_with_code(admin: std::net::SocketAddr, code: u16) -> usize {
    let closed: serde_json::Value = wscope_testkit::http_get(admin, "/api/closed").await.json();
    closed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["code"] == code)
        .count()
}

/// Waits, at most [`WAIT`], until at least `n` recently closed connections ended with `code`;
/// panics with `what` if they do not.
async fn wait_closed_with_code(admin: std::net::SocketAddr, code: u16, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while closed_with_code(admin, code).await < n {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[path = "hostile/admission.rs"]
mod admission;
#[path = "hostile/api.rs"]
mod api;
#[path = "hostile/engine.rs"]
mod engine;

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

#[path = "hostile/cluster.rs"]
mod cluster;

/// A fresh client still connects and echoes.
/// Waits until `n` connections on `path` are OPEN: for a member that sent its upgrade but does
/// not read (so the test cannot know it has its 101). A member that has its 101 needs no wait:
/// it gets every broadcast queued after it, its connection OPEN yet or not.
async fn wait_open(admin: std::net::SocketAddr, path: &str, n: u64) {
    let query = format!("/api/connections?path={path}&state=OPEN&limit=1");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = http::http_get(admin, &query).await.json();
        if page["total"].as_u64() == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} open on {path}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn still_serves(served: &Served) {
    let (mut ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(served.url("/ws")))
            .await
            .expect("connect in time")
            .expect("a fresh client connects");
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("still here"));
    let _ = ws.close(None).await;
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The server's RSS after `what`, printed beside the one before; growth bounded by `bound`.
fn report_rss(what: &str, before: u64, after: u64, bound: u64) {
    println!(
        "RSS {what}: {:.1} MiB before, {:.1} MiB after (+{:.1} MiB)",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before))
    );
    assert!(
        after.saturating_sub(before) < bound,
        "{what}: RSS grew by {:.1} MiB",
        mib(after.saturating_sub(before))
    );
}

#[tokio::test]
async fn malformed_handshakes_get_their_documented_status() {
    let served = Served::start(BIN, &[]);
    let addr = served.main;
    let key = |k: &'static str| format!("Sec-WebSocket-Key: {k}");
    let base = |extra: &[&str], version: &str, method: &str| {
        let mut r = format!("{method} /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: {version}\r\n");
        for line in extra {
            r.push_str(line);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("missing key", base(&[], "13", "GET"), 400),
        ("short key", base(&[&key("c2hvcnQ=")], "13", "GET"), 400),
        (
            "long key",
            base(&[&key("dGhpcyBrZXkgaXMgZmFyIHRvbyBsb25nIGZvciBhIGtleQ==")], "13", "GET"),
            400,
        ),
        ("not base64", base(&[&key("not base64 at all!!")], "13", "GET"), 400),
        ("version 12", base(&[&key(raw::KEY)], "12", "GET"), 426),
        ("POST", base(&[&key(raw::KEY)], "13", "POST"), 405),
        (
            "no Upgrade",
            format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nSec-WebSocket-Version: 13\r\n{}\r\n\r\n", key(raw::KEY)),
            426,
        ),
        (
            "HTTP/1.0",
            format!(
                "GET /ws HTTP/1.0\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{}\r\n\r\n",
                key(raw::KEY)
            ),
            400,
        ),
        (
            "64 KiB of headers",
            base(&[&key(raw::KEY), &format!("X-Big: {}", "a".repeat(64 * 1024))], "13", "GET"),
            431,
        ),
    ];
    for (what, request, status) in cases {
        let mut raw = Raw::connect(addr).await;
        raw.send(request.as_bytes()).await;
        assert_eq!(raw.response_head().await, status, "{what}");
    }
    let stats: serde_json::Value = wscope_testkit::http_get(served.admin, "/api/stats")
        .await
        .json();
    assert!(
        stats["refused"]["invalidHandshake"].as_u64().unwrap() >= 5,
        "{}",
        stats["refused"]
    );
    still_serves(&served).await;
}

#[tokio::test]
async fn slow_and_silent_connections_are_dropped_at_the_handshake_timeout() {
    let served = Served::start(BIN, &["--handshake-timeout", "1s"]);
    let before = served.rss();
    // 2,000 TCP connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..2000 {
        silent.push(tokio::net::TcpStream::connect(served.main).await.unwrap());
    }
    // One that sends its upgrade a byte every 100 ms: it cannot finish in a second.
    let request = upgrade_request(served.main, "/ws", &[]);
    let mut slow = Raw::connect(served.main).await;
    let dribble = async {
        for byte in request.as_bytes() {
            if !slow.try_send(&[*byte]).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut_off = tokio::time::timeout(Duration::from_secs(20), dribble)
        .await
        .unwrap();
    assert!(
        cut_off || slow.closed_within(WAIT).await,
        "the slowloris was never cut off"
    );
    let during = served.rss();
    // Every silent one is dropped too.
    for mut tcp in silent {
        let mut buf = [0u8; 16];
        let read =
            tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection outlived the timeout"
        );
    }
    report_rss("with 2,000 silent connections", before, during, 64 << 20);
    report_rss("after they were dropped", before, served.rss(), 64 << 20);
    still_serves(&served).await;
}

/// Frames that break RFC 6455, each on a fresh connection, on every engine: the close code the
/// RFC asks for, then a fresh client still echoes.
#[tokio::test]
async fn protocol_violations_close_with_the_code_the_rfc_asks_for_on_every_engine() {
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            frame_with(FIN | TEXT, b"hello", None),
            1002,
        ),
        ("reserved bits", frame(FIN | 0x40 | TEXT, b"hello"), 1002),
        ("reserved opcode", frame(FIN | 0x3, b"hello"), 1002),
        (
            "control frame of 126 bytes",
            frame(FIN | PING, &[0u8; 126]),
            1002,
        ),
        ("fragmented ping", frame(PING, b"p"), 1002),
        (
            "close code 1005",
            frame(FIN | CLOSE, &close_payload(1005, b"")),
            1002,
        ),
        (
            "close code 999",
            frame(FIN | CLOSE, &close_payload(999, b"")),
            1002,
        ),
        (
            "invalid UTF-8",
            frame(FIN | TEXT, &[0xff, 0xfe, 0xfd]),
            1007,
        ),
        (
            "UTF-8 split then broken across fragments",
            [frame(TEXT, &[0xe2, 0x82]), frame(FIN | CONT, &[0x41])].concat(),
            1007,
        ),
        (
            "a frame declaring 2^63 bytes",
            header(FIN | BINARY, 1 << 63, Some(raw::MASK)),
            1009,
        ),
    ];
    for engine in wscope_axum::Engine::ALL.iter().map(|e| e.as_str()) {
        let served = Served::start(BIN, &["--engine", engine]);
        for (what, bytes, code) in &cases {
            let mut raw = upgrade(served.main, "/ws", &[]).await;
            raw.send(bytes).await;
            let (got, reason) = raw.expect_close().await;
            assert_eq!(got, *code, "{engine}: {what} ({reason})");
        }
        still_serves(&served).await;
    }
}

#[tokio::test]
async fn many_tiny_fragments_and_a_ping_flood_are_served_within_bounds() {
    let served = Served::start(BIN, &[]);
    let before = served.rss();
    // 65,536 one-byte fragments: one 64 KiB message, within the message limit.
    let mut raw = upgrade(served.main, "/ws", &[]).await;
    let mut bytes = frame(BINARY, b"x");
    for _ in 1..65_535 {
        bytes.extend(frame(CONT, b"x"));
    }
    bytes.extend(frame(FIN | CONT, b"x"));
    raw.send(&bytes).await;
    let echo = raw.read_message().await;
    assert_eq!((echo.opcode, echo.payload.len()), (BINARY, 65_536));
    // 10,000 pings in a row, not read meanwhile: the server keeps answering, keeps serving.
    let mut flood = upgrade(served.main, "/ws", &[]).await;
    let ping = frame(FIN | PING, b"ping");
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 10_000)
        .collect();
    flood.send(&burst).await;
    flood.send(&frame(FIN | TEXT, b"after the flood")).await;
    assert_eq!(flood.read_data().await.payload, b"after the flood");
    report_rss(
        "after 64 Ki fragments and 10 k pings",
        before,
        served.rss(),
        64 << 20,
    );
    still_serves(&served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_member_that_never_reads_is_closed_as_a_slow_consumer() {
    let served = Served::start(BIN, &["--drain-timeout", "2s"]);
    let before = served.rss();
    // A member with a tiny receive window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(served.main).await.unwrap();
    let mut stuck = Raw::from_tcp(tcp);
    stuck
        .send(upgrade_request(served.main, "/ws/chat", &[]).as_bytes())
        .await;
    // A talker (which reads its own echoes) and a reader that reads everything.
    let (talker, _) = tokio_tungstenite::connect_async(served.url("/ws/chat"))
        .await
        .unwrap();
    let (mut talker, mut own) = talker.split();
    // The talker waits for its own echo before the next message: a well-behaved client.
    let (echoed, mut echoes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(_)) = own.next().await {
            let _ = echoed.send(());
        }
    });
    let (mut reader, _) = tokio_tungstenite::connect_async(served.url("/ws/chat"))
        .await
        .unwrap();
    // The talker and the reader have their 101s, so they are members already; the stuck one
    // reads nothing, so only the server can say when it is one.
    wait_open(served.admin, "/ws/chat", 3).await;
    let reading = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(Ok(msg)) = reader.next().await {
            if msg == Message::text("done") {
                break;
            }
            n += 1;
        }
        n
    });
    let payload = "x".repeat(32 * 1024);
    for _ in 0..600 {
        talker.send(Message::text(payload.clone())).await.unwrap();
        tokio::time::timeout(WAIT, echoes.recv())
            .await
            .unwrap()
            .unwrap();
    }
    talker.send(Message::text("done")).await.unwrap();
    let received = match tokio::time::timeout(Duration::from_secs(15), reading).await {
        Ok(n) => n.unwrap(),
        Err(_) => {
            let stats = wscope_testkit::http_get(served.admin, "/api/stats")
                .await
                .text();
            let closed = wscope_testkit::http_get(served.admin, "/api/closed")
                .await
                .text();
            panic!("the reader never saw the end: {stats}\n{closed}");
        }
    };
    assert_eq!(received, 600, "the reader missed messages");
    // The stuck one was closed as a slow consumer (limit), not the others.
    let admin = served.admin;
    let closed_by_limit = || async move {
        let stats: serde_json::Value = wscope_testkit::http_get(admin, "/api/stats").await.json();
        stats["closedBy"]["limit"].as_u64().unwrap()
    };
    // Closed at once with 1008, and dropped when it does not read that either (close timeout).
    let deadline = tokio::time::Instant::now() + WAIT;
    while closed_by_limit().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck member was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(closed_by_limit().await, 1);
    let closed: serde_json::Value = wscope_testkit::http_get(admin, "/api/closed").await.json();
    let slow: Vec<_> = closed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["reason"] == "slow consumer")
        .collect();
    assert_eq!(slow.len(), 1, "{closed}");
    assert_eq!(
        (slow[0]["code"].as_u64(), slow[0]["closedBy"].as_str()),
        (Some(1008), Some("limit"))
    );
    report_rss(
        "after an 18.75 MiB chat burst past a member that never reads",
        before,
        served.rss(),
        64 << 20,
    );
    let _ = talker.close().await;
    still_serves(&served).await;
}

#[tokio::test]
async fn a_disallowed_origin_gets_403_and_others_are_served() {
    let served = Served::start(BIN, &["--allowed-origin", "https://app.example.com"]);
    let response = http(
        served.main,
        "GET",
        "/ws",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", raw::KEY),
            ("Origin", "https://evil.example"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["error"], "origin not allowed");
    let allowed = upgrade(served.main, "/ws", &[("Origin", "https://app.example.com")]).await;
    still_serves(&served).await;
    allowed.close().await;
}

/// 100 clients each send 900 KiB of a 1 MiB message and stall: past the 32 MiB budget of bytes
/// held in partial messages, the rest are refused with 1013 before their payload is read, and the
/// server's memory stays near the budget.
#[tokio::test]
async fn large_partial_messages_are_held_within_the_budget() {
    let served = Served::start(BIN, &["--max-buffered-bytes", "32MiB"]);
    let before = served.rss();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut raw = upgrade(served.main, "/ws", &[]).await;
        let mut bytes = header(BINARY | FIN, 1 << 20, Some(raw::MASK));
        bytes.extend(std::iter::repeat_n(0x5a, 900 * 1024));
        let _ = raw.try_send(&bytes).await; // a refused one may be reset mid-way
        clients.push(raw);
    }
    let admin = served.admin;
    let refused = || closed_with_code(admin, 1013);
    wait_closed_with_code(admin, 1013, 60, "too few refused with 1013").await;
    let held = 100 - refused().await;
    println!("{held} of 100 partial 1 MiB messages held under a 32 MiB budget");
    assert!(held <= 33, "{held} held");
    report_rss(
        "with 100 clients each 900 KiB into a 1 MiB message (32 MiB budget)",
        before,
        served.rss(),
        96 << 20,
    );
    drop(clients);
    still_serves(&served).await;
}

/// A compressed message that inflates to 16 MiB: closed with 1009 one byte past the 1 MiB limit,
/// without the server inflating it.
#[tokio::test]
async fn a_deflate_bomb_closes_with_1009() {
    use flate2::{Compress, Compression, FlushCompress};
    let served = Served::start(BIN, &["--permessage-deflate"]);
    let before = served.rss();
    let zeros = vec![0u8; 16 << 20];
    let mut z = Compress::new(Compression::best(), false);
    let mut bomb = Vec::with_capacity(64 << 10);
    while (z.total_in() as usize) < zeros.len() {
        bomb.reserve(64 << 10);
        let done = z.total_in() as usize;
        z.compress_vec(&zeros[done..], &mut bomb, FlushCompress::Sync)
            .unwrap();
    }
    if bomb.ends_with(&[0, 0, 0xff, 0xff]) {
        bomb.truncate(bomb.len() - 4);
    }
    println!("a {} byte frame that inflates to 16 MiB", bomb.len());
    let mut raw = upgrade(
        served.main,
        "/ws",
        &[("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    .await;
    assert!(
        raw.header("sec-websocket-extensions").is_some(),
        "{}",
        raw.response
    );
    raw.send(&frame(FIN | raw::RSV1 | BINARY, &bomb)).await;
    assert_eq!(raw.expect_close().await.0, 1009);
    report_rss("after a deflate bomb", before, served.rss(), 16 << 20);
    still_serves(&served).await;
}
