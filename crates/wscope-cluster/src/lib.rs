//! wscope-cluster: cluster mode, many instances' registries seen and steered as one — a layer
//! above the core's registry, which knows nothing of it.
//!
//! A node ([`Cluster`]) joins its registry to a cluster through a [`ClusterBackend`] — Redis in
//! `wscope-redis`, or the in-process [`MemoryHub`] here — and from then on announces itself every
//! heartbeat (holding a lease on its instance id, so a second process with the same id is
//! refused), keeps a view of the other members (live, late, gone), answers their surveys and
//! routed actions, and relays cluster-wide broadcasts in order. Local service never waits on the
//! engine: when it is unreachable the node serves locally, says so ([`ClusterState`]) and rejoins
//! with backoff. The node holds its registry; the registry never holds the node: whoever needs
//! the cluster (an admin router, a handler that broadcasts cluster-wide) is handed the
//! [`Cluster`] handle that [`Cluster::join`] returns.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use wscope_cluster::{Cluster, ClusterConfig, MemoryHub};
//! use wscope_core::{Registry, RegistryConfig};
//!
//! let hub = MemoryHub::new();
//! let a = Registry::with_config(RegistryConfig::default().instance_id("a"));
//! let b = Registry::with_config(RegistryConfig::default().instance_id("b"));
//! let cluster = Cluster::join(&a, Arc::new(hub.backend()), ClusterConfig::new("demo")).await.unwrap();
//! Cluster::join(&b, Arc::new(hub.backend()), ClusterConfig::new("demo")).await.unwrap();
//! let stats = cluster.stats().await.unwrap();
//! assert_eq!(stats.instances_counted, 2);
//! # }
//! ```
//!
//! # Layout
//! - `backend`: the [`ClusterBackend`] trait (publish, subscribe, lease, link state) and the
//!   subscription's buffer ([`delivery_buffer`], bounded in deliveries and bytes).
//! - `memory`: [`MemoryHub`] and [`MemoryBackend`], the in-process engine.
//! - `config`: [`ClusterConfig`]; keys and channels are named here.
//! - `protocol`: the messages between nodes (JSON envelopes), and a member's answer to an admin
//!   action ([`AdminReply`]).
//! - `view`: the members and their status ([`Member`], [`MemberStatus`]).
//! - `shared`: what the handle and the tasks share — [`ClusterState`], the inner state, the
//!   publisher's queue entries.
//! - `handle`: the [`Cluster`] handle itself, [`ClusterError`], [`ClusterCounters`],
//!   [`ClusterBroadcast`] — below the tasks, so they can hold a handle without importing what
//!   spawns them.
//! - `tasks`: the publisher and the membership task (join, heartbeat, backoff, receive).
//! - `node`: joining ([`Cluster::join`]), state, members, counters, cluster-wide broadcast, leave.
//! - `survey`: questions to every member with a deadline — [`ClusterStats`], [`ClusterPage`],
//!   [`ClusterAdminAnswer`].
//! - `health`: [`ClusterHealth`], the admin listener's health answer with the cluster's state.

mod backend;
mod config;
mod handle;
mod health;
mod memory;
mod node;
mod protocol;
mod shared;
mod survey;
mod tasks;
mod view;

pub use backend::{
    delivery_buffer, BackendError, BackendErrorKind, BackendFuture, ClusterBackend, Deliveries,
    Delivery, DeliveryRefused, DeliverySender, Lease, Link, DELIVERY_BUFFER, DELIVERY_BUFFER_BYTES,
};
pub use config::ClusterConfig;
pub use handle::{Cluster, ClusterBroadcast, ClusterCounters, ClusterError};
pub use health::ClusterHealth;
pub use memory::{MemoryBackend, MemoryHub};
pub use protocol::{AdminReply, Announce, PROTOCOL_VERSION};
pub use shared::ClusterState;
pub use survey::{
    ClusterAdminAnswer, ClusterPage, ClusterStats, InstanceAnswer, InstanceCount, InstanceStats,
    MAX_CLUSTER_DEPTH,
};
pub use view::{Member, MemberStatus};
