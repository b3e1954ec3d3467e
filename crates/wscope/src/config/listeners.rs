//! The listeners group: where a server listens, how both listeners serve HTTP, and whose word on
//! a client's address they take.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use wscope_axum::{ClientIpHeader, ServeOptions, TrustedProxies};

use super::declare::declare_group;
use super::kind;

declare_group! {
    /// Where the main and admin listeners listen, how they serve HTTP, and the proxies whose
    /// forwarding header names the client.
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
    }
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
