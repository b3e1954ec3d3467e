//! fastwebsockets (Deno's) as a wscope transport, in either role, through its split API.
//!
//! fastwebsockets has no `Stream`/`Sink`: its reader hands the frames it must answer (close
//! replies) to a callback, so both halves share the write half behind a lock.
//!
//! The engine checks each frame's length against its limit but not a fragmented message's
//! total, and takes unmasked frames from clients: the frame guard in front of it (as of every
//! engine) refuses both before the engine reads them.

use std::sync::Arc;

use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, Role as FRole, WebSocket, WebSocketError,
    WebSocketWrite,
};
use futures_util::{sink, stream};
use tokio::io::WriteHalf;
use tokio::sync::Mutex;
use wscope_core::{Bytes, Halves, Message, Role, Transport, TransportError, TransportErrorKind};

use super::message::{close_frame, text, Outbound};
use crate::config::SocketConfig;
use crate::io::Io;

/// Either side over `io`, whose handshake is done; data messages compressed with a
/// `window_bits` window when given. Each message goes out as one frame, its payload borrowed
/// (written with a vectored write past 1 KiB: the engine copies only small frames; in the
/// client role it masks a copy).
pub(super) fn take_over<S: Io>(
    io: S,
    role: Role,
    cfg: &SocketConfig,
    window_bits: Option<u8>,
) -> impl Transport {
    let engine_role = match role {
        Role::Server => FRole::Server,
        Role::Client => FRole::Client,
    };
    let mut ws = WebSocket::after_handshake(io, engine_role);
    // The engine refuses a payload *of* its limit; wscope's limit is the largest accepted.
    ws.set_max_message_size(cfg.max_message_size.saturating_add(1));
    ws.set_auto_pong(false); // pings are surfaced (they are activity), answered below
    let (rx, tx) = ws.split(tokio::io::split);
    let tx: Arc<Mutex<WebSocketWrite<WriteHalf<S>>>> = Arc::new(Mutex::new(tx));
    let rx = FragmentCollectorRead::new(rx);
    let reader = stream::unfold(Some((rx, tx.clone())), |state| async move {
        let (mut rx, tx) = state?;
        let answer = tx.clone();
        let mut obligated = move |frame: Frame<'static>| {
            let answer = answer.clone();
            async move { answer.lock().await.write_frame(frame).await }
        };
        match rx.read_frame(&mut obligated).await {
            Ok(frame) => {
                let closing = frame.opcode == OpCode::Close;
                let msg = match from_engine(frame) {
                    Ok(msg) => msg,
                    Err(e) => return Some((Err(e), None)),
                };
                if let Message::Ping(payload) = &msg {
                    let pong = Frame::pong(Payload::Owned(payload.to_vec()));
                    if let Err(e) = tx.lock().await.write_frame(pong).await {
                        return Some((Err(error(&e)), None));
                    }
                }
                // After a close (answered by the engine) the stream ends.
                let next = (!closing).then_some((rx, tx));
                Some((Ok(msg), next))
            }
            Err(WebSocketError::UnexpectedEOF) => None,
            Err(e) => Some((Err(error(&e)), None)),
        }
    });
    let writer = sink::unfold(tx, move |tx, msg: Message| async move {
        let out = Outbound::new(msg, window_bits)?;
        let mut tx_ = tx.lock().await;
        tx_.write_frame(to_engine(&out))
            .await
            .map_err(|e| error(&e))?;
        // The engine writes each frame to the stream and never flushes it; under
        // permessage-deflate the frame guard holds what it gathered until flushed.
        tx_.flush().await.map_err(|e| error(&e))?;
        drop(tx_);
        Ok::<_, TransportError>(tx)
    });
    Halves::new(role, reader, writer)
}

/// What a fastwebsockets error means for the connection.
fn error(e: &WebSocketError) -> TransportError {
    use WebSocketError as E;
    let kind = match e {
        E::InvalidUTF8 => TransportErrorKind::InvalidUtf8,
        E::FrameTooLarge => TransportErrorKind::TooBig,
        E::InvalidFragment
        | E::InvalidContinuationFrame
        | E::ReservedBitsNotZero
        | E::ControlFrameFragmented
        | E::PingFrameTooLarge
        | E::InvalidCloseFrame => TransportErrorKind::Protocol,
        // The engine answers a bad close code with its own 1002.
        E::InvalidCloseCode => TransportErrorKind::FailedByEngine,
        _ => TransportErrorKind::Gone,
    };
    TransportError::from_cause(kind, e)
}

fn bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(b) => b.freeze(),
        Payload::Owned(v) => Bytes::from(v),
        other => Bytes::copy_from_slice(&other),
    }
}

fn from_engine(frame: Frame<'_>) -> Result<Message, TransportError> {
    Ok(match frame.opcode {
        OpCode::Text => return text(bytes(frame.payload)),
        OpCode::Ping => Message::Ping(bytes(frame.payload)),
        OpCode::Pong => Message::Pong(bytes(frame.payload)),
        OpCode::Close => {
            let p = &frame.payload;
            if p.len() < 2 {
                return Ok(Message::Close(None));
            }
            let reason = std::str::from_utf8(&p[2..]).map_err(|_| {
                TransportError::new(
                    TransportErrorKind::InvalidUtf8,
                    "close reason is not valid UTF-8",
                )
            })?;
            Message::Close(Some(close_frame(u16::from_be_bytes([p[0], p[1]]), reason)))
        }
        _ => Message::Binary(bytes(frame.payload)),
    })
}

/// `out` as the engine's frame, borrowing its payload: a broadcast's members share one payload,
/// which the engine would otherwise copy for each (a shared `Bytes` cannot become its owned
/// buffer without a copy).
fn to_engine(out: &Outbound) -> Frame<'_> {
    fn borrowed(b: &Bytes) -> Payload<'_> {
        Payload::Borrowed(b)
    }
    match out {
        Outbound::Text(b) => Frame::new(true, OpCode::Text, None, borrowed(b)),
        Outbound::Binary(b) => Frame::new(true, OpCode::Binary, None, borrowed(b)),
        Outbound::Ping(b) => Frame::new(true, OpCode::Ping, None, borrowed(b)),
        Outbound::Pong(b) => Frame::new(true, OpCode::Pong, None, borrowed(b)),
        Outbound::Close(None) => Frame::new(true, OpCode::Close, None, Payload::Owned(Vec::new())),
        Outbound::Close(Some(f)) => Frame::close(f.code.as_u16(), f.reason.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_or_a_close_reason_that_is_not_utf8_fails_the_connection_with_1007() {
        let text = Frame::text(Payload::Owned(vec![b'a', 0xc3]));
        assert_eq!(
            from_engine(text).unwrap_err().kind(),
            TransportErrorKind::InvalidUtf8
        );
        let close = Frame::close_raw(vec![0x03, 0xe8, 0xff].into());
        assert_eq!(
            from_engine(close).unwrap_err().kind(),
            TransportErrorKind::InvalidUtf8
        );
        let fine = Frame::text(Payload::Owned("ok".into()));
        assert_eq!(from_engine(fine).unwrap(), Message::text("ok"));
    }
}
