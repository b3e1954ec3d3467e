//! The hostile cases of the engines and the message budget (issue 13): what one client could
//! make the server keep once a message was done — buffers the size of the largest message, an
//! inflater — and what it could pin — the budget of partly received messages — on the real
//! binary, each engine where the engines differ. Set `WSCOPE_HOSTILE_BIN` to a `wscope` binary to
//! run these cases against another build (the release before the fix fails all but the
//! tokio-websockets memory cases, which that engine already passed).

use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};
use wscope_testkit::raw::{
    frame, frame_with, upgrade, Raw, BINARY, CLOSE, CONT, FIN, PING, PONG, RSV1, TEXT,
};
use wscope_testkit::served::Served;
use wscope_testkit::{http_get, WAIT};

use super::{closed_with_code, report_rss, still_serves, wait_closed_with_code};

/// The binary under test: this build's, or `WSCOPE_HOSTILE_BIN`.
fn bin() -> String {
    std::env::var("WSCOPE_HOSTILE_BIN").unwrap_or_else(|_| super::BIN.to_owned())
}

/// Every engine of this build, by name.
fn engines() -> impl Iterator<Item = &'static str> {
    wscope_axum::Engine::ALL.iter().map(|e| e.as_str())
}

const OFFER: (&str, &str) = ("Sec-WebSocket-Extensions", "permessage-deflate");

/// `n` bytes that do not compress to nothing.
fn payload(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// `data` as a permessage-deflate body (RFC 7692 §7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    while (z.total_in() as usize) < data.len() || out.len() == out.capacity() {
        out.reserve(64 << 10);
        let done = z.total_in() as usize;
        z.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .unwrap();
    }
    out.truncate(out.len() - 4);
    out
}

