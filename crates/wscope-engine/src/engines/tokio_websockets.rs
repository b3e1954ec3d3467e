//! tokio-websockets as a wscope transport, in either role.
//!
//! The engine fails a connection that breaks the protocol by itself, close frame included, so its
//! protocol errors are [`TransportErrorKind::FailedByEngine`]: the driver must not send another.

use futures_util::{future, SinkExt, StreamExt};
use tokio_websockets::{ClientBuilder, Config, Error as Twe, Limits, Message as Tw, ServerBuilder};
use wscope_core::{Bytes, Halves, Message, Role, Transport, TransportError, TransportErrorKind};

use super::message::{close_frame, text, Outbound};
use crate::config::SocketConfig;
use crate::io::Io;

/// Either side over `io`, whose handshake is done; data messages compressed with a
/// `window_bits` window when given. The engine sends a message as it is given (its frames refer
/// to the payload's bytes, which it never copies), in frames of at most 4 MiB.
pub(super) fn take_over(
    io: impl Io,
    role: Role,
    cfg: &SocketConfig,
    window_bits: Option<u8>,
) -> impl Transport {
    let config = Config::default().flush_threshold(cfg.write_buffer_size);
    let limits = Limits::default().max_payload_len(Some(cfg.max_message_size));
    let ws = match role {
        Role::Server => ServerBuilder::new().config(config).limits(limits).serve(io),
        Role::Client => ClientBuilder::new()
            .config(config)
            .limits(limits)
            .take_over(io),
    };
    let (sink, stream) = ws.split();
    let reader = stream.map(|item| item.map_err(|e| error(&e)).and_then(from_engine));
    let writer = sink
        .sink_map_err(|e| error(&e))
        .with(move |msg: Message| future::ready(Outbound::new(msg, window_bits).map(to_engine)));
    Halves::new(role, reader, writer)
}

/// What a tokio-websockets error means for the connection.
fn error(e: &Twe) -> TransportError {
    let kind = match e {
        Twe::Protocol(_) | Twe::PayloadTooLong { .. } => TransportErrorKind::FailedByEngine,
        _ => TransportErrorKind::Gone,
    };
    TransportError::from_cause(kind, e)
}

fn from_engine(msg: Tw) -> Result<Message, TransportError> {
    if let Some((code, reason)) = msg.as_close() {
        let code = u16::from(code);
        // 1005 "no status received" stands for a close frame without a code.
        return Ok(Message::Close(
            (code != 1005).then(|| close_frame(code, reason)),
        ));
    }
    let kind = (msg.is_text(), msg.is_binary(), msg.is_ping());
    let payload = Bytes::from(msg.into_payload());
    Ok(match kind {
        // The engine validated the text; the check here is the only extra cost.
        (true, _, _) => return text(payload),
        (_, true, _) => Message::Binary(payload),
        (_, _, true) => Message::Ping(payload),
        _ => Message::Pong(payload),
    })
}

fn to_engine(out: Outbound) -> Tw {
    match out {
        Outbound::Text(payload) => Tw::text(payload),
        Outbound::Binary(payload) => Tw::binary(payload),
        Outbound::Ping(b) => Tw::ping(b),
        Outbound::Pong(b) => Tw::pong(b),
        Outbound::Close(None) => Tw::close(None, ""),
        Outbound::Close(Some(f)) => Tw::close(
            tokio_websockets::CloseCode::try_from(f.code.as_u16()).ok(),
            &f.reason,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_fails_the_connection_with_1007() {
        let error = from_engine(Tw::text(Bytes::from_static(&[0xe2, 0x82]))).unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::InvalidUtf8);
        assert_eq!(from_engine(Tw::text("ok")).unwrap(), Message::text("ok"));
    }
}
