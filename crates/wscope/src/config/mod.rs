//! `wscope serve`'s settings, each declared once below and read, first to last, from its flag,
//! its `WSCOPE_<FLAG>` variable, `INSTANCE_ID` (for the instance id only), the `--config` TOML
//! file, and its default.
//!
//! ```
//! use wscope::config::ServeConfig;
//! let cfg = ServeConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     ..ServeConfig::default()
//! };
//! assert_eq!(cfg.backlog, 4096);
//! assert_eq!(cfg.registry_config().queue_capacity, cfg.queue_capacity);
//! ```
//!
//! # Adding a setting
//! Add its lines to the `declare_settings!` list below, then use the field:
//!
//! ```text
//! /// How often each client is pinged (0 = never).
//! ping_interval: Duration as kind::Duration = Duration::from_secs(20);
//! ```
//!
//! That one declaration makes the `ServeConfig` field, the `--ping-interval` flag, the
//! `WSCOPE_PING_INTERVAL` variable, the `ping_interval` TOML key, the help line with its
//! `[default: 20s]`, and the errors naming each. A macro, rather than one struct deriving both
//! `clap::Args` and `serde::Deserialize`, because the settings also need a resolved struct with
//! the same fields, a merge and a default each, which a derive would leave to hand-written lists.
//!
//! # Layout
//! - `declare`: the macro; `kind`: how each kind of value is read and shown; `flag`: the clap
//!   side; `file`: the TOML side; `error`: what a bad file or `INSTANCE_ID` reports.
//! - `token_file`: reading a token from a file (`--admin-token-file`, and `wscope top
//!   --token-file`), refused when others may read or change it.

mod declare;
mod error;
mod file;
mod flag;
mod kind;
#[cfg(test)]
mod tests;
pub(crate) mod token_file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use wscope_axum::{
    AdminConfig, AllowedHost, ClientIpHeader, Engine, ServeOptions, SocketConfig, TrustedProxies,
};
use wscope_core::{Ipv6Prefix, OriginPattern, RateLimit, RegistryConfig};

use declare::declare_settings;

pub use error::ConfigError;
pub use kind::{Origin, Secret};
pub use wscope_core::units::{parse_duration, parse_size};

