//! Admission: the step every upgrade passes before it is accepted. [`crate::Registry::admit`]
//! runs the checks in order and returns a [`Permit`] — which the connection then owns, so that
//! whatever a check reserved for it is released when it ends, however it ends — or a typed
//! [`Refusal`] that an integration turns into its answer (its status chosen from the
//! [`RefusalKind`] by the HTTP crate; [`Refusal::retry_after`]) and the registry counts per
//! [`RefusalKind`].
//!
//! The checks, in order: shutdown; the labels' caps (`labels`); the runtime ban list (`bans`,
//! changed by [`crate::Registry::ban`]); then the [`Gate`]s that [`crate::RegistryConfig`] asks
//! for, each in its own file — the `Origin` allow-list (`origin`), the global and per-address
//! connection caps (`limits`), and last the per-address handshake rate (`rate`), so that only an
//! upgrade every other check admitted takes a token or adds an address to its table. A gate that
//! is not configured is not in the list, so a registry without limits pays for none. Neither the
//! extractor nor the driver changes when a gate is added.
//!
//! Checks that count per address use [`ConnectionMeta::remote_addr`] — the client as resolved
//! through trusted proxies — as a [`ClientKey`] (`client_key`): an IPv4 address (IPv4-mapped IPv6
//! counts as the IPv4 one), or the IPv6 network of [`RegistryConfig::ipv6_prefix`] bits, a /64 by
//! default. A connection whose address is unknown is not limited per address; the global cap
//! still applies.
//!
//! [`RegistryConfig::ipv6_prefix`]: crate::RegistryConfig::ipv6_prefix

mod bans;
mod client_key;
mod labels;
mod limits;
mod origin;
mod rate;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use bans::{banned_frame, banned_reason, canonical_net, Bans};
pub use bans::{Ban, BanError, BanOutcome};
pub use client_key::{ClientKey, InvalidIpv6Prefix, Ipv6Prefix};
pub(crate) use labels::{check_tag, check_user, distinct as distinct_tags};
pub use labels::{LabelError, MAX_TAGS, MAX_TAG_LEN, MAX_USER_LEN};
pub use origin::{InvalidOriginPattern, OriginPattern};
pub use rate::{InvalidRate, RateLimit};

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
    /// A user id to attach from the start (as `set_user` would, before the handler runs); at
    /// most [`MAX_USER_LEN`] bytes, or admission refuses the upgrade.
    pub user: Option<String>,
    /// Tags to attach from the start (as `tag` would); at most [`MAX_TAGS`] distinct ones of at
    /// most [`MAX_TAG_LEN`] bytes, or admission refuses the upgrade. Repeats are attached once.
    pub tags: Vec<String>,
    /// The upstream a proxy relays the connection to (`wscope proxy`), shown as `upstream`.
    pub upstream: Option<String>,
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

    /// Names the upstream a proxy relays the connection to (shown as `upstream` in the stats).
    pub fn upstream(mut self, upstream: impl Into<Option<String>>) -> Self {
        self.upstream = upstream.into();
        self
    }

    /// Attaches a user id at registration. Labels known before the upgrade are best given here:
    /// the connection's task then keeps nothing for them (what a handler captures lives, inline,
    /// as long as the connection). An id longer than [`MAX_USER_LEN`] bytes is an error.
    ///
    /// ```
    /// use wscope_core::{ConnectionMeta, LabelError, MAX_TAGS};
    /// let meta = ConnectionMeta::new("/ws").user("u-42")?.tag("beta")?.tag("beta")?;
    /// assert_eq!(meta.tags, ["beta"]);
    /// let too_many = (0..=MAX_TAGS).try_fold(ConnectionMeta::new("/ws"), |m, i| m.tag(i.to_string()));
    /// assert_eq!(too_many.unwrap_err().to_string(), "more than 32 tags");
    /// # Ok::<(), LabelError>(())
    /// ```
    pub fn user(mut self, user: impl Into<String>) -> Result<Self, LabelError> {
        self.set_user(user)?;
        Ok(self)
    }

    /// Adds a tag at registration (see [`user`](Self::user)); a tag it has already is not added
    /// again. A tag longer than [`MAX_TAG_LEN`] bytes, or one past [`MAX_TAGS`], is an error.
    pub fn tag(mut self, tag: impl Into<String>) -> Result<Self, LabelError> {
        self.add_tag(tag)?;
        Ok(self)
    }

    /// Sets the user id in place (see [`user`](Self::user)); on error nothing changes.
    pub fn set_user(&mut self, user: impl Into<String>) -> Result<(), LabelError> {
        let user = user.into();
        check_user(&user)?;
        self.user = Some(user);
        Ok(())
    }

    /// Adds a tag in place (see [`tag`](Self::tag)): whether it was new. On error nothing
    /// changes.
    pub fn add_tag(&mut self, tag: impl Into<String>) -> Result<bool, LabelError> {
        let tag = tag.into();
        check_tag(&tag)?;
        // At most MAX_TAGS comparisons: the list never grows past it.
        if self.tags.contains(&tag) {
            return Ok(false);
        }
        if self.tags.len() >= MAX_TAGS {
            return Err(LabelError::TooManyTags { max: MAX_TAGS });
        }
        self.tags.push(tag);
        Ok(true)
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
    /// The user id or tags the upgrade came with are past their caps ([`MAX_TAGS`],
    /// [`MAX_TAG_LEN`], [`MAX_USER_LEN`]).
    #[error("invalid labels: {0}")]
    InvalidLabels(LabelError),
    /// The handshake rate's table of client addresses is full
    /// ([`RegistryConfig::handshake_rate_addresses`](crate::RegistryConfig::handshake_rate_addresses))
    /// and this address is not in it: refused rather than let in unlimited.
    #[error("too many client addresses to track")]
    RateTableFull {
        /// When the first tracked address's bucket is full again (and may be forgotten).
        retry_after: Duration,
    },
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
            Self::InvalidLabels(_) => RefusalKind::InvalidLabels,
            Self::RateTableFull { .. } => RefusalKind::RateTableFull,
        }
    }

    /// How long the client should wait before trying again (`Retry-After`), where that helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyConnections { retry_after }
            | Self::HandshakeRate { retry_after }
            | Self::RateTableFull { retry_after } => Some(*retry_after),
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
    /// [`Refusal::InvalidLabels`].
    InvalidLabels,
    /// [`Refusal::RateTableFull`].
    RateTableFull,
}

