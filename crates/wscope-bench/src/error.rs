//! What can stop a run before it measures anything, as one-line messages naming the flag or URL.

/// Why a `wscope bench` run could not start (failures during a run are counted in its report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The URL is not one the load generator can drive.
    #[error("{flag} {url}: {reason}")]
    Url {
        /// The flag that gave it (`--url`, `--sender-url`).
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL names another machine: only loopback targets are driven.
    #[error("{flag} {url}: only loopback targets are allowed (127.0.0.0/8, ::1, localhost)")]
    NotLoopback {
        /// The flag that gave it (`--url`, `--sender-url`).
        flag: &'static str,
        /// The URL as given.
        url: String,
    },
    /// Nothing accepted the connection, or every handshake failed.
    #[error("cannot connect to {url}: {reason}")]
    Unreachable {
        /// The URL as given.
        url: String,
        /// The first failure (`connection refused`, `HTTP error: 404 Not Found`, ...).
        reason: String,
    },
    /// The open-file limit is below what the connection count needs, even after raising the soft
    /// limit to the hard one.
    #[error(
        "{flag} {connections}: needs about {needed} open files but the limit is {limit}; \
         raise it (ulimit -n) or lower {flag}"
    )]
    FdLimit {
        /// The flag that asked for the connections (`-c`).
        flag: &'static str,
        /// The connections asked for.
        connections: usize,
        /// File descriptors the run needs.
        needed: u64,
        /// The limit in force.
        limit: u64,
    },
    /// An option is out of range.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag at fault.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}
