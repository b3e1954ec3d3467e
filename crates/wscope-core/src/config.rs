//! How a registry behaves: [`RegistryConfig`], its defaults and builder methods, and the
//! admission checks it asks for.

use std::time::Duration;

use crate::admission::{Admission, Ipv6Prefix, OriginPattern, RateLimit};
use crate::clock::Clock;

/// How a registry behaves. Every field has a default; set the ones you need with the builder
/// methods (`RegistryConfig::default().instance_id("eu-1").drain_timeout(d)`). The server fills it
/// from flags, env and TOML.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Names this instance in ids, stats and health (`INSTANCE_ID`, else the host name).
    pub instance_id: String,
    /// How often the background sweep runs [`Registry::cleanup_stale`](crate::Registry::cleanup_stale); zero disables it.
    pub cleanup_interval: Duration,
    /// How often the stats lines are logged; zero disables it.
    pub stats_interval: Duration,
    /// How long shutdown waits for close handshakes before dropping what is left; also how long a
    /// closing connection may take to flush its queue.
    pub drain_timeout: Duration,
    /// Most messages held in one connection's outbound queue.
    pub queue_capacity: usize,
    /// Most payload bytes held in one connection's outbound queue (a single larger message is
    /// taken when the queue is empty). A handler's own sends wait for room; a send that may not
    /// wait (a broadcast, an admin send) closes the connection as a slow consumer.
    pub max_queued_bytes: usize,
    /// How often the server pings each open connection; zero disables pings.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (1011 "ping timeout").
    pub ping_timeout: Duration,
    /// How long a connection may send and receive no message before it is closed (1000 "idle
    /// timeout"); zero disables it. Pings and pongs do not count as messages.
    pub idle_timeout: Duration,
    /// Most messages one connection may send per second (a token bucket with a one-second
    /// burst); past it the connection is closed with 1008. Zero disables it.
    pub max_messages_per_second: u32,
    /// How many connections per second the shutdown closes (so a fleet of clients does not
    /// reconnect all at once); zero closes them all at once. The drain finishes within
    /// [`RegistryConfig::drain_timeout`] whatever the rate.
    pub drain_rate: u32,
    /// How many recently closed connections are kept for [`Registry::recently_closed`](crate::Registry::recently_closed); zero keeps
    /// none.
    pub recent_closed: usize,
    /// Longest user agent stored, in bytes (longer ones are cut at a character boundary).
    pub max_user_agent_len: usize,
    /// Time source (a manual clock in tests).
    pub clock: Clock,
    /// Most connections held at once; past it an upgrade gets 503 with `Retry-After: 1` (a slot
    /// frees whenever any connection ends). 0 = unlimited.
    pub max_connections: usize,
    /// Most connections held at once from one client address (as resolved through trusted
    /// proxies); past it an upgrade gets 429. 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Handshakes allowed per client address: a token bucket of [`RateLimit::burst`] tokens
    /// refilled at the rate; an upgrade with the bucket empty gets 429 with `Retry-After` (when
    /// the next token comes). `None` = unlimited.
    pub handshake_rate_per_ip: Option<RateLimit>,
    /// Most client addresses the handshake rate tracks at once (an address is held until its
    /// bucket is full again); when the table is full, an upgrade from an address it does not
    /// hold gets 503 with `Retry-After` ([`Refusal::RateTableFull`](crate::Refusal)).
    pub handshake_rate_addresses: usize,
    /// How IPv6 addresses group into one client for the per-address cap, the handshake rate and
    /// bans: by their first 64 bits by default, since one host commonly holds a whole /64.
    pub ipv6_prefix: Ipv6Prefix,
    /// The origins allowed to open WebSockets (`Origin` header); another gets 403. Empty = any.
    pub allowed_origins: Vec<OriginPattern>,
    /// Whether an upgrade without an `Origin` header (a non-browser client) is admitted; with
    /// `false`, it gets 403 whether or not [`RegistryConfig::allowed_origins`] is set.
    pub allow_missing_origin: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            instance_id: crate::instance::default_instance_id(),
            cleanup_interval: Self::DEFAULT_CLEANUP_INTERVAL,
            stats_interval: Self::DEFAULT_STATS_INTERVAL,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            max_queued_bytes: Self::DEFAULT_MAX_QUEUED_BYTES,
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            ping_timeout: Self::DEFAULT_PING_TIMEOUT,
            idle_timeout: Duration::ZERO,
            max_messages_per_second: 0,
            drain_rate: 0,
            recent_closed: Self::DEFAULT_RECENT_CLOSED,
            max_user_agent_len: 256,
            clock: Clock::system(),
            max_connections: 0,
            max_connections_per_ip: 0,
            handshake_rate_per_ip: None,
            handshake_rate_addresses: Self::DEFAULT_HANDSHAKE_RATE_ADDRESSES,
            ipv6_prefix: Ipv6Prefix::DEFAULT,
            allowed_origins: Vec::new(),
            allow_missing_origin: Self::DEFAULT_ALLOW_MISSING_ORIGIN,
        }
    }
}

