//! Why a subcommand's settings cannot be used. Each is one line that says where the bad value
//! is; `main` prints it and exits with status 2, as clap does for a bad flag.

use std::path::PathBuf;

use wscope_core::{InvalidInstanceId, INSTANCE_ID_ENV};

/// A setting that cannot be used, from the `--config` file or from `INSTANCE_ID` (bad flags and
/// `WSCOPE_*` variables are refused by clap, through the same parsers).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A cluster setting that cannot work (a zero heartbeat, a TTL not above it, no Redis
    /// support in this build).
    #[error("{flag}: {why}")]
    Cluster {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The `--config` file cannot be read.
    #[error("--config {}: cannot read: {why}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        why: std::io::Error,
    },
    /// The `--config` file is not valid TOML, or has an unknown key or a bad value.
    #[error("{}:{line}: {what}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The line (from 1) of the key, or of the syntax error.
        line: usize,
        /// The key and what is wrong with it, or the syntax error.
        what: String,
    },
    /// `INSTANCE_ID` is set to something that cannot be an instance id.
    #[error("{env} (for --instance-id): {0}", env = INSTANCE_ID_ENV)]
    InstanceIdEnv(InvalidInstanceId),
    /// The `--config` file is larger than any settings file needs to be.
    #[error("--config {}: larger than {max} bytes", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes read.
        max: u64,
    },
    /// The `--admin-token-file` cannot be read, or holds no usable token.
    #[error("--admin-token-file {}: {why}", path.display())]
    AdminTokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Both `--admin-token` and `--admin-token-file` are set.
    #[error("--admin-token and --admin-token-file: set one, not both")]
    TwoAdminTokens,
    /// The admin listener would face the network with no token.
    #[error("--admin-listen {addr} is not a loopback address: set --admin-token or --admin-token-file, or listen on 127.0.0.1")]
    OpenAdmin {
        /// The admin listener's address.
        addr: std::net::SocketAddr,
    },
    /// Routes that leave nowhere to relay to, or name a prefix twice (the text names the flag).
    #[error("{0}")]
    Routes(String),
    /// A listener's certificate without its key, or its key without the certificate.
    #[error("{flags}: set both or neither ({missing} is missing)")]
    TlsHalfPair {
        /// Both flags (`--tls-cert and --tls-key`).
        flags: &'static str,
        /// The one not set.
        missing: &'static str,
    },
    /// A listener's certificate and key cannot be used.
    #[error("{flags}: {why}")]
    Tls {
        /// Both flags (`--tls-cert and --tls-key`).
        flags: &'static str,
        /// What is wrong with them (boxed: rustls's errors are large, the others small).
        why: Box<wscope_axum::tls::TlsError>,
    },
}
