//! The engine's parser against hand-made frames (split at every byte, several per read, every
//! limit and check), against tungstenite's reading of the same bytes, and its core over a pipe
//! (replies, the close handshake, the deadline, what an idle connection keeps).

use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use futures_util::task::noop_waker_ref;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use wscope_core::{
    CloseCode, CloseFrame, Message, MessageBudget, Role, Transport, TransportError,
    TransportErrorKind,
};

use super::parse::Parser;
use super::{take_over, Core};
use crate::config::SocketConfig;
use crate::guard::header::{Header, MAX_HEADER};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame: `first` is FIN/RSV/opcode, masked with `key` if given.
fn frame_with(first: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    let header = Header::new(first, key, payload.len() as u64);
    let mut head = [0; MAX_HEADER];
    let n = header.encode(&mut head);
    head[0] |= first & 0x30;
    let mut out = head[..n].to_vec();
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key.map_or(0, |k| k[i % 4])),
    );
    out
}

/// A client's frame (masked).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, payload, Some(KEY))
}

fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    z.compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - 4);
    out
}

fn server_parser(cfg: &SocketConfig, deflate: bool) -> Parser {
    Parser::new(cfg, true, deflate, cfg.message_budget.charge())
}

/// Parses `reads` one after the other: the messages, and the error that stopped it.
fn run(p: &mut Parser, reads: &[&[u8]]) -> (Vec<Message>, Option<TransportError>) {
    let mut got = Vec::new();
    for read in reads {
        let mut bytes = read.to_vec();
        if let Err(e) = p.parse(&mut bytes, &mut |m| got.push(m)) {
            return (got, Some(e));
        }
    }
    (got, None)
}

/// The error `input` fails with, on a server's parser with `cfg`.
fn error_of(cfg: &SocketConfig, input: &[u8]) -> TransportError {
    let (_, e) = run(&mut server_parser(cfg, true), &[input]);
    e.expect("an error")
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::new(code).unwrap(),
        reason: reason.to_owned(),
    }))
}

#[test]
fn frames_split_at_every_byte_across_two_reads_parse_alike() {
    let text = "héllo wörld, ".repeat(20);
    let binary: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
    let mut input = frame(0x81, b"one");
    input.extend(frame(0x01, &text.as_bytes()[..2])); // "h" and half of "é"
    input.extend(frame(0x89, b"ping in between"));
    input.extend(frame(0x00, &text.as_bytes()[2..100]));
    input.extend(frame(0x8a, b""));
    input.extend(frame(0x80, &text.as_bytes()[100..]));
    input.extend(frame(0x82, &binary));
    input.extend(frame(0x82, b""));
    input.extend(frame(0xc1, &deflate(text.as_bytes())));
    input.extend(frame(0x88, &[3, 232, b'b', b'y', b'e']));
    let expected = vec![
        Message::text("one"),
        Message::Ping(Bytes::from_static(b"ping in between")),
        Message::Pong(Bytes::new()),
        Message::text(text.clone()),
        Message::Binary(Bytes::from(binary.clone())),
        Message::Binary(Bytes::new()),
        Message::text(text.clone()),
        close(1000, "bye"),
    ];
    let cfg = SocketConfig::default();
    for cut in 0..=input.len() {
        let mut p = server_parser(&cfg, true);
        let (got, e) = run(&mut p, &[&input[..cut], &input[cut..]]);
        assert!(e.is_none(), "cut {cut}: {e:?}");
        assert_eq!(got, expected, "cut {cut}");
        assert!(p.closed() && !p.in_message());
        assert_eq!(p.held(), 0, "cut {cut}: nothing held once whole");
    }
    // And a byte a read.
    let mut p = server_parser(&cfg, true);
    let reads: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&mut p, &reads).0, expected);
}

#[test]
fn nothing_after_a_close_frame_is_parsed() {
    let mut input = frame(0x88, &[]);
    input.extend(frame(0x81, b"late"));
    input.extend([0xff; 20]);
    let (got, e) = run(
        &mut server_parser(&SocketConfig::default(), false),
        &[&input],
    );
    assert_eq!((got, e), (vec![Message::Close(None)], None));
}