/// `body` inflated (the server compresses without context takeover).
fn inflate(body: &[u8]) -> Vec<u8> {
    let mut z = flate2::Decompress::new(false);
    let mut input = body.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    loop {
        out.reserve(1 << 20);
        let used = z.total_in() as usize;
        z.decompress_vec(&input[used..], &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        if z.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// The server's CPU time so far (user and system), from `/proc/PID/stat`.
fn cpu(served: &Served) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", served.child.id())).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// `n` clients upgraded on `path` with `headers`.
async fn clients(served: &Served, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<Raw> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(upgrade(served.main, path, headers).await);
    }
    all
}

/// 100 clients each echo one 1,000,000-byte message and sit idle: they keep what an ordinary
/// connection keeps, not a buffer of the message's size. Before, tungstenite kept 1.96 MiB per
/// connection (its read and write buffers at the frame's size) and fastwebsockets 1 MiB (its
/// read buffer).
#[tokio::test]
async fn a_large_echo_leaves_no_buffer_of_its_size_on_any_engine() {
    const CLIENTS: usize = 100;
    let message = payload(1_000_000);
    // Masked with a zero key: the same bytes, and nothing to mask for each client.
    let large = frame_with(FIN | BINARY, &message, Some([0; 4]));
    for engine in engines() {
        let served = Served::start(&bin(), &["--engine", engine]);
        let mut echoing = clients(&served, "/ws", &[], CLIENTS).await;
        for raw in &mut echoing {
            raw.send(&frame(FIN | TEXT, b"small")).await;
            assert_eq!(raw.read_message().await.payload, b"small");
        }
        let before = served.rss();
        for raw in &mut echoing {
            raw.send(&large).await;
            assert_eq!(raw.read_message().await.payload, message, "{engine}");
        }
        report_rss(
            &format!("{engine}: {CLIENTS} idle clients after a 1,000,000-byte echo each"),
            before,
            served.rss(),
            24 << 20,
        );
        still_serves(&served).await;
    }
}

/// One 1,000,000-byte message into a chat of 100 members, then five compressed ones of 1 KiB
/// that inflate to 1 MiB each into a chat of 100 compressing members: the members keep no
/// buffer of the message's size once they have it (before, tungstenite kept one per member:
/// +197 MB for 200 members, +203 MB with compression). Every member gets every message whole,
/// compressed where agreed; the server's CPU time for the compressed fan-out is printed (each
/// message is compressed once, not once per member).
#[tokio::test]
async fn a_large_chat_message_leaves_its_members_no_buffer_of_its_size() {
    const MEMBERS: usize = 100;
    let message = payload(1_000_000);
    let text = b"{\"chat\": \"a message that compresses well\"} ".repeat(24_000);
    let body = deflate(&text);
    for engine in engines() {
        let served = Served::start(&bin(), &["--engine", engine]);
        // Each member has its 101: it gets every chat message sent from now on, its
        // connection OPEN yet or not.
        let mut members = clients(&served, "/ws/chat", &[], MEMBERS).await;
        members[0].send(&frame(FIN | TEXT, b"hello")).await;
        for member in &mut members {
            assert_eq!(member.read_message().await.payload, b"hello");
        }
        let before = served.rss();
        members[0]
            .send(&frame_with(FIN | BINARY, &message, Some([0; 4])))
            .await;
        for member in &mut members {
            assert_eq!(member.read_message().await.payload, message, "{engine}");
        }
        report_rss(
            &format!("{engine}: {MEMBERS} chat members after one 1,000,000-byte message"),
            before,
            served.rss(),
            24 << 20,
        );
        drop(members);

        let served = Served::start(&bin(), &["--engine", engine, "--permessage-deflate"]);
        let mut members = clients(&served, "/ws/chat", &[OFFER], MEMBERS).await;
        assert!(members[0].header("sec-websocket-extensions").is_some());
        members[0]
            .send(&frame(FIN | RSV1 | TEXT, &deflate(b"hello")))
            .await;
        for member in &mut members {
            assert_eq!(inflate(&member.read_message().await.payload), b"hello");
        }
        let (before, cpu_before) = (served.rss(), cpu(&served));
        for _ in 0..5 {
            members[0].send(&frame(FIN | RSV1 | TEXT, &body)).await;
            for (i, member) in members.iter_mut().enumerate() {
                let got = member.read_message().await;
                assert!(got.rsv1 && got.opcode == TEXT, "{engine}: {got:?}");
                if i == 0 {
                    assert_eq!(inflate(&got.payload), text, "{engine}");
                }
            }
        }
        println!(
            "{engine}: five {}-byte messages inflating to {} bytes, to {MEMBERS} compressing \
             members: {:?} of server CPU",
            body.len(),
            text.len(),
            cpu(&served) - cpu_before
        );
        report_rss(
            &format!("{engine}: {MEMBERS} compressing chat members after five 1 MiB messages"),
            before,
            served.rss(),
            24 << 20,
        );
        still_serves(&served).await;
    }
}

/// 500 compressing clients each send a compressed message followed by one byte of the next
/// frame's header, and stay: none keeps the inflater (zlib's state and buffers, 54 KiB each
/// before, for free under any budget) while no compressed message is in progress.
#[tokio::test]
async fn a_stray_header_byte_after_a_compressed_message_keeps_no_inflater() {
    const CLIENTS: usize = 500;
    let text = b"{\"hello\": \"world\", \"n\": 12345}".repeat(30);
    let mut bytes = frame(FIN | RSV1 | TEXT, &deflate(&text));
    bytes.push(FIN | TEXT); // the first byte of a header, and no more
    let served = Served::start(
        &bin(),
        &["--permessage-deflate", "--max-buffered-bytes", "4MiB"],
    );
    let mut stray = clients(&served, "/ws", &[OFFER], CLIENTS).await;
    for raw in &mut stray {
        raw.send(&frame(FIN | RSV1 | TEXT, &deflate(b"warm"))).await;
        assert_eq!(inflate(&raw.read_message().await.payload), b"warm");
    }
    let before = served.rss();
    for raw in &mut stray {
        raw.send(&bytes).await;
        assert_eq!(inflate(&raw.read_message().await.payload), text);
    }
    report_rss(
        &format!("{CLIENTS} clients each holding a stray header byte after a compressed message"),
        before,
        served.rss(),
        12 << 20,
    );
    // Each one's next frame still arrives whole.
    let rest = frame(FIN | TEXT, b"and the rest");
    stray[0].send(&rest[1..]).await;
    assert_eq!(
        inflate(&stray[0].read_message().await.payload),
        b"and the rest"
    );
    still_serves(&served).await;
}

/// Eight clients forwarded as one address each hold 1 MiB of an unfinished message under an
/// 8 MiB budget: two fit the address's quarter, the rest are refused with 1013, and five clients
/// from other addresses each get their 100 KB message through (before, the eight held the whole
/// budget and every other client's message got 1013).
#[tokio::test]
async fn one_address_cannot_spend_the_message_budget_for_everyone() {
    let served = Served::start(&bin(), &["--max-buffered-bytes", "8MiB"]);
    let part = payload(1 << 20);
    let mut holders = Vec::new();
    for _ in 0..8 {
        let mut raw = upgrade(served.main, "/ws", &[("X-Forwarded-For", "10.6.6.6")]).await;
        raw.send(&frame_with(BINARY, &part, Some([0; 4]))).await;
        holders.push(raw);
    }
    let message = payload(100_000);
    for i in 1..=5 {
        let forwarded = format!("10.0.0.{i}");
        let mut other = upgrade(served.main, "/ws", &[("X-Forwarded-For", &forwarded)]).await;
        other.send(&frame(FIN | BINARY, &message)).await;
        let got = other.read_message().await;
        assert_eq!(got.opcode, BINARY, "{forwarded}: {:?}", got.close());
        assert_eq!(got.payload, message);
    }
    let admin = served.admin;
    let refused = || closed_with_code(admin, 1013);
    wait_closed_with_code(admin, 1013, 6, "too few refused").await;
    assert_eq!(refused().await, 6, "two fit the address's quarter");
    drop(holders);
    still_serves(&served).await;
}

/// A client that holds part of a message and answers every ping is closed with 1008 at the
/// message deadline (before, pongs kept it, and its share of the budget, for ever).
#[tokio::test]
async fn a_partly_received_message_is_failed_at_its_deadline_whatever_the_pongs() {
    let served = Served::start(
        &bin(),
        &["--message-timeout", "2s", "--ping-interval", "300ms"],
    );
    let mut holder = upgrade(served.main, "/ws", &[]).await;
    holder
        .send(&frame_with(BINARY, &payload(512 << 10), Some([0; 4])))
        .await;
    let mut pongs = 0;
    let close = loop {
        let f = tokio::time::timeout(WAIT, holder.read_frame())
            .await
            .expect("closed within the wait");
        match f.opcode {
            PING => {
                holder.send(&frame(FIN | PONG, &f.payload)).await;
                pongs += 1;
            }
            CLOSE => break f.close().unwrap(),
            other => panic!("unexpected frame {other:#x}"),
        }
    };
    assert_eq!(close, (1008, "Message timeout".to_owned()));
    assert!(pongs >= 2, "the client kept answering pings: {pongs}");
    // The record is kept as the connection ends, on its own runtime: wait for it.
    crate::wait_closed_with_code(served.admin, 1008, 1, "no record of the 1008").await;
    let closed: serde_json::Value = wscope_testkit::http_get(served.admin, "/api/closed")
        .await
        .json();
    let record = &closed["connections"][0];
    assert_eq!(record["closedBy"], "timeout", "{closed}");
    assert_eq!(record["reason"], "message not received in full within 2s");
    // A fragmented message finished in time is not touched.
    let mut prompt = upgrade(served.main, "/ws", &[]).await;
    prompt.send(&frame(BINARY, b"one, ")).await;
    prompt.send(&frame(FIN | CONT, b"two")).await;
    assert_eq!(prompt.read_message().await.payload, b"one, two");
    still_serves(&served).await;
}

/// With the message limit raised and the frame limit left alone, a 4 MiB message sent as one
/// frame, as browsers send every message, echoes on every engine (before, the frame limit
/// stayed at 1 MiB and closed it 1009).
#[tokio::test]
async fn a_raised_message_limit_takes_a_message_sent_as_one_frame() {
    let message = payload(4 << 20);
    let large = frame_with(FIN | BINARY, &message, Some([0; 4]));
    for engine in engines() {
        let served = Served::start(&bin(), &["--engine", engine, "--max-message-size", "8MiB"]);
        let mut raw = upgrade(served.main, "/ws", &[]).await;
        let _ = raw.try_send(&large).await; // a refusal may reset it mid-way
        let got = raw.read_message().await;
        assert_eq!(got.opcode, BINARY, "{engine}: {:?}", got.close());
        assert_eq!(got.payload, message, "{engine}");
        still_serves(&served).await;
    }
}

/// A message that stalls half-way is visible at a glance: on every engine, the connection that
/// holds it reports it in `memoryBytes` (first under `sort=memory`), the process total in
/// `/metrics` carries it, and both fall back once the message is whole.
#[tokio::test]
async fn a_stalled_large_message_shows_in_memory_bytes_until_it_is_whole() {
    const SIZE: usize = 600 << 10;
    let message = payload(SIZE);
    let framed = frame_with(FIN | BINARY, &message, Some([0; 4]));
    let (head, rest) = framed.split_at(framed.len() - SIZE / 2);
    for engine in engines() {
        let served = Served::start(&bin(), &["--engine", engine]);
        let mut idle = clients(&served, "/ws", &[], 3).await;
        let mut stalled = clients(&served, "/ws", &[], 1).await.remove(0);
        stalled.send(head).await;
        let admin = served.admin;
        let top = || async move {
            let page = http_get(admin, "/api/connections?sort=memory&limit=1")
                .await
                .json();
            page["connections"][0]["memoryBytes"].as_u64().unwrap_or(0)
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        // At least what has come of it (the engines behind the guard count its declared size).
        while top().await < (SIZE / 2) as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{engine}: {}",
                top().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = http_get(admin, "/metrics").await.text();
        let total: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wscope_connection_memory_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap() as u64;
        assert!(total >= (SIZE / 2) as u64, "{engine}: {total}");
        // The idle ones hold nothing the engine can report.
        let idlest = http_get(admin, "/api/connections?sort=memory&order=asc&limit=1")
            .await
            .json();
        assert_eq!(idlest["connections"][0]["memoryBytes"], 0, "{engine}");

        stalled.send(rest).await;
        assert_eq!(stalled.read_message().await.payload, message, "{engine}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while top().await != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{engine}: {}",
                top().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for raw in &mut idle {
            raw.send(&frame(FIN | TEXT, b"still")).await;
            assert_eq!(raw.read_message().await.payload, b"still");
        }
    }
}