impl RegistryConfig {
    /// The default [`RegistryConfig::cleanup_interval`].
    pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(30);
    /// The default [`RegistryConfig::stats_interval`] (the reference logs every 30 s).
    pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(30);
    /// The default [`RegistryConfig::drain_timeout`].
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`RegistryConfig::queue_capacity`].
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    /// The default [`RegistryConfig::max_queued_bytes`].
    pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;
    /// The default [`RegistryConfig::ping_interval`].
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
    /// The default [`RegistryConfig::ping_timeout`].
    pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`RegistryConfig::recent_closed`].
    pub const DEFAULT_RECENT_CLOSED: usize = 1000;
    /// The default [`RegistryConfig::allow_missing_origin`]: non-browser clients send no
    /// `Origin`, and are let in.
    pub const DEFAULT_ALLOW_MISSING_ORIGIN: bool = true;
    /// The default [`RegistryConfig::handshake_rate_addresses`]: about 5.6 MiB of table when full.
    pub const DEFAULT_HANDSHAKE_RATE_ADDRESSES: usize = 100_000;

    /// Sets [`RegistryConfig::instance_id`].
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Sets [`RegistryConfig::cleanup_interval`].
    pub fn cleanup_interval(mut self, every: Duration) -> Self {
        self.cleanup_interval = every;
        self
    }

    /// Sets [`RegistryConfig::stats_interval`].
    pub fn stats_interval(mut self, every: Duration) -> Self {
        self.stats_interval = every;
        self
    }

    /// Sets [`RegistryConfig::drain_timeout`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`RegistryConfig::queue_capacity`].
    pub fn queue_capacity(mut self, messages: usize) -> Self {
        self.queue_capacity = messages;
        self
    }

    /// Sets [`RegistryConfig::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets [`RegistryConfig::ping_interval`].
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every;
        self
    }

    /// Sets [`RegistryConfig::ping_timeout`].
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`RegistryConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`RegistryConfig::max_messages_per_second`].
    pub fn max_messages_per_second(mut self, rate: u32) -> Self {
        self.max_messages_per_second = rate;
        self
    }

    /// Sets [`RegistryConfig::drain_rate`].
    pub fn drain_rate(mut self, per_second: u32) -> Self {
        self.drain_rate = per_second;
        self
    }

    /// Sets [`RegistryConfig::recent_closed`].
    pub fn recent_closed(mut self, count: usize) -> Self {
        self.recent_closed = count;
        self
    }

    /// Sets [`RegistryConfig::max_user_agent_len`].
    pub fn max_user_agent_len(mut self, bytes: usize) -> Self {
        self.max_user_agent_len = bytes;
        self
    }

    /// Sets [`RegistryConfig::clock`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`RegistryConfig::max_connections`] (0 = unlimited).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`RegistryConfig::max_connections_per_ip`] (0 = unlimited).
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Sets [`RegistryConfig::handshake_rate_per_ip`] (`None` = unlimited).
    pub fn handshake_rate_per_ip(mut self, rate: impl Into<Option<RateLimit>>) -> Self {
        self.handshake_rate_per_ip = rate.into();
        self
    }

    /// Sets [`RegistryConfig::handshake_rate_addresses`] (at least 1).
    pub fn handshake_rate_addresses(mut self, max: usize) -> Self {
        self.handshake_rate_addresses = max.max(1);
        self
    }

    /// Sets [`RegistryConfig::ipv6_prefix`].
    pub fn ipv6_prefix(mut self, prefix: Ipv6Prefix) -> Self {
        self.ipv6_prefix = prefix;
        self
    }

    /// Sets [`RegistryConfig::allowed_origins`] (empty = any).
    pub fn allowed_origins(mut self, origins: impl IntoIterator<Item = OriginPattern>) -> Self {
        self.allowed_origins = origins.into_iter().collect();
        self
    }

    /// Adds one entry to [`RegistryConfig::allowed_origins`].
    pub fn allowed_origin(mut self, origin: OriginPattern) -> Self {
        self.allowed_origins.push(origin);
        self
    }

    /// Sets [`RegistryConfig::allow_missing_origin`].
    pub fn allow_missing_origin(mut self, allow: bool) -> Self {
        self.allow_missing_origin = allow;
        self
    }
}

impl RegistryConfig {
    /// The checks this configuration asks for, in this order: origin (no state); the global cap
    /// (one counter), then the per-address cap (an entry only while the address holds a
    /// connection) — a refusal by either releases what the other reserved; last the handshake
    /// rate, the one table that outlives a refused upgrade, so that it only ever holds addresses
    /// that were admitted.
    pub(crate) fn admission(&self) -> Admission {
        Admission::new(
            self.ipv6_prefix,
            &self.allowed_origins,
            self.allow_missing_origin,
            self.max_connections,
            self.max_connections_per_ip,
            self.handshake_rate_per_ip
                .map(|rate| (rate, self.handshake_rate_addresses)),
        )
    }
}