#[test]
fn masking_is_required_of_a_client_and_refused_from_a_server() {
    let cfg = SocketConfig::default();
    let e = error_of(&cfg, &frame_with(0x81, b"hi", None));
    assert_eq!(
        (e.kind(), e.message()),
        (TransportErrorKind::Protocol, "unmasked frame from a client")
    );
    let mut client = Parser::new(&cfg, false, false, cfg.message_budget.charge());
    let (got, e) = run(&mut client, &[&frame_with(0x81, b"hi", None)]);
    assert_eq!((got, e), (vec![Message::text("hi")], None));
    let (_, e) = run(&mut client, &[&frame(0x81, b"hi")]);
    assert_eq!(e.unwrap().message(), "masked frame from a server");
}

#[test]
fn protocol_violations_fail_with_1002() {
    let cfg = SocketConfig::default();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame(0xa1, b"x"), "reserved bits RSV2/RSV3 set"),
        (frame(0x83, b"x"), "reserved opcode 0x3"),
        (frame(0x8b, b""), "reserved opcode 0xb"),
        (frame(0x09, b""), "fragmented control frame"),
        (frame(0x89, &[0; 126]), "control frame of 126 bytes"),
        (
            frame(0x80, b"x"),
            "continuation frame outside a fragmented message",
        ),
        (
            [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
            "new message before the fragmented one ended",
        ),
        (
            [frame(0x41, &deflate(b"a")), frame(0xc0, b"")].concat(),
            "RSV1 set on a frame other than a message's first",
        ),
        (
            frame(0xc9, b""),
            "RSV1 set on a frame other than a message's first",
        ),
        (frame(0x88, &[3]), "close frame with a 1-byte payload"),
        (frame(0x88, &[3, 237]), "invalid close code 1005"),
        (frame(0x88, &[0x13, 0x88]), "invalid close code 5000"),
        (frame(0x88, &[3, 231]), "invalid close code 999"),
        (frame(0xc1, &[0xff; 10]), "invalid compressed data"),
    ];
    for (input, why) in cases {
        let e = error_of(&cfg, &input);
        assert_eq!(e.kind(), TransportErrorKind::Protocol, "{why}: {e}");
        assert!(e.message().starts_with(why), "{why}: {e}");
        assert_eq!(e.kind().close_frame().unwrap().code.as_u16(), 1002);
    }
    let (_, e) = run(&mut server_parser(&cfg, false), &[&frame(0xc1, b"x")]);
    assert_eq!(e.unwrap().message(), "RSV1 set without permessage-deflate");
}

#[test]
fn text_that_is_not_utf8_fails_with_1007_at_the_first_invalid_fragment() {
    let cfg = SocketConfig::default();
    // An invalid prefix fails before the message's end arrives.
    let (got, e) = run(
        &mut server_parser(&cfg, false),
        &[&frame(0x01, &[b'a', 0xc0, 0x80])],
    );
    assert!(got.is_empty());
    assert_eq!(e.unwrap().kind(), TransportErrorKind::InvalidUtf8);
    // Within one frame cut by reads, too.
    let whole = frame(
        0x81,
        &[b'a'; 20]
            .iter()
            .chain(&[0xff])
            .copied()
            .collect::<Vec<_>>(),
    );
    let (_, e) = run(
        &mut server_parser(&cfg, false),
        &[&whole[..whole.len() - 1]],
    );
    assert!(e.is_none());
    let (_, e) = run(&mut server_parser(&cfg, false), &[&whole]);
    assert_eq!(e.unwrap().kind(), TransportErrorKind::InvalidUtf8);
    // A character cut between fragments is fine; one left incomplete at the end is not.
    let e_acute = "é".as_bytes();
    let input = [frame(0x01, &e_acute[..1]), frame(0x80, &e_acute[1..])].concat();
    assert_eq!(
        run(&mut server_parser(&cfg, false), &[&input]).0,
        vec![Message::text("é")]
    );
    let e = error_of(&cfg, &frame(0x81, &e_acute[..1]));
    assert_eq!(e.kind(), TransportErrorKind::InvalidUtf8);
    let e = error_of(&cfg, &frame(0x88, &[3, 232, 0xff]));
    assert_eq!(e.kind(), TransportErrorKind::InvalidUtf8);
    assert_eq!(e.kind().close_frame().unwrap().code.as_u16(), 1007);
}

