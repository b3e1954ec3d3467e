//! The instance id: what names this process in connection ids, stats, health and (in a cluster)
//! routing. It is checked in one place, whatever its source (a flag, the TOML file, the
//! `INSTANCE_ID` variable or the host name), because it ends up inside every connection id and
//! in URL paths such as `/api/connections/{id}`.

/// The environment variable the reference reads for the instance id; read only here.
pub const INSTANCE_ID_ENV: &str = "INSTANCE_ID";

/// The longest instance id accepted.
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// An instance id that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid instance id {0:?}: use 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-'")]
pub struct InvalidInstanceId(pub String);

/// Checks `s` as an instance id: 1–64 characters from `A-Z a-z 0-9 . _ -`, so that it is safe
/// inside connection ids, URL paths, Redis keys and log lines.
///
/// ```
/// use wscope_core::check_instance_id;
/// assert_eq!(check_instance_id("eu-1").unwrap(), "eu-1");
/// assert!(check_instance_id("a b/c").is_err());
/// ```
pub fn check_instance_id(s: &str) -> Result<String, InvalidInstanceId> {
    let ok = !s.is_empty()
        && s.len() <= MAX_INSTANCE_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(InvalidInstanceId(s.to_owned()))
    }
}

/// `INSTANCE_ID`, checked: `Ok(None)` when it is unset or blank.
pub fn instance_id_from_env() -> Result<Option<String>, InvalidInstanceId> {
    match std::env::var(INSTANCE_ID_ENV) {
        Ok(v) if !v.trim().is_empty() => check_instance_id(v.trim()).map(Some),
        _ => Ok(None),
    }
}

/// The host name made into a valid instance id (other characters become `-`), else `"wscope"`.
pub fn host_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_INSTANCE_ID_LEN)
        .collect();
    if cleaned.is_empty() {
        "wscope".to_owned()
    } else {
        cleaned
    }
}

/// `INSTANCE_ID` if set and valid, else the host name. An invalid `INSTANCE_ID` is logged and
/// ignored here (the `wscope` binary refuses it instead).
pub fn default_instance_id() -> String {
    match instance_id_from_env() {
        Ok(Some(id)) => id,
        Ok(None) => host_instance_id(),
        Err(e) => {
            tracing::warn!("{INSTANCE_ID_ENV}: {e}; using the host name");
            host_instance_id()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        assert!(check_instance_id("node-a.eu_1").is_ok());
        assert!(check_instance_id("").is_err());
        assert!(check_instance_id("a b").is_err());
        assert!(check_instance_id("a/b").is_err());
        assert!(check_instance_id(&"x".repeat(65)).is_err());
        assert!(check_instance_id(&"x".repeat(64)).is_ok());
        let host = host_instance_id();
        assert!(check_instance_id(&host).is_ok(), "{host:?}");
    }
}
