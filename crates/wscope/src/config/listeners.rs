//! The listeners group: where a server listens, how both listeners serve HTTP (and TLS, from
//! which files), and whose word on a client's address they take.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use wscope_axum::{ClientIpHeader, ServeOptions, TrustedProxies};

use super::declare::declare_group;
use super::error::ConfigError;
use super::kind;
use super::kind::RuntimeLayout;

declare_group! {
    /// Where the main and admin listeners listen, how they serve HTTP and TLS, and the proxies
    /// whose forwarding header names the client.
    pub struct Listeners (PartialListeners) "Listeners" {
        /// Address of the main listener (`/ws`, `/ws/chat`, `/health`).
        listen: SocketAddr as kind::Addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        /// Address of the admin listener (`/api/stats`, `/api/admin`, `/health`).
        admin_listen: SocketAddr as kind::Addr = SocketAddr::from(([127, 0, 0, 1], 9090));
        /// Path of the main listener's public health check, moved off the application's
        /// namespace when it needs `/health` itself.
        health_path: String as kind::RoutePath = "/health".to_owned();
        /// Path of the main listener's readiness check (503 once draining).
        ready_path: String as kind::RoutePath = "/ready".to_owned();
        /// Accept backlog of each listener.
        backlog: u32 as kind::Count<u32> = 4096;
        /// Proxies (CIDRs or addresses, comma-separated; repeatable) whose forwarding headers
        /// are believed.
        #[key = "trusted_proxy"]
        trusted_proxies: Vec<IpNet> as kind::Networks =
            TrustedProxies::default().networks().to_vec();
        /// The forwarding header the trusted proxies set, the only one read.
        client_ip_header: ClientIpHeader as kind::OneOf<ClientIpHeader> = ClientIpHeader::default();
        /// How long a request's head may take to arrive before the connection is dropped (also
        /// closes idle keep-alive connections; 0 = no limit).
        handshake_timeout: Duration as kind::Duration<3600> =
            ServeOptions::DEFAULT_HANDSHAKE_TIMEOUT;
        /// Largest request head (request line and headers) accepted; a larger one gets 431.
        max_header_size: usize as kind::Size<1024, { 1 << 20 }> =
            ServeOptions::DEFAULT_MAX_HEADER_SIZE;
        /// PEM certificate chain (leaf first) the main listener serves TLS with (`https://`,
        /// `wss://`), with --tls-key; reread on SIGHUP.
        tls_cert: Option<PathBuf> as kind::File = None;
        /// PEM private key of --tls-cert.
        tls_key: Option<PathBuf> as kind::File = None;
        /// PEM certificate chain the admin listener serves TLS with, with --admin-tls-key;
        /// reread on SIGHUP.
        admin_tls_cert: Option<PathBuf> as kind::File = None;
        /// PEM private key of --admin-tls-cert.
        admin_tls_key: Option<PathBuf> as kind::File = None;
        /// Threads serving the main listener: runtimes with --runtime per-core, workers with
        /// multi.
        threads: Option<usize> as kind::Unset<kind::Count<usize, 1024>, TheCores> = None;
        /// How the threads run: per-core (a current_thread runtime each, with its own
        /// SO_REUSEPORT listener) or multi (one work-stealing runtime).
        runtime: RuntimeLayout as kind::OneOf<RuntimeLayout> = RuntimeLayout::default();
    }
}

/// What an unset `--threads` means.
pub(crate) struct TheCores;

impl kind::Meaning for TheCores {
    const TEXT: &'static str = "the number of cores";
}

impl Listeners {
    /// How both listeners serve HTTP.
    pub fn serve_options(&self) -> ServeOptions {
        let timeout = self.handshake_timeout;
        ServeOptions::default()
            .max_header_size(self.max_header_size)
            .handshake_timeout((!timeout.is_zero()).then_some(timeout))
    }

    /// The proxies believed and the header they set.
    pub fn proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.iter().copied()).header(self.client_ip_header)
    }
}

/// The certificate and key files a listener serves TLS with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    /// The flags that set them (`--tls-cert and --tls-key`), for errors and log lines.
    pub flags: &'static str,
    /// The PEM certificate chain.
    pub cert: &'a Path,
    /// The PEM private key.
    pub key: &'a Path,
}

impl Listeners {
    /// The main listener's TLS files, if it serves TLS; one without the other is refused.
    pub fn main_tls(&self) -> Result<Option<TlsFiles<'_>>, ConfigError> {
        tls_pair(
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            "--tls-cert and --tls-key",
        )
    }

    /// The admin listener's TLS files, if it serves TLS; one without the other is refused.
    pub fn admin_tls(&self) -> Result<Option<TlsFiles<'_>>, ConfigError> {
        tls_pair(
            ("--admin-tls-cert", &self.admin_tls_cert),
            ("--admin-tls-key", &self.admin_tls_key),
            "--admin-tls-cert and --admin-tls-key",
        )
    }
}

/// Both files or neither.
fn tls_pair<'a>(
    cert: (&'static str, &'a Option<PathBuf>),
    key: (&'static str, &'a Option<PathBuf>),
    flags: &'static str,
) -> Result<Option<TlsFiles<'a>>, ConfigError> {
    match (cert.1, key.1) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { flags, cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::TlsHalfPair {
            flags,
            missing: key.0,
        }),
        (None, Some(_)) => Err(ConfigError::TlsHalfPair {
            flags,
            missing: cert.0,
        }),
    }
}
