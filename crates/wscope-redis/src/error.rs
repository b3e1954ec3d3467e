//! Errors: [`ConnectError`] for a backend that cannot be built, and the mapping of the client's
//! errors onto [`BackendError`].

use redis::RedisError;
use wscope_cluster::{BackendError, BackendErrorKind};

/// Why [`RedisBackend::connect`](crate::RedisBackend::connect) refused to build a backend. Redis
/// being unreachable is never one of them: the backend connects in the background.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a usable Redis URL (the password, if any, is masked in `url`).
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid Redis options: {0}")]
    InvalidOptions(String),
    /// `connect` was called outside a Tokio runtime (it starts a background task).
    #[error("RedisBackend::connect must be called within a Tokio runtime")]
    NoRuntime,
}

/// `url` with the password (between `user:` and `@`) replaced by `***`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None if userinfo.is_empty() => String::new(),
        // `redis://secret@host`: the lone userinfo is taken as the password.
        None => "***".to_owned(),
    };
    format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
}

/// What kind of [`BackendError`] a client error is: the link's fault (`Unavailable`, `Timeout`)
/// or the engine's answer (`Engine`).
pub(crate) fn backend_error(what: &str, err: &RedisError) -> BackendError {
    let kind = if err.is_timeout() {
        BackendErrorKind::Timeout
    } else if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
    {
        BackendErrorKind::Unavailable
    } else {
        BackendErrorKind::Engine
    };
    BackendError::new(kind, format!("redis {what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_only_the_password() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://user:s3cret@host:6379/2"),
            "redis://user:***@host:6379/2"
        );
        assert_eq!(redact("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redact("redis://host/0?x=a@b"), "redis://host/0?x=a@b");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn io_failures_are_unavailable_and_server_errors_are_engine() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            backend_error("publish", &refused).kind,
            BackendErrorKind::Unavailable
        );
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(
            backend_error("publish", &timed_out).kind,
            BackendErrorKind::Timeout
        );
        let engine = RedisError::from((redis::ErrorKind::Client, "bad reply"));
        let err = backend_error("lease", &engine);
        assert_eq!(err.kind, BackendErrorKind::Engine);
        assert!(err.message.starts_with("redis lease: "), "{}", err.message);
    }
}
