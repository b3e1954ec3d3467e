//! The limits group: what a client may take of a server — connections, handshakes, origins,
//! message rates and sizes, queued messages.

use std::time::Duration;

use wscope_axum::SocketConfig;
use wscope_core::{Ipv6Prefix, OriginPattern, RateLimit, RegistryConfig};

use super::declare::declare_group;
use super::kind;

declare_group! {
    /// Caps on connections, handshakes, origins, message rates, message sizes and queues.
    pub struct Limits (PartialLimits) "Limits" {
        /// Most connections at once; past it an upgrade gets 503 with `Retry-After: 1`
        /// (0 = unlimited).
        max_connections: usize as kind::Limit<usize> = 0;
        /// Most connections at once from one client address, as resolved through trusted
        /// proxies; past it an upgrade gets 429 (0 = unlimited).
        max_connections_per_ip: usize as kind::Limit<usize> = 0;
        /// Handshakes per client address (`10/s`, `600/m`, `5/10s`); past it an upgrade gets 429
        /// with `Retry-After` (0 = unlimited).
        handshake_rate_per_ip: Option<RateLimit> as kind::Rate = None;
        /// Handshakes one address may make at once before `--handshake-rate-per-ip` holds it to
        /// the rate (0 = the rate's count: `10/s` allows 10 at once).
        handshake_burst: u32 as kind::Limit<u32> = 0;
        /// Most client addresses `--handshake-rate-per-ip` tracks at once (each for as long as
        /// its bucket is not full again); when full, an upgrade from another address gets 503
        /// with `Retry-After`.
        handshake_rate_addresses: usize as kind::Count<usize, 10_000_000> =
            RegistryConfig::DEFAULT_HANDSHAKE_RATE_ADDRESSES;
        /// Leading bits of an IPv6 client address that name one client for the per-address
        /// cap, the handshake rate and bans (48 to 128; 128 counts each address alone).
        ipv6_prefix: Ipv6Prefix as kind::Ipv6Group = Ipv6Prefix::DEFAULT;
        /// Origins allowed to open WebSockets: `https://app.example.com`, or
        /// `https://*.example.com` for its subdomains (comma-separated; repeatable); others get
        /// 403.
        #[key = "allowed_origin"]
        allowed_origins: Vec<OriginPattern> as kind::OriginPatterns = Vec::new();
        /// Whether an upgrade without an `Origin` header (a non-browser client) is admitted.
        allow_missing_origin: bool as kind::Bool = RegistryConfig::DEFAULT_ALLOW_MISSING_ORIGIN;
        /// Most messages one connection may send per second (0 = no limit); past it, 1008.
        max_messages_per_second: u32 as kind::Limit<u32> = 0;
        /// Largest message accepted (fragments added up; inflated size when compressed); past
        /// it, 1009.
        max_message_size: usize as kind::Size = SocketConfig::DEFAULT_MAX_MESSAGE_SIZE;
        /// Largest frame accepted (at most the message size); past it, 1009. Unset, it follows
        /// --max-message-size, since clients send each message as one frame.
        max_frame_size: Option<usize> as kind::Unset<kind::Size, TheMessageSize> = None;
        /// Most bytes all partly received messages may hold together; a large message past
        /// it gets 1013.
        max_buffered_bytes: usize as kind::Size = SocketConfig::DEFAULT_MAX_BUFFERED_BYTES;
        /// Most of --max-buffered-bytes the connections of one client address may hold (as
        /// resolved through trusted proxies); a large message past it gets 1013.
        max_buffered_bytes_per_ip: Option<usize> as kind::Unset<kind::Size, AQuarter> = None;
        /// How long a message may take to arrive in full, from the first time the server waits
        /// for the rest of it (0 = no limit); past it, 1008.
        message_timeout: Duration as kind::Duration = SocketConfig::DEFAULT_MESSAGE_TIMEOUT;
        /// Most messages queued for one connection.
        queue_capacity: usize as kind::Count<usize> = RegistryConfig::DEFAULT_QUEUE_CAPACITY;
        /// Most payload bytes queued for one connection; a broadcast past it closes a slow
        /// consumer (1008), a handler's own send waits.
        max_queued_bytes: usize as kind::Size = RegistryConfig::DEFAULT_MAX_QUEUED_BYTES;
    }
}

impl Limits {
    /// `config` with these caps on connections, handshakes, origins, message rates and queues.
    pub fn configure_registry(&self, config: RegistryConfig) -> RegistryConfig {
        let rate = self
            .handshake_rate_per_ip
            .map(|rate| rate.with_burst(self.handshake_burst));
        config
            .max_connections(self.max_connections)
            .max_connections_per_ip(self.max_connections_per_ip)
            .handshake_rate_per_ip(rate)
            .handshake_rate_addresses(self.handshake_rate_addresses)
            .ipv6_prefix(self.ipv6_prefix)
            .allowed_origins(self.allowed_origins.iter().cloned())
            .allow_missing_origin(self.allow_missing_origin)
            .max_messages_per_second(self.max_messages_per_second)
            .queue_capacity(self.queue_capacity)
            .max_queued_bytes(self.max_queued_bytes)
    }

    /// `config` with these caps on message and frame sizes, on partly received messages (all
    /// together and per client address) and on the time a message may take.
    pub fn configure_sockets(&self, config: SocketConfig) -> SocketConfig {
        let mut config = config
            .max_message_size(self.max_message_size)
            .max_buffered_bytes(self.max_buffered_bytes)
            .message_timeout(self.message_timeout);
        if let Some(bytes) = self.max_frame_size {
            config = config.max_frame_size(bytes);
        }
        // After the budget's limit: the share is taken of it.
        if let Some(bytes) = self.max_buffered_bytes_per_ip {
            config = config.max_buffered_bytes_per_address(bytes);
        }
        config
    }
}

/// What an unset `--max-frame-size` means.
pub(crate) struct TheMessageSize;

impl kind::Meaning for TheMessageSize {
    const TEXT: &'static str = "the message size";
}

/// What an unset `--max-buffered-bytes-per-ip` means.
pub(crate) struct AQuarter;

impl kind::Meaning for AQuarter {
    const TEXT: &'static str = "a quarter of it";
}
