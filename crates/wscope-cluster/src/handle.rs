//! The cluster's public types below the tasks that use them: the [`Cluster`] handle (its
//! methods are in `node.rs`, which joins, and `survey.rs`, which asks), [`ClusterError`],
//! [`ClusterCounters`] and what a broadcast did ([`ClusterBroadcast`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::shared::{ClusterState, Inner};
use wscope_core::Broadcast;

/// Why a cluster question or action could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The node is not a connected member now.
    #[error("cluster {cluster:?} is {state}: {reason}", state = state.as_str())]
    Unavailable {
        /// The cluster.
        cluster: String,
        /// The node's state.
        state: ClusterState,
        /// Why, in words.
        reason: String,
    },
    /// Another live instance holds this instance id.
    #[error(
        "instance id {instance:?} is already a member of cluster {cluster:?} ({holder}): \
         start this instance with another --instance-id, or wait for the other to leave"
    )]
    DuplicateInstance {
        /// The id.
        instance: String,
        /// The cluster.
        cluster: String,
        /// Who holds it (its addresses and start time), as far as its lease tells.
        holder: String,
    },
    /// The question cannot be asked of a cluster as given (e.g. a single instance's cursor).
    #[error("{0}")]
    BadQuery(String),
    /// The cluster name is not usable in keys and channels.
    #[error("invalid cluster name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    /// This node's envelopes cannot be encoded (its names do not serialize).
    #[error("cluster envelope cannot be encoded: {0}")]
    Encode(String),
}

/// Counters of what went wrong or was relayed on the cluster channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterCounters {
    /// Payloads on the cluster channels that did not parse, named another cluster or protocol
    /// version, or came from another process using this node's instance id: counted, ignored.
    pub ignored: u64,
    /// Broadcasts this node published.
    pub broadcasts_sent: u64,
    /// Broadcasts from other nodes queued to this node's connections.
    pub broadcasts_received: u64,
    /// Broadcasts that could not be published (engine down, queue full, larger than
    /// [`ClusterConfig::max_relay_size`](crate::config::ClusterConfig::max_relay_size)): delivered here
    /// only.
    pub broadcasts_undelivered: u64,
    /// Of those, the ones larger than the relay limit.
    pub broadcasts_too_large: u64,
    /// Other messages of this node (announcements, hellos, replies) not published because the
    /// publish queue was full, and any message that could not be encoded (logged at error
    /// level): nothing is published in its place.
    pub messages_unsent: u64,
    /// Broadcasts of other nodes known lost on the way (gaps in their sequence numbers).
    pub broadcasts_lost: u64,
    /// Deliveries the backend dropped because this node read them too slowly.
    pub deliveries_dropped: u64,
    /// Times the link to the engine was lost.
    pub disconnects: u64,
}

/// What [`Cluster::broadcast`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterBroadcast {
    /// Delivery to this node's own connections.
    pub local: Broadcast,
    /// Whether the message was queued for the other nodes (false: engine down or queue full,
    /// counted in [`ClusterCounters::broadcasts_undelivered`]).
    pub relayed: bool,
}

/// A registry's membership in a cluster: a cheap-to-clone handle, handed to whoever needs it
/// (wscope-axum's admin router, an application's handlers); the registry does not know it.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}
