//! The checks of a frame header that every reader of the peer's frames makes alike, the guard
//! (`read`) and wscope's own engine (`engines/own/parse.rs`): masking per role, reserved bits,
//! control frames, fragmentation, and the frame and message size limits.

use wscope_core::{TransportError, TransportErrorKind};

use super::header::Header;

pub(crate) fn protocol(why: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::Protocol, why)
}

pub(crate) fn too_big(why: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::TooBig, why)
}

/// What kind of frame a header that passed [`header`] begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Control,
    /// A data frame; `compressed_start`: the first frame of a compressed message.
    Data {
        compressed_start: bool,
    },
}

/// Checks `h` against the protocol: masked if and only if `peer_masks` (a client does, a
/// server must not, RFC 6455 §5.1), no RSV2/RSV3, RSV1 only on the first frame of a message
/// under permessage-deflate (`deflate`), control frames whole and at most 125 bytes, opcodes
/// known. Returns the mask, if any, and the kind of frame.
pub(crate) fn header(
    h: &Header,
    peer_masks: bool,
    deflate: bool,
) -> Result<(Option<[u8; 4]>, Kind), TransportError> {
    let mask = match (h.mask, peer_masks) {
        (Some(mask), true) => Some(mask),
        (None, false) => None,
        (None, true) => return Err(protocol("unmasked frame from a client")),
        (Some(_), false) => return Err(protocol("masked frame from a server")),
    };
    if h.rsv23 {
        return Err(protocol("reserved bits RSV2/RSV3 set"));
    }
    let compressed_start = h.rsv1 && deflate && matches!(h.opcode, 1 | 2);
    if h.rsv1 && !compressed_start {
        return Err(protocol(if deflate {
            "RSV1 set on a frame other than a message's first"
        } else {
            "RSV1 set without permessage-deflate"
        }));
    }
    let kind = match h.opcode {
        0x8..=0xa if !h.fin => return Err(protocol("fragmented control frame")),
        0x8..=0xa if h.len > 125 => {
            return Err(protocol(format!("control frame of {} bytes", h.len)))
        }
        0x8..=0xa => Kind::Control,
        0..=2 => Kind::Data { compressed_start },
        op => return Err(protocol(format!("reserved opcode {op:#x}"))),
    };
    Ok((mask, kind))
}

/// Checks that a data frame of `opcode` fits where it comes: a continuation only inside a
/// fragmented message (`in_message`), a new message only outside one.
pub(crate) fn fragment(opcode: u8, in_message: bool) -> Result<(), TransportError> {
    match (opcode, in_message) {
        (0, false) => Err(protocol("continuation frame outside a fragmented message")),
        (1 | 2, true) => Err(protocol("new message before the fragmented one ended")),
        _ => Ok(()),
    }
}

/// Room a compressed message gets on the wire beyond the limits: deflate may make incompressible
/// data slightly larger (5 bytes per stored block of up to 64 KiB), and that is no reason to
/// refuse a message whose inflated size is within the limit.
fn compressed_slack(limit: u64) -> u64 {
    limit.saturating_add(limit / 8192 + 64)
}

/// Checks a data frame declaring `len` bytes, of a message whose frames declared `wire` bytes
/// before it, against the frame and message limits (with room for deflate's overhead when the
/// message is `compressed`); returns the message's new declared total.
pub(crate) fn size(
    len: u64,
    wire: u64,
    compressed: bool,
    frame_limit: u64,
    message_limit: u64,
) -> Result<u64, TransportError> {
    let (frame_max, message_max) = if compressed {
        (
            compressed_slack(frame_limit),
            compressed_slack(message_limit),
        )
    } else {
        (frame_limit, message_limit)
    };
    if len > frame_max {
        return Err(too_big(format!(
            "frame of {len} bytes over the {frame_limit}-byte frame limit"
        )));
    }
    let wire = wire.saturating_add(len);
    if wire > message_max {
        return Err(too_big(format!(
            "message of {wire} bytes or more over the {message_limit}-byte limit"
        )));
    }
    Ok(wire)
}
