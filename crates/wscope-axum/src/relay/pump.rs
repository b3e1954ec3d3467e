//! An open relay's two directions, run together in the client connection's task, and the close
//! handshake across it: who closed first decides what the other side is sent.

use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::oneshot;
use wscope_core::{
    BoxReader, BoxTransport, BoxWriter, CloseCode, CloseFrame, ConnectionHandle, HopGauge,
    Initiator, Message, TrackedSocket, Transport,
};

/// The code a client gets when its upstream vanished or broke the protocol (1014, "Bad Gateway").
const BAD_GATEWAY: u16 = 1014;

/// Relays `socket` (the client) and `upstream` both ways until both are over; then drops the
/// upstream hop. `close_timeout` bounds the wait for the upstream's close reply. `gauge`, the
/// upstream engine's, leaves the client's entry once the upstream's side is over.
pub(super) async fn run(
    mut socket: TrackedSocket,
    upstream: BoxTransport,
    gauge: HopGauge,
    close_timeout: Duration,
) {
    let (from_upstream, mut to_upstream) = upstream.split();
    let handle = socket.handle();
    let (client_done, client_over) = oneshot::channel::<()>();
    let up = async {
        client_to_upstream(&mut socket, &mut to_upstream, &handle).await;
        let _ = client_done.send(());
    };
    let down = async {
        tokio::select! {
            () = upstream_to_client(from_upstream, &handle) => {}
            // The client's side is over and its close passed on: the upstream has this long to
            // answer it.
            () = async {
                let _ = client_over.await;
                tokio::time::sleep(close_timeout).await;
            } => {}
        }
        // Nothing more comes from the upstream: what its engine still holds (a message it left
        // unfinished) is no longer the client's, though the engine lives on until the client's
        // side is over too.
        gauge.detach();
    };
    futures_util::future::join(up, down).await;
}

/// Client → upstream, one message at a time (a slow upstream stops the client's reads), then the
/// client's close passed on: its own code and reason if the client closed, 1001 "Going away" if
/// wscope closed it (admin, limit, drain, error), nothing if the upstream closed first.
async fn client_to_upstream(
    socket: &mut TrackedSocket,
    to_upstream: &mut BoxWriter,
    handle: &ConnectionHandle,
) {
    while let Some(msg) = socket.recv().await {
        let sent = tokio::select! {
            sent = forward_batch(socket, to_upstream, msg) => sent,
            // The client's connection ended while the upstream would not take the message.
            () = handle.ended() => false,
        };
        if !sent {
            return;
        }
    }
    let close = match socket.close_record() {
        Some(record) if record.initiator == Initiator::Upstream => return,
        Some(record) if record.initiator == Initiator::Client => {
            let frame = record
                .code
                .and_then(|code| CloseCode::new(code).ok())
                .map(|code| CloseFrame {
                    code,
                    reason: record.reason,
                });
            Message::Close(frame)
        }
        _ => Message::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "Going away".to_owned(),
        })),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), to_upstream.send(close)).await;
}

/// Writes `first` and every message the client has already sent after it (those read without
/// waiting) to the upstream, then flushes once: one write for what one read brought. False if
/// the upstream failed.
async fn forward_batch(
    socket: &mut TrackedSocket,
    to_upstream: &mut BoxWriter,
    first: Message,
) -> bool {
    if to_upstream.feed(first).await.is_err() {
        return false;
    }
    // At most a few at a time: the upstream's buffer, not this loop, holds what waits.
    for _ in 0..BATCH {
        // `recv` polled once: pending, it has taken nothing from the stream.
        match socket.recv().now_or_never() {
            Some(Some(msg)) => {
                if to_upstream.feed(msg).await.is_err() {
                    return false;
                }
            }
            // Nothing more yet, or the client's side is over (the caller's next `recv` says so).
            _ => break,
        }
    }
    to_upstream.flush().await.is_ok()
}

/// The most messages written upstream before a flush.
const BATCH: usize = 64;

/// Upstream → client, waiting while the client's queue is full (the relay then reads nothing
/// more from its upstream), until the upstream closes or its connection ends; the upstream's close
/// is passed on with its code and reason.
async fn upstream_to_client(mut from_upstream: BoxReader, handle: &ConnectionHandle) {
    // `over`: the stream has ended, and must not be read again (some engines' streams panic).
    let (code, reason, over) = loop {
        match from_upstream.next().await {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                // A client that is closing takes nothing more; keep reading for the upstream's
                // close reply.
                let _ = handle.send_waiting(msg).await;
            }
            // The engine answers pings; pongs answer nothing of ours.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                break match frame {
                    Some(frame) => (frame.code, frame.reason, false),
                    None => (CloseCode::NORMAL, String::new(), false),
                };
            }
            Some(Err(e)) => {
                let reason = format!("upstream failed: {}", e.message());
                break (bad_gateway(), reason, false);
            }
            None => break (bad_gateway(), "upstream connection lost".to_owned(), true),
        }
    };
    // Refused only when the client is closing already (its own close wins) or the reason is
    // longer than a close frame takes (an upstream's cannot be).
    let reason = truncate(&reason, wscope_core::MAX_CLOSE_REASON_BYTES);
    let _ = handle.close_from_upstream(code, reason);
    // Read on to the end of the upstream's stream: the engine sends the reply to its close.
    if !over {
        while let Some(Ok(_)) = from_upstream.next().await {}
    }
}

/// 1014 "Bad Gateway".
fn bad_gateway() -> CloseCode {
    CloseCode::new(BAD_GATEWAY).unwrap_or(CloseCode::GOING_AWAY)
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
