//! How a server's threads run (`--runtime`, `--threads`): a `current_thread` tokio runtime per
//! core, each with its own main listener (the default), or one multi-thread work-stealing
//! runtime (`multi`, the layout before). A perf profile of `wscope proxy` under load showed some
//! 15 % of its CPU in thread switches as work stealing bounced small tasks between two cores;
//! with a runtime per core, a connection's tasks stay on the thread that accepted it.
//!
//! With `per-core`, the main thread runs a small `current_thread` runtime of its own for what
//! is not the main listener's: the admin listener, the signals, the registry's background tasks
//! (sweeps, stats lines), cluster mode and the drain. The `--threads` runtimes serve the main
//! listener only ([`wscope_axum::PerCore`], started by [`Server::serve`](crate::serve::Server)).

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

use crate::config::Listeners;
pub use crate::config::RuntimeLayout;

/// The threads a server runs with: `--threads`, or one per core.
pub fn threads(listeners: &Listeners) -> NonZeroUsize {
    listeners
        .threads
        .and_then(NonZeroUsize::new)
        .unwrap_or_else(cores)
}

/// The cores this process may run on (1 if unknown).
pub fn cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The runtime the main thread runs a server's subcommand on: with `per-core`, the small one
/// for the admin listener and the background work (the main listener's runtimes are started by
/// the server); with `multi`, the one runtime of `--threads` workers.
pub fn build(listeners: &Listeners) -> io::Result<Runtime> {
    match listeners.runtime {
        RuntimeLayout::PerCore => Builder::new_current_thread().enable_all().build(),
        RuntimeLayout::Multi => Builder::new_multi_thread()
            .worker_threads(threads(listeners).get())
            .enable_all()
            .build(),
    }
}
