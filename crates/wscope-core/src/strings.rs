//! Strings shared by many connections (paths, user agents, id prefixes), stored once for the whole
//! process and copied as plain references, so that reading them (every snapshot reads every
//! entry's) touches no shared reference count: two snapshots at once would otherwise fight over
//! the same cache lines for every entry.

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most distinct strings kept for the process's life.
const MAX_STRINGS: usize = 4096;
/// Most bytes kept for the process's life (the bound on what interning may hold on to).
const MAX_BYTES: usize = 1 << 20;
/// Longest string interned: what many connections share is short (a path, a user agent — cut
/// at 256 bytes by default —, a tag), and a long one would use the table's bytes up for few
/// strings (a 16 KB path took 1/64 of it). Longer strings are counted.
pub(crate) const MAX_INTERNED_LEN: usize = 256;

/// A string shared among connections: interned for the process (the usual case: a service sees
/// a few paths and user agents), or reference-counted when it is long or once the bounded table
/// is full, so clients sending endless distinct user agents cannot grow it.
#[derive(Clone)]
pub enum SharedStr {
    /// Interned: copying it touches nothing shared.
    Interned(&'static str),
    /// Past the table's bound.
    Counted(Arc<str>),
}

impl SharedStr {
    /// Interns `s` if it is short and the table has room, else counts it.
    pub(crate) fn new(s: &str) -> Self {
        if s.len() > MAX_INTERNED_LEN {
            // Without the process-wide lock: nothing long is looked up or kept there.
            return Self::Counted(Arc::from(s));
        }
        static TABLE: OnceLock<Mutex<(HashSet<&'static str>, usize)>> = OnceLock::new();
        let table = TABLE.get_or_init(Default::default);
        let mut guard = table.lock().unwrap_or_else(|e| e.into_inner());
        let (set, bytes) = &mut *guard;
        if let Some(&interned) = set.get(s) {
            return Self::Interned(interned);
        }
        if set.len() < MAX_STRINGS && *bytes + s.len() <= MAX_BYTES {
            // Deliberately kept for the process's life, within the bounds above.
            let interned: &'static str = Box::leak(s.to_owned().into_boxed_str());
            set.insert(interned);
            *bytes += s.len();
            return Self::Interned(interned);
        }
        Self::Counted(Arc::from(s))
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Self::Interned(s) => s,
            Self::Counted(s) => s,
        }
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    /// Read strings are counted, never interned: they come from outside (a peer's stats), and the
    /// intern table is for what this process serves.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::Counted(Arc::from(s)))
    }
}

impl Default for SharedStr {
    fn default() -> Self {
        Self::Interned("")
    }
}

impl PartialEq for SharedStr {
    /// Equal text is equal, interned or not.
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedStr {}

impl std::borrow::Borrow<str> for SharedStr {
    /// Maps keyed by `SharedStr` can be asked with a `&str` (hash and equality are the text's).
    fn borrow(&self) -> &str {
        self
    }
}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        &**self == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let (a, b) = (
            SharedStr::new("/ws/strings-test"),
            SharedStr::new("/ws/strings-test"),
        );
        match (&a, &b) {
            (SharedStr::Interned(x), SharedStr::Interned(y)) => assert!(std::ptr::eq(*x, *y)),
            _ => panic!("not interned"),
        }
        assert_eq!(a, "/ws/strings-test");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"/ws/strings-test\"");
    }

    #[test]
    fn long_strings_are_counted_not_interned() {
        let edge = "e".repeat(MAX_INTERNED_LEN);
        assert!(matches!(SharedStr::new(&edge), SharedStr::Interned(_)));
        let long = "l".repeat(MAX_INTERNED_LEN + 1);
        let (a, b) = (SharedStr::new(&long), SharedStr::new(&long));
        assert!(matches!(a, SharedStr::Counted(_)), "{a:?}");
        assert_eq!((a == b, *a == long), (true, true));
    }
}