declare_settings! {
    "Listeners" {
        /// Address of the main listener (`/ws`, `/ws/chat`, `/health`).
        listen: SocketAddr as kind::Addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        /// Address of the admin listener (`/api/stats`, `/api/admin`, `/health`).
        admin_listen: SocketAddr as kind::Addr = SocketAddr::from(([127, 0, 0, 1], 9090));
        /// Accept backlog of each listener.
        backlog: u32 as kind::Count<u32> = 4096;
        /// Proxies (CIDRs or addresses, comma-separated; repeatable) whose forwarding headers
        /// are believed.
        #[key = "trusted_proxy"]
        trusted_proxies: Vec<IpNet> as kind::Networks =
            TrustedProxies::default().networks().to_vec();
    }
    "Registry" {
        /// Names this instance in ids, stats and health; `INSTANCE_ID` is read after
        /// `WSCOPE_INSTANCE_ID`.
        instance_id: String as kind::InstanceId = wscope_core::host_instance_id();
        /// How often to log the stats lines (0 = never).
        stats_interval: Duration as kind::Duration = RegistryConfig::DEFAULT_STATS_INTERVAL;
        /// How often to sweep stale entries (0 = never).
        cleanup_interval: Duration as kind::Duration = RegistryConfig::DEFAULT_CLEANUP_INTERVAL;
        /// How long shutdown waits for close handshakes before dropping the rest.
        drain_timeout: Duration as kind::Duration = RegistryConfig::DEFAULT_DRAIN_TIMEOUT;
        /// Most messages queued for one connection.
        queue_capacity: usize as kind::Count<usize> = RegistryConfig::DEFAULT_QUEUE_CAPACITY;
        /// How many connections per second a shutdown closes (0 = all at once); it finishes
        /// within the drain timeout whatever the rate.
        drain_rate: u32 as kind::Limit<u32> = 0;
        /// How many recently closed connections `GET /api/closed` keeps (0 = none).
        recent_closed: usize as kind::Limit<usize> = RegistryConfig::DEFAULT_RECENT_CLOSED;
    }
    "Connections" {
        /// How often the server pings each connection (0 = never); the round trip shows as rttMs.
        ping_interval: Duration as kind::Duration = RegistryConfig::DEFAULT_PING_INTERVAL;
        /// How long a ping may go unanswered before the connection is closed (1011).
        ping_timeout: Duration as kind::Duration = RegistryConfig::DEFAULT_PING_TIMEOUT;
        /// How long a connection may move no message before it is closed (1000; 0 = never).
        idle_timeout: Duration as kind::Duration = Duration::ZERO;
        /// Most payload bytes queued for one connection; a broadcast past it closes a slow
        /// consumer (1008), a handler's own send waits.
        max_queued_bytes: usize as kind::Size = RegistryConfig::DEFAULT_MAX_QUEUED_BYTES;
        /// Most messages one connection may send per second (0 = no limit); past it, 1008.
        max_messages_per_second: u32 as kind::Limit<u32> = 0;
    }
    "Sockets" {
        /// WebSocket implementation.
        engine: Engine as kind::OneOf<Engine> = Engine::default();
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
        /// Agree to permessage-deflate compression when a client offers it.
        permessage_deflate: bool as kind::Switch = false;
        /// Bytes read from a socket at a time (the tungstenite engine's read buffer).
        read_buffer_size: usize as kind::Size<1, { 1 << 20 }> =
            SocketConfig::DEFAULT_READ_BUFFER_SIZE;
    }
    "Admin API" {
        /// Bearer token every admin route but `/health` requires; prefer --admin-token-file, as
        /// a flag shows in process listings.
        admin_token: Option<Secret> as kind::Token = None;
        /// File holding the admin token (trimmed; an empty file is refused).
        admin_token_file: Option<PathBuf> as kind::File = None;
        /// Further `Host` values the admin API answers (`name` or `name:port`, comma-separated;
        /// repeatable), beside its own address and `localhost`, `127.0.0.1` and `[::1]` at its
        /// port.
        #[key = "admin_allowed_host"]
        admin_allowed_hosts: Vec<AllowedHost> as kind::Hosts = Vec::new();
        /// Further origins whose pages may call the admin API (`https://ops.example.com`,
        /// comma-separated; repeatable), beside its own.
        #[key = "admin_allowed_origin"]
        admin_allowed_origins: Vec<kind::Origin> as kind::Origins = Vec::new();
    }
    "HTTP edge" {
        /// How long a request's head may take to arrive before the connection is dropped (also
        /// closes idle keep-alive connections; 0 = no limit).
        handshake_timeout: Duration as kind::Duration<3600> =
            ServeOptions::DEFAULT_HANDSHAKE_TIMEOUT;
        /// Largest request head (request line and headers) accepted; a larger one gets 431.
        max_header_size: usize as kind::Size<1024, { 1 << 20 }> =
            ServeOptions::DEFAULT_MAX_HEADER_SIZE;
        /// The forwarding header the trusted proxies set, the only one read.
        client_ip_header: ClientIpHeader as kind::OneOf<ClientIpHeader> = ClientIpHeader::default();
    }
    "Limits" {
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
    }
    "Cluster" {
        /// Redis server joining this instance to a cluster (`redis://127.0.0.1:6379`); without
        /// it the instance stands alone.
        redis_url: Option<Secret> as kind::RedisUrl = None;
        /// The cluster to join: keys and channels are namespaced by it, so several clusters
        /// share one Redis.
        cluster_name: String as kind::ClusterName = "wscope".to_owned();
        /// How often this instance announces itself to the cluster.
        cluster_heartbeat: Duration as kind::Duration<60> = Duration::from_secs(1);
        /// How long a silent instance stays in the cluster view before it is reported gone
        /// (0 = 3 × the heartbeat).
        cluster_ttl: Duration as kind::Duration<600> = Duration::ZERO;
        /// How long a cluster survey (stats, connections, actions) waits for each instance.
        cluster_timeout: Duration as kind::Duration<60> = Duration::from_secs(1);
        /// Largest chat message relayed to the other instances; a larger one reaches this
        /// instance's clients only (counted undelivered), and one from another instance is
        /// ignored.
        cluster_max_relay_size: usize as kind::Size<1, { 2 << 20 }> =
            wscope_core::cluster::ClusterConfig::DEFAULT_MAX_RELAY_SIZE;
        /// Bytes of messages waiting to be published to the cluster; past it a chat message
        /// reaches this instance's clients only (counted undelivered).
        cluster_publish_queue: usize as kind::Size<{ 64 << 10 }> =
            wscope_core::cluster::ClusterConfig::DEFAULT_PUBLISH_QUEUE_BYTES;
        /// Most other instances this one keeps in its cluster view; a new one past it takes
        /// the place of the instance gone longest, or is ignored.
        cluster_max_members: usize as kind::Count<usize, 100_000> =
            wscope_core::cluster::ClusterConfig::DEFAULT_MAX_MEMBERS;
    }
    "Logging" {
        /// Log line format (`RUST_LOG` sets the level).
        log_format: LogFormat as kind::OneOf<LogFormat> = LogFormat::default();
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

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `wscope serve`'s command line: the settings (each also read from `WSCOPE_<FLAG>`) and the
/// file that may set them too.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML file setting any of the options below (keys are the flags in snake_case:
    /// `admin_listen = "..."`).
    #[arg(long, env = "WSCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What the flags and their variables set.
    #[command(flatten)]
    pub flags: PartialConfig,
}

impl Default for ServeConfig {
    /// Every setting at its default (no flag, variable or file read).
    fn default() -> Self {
        PartialConfig::default().or_defaults()
    }
}

impl ServeConfig {
    /// Resolves the settings: flags (and their variables), then `INSTANCE_ID`, then the
    /// `--config` file, then the defaults.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => file::read(path)?,
            None => PartialConfig::default(),
        };
        // Like a `WSCOPE_*` variable, `INSTANCE_ID` is not read when a flag overrides it.
        let reference_env = PartialConfig {
            instance_id: match args.flags.instance_id {
                Some(_) => None,
                None => wscope_core::instance_id_from_env().map_err(ConfigError::InstanceIdEnv)?,
            },
            ..PartialConfig::default()
        };
        args.flags
            .or(reference_env)
            .or(file)
            .or_defaults()
            .checked()
    }

    /// The registry's part of the configuration.
    pub fn registry_config(&self) -> RegistryConfig {
        RegistryConfig::default()
            .instance_id(self.instance_id.clone())
            .cleanup_interval(self.cleanup_interval)
            .stats_interval(self.stats_interval)
            .drain_timeout(self.drain_timeout)
            .queue_capacity(self.queue_capacity)
            .drain_rate(self.drain_rate)
            .recent_closed(self.recent_closed)
            .ping_interval(self.ping_interval)
            .ping_timeout(self.ping_timeout)
            .idle_timeout(self.idle_timeout)
            .max_queued_bytes(self.max_queued_bytes)
            .max_messages_per_second(self.max_messages_per_second)
            .max_connections(self.max_connections)
            .max_connections_per_ip(self.max_connections_per_ip)
            .handshake_rate_per_ip(
                self.handshake_rate_per_ip
                    .map(|rate| rate.with_burst(self.handshake_burst)),
            )
            .handshake_rate_addresses(self.handshake_rate_addresses)
            .ipv6_prefix(self.ipv6_prefix)
            .allowed_origins(self.allowed_origins.iter().cloned())
            .allow_missing_origin(self.allow_missing_origin)
    }
}

