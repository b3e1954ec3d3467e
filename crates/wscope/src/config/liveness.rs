//! The liveness group: how a server finds out that a connection is gone (pings, idle time,
//! stale entries) and how it lets every connection go (the drain).

use std::time::Duration;

use wscope_core::RegistryConfig;

use super::declare::declare_group;
use super::kind;

declare_group! {
    /// Pings, idle and stale connections, and the drain.
    pub struct Liveness (PartialLiveness) "Liveness" {
        /// How often the server pings each connection (0 = never); the round trip shows as rttMs.
        ping_interval: Duration as kind::Duration = RegistryConfig::DEFAULT_PING_INTERVAL;
        /// How long a ping may go unanswered before the connection is closed (1011).
        ping_timeout: Duration as kind::Duration = RegistryConfig::DEFAULT_PING_TIMEOUT;
        /// How long a connection may move no message before it is closed (1000; 0 = never).
        idle_timeout: Duration as kind::Duration = Duration::ZERO;
        /// How often to sweep stale entries (0 = never).
        cleanup_interval: Duration as kind::Duration = RegistryConfig::DEFAULT_CLEANUP_INTERVAL;
        /// How long shutdown waits for close handshakes before dropping the rest.
        drain_timeout: Duration as kind::Duration = RegistryConfig::DEFAULT_DRAIN_TIMEOUT;
        /// How many connections per second a shutdown closes (0 = all at once); it finishes
        /// within the drain timeout whatever the rate.
        drain_rate: u32 as kind::Limit<u32> = 0;
    }
}

impl Liveness {
    /// `config` with these pings, timeouts, sweeps and drain.
    pub fn configure_registry(&self, config: RegistryConfig) -> RegistryConfig {
        config
            .ping_interval(self.ping_interval)
            .ping_timeout(self.ping_timeout)
            .idle_timeout(self.idle_timeout)
            .cleanup_interval(self.cleanup_interval)
            .drain_timeout(self.drain_timeout)
            .drain_rate(self.drain_rate)
    }
}
