//! The settings of the binary's subcommands, in groups each declared once — listeners, instance,
//! liveness, sockets, limits, admin access, cluster, logging — and flattened into each
//! subcommand's settings ([`ServeSettings`] for `wscope serve`). Every setting is read, first to
//! last, from its flag, its `WSCOPE_<FLAG>` variable, `INSTANCE_ID` (for the instance id only),
//! the `--config` TOML file, and its default.
//!
//! ```
//! use wscope::config::{Listeners, ServeSettings, ServerGroups};
//! let settings = ServeSettings {
//!     listeners: Listeners {
//!         listen: "127.0.0.1:0".parse().unwrap(),
//!         ..Listeners::default()
//!     },
//!     ..ServeSettings::default()
//! };
//! assert_eq!(settings.listeners.backlog, 4096);
//! assert_eq!(settings.registry_config().queue_capacity, settings.limits.queue_capacity);
//! ```
//!
//! # Adding a setting
//! Add its lines to its group's `declare_group!` list (`listeners.rs`, `limits.rs`, …), then use
//! the field:
//!
//! ```text
//! /// How often each client is pinged (0 = never).
//! ping_interval: Duration as kind::Duration = Duration::from_secs(20);
//! ```
//!
//! That one declaration makes the group's field, the `--ping-interval` flag, the
//! `WSCOPE_PING_INTERVAL` variable, the `ping_interval` TOML key, the help line with its
//! `[default: 20s]` under the group's heading, and the errors naming each — in every subcommand
//! whose settings take the group. A macro, rather than one struct deriving both `clap::Args`
//! and `serde::Deserialize`, because the settings also need a resolved struct with the same
//! fields, a merge and a default each, which a derive would leave to hand-written lists.
//!
//! # Adding a subcommand's settings
//! List its groups with `declare_settings!`, as [`ServeSettings`] does below (a group of its own
//! beside them if it has settings no other subcommand has); its flags, variables and file keys
//! are the groups'. A subcommand that serves implements [`ServerGroups`] to be bound as a
//! [`Server`](crate::serve::Server).
//!
//! # Layout
//! - The groups, one file each: `listeners`, `instance`, `liveness`, `sockets`, `limits`,
//!   `admin_access`, `cluster`, `logging`; `server`: [`ServerGroups`], the groups a server is
//!   bound from and the libraries' configurations made of them.
//! - `declare`: the two macros and what every partial does; `kind`: how each kind of value is
//!   read and shown; `flag`: the clap side; `file`: the TOML side; `error`: what a bad file or
//!   `INSTANCE_ID` reports.
//! - `token_file`: reading a token from a file (`--admin-token-file`, and `wscope top
//!   --token-file`), refused when others may read or change it.

mod admin_access;
mod cluster;
mod declare;
mod error;
mod file;
mod flag;
mod instance;
mod kind;
mod limits;
mod listeners;
mod liveness;
mod logging;
mod proxy;
mod server;
mod sockets;
#[cfg(test)]
mod tests;
pub mod token_file;

use std::path::PathBuf;

use clap::Args;

use declare::{declare_settings, Partial};

pub use admin_access::{AdminAccess, PartialAdminAccess};
pub use cluster::{ClusterMode, PartialClusterMode};
pub use error::ConfigError;
pub use instance::{Instance, PartialInstance};
pub use kind::{Origin, RuntimeLayout, Secret};
pub use limits::{Limits, PartialLimits};
pub use listeners::{Listeners, PartialListeners, TlsFiles};
pub use liveness::{Liveness, PartialLiveness};
pub use logging::{Logging, PartialLogging};
pub use proxy::{PartialProxyRoutes, ProxyRoutes, RouteSpec, UpstreamUrl};
pub use server::ServerGroups;
pub use sockets::{PartialSockets, Sockets};

declare_settings! {
    /// Every setting of `wscope serve`, resolved: the groups a server is bound from (`serve` has
    /// no setting of its own).
    pub struct ServeSettings (PartialServeSettings) {
        /// Where it listens and how it serves HTTP.
        listeners: Listeners (PartialListeners),
        /// What names this instance.
        instance: Instance (PartialInstance),
        /// Pings, idle and stale connections, the drain.
        liveness: Liveness (PartialLiveness),
        /// The WebSocket engine.
        sockets: Sockets (PartialSockets),
        /// What a client may take.
        limits: Limits (PartialLimits),
        /// Who may use the admin API.
        admin: AdminAccess (PartialAdminAccess),
        /// Cluster mode.
        cluster: ClusterMode (PartialClusterMode),
        /// The log lines.
        logging: Logging (PartialLogging),
    }
}

