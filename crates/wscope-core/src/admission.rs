//! Admission: the step every upgrade passes before it is accepted. [`crate::Registry::admit`]
//! runs the checks in order and returns a [`Permit`] — which the connection then owns, so that
//! whatever a check reserved for it is released when it ends, however it ends — or a typed
//! [`Refusal`] that an integration turns into its answer ([`Refusal::status`],
//! [`Refusal::retry_after`]) and the registry counts per [`RefusalKind`].
//!
//! The checks, in order: shutdown; the runtime ban list (`bans`, changed by
//! [`crate::Registry::ban`]); then the [`Gate`]s that [`crate::RegistryConfig`] asks for, each in
//! its own file — the `Origin` allow-list (`origin`), the per-address handshake rate (`rate`), the
//! per-address and global connection caps (`limits`). A gate that is not configured is not in the
//! list, so a registry without limits pays for none. Neither the extractor nor the driver changes
//! when a gate is added.
//!
//! Checks that count per address use [`ConnectionMeta::remote_addr`] — the client as resolved
//! through trusted proxies — in its canonical form (an IPv4-mapped IPv6 address counts as the
//! IPv4 one). A connection whose address is unknown is not limited per address; the global cap
//! still applies.

mod bans;
mod limits;
mod origin;
mod rate;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use bans::{canonical_net, Bans};
pub use bans::{Ban, BanError, BanOutcome};
pub use origin::{InvalidOriginPattern, OriginPattern};
pub use rate::{InvalidRate, RateLimit};

use crate::registry::RegistryConfig;

/// What is known of a connection when it asks to be admitted, and what its entry records.
///
/// Build one with [`ConnectionMeta::new`] and the setters; more fields will come (an origin, a
/// user id), so it cannot be built as a struct literal outside this crate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionMeta {
    /// The client's address (after trusted-proxy resolution), if known.
    pub remote_addr: Option<IpAddr>,
    /// The `User-Agent` header; cut to the registry's bound when stored.
    pub user_agent: Option<String>,
    /// The request path the socket was accepted on (`/ws/chat`).
    pub path: String,
    /// The `Origin` header, if the client sent one (browsers do).
    pub origin: Option<String>,
    /// A user id to attach from the start (as `set_user` would, before the handler runs).
    pub user: Option<String>,
    /// Tags to attach from the start (as `tag` would).
    pub tags: Vec<String>,
}

impl ConnectionMeta {
    /// A connection on `path`, from an unknown address and user agent.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Sets the client's address.
    pub fn remote_addr(mut self, addr: impl Into<Option<IpAddr>>) -> Self {
        self.remote_addr = addr.into();
        self
    }

