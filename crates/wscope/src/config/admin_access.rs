//! The admin access group: who may use the admin API — its token, from a flag or a file, and
//! the further hosts and origins it answers — and the refusal of an admin listener that faces
//! the network without a token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wscope_axum::{AdminConfig, AllowedHost};

use super::declare::declare_group;
use super::error::ConfigError;
use super::kind::{self, Secret};
use super::token_file;

declare_group! {
    /// The admin API's token and the further hosts and origins it answers.
    pub struct AdminAccess (PartialAdminAccess) "Admin API" {
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
}

impl AdminAccess {
    /// Reads `--admin-token-file` into the token, and refuses an admin listener at `admin_listen`
    /// that faces the network without one.
    pub(crate) fn checked(mut self, admin_listen: SocketAddr) -> Result<Self, ConfigError> {
        if let Some(path) = &self.admin_token_file {
            if self.admin_token.is_some() {
                return Err(ConfigError::TwoAdminTokens);
            }
            self.admin_token = Some(read_token(path)?);
        }
        let ip = admin_listen.ip().to_canonical();
        if !ip.is_loopback() && self.admin_token.is_none() {
            return Err(ConfigError::OpenAdmin { addr: admin_listen });
        }
        Ok(self)
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
}

/// The token in `path` ([`token_file::read`]: trimmed, bounded, not empty, its owner's alone).
fn read_token(path: &Path) -> Result<Secret, ConfigError> {
    let refuse = |why: String| ConfigError::AdminTokenFile {
        path: path.to_owned(),
        why,
    };
    let text =
        token_file::read(path, Secret::MAX_LEN as u64 + 64).map_err(|e| refuse(e.to_string()))?;
    Secret::new(&text).map_err(refuse)
}
