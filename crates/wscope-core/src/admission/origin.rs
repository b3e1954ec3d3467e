//! The `Origin` allow-list (`--allowed-origin`, `--allow-missing-origin`): a browser names the
//! page that opens a WebSocket in `Origin`, and a server that accepts any origin lets any web page
//! open sockets with its visitors' cookies (cross-site WebSocket hijacking). Refused → 403.
//!
//! With no allow-list every origin is accepted. A request without `Origin` (a non-browser client:
//! browsers always send one) is accepted unless `allow_missing_origin` is off, with or without a
//! list. An `Origin` that is not `scheme://host[:port]` (`null`, from sandboxed frames and
//! `file:` pages, among them) matches no entry.

use std::fmt;
use std::str::FromStr;

use super::{ClientKey, ConnectionMeta, Gate, Refusal, Slot};

/// An entry of the `Origin` allow-list: an exact origin (`https://app.example.com`) or every
/// subdomain of a host (`https://*.example.com`: `https://a.example.com` and
/// `https://a.b.example.com`, not `https://example.com`).
///
/// Scheme and port are significant: `http://app.example.com` and `https://app.example.com:8443`
/// do not match `https://app.example.com`. Scheme and host compare case-insensitively; a default
/// port (80 for `http`/`ws`, 443 for `https`/`wss`) may be written or not.
///
/// ```
/// use wscope_core::OriginPattern;
/// let any_sub: OriginPattern = "https://*.example.com".parse().unwrap();
/// assert!(any_sub.matches("https://App.Example.com"));
/// assert!(!any_sub.matches("https://example.com"));
/// assert!(!any_sub.matches("http://app.example.com"));
/// assert!(!any_sub.matches("https://app.example.com:8443"));
/// assert!("https://example.com/app".parse::<OriginPattern>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OriginPattern {
    /// Lowercase.
    scheme: String,
    host: Host,
    /// The port, written or the scheme's default; `None` for a scheme without a default.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Host {
    /// This host only (lowercase).
    Exact(String),
    /// Every subdomain of this host (lowercase, without the `*.`).
    Subdomains(String),
}

/// An allow-list entry that is not an origin or an origin pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid origin {0:?}: use scheme://host[:port] (https://app.example.com), \
     or https://*.example.com for every subdomain"
)]
pub struct InvalidOriginPattern(pub String);

/// An origin's parts, lowercase: scheme, host, port (written or the scheme's default).
fn parts(text: &str) -> Option<(String, String, Option<u16>)> {
    let (scheme, rest) = text.trim().split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(v6) => {
            let (addr, after) = v6.split_once(']')?;
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (format!("[{}]", addr.to_ascii_lowercase()), port)
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
            None => (rest.to_ascii_lowercase(), None),
        },
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*')));
    if !host_ok {
        return None;
    }
    let port = match port {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => default_port(&scheme),
    };
    Some((scheme, host, port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl OriginPattern {
    /// Whether the `Origin` header value `origin` is allowed by this entry.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, host, port)) = parts(origin) else {
            return false;
        };
        if scheme != self.scheme || port != self.port || host.contains('*') {
            return false;
        }
        match &self.host {
            Host::Exact(exact) => host == *exact,
            Host::Subdomains(base) => host
                .strip_suffix(base.as_str())
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty()),
        }
    }
}

impl FromStr for OriginPattern {
    type Err = InvalidOriginPattern;

    fn from_str(text: &str) -> Result<Self, InvalidOriginPattern> {
        let err = || InvalidOriginPattern(text.to_owned());
        let (scheme, host, port) = parts(text).ok_or_else(err)?;
        let host = match host.strip_prefix("*.") {
            Some(base) if !base.is_empty() && !base.contains('*') => {
                Host::Subdomains(base.to_owned())
            }
            Some(_) => return Err(err()),
            None if host.contains('*') => return Err(err()),
            None => Host::Exact(host),
        };
        Ok(Self { scheme, host, port })
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match &self.host {
            Host::Exact(host) => f.write_str(host)?,
            Host::Subdomains(base) => write!(f, "*.{base}")?,
        }
        match self.port {
            Some(port) if Some(port) != default_port(&self.scheme) => write!(f, ":{port}"),
            _ => Ok(()),
        }
    }
}

/// Refuses an upgrade whose `Origin` is not on the list, or that has none when one is required.
#[derive(Debug)]
pub(crate) struct OriginGate {
    /// Empty: any origin.
    allowed: Vec<OriginPattern>,
    allow_missing: bool,
}

