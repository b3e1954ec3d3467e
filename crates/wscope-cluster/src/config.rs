//! A node's settings ([`ClusterConfig`]) and their defaults, stated once: an application's own
//! setting declarations (`wscope serve`'s) take theirs from the `DEFAULT_*` constants here.

use std::time::Duration;

/// How a node takes part in its cluster.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The cluster's name: keys and channels are namespaced by it, so several clusters share one
    /// engine.
    pub name: String,
    /// Put before every key and channel (default `wscope:`).
    pub prefix: String,
    /// How often the node announces itself (default 1 s).
    pub heartbeat: Duration,
    /// How long a silent member stays in the view before it is reported gone (default 3 ×
    /// `heartbeat`); also the lease on the instance id.
    pub ttl: Option<Duration>,
    /// How long a survey waits for members' answers (default 1 s); those that miss it are named.
    pub survey_timeout: Duration,
    /// How long a gone member stays listed as gone (default 10 min).
    pub forget_after: Duration,
    /// The main listener's address, announced to the others.
    pub main_addr: Option<String>,
    /// The admin listener's address, announced to the others.
    pub admin_addr: Option<String>,
    /// The software version announced (default this crate's).
    pub version: String,
    /// Messages waiting to be published (broadcasts, replies, announcements) before new ones
    /// are refused (default 65,536); see [`ClusterConfig::publish_queue_bytes`].
    pub publish_queue: usize,
    /// Payload bytes waiting to be published before new messages are refused (default 16 MiB):
    /// a refused broadcast reaches this node's connections only and is counted undelivered, a
    /// refused reply or announcement is counted unsent. Bounds what a node holds for the others
    /// whatever its clients send.
    pub publish_queue_bytes: usize,
    /// The largest message relayed to the other nodes, in payload bytes (default 64 KiB): a
    /// larger broadcast reaches this node's connections only, counted undelivered and too large;
    /// a larger one from another node is ignored (and counted).
    pub max_relay_size: usize,
    /// Bytes this node may have published on the shared channel and not yet heard back from the
    /// engine (default 4 MiB): past it the publisher waits, so it publishes no faster than the
    /// engine delivers (Redis drops a subscriber that holds 32 MB of backlog, or 8 MB for a
    /// minute). What is not heard back within the survey timeout is taken as lost.
    pub publish_window: usize,
    /// The largest payload read from the cluster channels (default 16 MiB: a reply listing
    /// 10,000 connections fits); a larger one is ignored, unparsed, and counted.
    pub max_payload: usize,
    /// Most other members the view holds (default 1,024): an announcement from a new instance
    /// when the view is full takes the place of the member gone longest, or is ignored (and
    /// counted) if none is gone.
    pub max_members: usize,
}

impl ClusterConfig {
    /// The default settings for the cluster `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            prefix: "wscope:".into(),
            heartbeat: Self::DEFAULT_HEARTBEAT,
            ttl: None,
            survey_timeout: Self::DEFAULT_SURVEY_TIMEOUT,
            forget_after: Duration::from_secs(600),
            main_addr: None,
            admin_addr: None,
            version: env!("CARGO_PKG_VERSION").into(),
            publish_queue: 65_536,
            publish_queue_bytes: Self::DEFAULT_PUBLISH_QUEUE_BYTES,
            max_relay_size: Self::DEFAULT_MAX_RELAY_SIZE,
            publish_window: 4 << 20,
            max_payload: 16 << 20,
            max_members: Self::DEFAULT_MAX_MEMBERS,
        }
    }

    /// The cluster name an application uses when it is given none (`wscope serve`'s
    /// `--cluster-name`).
    pub const DEFAULT_NAME: &'static str = "wscope";
    /// The default of [`ClusterConfig::heartbeat`].
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
    /// The default of [`ClusterConfig::survey_timeout`].
    pub const DEFAULT_SURVEY_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default of [`ClusterConfig::publish_queue_bytes`].
    pub const DEFAULT_PUBLISH_QUEUE_BYTES: usize = 16 << 20;
    /// The default of [`ClusterConfig::max_relay_size`].
    pub const DEFAULT_MAX_RELAY_SIZE: usize = 64 << 10;
    /// The default of [`ClusterConfig::max_members`].
    pub const DEFAULT_MAX_MEMBERS: usize = 1024;

    /// Sets [`ClusterConfig::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`ClusterConfig::heartbeat`].
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Sets [`ClusterConfig::ttl`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets [`ClusterConfig::survey_timeout`].
    pub fn survey_timeout(mut self, timeout: Duration) -> Self {
        self.survey_timeout = timeout;
        self
    }

    /// Sets [`ClusterConfig::forget_after`].
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.forget_after = after;
        self
    }

    /// Sets [`ClusterConfig::main_addr`].
    pub fn main_addr(mut self, addr: impl Into<String>) -> Self {
        self.main_addr = Some(addr.into());
        self
    }

    /// Sets [`ClusterConfig::admin_addr`].
    pub fn admin_addr(mut self, addr: impl Into<String>) -> Self {
        self.admin_addr = Some(addr.into());
        self
    }

    /// Sets [`ClusterConfig::version`].
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets [`ClusterConfig::publish_queue`].
    pub fn publish_queue(mut self, messages: usize) -> Self {
        self.publish_queue = messages.max(1);
        self
    }

    /// Sets [`ClusterConfig::publish_queue_bytes`] (at least 1).
    pub fn publish_queue_bytes(mut self, bytes: usize) -> Self {
        self.publish_queue_bytes = bytes.max(1);
        self
    }

    /// Sets [`ClusterConfig::max_relay_size`].
    pub fn max_relay_size(mut self, bytes: usize) -> Self {
        self.max_relay_size = bytes;
        self
    }

    /// Sets [`ClusterConfig::publish_window`] (at least 1).
    pub fn publish_window(mut self, bytes: usize) -> Self {
        self.publish_window = bytes.max(1);
        self
    }

    /// Sets [`ClusterConfig::max_payload`].
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets [`ClusterConfig::max_members`] (at least 1).
    pub fn max_members(mut self, members: usize) -> Self {
        self.max_members = members.max(1);
        self
    }

    /// The TTL in effect: [`ClusterConfig::ttl`] or 3 × the heartbeat.
    pub fn effective_ttl(&self) -> Duration {
        self.ttl.unwrap_or(self.heartbeat * 3)
    }

    pub(crate) fn channel_all(&self) -> String {
        format!("{}{}:all", self.prefix, self.name)
    }

    pub(crate) fn channel_to(&self, instance: &str) -> String {
        format!("{}{}:to:{}", self.prefix, self.name, instance)
    }

    pub(crate) fn lease_key(&self, instance: &str) -> String {
        format!("{}{}:instance:{}", self.prefix, self.name, instance)
    }
}
