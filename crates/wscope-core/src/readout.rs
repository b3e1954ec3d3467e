//! The read-out of a connection the driver failed (over its message rate, a slow consumer, a
//! timeout, a frame it may not send): after the close frame is out and the entry is gone, what
//! the peer still sends is read and dropped for a short while before the socket is dropped.
//!
//! A socket dropped with unread bytes is reset, and a reset can overtake the close frame (the
//! kernel drops what it had not sent yet; a client that writes while it reads trips on the reset
//! first), so that a peer still sending never learns why it was closed. Both drivers read out the
//! same way: the callback driver from its duplex in its own task, an async handler's socket from
//! its reading half in a tracked task of its own (the handler may keep the socket).

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::connection::Connection;
use crate::message::Message;
use crate::transport::TransportError;

/// How long a failed connection is read out at most (and no longer than its close timeout), and
/// how many frames.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_FRAMES: usize = 4096;

/// How long `conn`, failed, is read out: as long as a closing connection waits for its peer, at
/// most [`LINGER`].
pub(crate) fn linger_for(conn: &Connection) -> Duration {
    conn.close_timeout().min(LINGER)
}

/// Reads and drops what the peer of a failed connection still sends, until it answers the close,
/// hangs up, or `within` (or [`LINGER_FRAMES`]) is over. Nothing is accounted for: the
/// connection's entry is gone by then, and the engine answers nothing more.
pub(crate) async fn read_out<S>(mut stream: Pin<&mut S>, within: Duration)
where
    S: Stream<Item = Result<Message, TransportError>> + ?Sized,
{
    let read = async {
        for _ in 0..LINGER_FRAMES {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
}