impl OriginGate {
    /// The gate for these origins (empty = any) and missing-origin rule; `None` when it would
    /// accept everything.
    pub(crate) fn new(allowed: &[OriginPattern], allow_missing: bool) -> Option<Self> {
        let gate = Self {
            allowed: allowed.to_vec(),
            allow_missing,
        };
        (!gate.allowed.is_empty() || !gate.allow_missing).then_some(gate)
    }
}

impl Gate for OriginGate {
    fn check(
        &self,
        meta: &ConnectionMeta,
        _key: Option<ClientKey>,
        _now: u64,
    ) -> Result<Option<Slot>, Refusal> {
        let allowed = match &meta.origin {
            None => self.allow_missing,
            Some(origin) => {
                self.allowed.is_empty() || self.allowed.iter().any(|p| p.matches(origin))
            }
        };
        if allowed {
            Ok(None)
        } else {
            Err(Refusal::OriginNotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pattern(text: &str) -> OriginPattern {
        text.parse().unwrap()
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let p = pattern("https://app.example.com");
        assert!(p.matches("https://app.example.com"));
        assert!(p.matches("HTTPS://APP.example.COM"));
        assert!(p.matches("https://app.example.com:443"));
        assert!(!p.matches("http://app.example.com"));
        assert!(!p.matches("https://app.example.com:8443"));
        assert!(!p.matches("https://evil.app.example.com"));
        assert!(!p.matches("https://app.example.com.evil.net"));
        assert!(!p.matches("https://app.example.com/"));
        assert!(!p.matches("null"));
        assert!(!p.matches(""));
        let p = pattern("http://localhost:3000");
        assert!(p.matches("http://localhost:3000"));
        assert!(!p.matches("http://localhost"));
        let p = pattern("http://[::1]:8080");
        assert!(p.matches("http://[::1]:8080"));
        assert!(!p.matches("http://[::2]:8080"));
        assert_eq!(
            pattern("https://app.example.com:443").to_string(),
            "https://app.example.com"
        );
        assert_eq!(
            pattern("HTTP://Local:3000").to_string(),
            "http://local:3000"
        );
    }

    #[test]
    fn patterns_match_subdomains_only() {
        let p = pattern("https://*.example.com");
        assert!(p.matches("https://a.example.com"));
        assert!(p.matches("https://a.b.example.com"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("https://.example.com"));
        assert!(!p.matches("https://evilexample.com"));
        assert!(!p.matches("https://a.example.com.evil.net"));
        assert!(!p.matches("http://a.example.com"));
        assert!(!p.matches("https://a.example.com:8443"));
        assert!(
            !p.matches("https://*.example.com"),
            "a header is not a pattern"
        );
        let p = pattern("https://*.example.com:8443");
        assert!(p.matches("https://a.example.com:8443"));
        assert!(!p.matches("https://a.example.com"));
        assert_eq!(p.to_string(), "https://*.example.com:8443");
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "app.example.com",
            "https://",
            "https://app.example.com/path",
            "https://app.example.com:99999",
            "https://app.example.com:",
            "https://a.*.example.com",
            "https://*",
            "https://*.",
            "https://user@app.example.com",
            "*://app.example.com",
            "https://[zz]",
        ] {
            let err = bad.parse::<OriginPattern>().unwrap_err().to_string();
            assert!(err.starts_with("invalid origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_gate_applies_the_list_and_the_missing_origin_rule() {
        let meta =
            |origin: Option<&str>| ConnectionMeta::new("/ws").origin(origin.map(String::from));
        assert!(OriginGate::new(&[], true).is_none(), "off by default");
        let allowed = [
            pattern("https://app.example.com"),
            pattern("https://*.example.org"),
        ];
        let gate = OriginGate::new(&allowed, true).unwrap();
        for ok in [
            None,
            Some("https://app.example.com"),
            Some("https://x.example.org"),
        ] {
            assert!(gate.check(&meta(ok), None, 0).is_ok(), "{ok:?}");
        }
        for refused in [
            Some("https://evil.example"),
            Some("null"),
            Some("https://example.org"),
        ] {
            let refusal = gate.check(&meta(refused), None, 0).unwrap_err();
            // Its status (403) is the HTTP crate's choice: `wscope_axum::UpgradeRefused`.
            assert_eq!(refusal, Refusal::OriginNotAllowed);
        }
        let gate = OriginGate::new(&allowed, false).unwrap();
        assert!(gate.check(&meta(None), None, 0).is_err());
        // Requiring an Origin without a list: any origin, but one.
        let gate = OriginGate::new(&[], false).unwrap();
        assert!(gate
            .check(&meta(Some("https://anything.example")), None, 0)
            .is_ok());
        assert!(gate.check(&meta(None), None, 0).is_err());
    }
}
