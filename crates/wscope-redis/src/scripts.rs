//! The lease scripts: compare-and-set with expiry, and release by the holder only. Each runs
//! atomically in Redis (EVALSHA, loaded again by EVAL when the server has forgotten it).
//!
//! A lease is a hash with fields `holder` and `value`, expiring after the ttl.

use redis::Script;

/// `KEYS[1]` lease key; `ARGV` holder, value, ttl in ms. Takes or renews the lease and answers
/// `{1}`, or answers `{0, value}` with the other holder's value and changes nothing.
const LEASE: &str = r"
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder == false or holder == ARGV[1] then
  redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'value', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1}
end
return {0, redis.call('HGET', KEYS[1], 'value') or ''}
";

/// `KEYS[1]` lease key; `ARGV[1]` holder. Deletes the lease if that holder has it; answers how
/// many keys were deleted (0 or 1).
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The two scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) lease: Script,
    pub(crate) release: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            lease: Script::new(LEASE),
            release: Script::new(RELEASE),
        }
    }
}
