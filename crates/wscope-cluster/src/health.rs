//! [`ClusterHealth`]: the admin listener's `GET /health` in cluster mode — the core's
//! [`Health`] with where the instance stands with its cluster beside it.

use serde::{Deserialize, Serialize};
use wscope_core::wire::Health;

use crate::handle::Cluster;
use crate::shared::ClusterState;

/// The admin listener's `GET /health`: the core's [`Health`] fields, then `cluster`
/// (`connected`, `disconnected`, `refused`, `left`) in cluster mode only. A disconnected cluster
/// leaves `status` healthy: local service goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterHealth {
    /// The instance's own health.
    #[serde(flatten)]
    pub health: Health,
    /// Where the instance stands with its cluster, if it is in cluster mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterState>,
}

impl ClusterHealth {
    /// `health`, with the state of `cluster` if there is one.
    pub fn new(health: Health, cluster: Option<&Cluster>) -> Self {
        Self {
            health,
            cluster: cluster.map(Cluster::state),
        }
    }
}

#[cfg(test)]
mod tests {
    use wscope_core::wire::HealthStatus;

    use super::*;

    fn health() -> Health {
        serde_json::from_str(
            r#"{"status":"shutting_down","activeConnections":3,"averageAge":2,"uptime":31.4,"instanceId":"eu-1","shutDown":true}"#,
        )
        .unwrap()
    }

    #[test]
    fn cluster_health_reads_back_with_the_state_last() {
        let h = ClusterHealth {
            health: health(),
            cluster: Some(ClusterState::Disconnected),
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#""status":"shutting_down""#), "{json}");
        assert!(json.contains(r#""activeConnections":3"#), "{json}");
        assert!(json.ends_with(r#","cluster":"disconnected"}"#), "{json}");
        assert_eq!(serde_json::from_str::<ClusterHealth>(&json).unwrap(), h);
        assert_eq!(h.health.status, HealthStatus::ShuttingDown);
    }

    #[test]
    fn without_cluster_mode_it_is_the_core_health_byte_for_byte() {
        let h = ClusterHealth::new(health(), None);
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            serde_json::to_string(&h.health).unwrap()
        );
    }
}