    /// Sets the user agent.
    pub fn user_agent(mut self, user_agent: impl Into<Option<String>>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Sets the origin.
    pub fn origin(mut self, origin: impl Into<Option<String>>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Attaches a user id at registration. Labels known before the upgrade are best given here:
    /// the connection's task then keeps nothing for them (what a handler captures lives, inline,
    /// as long as the connection).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds a tag at registration (see [`user`](Self::user)).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

/// Why an upgrade was refused. Each variant knows its HTTP status and, where waiting helps, how
/// long a client should wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Shutdown has begun: no new connections.
    #[error("server shutting down")]
    ShuttingDown,
    /// The server holds as many connections as it may (`--max-connections`).
    #[error("too many connections")]
    TooManyConnections {
        /// When to try again.
        retry_after: Duration,
    },
    /// This client address holds as many connections as it may (`--max-connections-per-ip`).
    #[error("too many connections from this address")]
    TooManyFromAddress,
    /// This client address opens connections faster than it may (`--handshake-rate-per-ip`).
    #[error("too many handshakes from this address")]
    HandshakeRate {
        /// When the next handshake would be allowed.
        retry_after: Duration,
    },
    /// The `Origin` is not on the allow-list (`--allowed-origin`).
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The client address is banned (admin action `ban`).
    #[error("address banned")]
    Banned,
    /// The upgrade request is not a valid WebSocket handshake (a bad `Sec-WebSocket-Key`, an
    /// HTTP/1.0 request): refused before admission, counted here.
    #[error("invalid handshake: {0}")]
    InvalidHandshake(&'static str),
}

impl Refusal {
    /// Which kind of refusal, for counting.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::ShuttingDown => RefusalKind::ShuttingDown,
            Self::TooManyConnections { .. } => RefusalKind::TooManyConnections,
            Self::TooManyFromAddress => RefusalKind::TooManyFromAddress,
            Self::HandshakeRate { .. } => RefusalKind::HandshakeRate,
            Self::OriginNotAllowed => RefusalKind::OriginNotAllowed,
            Self::Banned => RefusalKind::Banned,
            Self::InvalidHandshake(_) => RefusalKind::InvalidHandshake,
        }
    }

    /// The HTTP status an upgrade refused for this reason gets.
    pub fn status(&self) -> u16 {
        match self {
            Self::ShuttingDown | Self::TooManyConnections { .. } => 503,
            Self::TooManyFromAddress | Self::HandshakeRate { .. } => 429,
            Self::OriginNotAllowed | Self::Banned => 403,
            Self::InvalidHandshake(_) => 400,
        }
    }

    /// How long the client should wait before trying again (`Retry-After`), where that helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyConnections { retry_after } | Self::HandshakeRate { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// The kinds of [`Refusal`], without their details: the keys of the `refused` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// [`Refusal::ShuttingDown`].
    ShuttingDown,
    /// [`Refusal::TooManyConnections`].
    TooManyConnections,
    /// [`Refusal::TooManyFromAddress`].
    TooManyFromAddress,
    /// [`Refusal::HandshakeRate`].
    HandshakeRate,
    /// [`Refusal::OriginNotAllowed`].
    OriginNotAllowed,
    /// [`Refusal::Banned`].
    Banned,
    /// [`Refusal::InvalidHandshake`].
    InvalidHandshake,
}

impl RefusalKind {
    /// Every kind, in counter order.
    pub const ALL: [RefusalKind; 7] = [
        RefusalKind::ShuttingDown,
        RefusalKind::TooManyConnections,
        RefusalKind::TooManyFromAddress,
        RefusalKind::HandshakeRate,
        RefusalKind::OriginNotAllowed,
        RefusalKind::Banned,
        RefusalKind::InvalidHandshake,
    ];

    /// The key in the stats' `refused` object (camelCase, like every wire name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ShuttingDown => "shuttingDown",
            Self::TooManyConnections => "tooManyConnections",
            Self::TooManyFromAddress => "tooManyFromAddress",
            Self::HandshakeRate => "handshakeRate",
            Self::OriginNotAllowed => "originNotAllowed",
            Self::Banned => "banned",
            Self::InvalidHandshake => "invalidHandshake",
        }
    }

    /// The kind whose key is `key`.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == key)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a [`Gate`] reserved for an admitted connection (a slot in a per-address count,
/// say), released when the connection's [`Permit`] is dropped.
pub(crate) type Slot = Box<dyn Send + Sync + fmt::Debug>;

/// One admission check after the shutdown and ban checks.
pub(crate) trait Gate: Send + Sync + fmt::Debug {
    /// Admits `meta` (perhaps reserving a [`Slot`] for it) or refuses it. `now` is the registry
    /// clock's reading ([`crate::Clock::now_nanos`]), taken once per admission.
    fn check(&self, meta: &ConnectionMeta, now: u64) -> Result<Option<Slot>, Refusal>;

    /// Drops state that no longer matters as of `now` (expired rate buckets); the registry's
    /// background sweep calls it.
    fn sweep(&self, _now: u64) {}
}

/// The client's address as per-address checks count it: IPv4-mapped IPv6 addresses
/// (`::ffff:192.0.2.1`, what a dual-stack listener reports) as the IPv4 address they carry.
pub(crate) fn client_ip(meta: &ConnectionMeta) -> Option<IpAddr> {
    meta.remote_addr.map(|ip| ip.to_canonical())
}

/// The proof that a connection was admitted, owned by the connection from registration on:
/// what the checks reserved for it is released when it is dropped — when the connection's last
/// owner lets go, however the connection ended (a close, an error, a panic, a failed upgrade).
#[derive(Debug, Default)]
#[must_use = "a permit is needed to register the connection"]
pub struct Permit {
    /// What the gates reserved; `None` (no allocation, one word in every connection) unless a
    /// gate reserved something.
    #[allow(clippy::box_collection)] // one word in every connection rather than a Vec's three
    slots: Option<Box<Vec<Slot>>>,
}

/// The ordered checks a registry runs on every upgrade.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// The runtime ban list, checked right after shutdown (a banned address spends no rate
    /// token and holds no slot, even for a moment).
    bans: Arc<Bans>,
    gates: Vec<Box<dyn Gate>>,
}

