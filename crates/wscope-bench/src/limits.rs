//! The open-file limit: one descriptor per connection, checked (and the soft limit raised to the
//! hard one) before a run opens anything, so a low `ulimit -n` is a clear error, not a flood of
//! "too many open files" halfway through.

use rlimit::Resource;

use crate::error::BenchError;

/// Descriptors kept aside besides the connections. A run has about a dozen open (stdio, the
/// runtime's epoll and eventfd, a signal pipe, a /proc read, the preflight probe); twice that
/// leaves room, and keeps the default 1,000 idle connections within a limit of 1,024.
const RESERVED: u64 = 24;

/// Makes sure `connections` sockets can be open at once, raising the soft limit if needed.
/// `flag` names the option that asked for them in the error.
pub(crate) fn ensure_open_files(connections: usize, flag: &'static str) -> Result<(), BenchError> {
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED);
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        // No limit to read (not Linux?): let the run find out.
        return Ok(());
    };
    if soft >= needed {
        return Ok(());
    }
    let limit = rlimit::increase_nofile_limit(hard).unwrap_or(soft);
    if limit >= needed {
        return Ok(());
    }
    Err(BenchError::FdLimit {
        flag,
        connections,
        needed,
        limit,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn absurd_counts_are_refused_naming_the_flag() {
        let e = ensure_open_files(usize::MAX / 2, "-c").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("-c "), "{text}");
        assert!(text.contains("open files"), "{text}");
        assert!(ensure_open_files(1, "-c").is_ok());
    }
}
