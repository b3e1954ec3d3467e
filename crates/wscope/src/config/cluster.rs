//! The cluster group: whether and how an instance joins a cluster over Redis, and the cluster
//! settings that only make sense together.

use std::time::Duration;

use wscope_cluster::ClusterConfig;

use super::declare::declare_group;
use super::error::ConfigError;
use super::kind::{self, Secret};

declare_group! {
    /// The Redis server of a cluster, and how this instance takes part in it.
    pub struct ClusterMode (PartialClusterMode) "Cluster" {
        /// Redis server joining this instance to a cluster (`redis://127.0.0.1:6379`); without
        /// it the instance stands alone.
        redis_url: Option<Secret> as kind::RedisUrl = None;
        /// The cluster to join: keys and channels are namespaced by it, so several clusters
        /// share one Redis.
        cluster_name: String as kind::ClusterName = ClusterConfig::DEFAULT_NAME.to_owned();
        /// How often this instance announces itself to the cluster.
        cluster_heartbeat: Duration as kind::Duration<60> = ClusterConfig::DEFAULT_HEARTBEAT;
        /// How long a silent instance stays in the cluster view before it is reported gone
        /// (0 = 3 × the heartbeat).
        cluster_ttl: Duration as kind::Duration<600> = Duration::ZERO;
        /// How long a cluster survey (stats, connections, actions) waits for each instance.
        cluster_timeout: Duration as kind::Duration<60> = ClusterConfig::DEFAULT_SURVEY_TIMEOUT;
        /// Largest chat message relayed to the other instances; a larger one reaches this
        /// instance's clients only (counted undelivered), and one from another instance is
        /// ignored.
        cluster_max_relay_size: usize as kind::Size<1, { 2 << 20 }> =
            ClusterConfig::DEFAULT_MAX_RELAY_SIZE;
        /// Bytes of messages waiting to be published to the cluster; past it a chat message
        /// reaches this instance's clients only (counted undelivered).
        cluster_publish_queue: usize as kind::Size<{ 64 << 10 }> =
            ClusterConfig::DEFAULT_PUBLISH_QUEUE_BYTES;
        /// Most other instances this one keeps in its cluster view; a new one past it takes
        /// the place of the instance gone longest, or is ignored.
        cluster_max_members: usize as kind::Count<usize, 100_000> =
            ClusterConfig::DEFAULT_MAX_MEMBERS;
    }
}

impl ClusterMode {
    /// Refuses the cluster settings that cannot work together (or at all in this build).
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let refuse = |flag, why: &str| {
            Err(ConfigError::Cluster {
                flag,
                why: why.to_owned(),
            })
        };
        if self.redis_url.is_some() && !cfg!(feature = "redis") {
            return refuse(
                "--redis-url",
                "this build has no Redis support (build wscope with the `redis` feature)",
            );
        }
        if self.cluster_heartbeat < Duration::from_millis(10) {
            return refuse("--cluster-heartbeat", "must be at least 10ms");
        }
        if !self.cluster_ttl.is_zero() && self.cluster_ttl <= self.cluster_heartbeat {
            return refuse(
                "--cluster-ttl",
                "must be longer than --cluster-heartbeat (0 = 3 × the heartbeat)",
            );
        }
        if self.cluster_timeout < Duration::from_millis(10) {
            return refuse("--cluster-timeout", "must be at least 10ms");
        }
        Ok(())
    }

    /// The cluster node's settings (addresses are filled in once the listeners are bound).
    pub fn cluster_config(&self) -> ClusterConfig {
        let config = ClusterConfig::new(self.cluster_name.clone())
            .heartbeat(self.cluster_heartbeat)
            .survey_timeout(self.cluster_timeout)
            .max_relay_size(self.cluster_max_relay_size)
            .publish_queue_bytes(self.cluster_publish_queue)
            .max_members(self.cluster_max_members);
        if self.cluster_ttl.is_zero() {
            config
        } else {
            config.ttl(self.cluster_ttl)
        }
    }
}
