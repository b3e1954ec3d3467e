//! [`SocketConfig`]: the settings every engine and the frame guard read (buffers, limits, the
//! shared message budget, permessage-deflate, the message deadline), in either role.

use std::time::Duration;

use wscope_core::MessageBudget;

use crate::engine::Engine;

/// Engine settings for accepted sockets. Start from the default and set what you need:
/// `SocketConfig::default().max_message_size(1 << 20)`.
///
/// The limits are enforced by the frame guard in front of every engine, before the payload they
/// refuse is read: a frame declaring more than `max_frame_size`, or a message whose frames add
/// up to more than `max_message_size`, closes the connection with 1009; a message the
/// [`message_budget`](SocketConfig::message_budget) cannot hold closes it with 1013.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SocketConfig {
    /// The WebSocket implementation.
    pub engine: Engine,
    /// Bytes read from the socket at a time (the engine's read buffer; tungstenite only).
    pub read_buffer_size: usize,
    /// Bytes buffered before a write goes to the socket (frames batch up to this).
    pub write_buffer_size: usize,
    /// Largest message accepted (bytes), fragments added up, and after inflating when
    /// compressed.
    pub max_message_size: usize,
    /// Largest frame accepted (bytes); `None` (the default): the message limit, whatever it is
    /// set to. A frame limit above the message limit is the message limit.
    pub max_frame_size: Option<usize>,
    /// The bytes that partly received messages may hold, shared by every connection accepted
    /// with this configuration (and its clones); see [`MessageBudget`].
    pub message_budget: MessageBudget,
    /// Whether to agree to permessage-deflate (RFC 7692) when a client offers it.
    pub permessage_deflate: bool,
    /// How long a message may take to arrive in full, counted from the first time the server
    /// waits for the rest of it; past it the connection is closed with 1008 "Message timeout".
    /// `None`: no deadline (a client may then hold its share of the
    /// [`message_budget`](SocketConfig::message_budget) for as long as it answers pings).
    pub message_timeout: Option<Duration>,
}

impl SocketConfig {
    /// The default [`SocketConfig::read_buffer_size`]. axum's default is 128 KiB, held by every
    /// connection even when idle; the read buffer is what an idle connection mostly costs
    /// (tungstenite fills it on every read), and 512 B still takes a small message, or a batch of
    /// them, in one read.
    pub const DEFAULT_READ_BUFFER_SIZE: usize = 512;
    /// The default [`SocketConfig::write_buffer_size`].
    pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 16 * 1024;
    /// The default [`SocketConfig::max_message_size`]: 1 MiB. Each connection may make the
    /// server hold this much before its message is refused; a few hundred clients sending the
    /// largest message allowed hold a few hundred MiB (64 MiB, the engines' default, would let
    /// 100 clients take 6.4 GiB). Raise it for a route that needs more (in wscope-axum,
    /// `WebSocketUpgrade::max_message_size`).
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
    /// The default limit of [`SocketConfig::message_budget`]: 256 MiB, room for 256 messages of
    /// the default largest size in flight at once; past it large messages get 1013 "try again
    /// later" while small ones (up to [`MessageBudget::SMALL_MESSAGE`]) still pass.
    pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;
    /// The default [`SocketConfig::message_timeout`]: 30 s, time for a 1 MiB message at
    /// 35 KB/s, while a client that holds part of a large message (and its bytes in the
    /// budget) must send the rest within it.
    pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Sets [`SocketConfig::engine`].
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Sets [`SocketConfig::read_buffer_size`].
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// Sets [`SocketConfig::write_buffer_size`].
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Sets [`SocketConfig::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`SocketConfig::max_frame_size`]. Unset, the frame limit is the message limit,
    /// because clients (browsers included) send each message as one frame: a lower frame limit
    /// would refuse messages the message limit allows, and what a frame may hold is bounded by
    /// the message limit anyway.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = Some(bytes);
        self
    }

    /// The frame limit in force: [`SocketConfig::max_frame_size`] when set, never above the
    /// message limit.
    pub fn frame_limit(&self) -> usize {
        self.max_frame_size
            .unwrap_or(self.max_message_size)
            .min(self.max_message_size)
    }

    /// Bounds the bytes held in partly received messages by every connection accepted with this
    /// configuration at `bytes` (0: no bound), in a new [`MessageBudget`] of which one client
    /// address may hold a quarter.
    pub fn max_buffered_bytes(self, bytes: usize) -> Self {
        self.message_budget(MessageBudget::new(bytes))
    }

    /// Bounds what the connections of one client address may hold of the
    /// [`message_budget`](SocketConfig::message_budget) at `bytes` (0: only the budget's limit),
    /// in a new budget of the same limit (set [`max_buffered_bytes`](Self::max_buffered_bytes)
    /// first).
    pub fn max_buffered_bytes_per_address(mut self, bytes: usize) -> Self {
        self.message_budget = self.message_budget.per_address(bytes);
        self
    }

    /// Sets [`SocketConfig::message_budget`] (to share one budget between configurations).
    pub fn message_budget(mut self, budget: MessageBudget) -> Self {
        self.message_budget = budget;
        self
    }

    /// Sets [`SocketConfig::permessage_deflate`].
    pub fn permessage_deflate(mut self, on: bool) -> Self {
        self.permessage_deflate = on;
        self
    }

    /// Sets [`SocketConfig::message_timeout`]; zero turns the deadline off.
    pub fn message_timeout(mut self, timeout: Duration) -> Self {
        self.message_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            engine: Engine::default(),
            read_buffer_size: Self::DEFAULT_READ_BUFFER_SIZE,
            write_buffer_size: Self::DEFAULT_WRITE_BUFFER_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: None,
            message_budget: MessageBudget::new(Self::DEFAULT_MAX_BUFFERED_BYTES),
            permessage_deflate: false,
            message_timeout: Some(Self::DEFAULT_MESSAGE_TIMEOUT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_frame_limit_follows_the_message_limit() {
        let cfg = SocketConfig::default();
        assert_eq!(cfg.frame_limit(), SocketConfig::DEFAULT_MAX_MESSAGE_SIZE);
        let cfg = cfg.max_message_size(64 << 20);
        assert_eq!(cfg.frame_limit(), 64 << 20);
        assert_eq!(cfg.clone().max_frame_size(1 << 20).frame_limit(), 1 << 20);
        assert_eq!(cfg.max_frame_size(1 << 30).frame_limit(), 64 << 20);
    }
}
