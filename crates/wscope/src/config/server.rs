//! [`ServerGroups`]: the setting groups a [`Server`](crate::serve::Server) is bound from, and the
//! libraries' configurations made of them, so that every subcommand that serves (`serve`, the
//! coming `proxy`) flattens the same groups into its settings and hands them over the same way.

use wscope_axum::SocketConfig;
use wscope_core::RegistryConfig;

use super::admin_access::AdminAccess;
use super::cluster::ClusterMode;
use super::instance::Instance;
use super::limits::Limits;
use super::listeners::Listeners;
use super::liveness::Liveness;
use super::logging::Logging;
use super::sockets::Sockets;

/// Settings a server can be bound from: they hold each group a server needs.
pub trait ServerGroups {
    /// Where it listens and how it serves HTTP.
    fn listeners(&self) -> &Listeners;
    /// What names the instance.
    fn instance(&self) -> &Instance;
    /// Pings, idle and stale connections, the drain.
    fn liveness(&self) -> &Liveness;
    /// The WebSocket engine.
    fn sockets(&self) -> &Sockets;
    /// What a client may take.
    fn limits(&self) -> &Limits;
    /// Who may use the admin API.
    fn admin(&self) -> &AdminAccess;
    /// Cluster mode.
    fn cluster(&self) -> &ClusterMode;
    /// The stats lines' period (the log format is the subcommand's to install).
    fn logging(&self) -> &Logging;

    /// The registry's configuration: the instance, liveness, limits and stats-line settings.
    fn registry_config(&self) -> RegistryConfig {
        let config = self
            .instance()
            .configure_registry(RegistryConfig::default());
        let config = self.liveness().configure_registry(config);
        let config = self.limits().configure_registry(config);
        self.logging().configure_registry(config)
    }

    /// The sockets' configuration: the engine and the message limits.
    fn socket_config(&self) -> SocketConfig {
        let config = self.sockets().configure_sockets(SocketConfig::default());
        self.limits().configure_sockets(config)
    }
}
