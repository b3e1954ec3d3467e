//! The connections of each request path, so that a broadcast to one path (a chat room) touches
//! only that path's members, not every connection of the registry.
//!
//! A map from path to the path's members, each a map from sequence number to entry; both are
//! sharded. A member is added and removed under the outer shard's read lock, and an empty path
//! is dropped under its write lock (by the periodic sweep), so a member can never land in a path
//! map that was just dropped.

use std::sync::Arc;

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

use crate::entry::Entry;
use crate::strings::SharedStr;

type Members = DashMap<u64, Arc<Entry>, FxBuildHasher>;

/// Path → members.
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    paths: DashMap<SharedStr, Members, FxBuildHasher>,
}

impl PathIndex {
    /// Adds `entry` under its path.
    pub(crate) fn insert(&self, entry: &Arc<Entry>) {
        if let Some(members) = self.paths.get(&entry.path) {
            members.insert(entry.seq, entry.clone());
            return;
        }
        self.paths
            .entry(entry.path.clone())
            .or_default()
            .insert(entry.seq, entry.clone());
    }

    /// Removes `entry` from its path.
    pub(crate) fn remove(&self, entry: &Entry) {
        if let Some(members) = self.paths.get(&entry.path) {
            members.remove(&entry.seq);
        }
    }

    /// Calls `f` with each member of `path`, holding no lock of the registry's main map (the
    /// member map's shard lock is held: `f` may take an outbox lock, never a map lock).
    pub(crate) fn for_each_member(&self, path: &str, mut f: impl FnMut(&Arc<Entry>)) {
        let Some(members) = self.paths.get(path) else {
            return;
        };
        for member in members.iter() {
            f(member.value());
        }
    }

    /// Drops the paths that have no member left.
    pub(crate) fn drop_empty(&self) {
        self.paths.retain(|_, members| !members.is_empty());
    }
}
