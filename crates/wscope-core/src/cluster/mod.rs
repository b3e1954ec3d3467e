//! Cluster mode: many instances' registries seen and steered as one.
//!
//! A node ([`Cluster`]) joins its registry to a cluster through a [`ClusterBackend`] — Redis in
//! `wscope-redis`, or the in-process [`MemoryHub`] here — and from then on announces itself,
//! keeps a view of the other members, answers their surveys and routed actions, and relays
//! cluster-wide broadcasts.
//!
//! # Layout
//! - `backend`: the [`ClusterBackend`] trait (publish, subscribe, lease, link state).
//! - `memory`: [`MemoryHub`] and [`MemoryBackend`], the in-process engine.

mod backend;
mod memory;

pub use backend::{
    BackendError, BackendErrorKind, BackendFuture, ClusterBackend, Delivery, Lease, Link,
    DELIVERY_BUFFER,
};
pub use memory::{MemoryBackend, MemoryHub};