impl RefusalKind {
    /// Every kind, in counter order.
    pub const ALL: [RefusalKind; 9] = [
        RefusalKind::ShuttingDown,
        RefusalKind::TooManyConnections,
        RefusalKind::TooManyFromAddress,
        RefusalKind::HandshakeRate,
        RefusalKind::OriginNotAllowed,
        RefusalKind::Banned,
        RefusalKind::InvalidHandshake,
        RefusalKind::InvalidLabels,
        RefusalKind::RateTableFull,
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
            Self::InvalidLabels => "invalidLabels",
            Self::RateTableFull => "rateTableFull",
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

/// One admission check after the shutdown, label and ban checks.
pub(crate) trait Gate: Send + Sync + fmt::Debug {
    /// Admits `meta` (perhaps reserving a [`Slot`] for it) or refuses it. `key` is its client
    /// address as per-address checks count it (`None` when unknown); `now` is the registry
    /// clock's reading ([`crate::Clock::now_nanos`]), taken once per admission.
    fn check(
        &self,
        meta: &ConnectionMeta,
        key: Option<ClientKey>,
        now: u64,
    ) -> Result<Option<Slot>, Refusal>;

    /// Drops state that no longer matters as of `now` (expired rate buckets); the registry's
    /// background sweep calls it.
    fn sweep(&self, _now: u64) {}
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
    /// How IPv6 addresses are grouped into one client.
    ipv6_prefix: Ipv6Prefix,
    /// The runtime ban list, checked right after the labels (a banned address spends no rate
    /// token and holds no slot, even for a moment).
    bans: Arc<Bans>,
    gates: Vec<Box<dyn Gate>>,
}

impl Admission {
    /// The checks a [`RegistryConfig`](crate::RegistryConfig) asks for (built by
    /// `RegistryConfig::admission`, which says their order): the origin gate, the global and
    /// per-address caps (0 = none) and the handshake rate with its table size.
    pub(crate) fn new(
        ipv6_prefix: Ipv6Prefix,
        allowed_origins: &[OriginPattern],
        allow_missing_origin: bool,
        max_connections: usize,
        max_connections_per_ip: usize,
        handshake_rate: Option<(RateLimit, usize)>,
    ) -> Self {
        let mut admission = Self {
            ipv6_prefix,
            bans: Arc::new(Bans::new(ipv6_prefix)),
            gates: Vec::new(),
        };
        if let Some(gate) = origin::OriginGate::new(allowed_origins, allow_missing_origin) {
            admission.push(gate);
        }
        if max_connections > 0 {
            admission.push(limits::GlobalLimit::new(max_connections));
        }
        if max_connections_per_ip > 0 {
            admission.push(limits::AddressLimit::new(max_connections_per_ip));
        }
        if let Some((rate, addresses)) = handshake_rate {
            admission.push(rate::HandshakeRateGate::new(rate, addresses));
        }
        admission
    }

    /// `ip` as per-address checks count it.
    pub(crate) fn client_key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::new(ip, self.ipv6_prefix)
    }

    /// `target` as bans and unbans take it: canonical (network address, IPv4-mapped as IPv4),
    /// and an IPv6 network longer than the grouping widened to its group.
    pub(crate) fn ban_target(&self, target: ipnet::IpNet) -> ipnet::IpNet {
        self.ipv6_prefix.widen(canonical_net(target))
    }

    /// Adds a check after the others.
    pub(crate) fn push(&mut self, gate: impl Gate + 'static) {
        self.gates.push(Box::new(gate));
    }

    /// The runtime ban list.
    pub(crate) fn bans(&self) -> &Bans {
        &self.bans
    }

    /// Runs the checks: the shutdown check, the labels, the ban list, then each gate in order.
    /// A refusal releases what the gates before it reserved.
    pub(crate) fn admit(
        &self,
        shutting_down: bool,
        meta: &ConnectionMeta,
        now: u64,
    ) -> Result<Permit, Refusal> {
        if shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        labels::check(meta).map_err(Refusal::InvalidLabels)?;
        let key = meta.remote_addr.map(|ip| self.client_key(ip));
        if key.is_some_and(|key| self.bans.is_banned_key(key, now)) {
            return Err(Refusal::Banned);
        }
        let mut permit = Permit::default();
        for gate in &self.gates {
            if let Some(slot) = gate.check(meta, key, now)? {
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

    /// Runs `gate` on `meta` with its address keyed as a registry with the default grouping
    /// would.
    pub(crate) fn check<G: Gate + ?Sized>(
        gate: &G,
        meta: &ConnectionMeta,
        now: u64,
    ) -> Result<Option<Slot>, Refusal> {
        let key = meta
            .remote_addr
            .map(|ip| ClientKey::new(ip, Ipv6Prefix::default()));
        gate.check(meta, key, now)
    }

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
        fn check(
            &self,
            _meta: &ConnectionMeta,
            _key: Option<ClientKey>,
            _now: u64,
        ) -> Result<Option<Slot>, Refusal> {
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

    /// The global cap refuses before the handshake rate takes a token; labels past their caps
    /// are refused before anything else is looked at.
    #[test]
    fn the_caps_refuse_before_the_rate_and_labels_before_everything() {
        let rate = RateLimit::new(1, Duration::from_secs(3600));
        let admission = Admission::new(
            Ipv6Prefix::DEFAULT,
            &[],
            true,
            1,
            0,
            rate.map(|rate| (rate, 100)),
        );
        let from = |ip: &str| ConnectionMeta::new("/ws").remote_addr(ip.parse::<IpAddr>().ok());
        let held = admission.admit(false, &from("192.0.2.1"), 0).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                admission.admit(false, &from("192.0.2.2"), 0),
                Err(Refusal::TooManyConnections { .. })
            ));
        }
        drop(held);
        let again = admission.admit(false, &from("192.0.2.2"), 0);
        assert!(again.is_ok(), "the refusals took no token: {again:?}");
        drop(again);

        let mut labelled = from("192.0.2.3");
        labelled.tags = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        let refusal = admission.admit(false, &labelled, 0).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::InvalidLabels(LabelError::TooManyTags { max: MAX_TAGS })
        );
        assert_eq!(refusal.to_string(), "invalid labels: more than 32 tags");
        assert!(
            admission.admit(false, &from("192.0.2.3"), 0).is_ok(),
            "a refusal for labels takes no token either"
        );
    }

    #[test]
    fn every_kind_has_a_distinct_key_and_index() {
        for (i, kind) in RefusalKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(RefusalKind::from_key(kind.as_str()), Some(kind));
        }
        let wait = Duration::from_secs(3);
        let r = Refusal::HandshakeRate { retry_after: wait };
        assert_eq!(r.retry_after(), Some(wait));
    }

    #[test]
    fn refusal_metadata() {
        let r = Refusal::ShuttingDown;
        assert_eq!(r.retry_after(), None);
        assert_eq!(r.kind().as_str(), "shuttingDown");
        assert_eq!(RefusalKind::from_key("shuttingDown"), Some(r.kind()));
        assert_eq!(r.to_string(), "server shutting down");
    }
}