/// What takes more than one setting to check, and the other libraries' parts of the
/// configuration.
impl ServeConfig {
    /// Reads `--admin-token-file` into the token, and refuses an admin listener that faces the
    /// network without one.
    fn checked(mut self) -> Result<Self, ConfigError> {
        if let Some(path) = &self.admin_token_file {
            if self.admin_token.is_some() {
                return Err(ConfigError::TwoAdminTokens);
            }
            self.admin_token = Some(read_token(path)?);
        }
        let ip = self.admin_listen.ip().to_canonical();
        if !ip.is_loopback() && self.admin_token.is_none() {
            return Err(ConfigError::OpenAdmin {
                addr: self.admin_listen,
            });
        }
        self.check_cluster()?;
        Ok(self)
    }

    /// The cluster settings that only make sense together.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        let refuse = |flag, why: &str| {
            Err(ConfigError::Cluster {
                flag,
                why: why.to_owned(),
            })
        };
        if self.redis_url.is_some() && !cfg!(feature = "redis") {
            return refuse(
                "--redis-url",
                "this build has no Redis support (build wscope with the `redis` feature)",
            );
        }
        if self.cluster_heartbeat < Duration::from_millis(10) {
            return refuse("--cluster-heartbeat", "must be at least 10ms");
        }
        if !self.cluster_ttl.is_zero() && self.cluster_ttl <= self.cluster_heartbeat {
            return refuse(
                "--cluster-ttl",
                "must be longer than --cluster-heartbeat (0 = 3 × the heartbeat)",
            );
        }
        if self.cluster_timeout < Duration::from_millis(10) {
            return refuse("--cluster-timeout", "must be at least 10ms");
        }
        Ok(())
    }

    /// The cluster node's settings (addresses are filled in once the listeners are bound).
    pub fn cluster_config(&self) -> wscope_core::cluster::ClusterConfig {
        let config = wscope_core::cluster::ClusterConfig::new(self.cluster_name.clone())
            .heartbeat(self.cluster_heartbeat)
            .survey_timeout(self.cluster_timeout)
            .max_relay_size(self.cluster_max_relay_size)
            .publish_queue_bytes(self.cluster_publish_queue)
            .max_members(self.cluster_max_members);
        if self.cluster_ttl.is_zero() {
            config
        } else {
            config.ttl(self.cluster_ttl)
        }
    }

    /// The admin API's guard: the token and the further hosts and origins.
    pub fn admin_config(&self) -> AdminConfig {
        let config = AdminConfig::new()
            .allowed_hosts(self.admin_allowed_hosts.iter().cloned())
            .allowed_origins(&self.admin_allowed_origins);
        match &self.admin_token {
            Some(token) => config.token(token.expose()),
            None => config,
        }
    }

    /// How both listeners serve HTTP.
    pub fn serve_options(&self) -> ServeOptions {
        let timeout = self.handshake_timeout;
        ServeOptions::default()
            .max_header_size(self.max_header_size)
            .handshake_timeout((!timeout.is_zero()).then_some(timeout))
    }

    /// The engine settings of accepted sockets.
    pub fn socket_config(&self) -> SocketConfig {
        let mut socket = SocketConfig::default()
            .engine(self.engine)
            .read_buffer_size(self.read_buffer_size)
            .max_message_size(self.max_message_size)
            .max_buffered_bytes(self.max_buffered_bytes)
            .permessage_deflate(self.permessage_deflate)
            .message_timeout(self.message_timeout);
        if let Some(bytes) = self.max_frame_size {
            socket = socket.max_frame_size(bytes);
        }
        if let Some(bytes) = self.max_buffered_bytes_per_ip {
            socket = socket.max_buffered_bytes_per_address(bytes);
        }
        socket
    }

    /// The proxies believed and the header they set.
    pub fn proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.iter().copied()).header(self.client_ip_header)
    }
}

/// The token in `path` ([`token_file::read`]: trimmed, bounded, not empty, its owner's alone).
fn read_token(path: &std::path::Path) -> Result<Secret, ConfigError> {
    let refuse = |why: String| ConfigError::AdminTokenFile {
        path: path.to_owned(),
        why,
    };
    let text =
        token_file::read(path, Secret::MAX_LEN as u64 + 64).map_err(|e| refuse(e.to_string()))?;
    Secret::new(&text).map_err(refuse)
}
