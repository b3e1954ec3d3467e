//! Reading an admin token from a file (`wscope serve --admin-token-file`, `wscope top
//! --token-file`): bounded, trimmed, not empty, and refused when users other than its owner may
//! read or change it, as ssh refuses such a private key.
//!
//! Refused rather than warned about: whoever reads the token can close every connection, and a
//! warning in a log nobody reads at start-up protects nothing, while the fix is one `chmod`.
//! Container secrets mounted world-readable (Docker's 0444, Kubernetes' default 0644) need their
//! mode set (`mode: 0400`, `defaultMode: 0400`), or the token passed in `WSCOPE_ADMIN_TOKEN`.

use std::path::Path;

use super::file::{self, Bounded};

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be opened or read, or is not UTF-8.
    #[error("cannot read: {0}")]
    Unreadable(std::io::Error),
    /// It is larger than any token.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// Users other than its owner may read or change it.
    #[error(
        "mode {mode:04o} lets other users {what} the token: make it its owner's alone (chmod 600)"
    )]
    Exposed {
        /// The file's permission bits.
        mode: u32,
        /// `read` when group or others may read it, else `change`.
        what: &'static str,
    },
    /// It holds only white space.
    #[error("the file is empty")]
    Empty,
}

/// The token in `path`, trimmed, at most `max` bytes. The mode checked is that of the file
/// opened (a symbolic link's target), so it cannot change between the check and the read.
pub fn read(path: &Path, max: u64) -> Result<String, TokenFileError> {
    let file = std::fs::File::open(path).map_err(TokenFileError::Unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = file.metadata().map_err(TokenFileError::Unreadable)?;
        check_mode(metadata.permissions().mode())?;
    }
    let text = file::read_open(file, max).map_err(|e| match e {
        Bounded::TooLarge => TokenFileError::TooLarge(max),
        Bounded::Io(e) => TokenFileError::Unreadable(e),
    })?;
    match text.trim() {
        "" => Err(TokenFileError::Empty),
        token => Ok(token.to_owned()),
    }
}

/// Refuses a mode that gives group or others any access: reading the token is taking over the
/// admin API; writing it is choosing the token, or locking the operators out.
fn check_mode(mode: u32) -> Result<(), TokenFileError> {
    let mode = mode & 0o7777;
    match mode & 0o077 {
        0 => Ok(()),
        open if open & 0o044 != 0 => Err(TokenFileError::Exposed { mode, what: "read" }),
        _ => Err(TokenFileError::Exposed {
            mode,
            what: "change",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_may_have_access() {
        for mode in [0o600, 0o400, 0o700, 0o100600, 0o4600] {
            assert!(check_mode(mode).is_ok(), "{mode:o}");
        }
        let refused = |mode| check_mode(mode).unwrap_err().to_string();
        assert_eq!(
            refused(0o100644),
            "mode 0644 lets other users read the token: make it its owner's alone (chmod 600)"
        );
        assert!(refused(0o640).starts_with("mode 0640 lets other users read"));
        assert!(refused(0o604).starts_with("mode 0604 lets other users read"));
        assert!(refused(0o620).starts_with("mode 0620 lets other users change"));
        assert!(refused(0o602).starts_with("mode 0602 lets other users change"));
        assert!(refused(0o610).starts_with("mode 0610 lets other users change"));
    }
}
