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

mod declare;
mod error;
mod file;
mod flag;
mod kind;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use wscope_axum::{Engine, SocketConfig, TrustedProxies};
use wscope_core::RegistryConfig;

use declare::declare_settings;

pub use error::ConfigError;
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
    }
    "Sockets" {
        /// WebSocket implementation.
        engine: Engine as kind::OneOf<Engine> = Engine::default();
        /// Largest message accepted (fragments added up; inflated size when compressed); past
        /// it, 1009.
        max_message_size: usize as kind::Size = SocketConfig::DEFAULT_MAX_MESSAGE_SIZE;
        /// Largest frame accepted (at most the message size); past it, 1009.
        max_frame_size: usize as kind::Size = SocketConfig::DEFAULT_MAX_FRAME_SIZE;
        /// Most bytes all partly received messages may hold together; a large message past
        /// it gets 1013.
        max_buffered_bytes: usize as kind::Size = SocketConfig::DEFAULT_MAX_BUFFERED_BYTES;
        /// Agree to permessage-deflate compression when a client offers it.
        permessage_deflate: bool as kind::Switch = false;
        /// Bytes read from a socket at a time (the tungstenite engine's read buffer).
        read_buffer_size: usize as kind::Size = SocketConfig::DEFAULT_READ_BUFFER_SIZE;
    }
    "Logging" {
        /// Log line format (`RUST_LOG` sets the level).
        log_format: LogFormat as kind::OneOf<LogFormat> = LogFormat::default();
    }
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
        Ok(args.flags.or(reference_env).or(file).or_defaults())
    }

    /// The registry's part of the configuration.
    pub fn registry_config(&self) -> RegistryConfig {
        RegistryConfig::default()
            .instance_id(self.instance_id.clone())
            .cleanup_interval(self.cleanup_interval)
            .stats_interval(self.stats_interval)
            .drain_timeout(self.drain_timeout)
            .queue_capacity(self.queue_capacity)
    }
}
