//! The sockets group: how WebSockets are spoken — the engine, compression, the read buffer.

use wscope_axum::{Engine, SocketConfig};

use super::declare::declare_group;
use super::kind;

declare_group! {
    /// The WebSocket engine and how it reads.
    pub struct Sockets (PartialSockets) "Sockets" {
        /// WebSocket implementation.
        engine: Engine as kind::OneOf<Engine> = Engine::default();
        /// Agree to permessage-deflate compression when a client offers it.
        permessage_deflate: bool as kind::Switch = false;
        /// Bytes read from a socket at a time (the tungstenite engine's read buffer).
        read_buffer_size: usize as kind::Size<1, { 1 << 20 }> =
            SocketConfig::DEFAULT_READ_BUFFER_SIZE;
    }
}

impl Sockets {
    /// `config` with this engine, compression and read buffer.
    pub fn configure_sockets(&self, config: SocketConfig) -> SocketConfig {
        config
            .engine(self.engine)
            .permessage_deflate(self.permessage_deflate)
            .read_buffer_size(self.read_buffer_size)
    }
}