impl Admission {
    /// The checks `config` asks for, cheapest first: origin, handshake rate, then the
    /// per-address and global caps (so that a refusal by a cap releases what the other reserved).
    pub(crate) fn from_config(config: &RegistryConfig) -> Self {
        let mut admission = Self::default();
        if let Some(gate) = origin::OriginGate::new(config) {
            admission.push(gate);
        }
        if let Some(rate) = config.handshake_rate_per_ip {
            admission.push(rate::HandshakeRateGate::new(rate));
        }
        if config.max_connections_per_ip > 0 {
            admission.push(limits::AddressLimit::new(config.max_connections_per_ip));
        }
        if config.max_connections > 0 {
            admission.push(limits::GlobalLimit::new(config.max_connections));
        }
        admission
    }

    /// Adds a check after the others.
    pub(crate) fn push(&mut self, gate: impl Gate + 'static) {
        self.gates.push(Box::new(gate));
    }

    /// The runtime ban list.
    pub(crate) fn bans(&self) -> &Bans {
        &self.bans
    }

    /// Runs the checks: the shutdown check, the ban list, then each gate in order. A refusal
    /// releases what the gates before it reserved.
    pub(crate) fn admit(
        &self,
        shutting_down: bool,
        meta: &ConnectionMeta,
        now: u64,
    ) -> Result<Permit, Refusal> {
        if shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        if client_ip(meta).is_some_and(|ip| self.bans.is_banned(ip, now)) {
            return Err(Refusal::Banned);
        }
        let mut permit = Permit::default();
        for gate in &self.gates {
            if let Some(slot) = gate.check(meta, now)? {
                permit.slots.get_or_insert_with(Default::default).push(slot);
            }
        }
        Ok(permit)
    }

    /// Drops expired bans and whatever the gates no longer need as of `now`.
    pub(crate) fn sweep(&self, now: u64) {
        self.bans.sweep(now);
        self.gates.iter().for_each(|gate| gate.sweep(now));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A gate that admits up to `max` connections at once, counting them in `held`.
    #[derive(Debug)]
    pub(crate) struct CountingGate {
        pub(crate) held: Arc<AtomicUsize>,
        pub(crate) max: usize,
    }

    #[derive(Debug)]
    struct Held(Arc<AtomicUsize>);

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Gate for CountingGate {
        fn check(&self, _meta: &ConnectionMeta, _now: u64) -> Result<Option<Slot>, Refusal> {
            if self.held.fetch_add(1, Ordering::SeqCst) >= self.max {
                self.held.fetch_sub(1, Ordering::SeqCst);
                return Err(Refusal::ShuttingDown);
            }
            Ok(Some(Box::new(Held(self.held.clone()))))
        }
    }

    #[test]
    fn shutdown_refuses_before_any_gate() {
        let held = Arc::new(AtomicUsize::new(0));
        let mut admission = Admission::default();
        admission.push(CountingGate {
            held: held.clone(),
            max: 1,
        });
        let meta = ConnectionMeta::new("/ws");
        assert_eq!(
            admission.admit(true, &meta, 0).unwrap_err(),
            Refusal::ShuttingDown
        );
        assert_eq!(held.load(Ordering::SeqCst), 0);
        let permit = admission.admit(false, &meta, 0).unwrap();
        assert_eq!(held.load(Ordering::SeqCst), 1);
        assert!(admission.admit(false, &meta, 0).is_err());
        drop(permit);
        assert_eq!(held.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn every_kind_has_a_distinct_key_and_index() {
        for (i, kind) in RefusalKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(RefusalKind::from_key(kind.as_str()), Some(kind));
        }
        let wait = Duration::from_secs(3);
        let r = Refusal::HandshakeRate { retry_after: wait };
        assert_eq!((r.status(), r.retry_after()), (429, Some(wait)));
        assert_eq!(Refusal::Banned.status(), 403);
    }

    #[test]
    fn refusal_metadata() {
        let r = Refusal::ShuttingDown;
        assert_eq!((r.status(), r.retry_after()), (503, None));
        assert_eq!(r.kind().as_str(), "shuttingDown");
        assert_eq!(RefusalKind::from_key("shuttingDown"), Some(r.kind()));
        assert_eq!(r.to_string(), "server shutting down");
    }
}