#[test]
fn limits_fail_with_1009_before_the_payload_is_held_and_the_budget_with_1013() {
    let cfg = SocketConfig::default()
        .max_message_size(1000)
        .max_frame_size(600);
    // A frame declaring 2^40 bytes: refused at its header.
    let mut huge = frame(0x82, b"");
    huge[1] = 0x80 | 127;
    huge.splice(2..2, (1u64 << 40).to_be_bytes());
    let mut p = server_parser(&cfg, false);
    let (_, e) = run(&mut p, &[&huge]);
    assert_eq!(e.unwrap().kind(), TransportErrorKind::TooBig);
    assert_eq!(p.held(), 0);
    let e = error_of(&cfg, &frame(0x82, &[0; 601]));
    assert_eq!(
        e.message(),
        "frame of 601 bytes over the 600-byte frame limit"
    );
    let fragments = [
        frame(0x02, &[0; 500]),
        frame(0x00, &[0; 500]),
        frame(0x80, &[0; 1]),
    ];
    let e = error_of(&cfg, &fragments.concat());
    assert_eq!(e.kind(), TransportErrorKind::TooBig);
    assert_eq!(e.kind().close_frame().unwrap().code.as_u16(), 1009);
    // Exactly at the limit is fine.
    let fragments = [frame(0x02, &[0; 500]), frame(0x80, &[0; 500])];
    let (got, e) = run(&mut server_parser(&cfg, false), &[&fragments.concat()]);
    assert_eq!((got.len(), e), (1, None));
    // A deflate bomb: one byte past the limit.
    let e = error_of(&cfg, &frame(0xc2, &deflate(&[0; 1001])));
    assert_eq!(e.kind(), TransportErrorKind::TooBig);
    let (got, e) = run(
        &mut server_parser(&cfg, true),
        &[&frame(0xc2, &deflate(&[0; 1000]))],
    );
    assert_eq!(
        (got, e),
        (vec![Message::Binary(vec![0; 1000].into())], None)
    );

    // The budget: a message past the small size it cannot take is refused with 1013.
    let small = MessageBudget::SMALL_MESSAGE;
    let cfg = SocketConfig::default().max_buffered_bytes(small * 2);
    let mut p = server_parser(&cfg, false);
    let (_, e) = run(&mut p, &[&frame(0x02, &vec![0; small * 3])[..100]]);
    let e = e.unwrap();
    assert_eq!(e.kind(), TransportErrorKind::Overloaded);
    assert_eq!(e.kind().close_frame().unwrap().code.as_u16(), 1013);
    let mut p = server_parser(&cfg, false);
    let whole = frame(0x82, &vec![1; small * 2]);
    let (_, e) = run(&mut p, &[&whole[..whole.len() / 2]]);
    assert!(e.is_none());
    assert_eq!(
        cfg.message_budget.in_use(),
        small * 2,
        "charged as declared"
    );
    let (got, _) = run(&mut p, &[&whole[whole.len() / 2..]]);
    assert_eq!(got.len(), 1);
    assert_eq!(cfg.message_budget.in_use(), 0, "released once whole");
}

/// A pipe, and this engine's core on one end of it in `role`.
fn core(role: Role, cfg: &SocketConfig) -> (Core<DuplexStream>, DuplexStream) {
    let (ours, theirs) = duplex(1 << 20);
    let charge = cfg.message_budget.charge();
    (Core::new(ours, role, cfg, false, None, charge), theirs)
}

/// Everything the core yields now.
fn ready(core: &mut Core<DuplexStream>) -> Vec<Result<Message, TransportError>> {
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut got = Vec::new();
    for _ in 0..1000 {
        match core.poll_next(&mut cx) {
            Poll::Ready(Some(item)) => got.push(item),
            Poll::Ready(None) => {
                got.push(Err(TransportError::new(TransportErrorKind::Gone, "end")));
                break;
            }
            Poll::Pending => break,
        }
    }
    got
}