/// A subcommand's command line: its settings (each also read from `WSCOPE_<FLAG>`) and the file
/// that may set them too.
#[derive(Args, Debug, Clone, Default)]
pub struct SettingsArgs<P: clap::Args + clap::FromArgMatches> {
    /// TOML file setting any of the options below (keys are the flags in snake_case:
    /// `admin_listen = "..."`).
    #[arg(long, env = "WSCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What the flags and their variables set.
    #[command(flatten)]
    pub flags: P,
}

/// `wscope serve`'s command line.
pub type ServeArgs = SettingsArgs<PartialServeSettings>;

/// A subcommand's settings, each from the first source that sets it: the flags (and their
/// variables), then `between` (what `INSTANCE_ID` sets), then the `--config` file, then the
/// defaults. `command` names the subcommand in an unknown key's error (`wscope serve`).
pub(crate) fn layered<P: Partial>(
    args: SettingsArgs<P>,
    between: P,
    command: &str,
) -> Result<P::Resolved, ConfigError> {
    let file = match &args.config {
        Some(path) => file::read::<P>(path, command)?,
        None => P::default(),
    };
    Ok(args.flags.or(between).or(file).or_defaults())
}

impl ServeSettings {
    /// Resolves the settings: flags (and their variables), then `INSTANCE_ID`, then the
    /// `--config` file, then the defaults; then reads the admin token file and refuses what
    /// takes more than one setting to see is wrong.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let reference_env = PartialServeSettings {
            instance: PartialInstance::from_reference_env(&args.flags.instance)?,
            ..PartialServeSettings::default()
        };
        let settings = layered(args, reference_env, "wscope serve")?;
        let admin = settings.admin.checked(settings.listeners.admin_listen)?;
        settings.cluster.check()?;
        Ok(Self { admin, ..settings })
    }
}

/// Implements [`ServerGroups`] for settings that flatten every server group under the same
/// field names.
macro_rules! server_groups {
    ($settings:ty) => {
        impl ServerGroups for $settings {
            fn listeners(&self) -> &Listeners {
                &self.listeners
            }

            fn instance(&self) -> &Instance {
                &self.instance
            }

            fn liveness(&self) -> &Liveness {
                &self.liveness
            }

            fn sockets(&self) -> &Sockets {
                &self.sockets
            }

            fn limits(&self) -> &Limits {
                &self.limits
            }

            fn admin(&self) -> &AdminAccess {
                &self.admin
            }

            fn cluster(&self) -> &ClusterMode {
                &self.cluster
            }

            fn logging(&self) -> &Logging {
                &self.logging
            }
        }
    };
}

server_groups!(ServeSettings);
server_groups!(ProxySettings);

declare_settings! {
    /// Every setting of `wscope proxy`: the server's groups and where requests are relayed.
    pub struct ProxySettings (PartialProxySettings) {
        /// Where it listens and how it serves HTTP.
        listeners: Listeners (PartialListeners),
        /// What names this instance.
        instance: Instance (PartialInstance),
        /// Pings, idle and stale connections, the drain.
        liveness: Liveness (PartialLiveness),
        /// The WebSocket engine (both hops).
        sockets: Sockets (PartialSockets),
        /// What a client may take.
        limits: Limits (PartialLimits),
        /// Who may use the admin API.
        admin: AdminAccess (PartialAdminAccess),
        /// Cluster mode.
        cluster: ClusterMode (PartialClusterMode),
        /// The log lines.
        logging: Logging (PartialLogging),
        /// Where requests are relayed.
        proxy: ProxyRoutes (PartialProxyRoutes),
    }
}

/// `wscope proxy`'s command line.
pub type ProxyArgs = SettingsArgs<PartialProxySettings>;

impl ProxySettings {
    /// Resolves the settings as [`ServeSettings::resolve`] does, and refuses routes that leave
    /// nowhere to relay to or name a prefix twice.
    pub fn resolve(args: ProxyArgs) -> Result<Self, ConfigError> {
        let reference_env = PartialProxySettings {
            instance: PartialInstance::from_reference_env(&args.flags.instance)?,
            ..PartialProxySettings::default()
        };
        let settings = layered(args, reference_env, "wscope proxy")?;
        let admin = settings.admin.checked(settings.listeners.admin_listen)?;
        settings.cluster.check()?;
        settings.proxy.table().map_err(ConfigError::Routes)?;
        Ok(Self { admin, ..settings })
    }

    /// Reads the routes again from `path` (the `--config` file) over what the command line
    /// set: what a reload does. Only the proxy group is read; the error names the file.
    pub fn reload_routes(
        args: &ProxyArgs,
        path: &std::path::Path,
    ) -> Result<ProxyRoutes, ConfigError> {
        let file = file::read::<PartialProxySettings>(path, "wscope proxy")?;
        let routes = args.flags.proxy.clone().or(file.proxy).or_defaults();
        routes.table().map_err(ConfigError::Routes)?;
        Ok(routes)
    }
}
