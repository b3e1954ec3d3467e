//! The caps on connection labels — the user id and tags an application attaches, often straight
//! from what a client sent (`?user=`, `?tag=`). Every connection keeps its own, every listing and
//! filter reads them, and tags are interned for the process: unbounded, one client's 3,950 tags
//! cost 50 ms of CPU per handshake and 102 KiB per connection. So a connection holds at most
//! [`MAX_TAGS`] tags of at most [`MAX_TAG_LEN`] bytes and a user id of at most [`MAX_USER_LEN`]
//! bytes, wherever they are attached: the [`ConnectionMeta`] builder, admission (a refusal,
//! 400), and the handles' `set_user` and `tag` at run time.

use std::collections::HashSet;

use super::ConnectionMeta;

/// Most tags one connection holds.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Longest user id, in bytes (an e-mail address fits).
pub const MAX_USER_LEN: usize = 256;

/// A label past its cap; the message names the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// A user id longer than [`MAX_USER_LEN`].
    #[error("user longer than {max} bytes")]
    UserTooLong {
        /// The cap.
        max: usize,
    },
    /// A tag longer than [`MAX_TAG_LEN`].
    #[error("tag longer than {max} bytes")]
    TagTooLong {
        /// The cap.
        max: usize,
    },
    /// More than [`MAX_TAGS`] distinct tags.
    #[error("more than {max} tags")]
    TooManyTags {
        /// The cap.
        max: usize,
    },
}

/// Whether `user` may be attached.
pub(crate) fn check_user(user: &str) -> Result<(), LabelError> {
    if user.len() > MAX_USER_LEN {
        return Err(LabelError::UserTooLong { max: MAX_USER_LEN });
    }
    Ok(())
}

/// Whether `tag` may be attached (to a connection holding fewer than [`MAX_TAGS`]).
pub(crate) fn check_tag(tag: &str) -> Result<(), LabelError> {
    if tag.len() > MAX_TAG_LEN {
        return Err(LabelError::TagTooLong { max: MAX_TAG_LEN });
    }
    Ok(())
}

/// Whether `meta`'s labels are within the caps (its fields are public, so admission checks what
/// the builder would have).
pub(crate) fn check(meta: &ConnectionMeta) -> Result<(), LabelError> {
    if let Some(user) = &meta.user {
        check_user(user)?;
    }
    meta.tags.iter().try_for_each(|tag| check_tag(tag))?;
    if meta.tags.len() > MAX_TAGS && distinct(&meta.tags).count() > MAX_TAGS {
        return Err(LabelError::TooManyTags { max: MAX_TAGS });
    }
    Ok(())
}

/// `tags` without repeats, in the order first seen: one pass with a set, not a scan per tag.
pub(crate) fn distinct(tags: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::with_capacity(tags.len());
    tags.iter()
        .map(String::as_str)
        .filter(move |t| seen.insert(*t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_caps_name_themselves() {
        assert_eq!(check_user(&"u".repeat(MAX_USER_LEN)), Ok(()));
        let err = check_user(&"u".repeat(MAX_USER_LEN + 1)).unwrap_err();
        assert_eq!(err.to_string(), "user longer than 256 bytes");
        assert_eq!(check_tag(&"t".repeat(MAX_TAG_LEN)), Ok(()));
        let err = check_tag(&"t".repeat(MAX_TAG_LEN + 1)).unwrap_err();
        assert_eq!(err.to_string(), "tag longer than 64 bytes");
        assert_eq!(
            LabelError::TooManyTags { max: MAX_TAGS }.to_string(),
            "more than 32 tags"
        );
    }

    #[test]
    fn admission_counts_distinct_tags() {
        let mut meta = ConnectionMeta::new("/ws");
        meta.tags = vec!["same".to_owned(); 1000];
        assert_eq!(check(&meta), Ok(()), "one tag, repeated");
        meta.tags = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert_eq!(check(&meta), Err(LabelError::TooManyTags { max: MAX_TAGS }));
        meta.tags.pop();
        meta.user = Some("u".repeat(MAX_USER_LEN + 1));
        assert_eq!(
            check(&meta),
            Err(LabelError::UserTooLong { max: MAX_USER_LEN })
        );
        let tags = ["b", "a", "b", "c", "a"].map(String::from);
        assert_eq!(distinct(&tags).collect::<Vec<_>>(), ["b", "a", "c"]);
    }
}