#[tokio::test]
async fn an_idle_core_holds_no_buffer_after_a_round_trip() {
    let cfg = SocketConfig::default();
    let (mut core, mut client) = core(Role::Server, &cfg);
    let big = vec![5u8; 200_000];
    let mut input = frame(0x02, &big[..100_000]);
    input.extend(frame(0x89, b"p"));
    input.extend(frame(0x80, &big[100_000..]));
    input.extend(frame(0x81, b"small"));
    client.write_all(&input[..70_000]).await.unwrap();
    assert!(ready(&mut core).is_empty());
    assert!(core.held() > 0, "the message in progress is held");
    assert!(
        core.parser.busy(),
        "its state is boxed while it is in progress"
    );
    client.write_all(&input[70_000..]).await.unwrap();
    let got: Vec<Message> = ready(&mut core).into_iter().map(Result::unwrap).collect();
    assert!(
        !core.parser.busy(),
        "the state in progress is freed once the message is whole"
    );
    assert!(
        core.queue.is_none(),
        "the messages one read parsed are all yielded"
    );
    assert_eq!(
        got,
        vec![
            Message::Ping(Bytes::from_static(b"p")),
            Message::Binary(big.clone().into()),
            Message::text("small"),
        ]
    );
    core.send(Message::Binary(big.clone().into())).unwrap();
    core.send(Message::text("small")).unwrap();
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(matches!(core.poll_flush(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(core.held(), 0, "nothing held while idle");
    assert!(!core.out.busy(), "nothing queued by reference either");
    let mut echoed = vec![0; 3 + 10 + big.len() + 7];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed[..3], &[0x8a, 1, b'p'], "the ping answered first");
    assert_eq!(&echoed[3..5], &[0x82, 127]);
    assert_eq!(&echoed[echoed.len() - 7..], b"\x81\x05small");
}

#[tokio::test]
async fn one_message_a_read_is_yielded_without_allocating_state() {
    let cfg = SocketConfig::default();
    let (mut core, mut client) = core(Role::Server, &cfg);
    for i in 0..3u8 {
        client.write_all(&frame(0x82, &[i; 10])).await.unwrap();
        let got = ready(&mut core);
        assert_eq!(got, vec![Ok(Message::Binary(Bytes::from(vec![i; 10])))]);
        assert!(core.queue.is_none() && !core.parser.busy());
    }
    // A header cut by a read is kept (boxed) until the rest comes, then freed.
    let whole = frame(0x81, b"cut");
    client.write_all(&whole[..3]).await.unwrap();
    assert!(ready(&mut core).is_empty());
    assert!(core.parser.busy());
    client.write_all(&whole[3..]).await.unwrap();
    assert_eq!(ready(&mut core), vec![Ok(Message::text("cut"))]);
    assert!(!core.parser.busy());
}

/// What an idle connection's engine state takes inline (64-bit): the state of a frame or
/// message in progress, the cork's queue of large payloads and the messages parsed but not yet
/// yielded are boxed while they exist, not kept inline (400 bytes over a pipe before).
#[cfg(target_pointer_width = "64")]
#[test]
fn an_idle_core_is_small() {
    let size = std::mem::size_of::<Core<DuplexStream>>();
    assert!(size <= 224, "Core over a pipe takes {size} bytes");
}

#[tokio::test]
async fn a_close_is_replied_to_and_the_server_ends_the_stream() {
    let cfg = SocketConfig::default();
    let (mut core, mut client) = core(Role::Server, &cfg);
    client
        .write_all(&frame(0x88, &[0x0f, 0xa0, b'o', b'k']))
        .await
        .unwrap();
    let got = ready(&mut core);
    assert_eq!(got[0], Ok(close(4000, "ok")));
    assert_eq!(got[1].as_ref().unwrap_err().message(), "end");
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(
        reply,
        [0x88, 2, 0x0f, 0xa0],
        "the code echoed, then the end"
    );
    assert!(core.send(Message::text("late")).is_err());
    assert!(
        core.send(Message::Close(None)).is_ok(),
        "a second close is no error"
    );
}

#[tokio::test]
async fn a_client_core_masks_what_it_sends_and_waits_for_the_servers_end() {
    let cfg = SocketConfig::default();
    let (mut core, mut server) = core(Role::Client, &cfg);
    core.send(Message::text("hello")).unwrap();
    core.send(Message::Close(Some(close_frame(1000)))).unwrap();
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(matches!(core.poll_flush(&mut cx), Poll::Ready(Ok(()))));
    let mut sent = [0; 11 + 8];
    server.read_exact(&mut sent).await.unwrap();
    assert_eq!(&sent[..2], &[0x81, 0x85]);
    let key = [sent[2], sent[3], sent[4], sent[5]];
    let text: Vec<u8> = sent[6..11]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(text, b"hello");
    assert_eq!(&sent[11..13], &[0x88, 0x82]);
    server
        .write_all(&frame_with(0x88, &[3, 232], None))
        .await
        .unwrap();
    assert_eq!(ready(&mut core), vec![Ok(close(1000, ""))]);
    assert!(ready(&mut core).is_empty(), "waits for the server's end");
    drop(server);
    assert_eq!(ready(&mut core)[0].as_ref().unwrap_err().message(), "end");
}

fn close_frame(code: u16) -> CloseFrame {
    CloseFrame {
        code: CloseCode::new(code).unwrap(),
        reason: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_that_stalls_past_its_deadline_fails_with_1008() {
    let cfg = SocketConfig::default().message_timeout(Duration::from_secs(5));
    let (mut core, mut client) = core(Role::Server, &cfg);
    let whole = frame(0x82, &[7u8; 10_000]);
    client.write_all(&whole[..3000]).await.unwrap();
    assert!(ready(&mut core).is_empty());
    tokio::time::advance(Duration::from_secs(4)).await;
    client.write_all(&whole[3000..6000]).await.unwrap();
    assert!(ready(&mut core).is_empty(), "more bytes do not pass it");
    tokio::time::advance(Duration::from_secs(2)).await;
    let got = ready(&mut core);
    let e = got[0].as_ref().unwrap_err();
    assert_eq!(e.kind(), TransportErrorKind::TimedOut);
    assert_eq!(e.message(), "message not received in full within 5s");
    assert!(core.failed);
}

/// The engine over one end of a pipe, in the server role with the default limits.
fn over_pipe(ours: DuplexStream) -> impl Transport {
    let cfg = SocketConfig::default();
    take_over(
        ours,
        Role::Server,
        &cfg,
        false,
        None,
        cfg.message_budget.charge(),
        wscope_core::MemoryGauge::detached(),
    )
}

/// Two text frames in through `client`, echoed by `ws` corked into one flush; the echo's bytes.
async fn echo_two<D: wscope_core::Duplex>(
    client: &mut DuplexStream,
    mut ws: Pin<&mut D>,
) -> [u8; 6] {
    client.write_all(&frame(0x81, b"a")).await.unwrap();
    client.write_all(&frame(0x81, b"b")).await.unwrap();
    for _ in 0..2 {
        let msg = ws.next().await.unwrap().unwrap();
        ws.feed(msg).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut echoed = [0; 6];
    client.read_exact(&mut echoed).await.unwrap();
    echoed
}

/// The transport end to end over a pipe, as an async handler's socket and the writer use it:
/// split (the core lent to both halves), the reader yields, the writer corks a batch into one
/// flush.
#[tokio::test]
async fn the_split_transport_echoes_over_a_pipe() {
    let (ours, mut client) = duplex(1 << 16);
    let (reader, writer) = over_pipe(ours).boxed().split();
    let echoed = echo_two(&mut client, pin!(wscope_core::Joined::new(reader, writer))).await;
    assert_eq!(&echoed, b"\x81\x01a\x81\x01b");
}

/// The same as one object, as the callback driver polls it: the engine's core itself, unboxed
/// and boxed — no halves, no lock.
#[tokio::test]
async fn the_whole_transport_echoes_over_a_pipe() {
    let (ours, mut client) = duplex(1 << 16);
    let echoed = echo_two(&mut client, pin!(over_pipe(ours).into_duplex())).await;
    assert_eq!(&echoed, b"\x81\x01a\x81\x01b");
    let (ours, mut client) = duplex(1 << 16);
    let echoed = echo_two(&mut client, pin!(over_pipe(ours).boxed().into_duplex())).await;
    assert_eq!(&echoed, b"\x81\x01a\x81\x01b");
}

#[cfg(feature = "tungstenite")]
mod against_tungstenite {
    //! A random sequence of valid frames, cut at random points, parses to the messages
    //! tungstenite reads from the same bytes.

    use super::*;
    use proptest::prelude::*;
    use std::io::{Cursor, Read, Write};
    use tokio_tungstenite::tungstenite::protocol::{Role as TRole, WebSocket};
    use tokio_tungstenite::tungstenite::{Error as Te, Message as Tm};

    /// The bytes to read, and a sink for what tungstenite writes (its pongs).
    struct Wire(Cursor<Vec<u8>>);

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            Read::read(&mut self.0, buf)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn tungstenite_reads(bytes: Vec<u8>) -> Vec<Message> {
        let mut ws = WebSocket::from_raw_socket(Wire(Cursor::new(bytes)), TRole::Server, None);
        let mut got = Vec::new();
        for _ in 0..10_000 {
            match ws.read() {
                Ok(Tm::Text(t)) => got.push(Message::text(t.as_str())),
                Ok(Tm::Binary(b)) => got.push(Message::Binary(b)),
                Ok(Tm::Ping(b)) => got.push(Message::Ping(b)),
                Ok(Tm::Pong(b)) => got.push(Message::Pong(b)),
                Ok(_) => {}
                Err(Te::Io(_) | Te::ConnectionClosed | Te::AlreadyClosed) => break,
                Err(Te::Protocol(_)) => break, // the end of the bytes without a close
                Err(e) => panic!("tungstenite: {e}"),
            }
        }
        got
    }

    /// One message: whether it is text, its payload, the lengths of its fragments but the
    /// last, and after which fragments a ping comes.
    type Msg = (bool, Vec<u8>, Vec<usize>, Vec<bool>);

    /// One message: text or binary, its payload cut into fragments, a ping after some.
    fn message() -> impl Strategy<Value = Msg> {
        (
            any::<bool>(),
            prop_oneof![
                "\\PC{0,200}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..3000),
            ],
            proptest::collection::vec(0usize..400, 0..4),
            proptest::collection::vec(any::<bool>(), 4),
        )
    }

    fn frames(messages: &[Msg]) -> Vec<u8> {
        let mut out = Vec::new();
        for (text, payload, cuts, pings) in messages {
            let payload = if *text {
                String::from_utf8_lossy(payload).into_owned().into_bytes()
            } else {
                payload.clone()
            };
            let mut pieces = Vec::new();
            let mut at = 0;
            for cut in cuts {
                let end = (at + cut).min(payload.len());
                pieces.push(&payload[at..end]);
                at = end;
            }
            pieces.push(&payload[at..]);
            for (i, piece) in pieces.iter().enumerate() {
                let opcode = match (i, text) {
                    (0, true) => 1,
                    (0, false) => 2,
                    _ => 0,
                };
                let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                out.extend(frame(fin | opcode, piece));
                if pings[i % pings.len()] {
                    out.extend(frame(0x89, &payload[..payload.len().min(10)]));
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn random_frames_cut_at_random_points_parse_as_tungstenite_reads_them(
            messages in proptest::collection::vec(message(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let bytes = frames(&messages);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut reads = Vec::new();
            let mut at = 0;
            for p in points {
                reads.push(&bytes[at..p]);
                at = p;
            }
            reads.push(&bytes[at..]);
            let cfg = SocketConfig::default();
            let mut p = server_parser(&cfg, false);
            let (got, e) = run(&mut p, &reads);
            prop_assert!(e.is_none(), "{:?}", e);
            prop_assert_eq!(got, tungstenite_reads(bytes.clone()));
            prop_assert_eq!(p.held(), 0);
        }
    }
}
