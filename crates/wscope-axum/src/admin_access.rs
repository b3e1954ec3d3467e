//! Who may use the admin API: [`AdminConfig`] and the [`admin_guard`] middleware that applies
//! it to every admin request (token, `Host`, `Origin`/`Sec-Fetch-Site`, `Content-Type`).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use sha1::{Digest, Sha1};

use crate::error::ApiError;
use crate::serve::LocalAddr;

/// How the admin API is guarded: its bearer token and the `Host` and `Origin` values it answers
/// besides its own. Put it on the admin router with [`AdminConfig::layer`]:
///
/// ```
/// use wscope_axum::{admin_router, AdminConfig};
/// let admin = admin_router(wscope_core::Registry::new()).layer(
///     AdminConfig::new()
///         .token("s3cret")
///         .allowed_hosts(["admin.internal:9090".parse().unwrap()])
///         .layer(),
/// );
/// # let _: axum::Router = admin;
/// ```
///
/// Without one, the router is guarded by `AdminConfig::default()`: no token, and the `Host`,
/// `Origin` and `Content-Type` checks of [`admin_guard`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AdminConfig {
    /// The token's digest (never the token itself, so a `Debug` or a core dump cannot show it).
    token: Option<Token>,
    /// Further `Host` values answered, beside the listener's own and loopback.
    allowed_hosts: Arc<[AllowedHost]>,
    /// Further origins whose pages may call the API (lowercase, no trailing `/`).
    allowed_origins: Arc<[String]>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

impl AdminConfig {
    /// No token; `Host`, `Origin` and `Content-Type` checked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `Authorization: Bearer TOKEN` on every admin route but `/health` and the
    /// dashboard's page and assets, compared in constant time. An empty token matches nothing: every guarded request is refused.
    pub fn token(mut self, token: impl AsRef<str>) -> Self {
        self.token = Some(Token::new(token.as_ref()));
        self
    }

    /// Whether a token is required.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Also answers these `Host` values (`admin.internal`, any port, or `admin.internal:9090`).
    pub fn allowed_hosts(mut self, hosts: impl IntoIterator<Item = AllowedHost>) -> Self {
        self.allowed_hosts = hosts.into_iter().collect();
        self
    }

    /// Also answers pages from these origins (`https://ops.example.com`), e.g. a dashboard
    /// served from elsewhere. Compared whole and case-insensitively; no wildcards.
    pub fn allowed_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.allowed_origins = origins
            .into_iter()
            .map(|o| normalize_origin(o.as_ref()))
            .collect();
        self
    }

    /// A layer that makes the admin router's guard use this configuration
    /// (`admin_router(registry).layer(config.layer())`).
    pub fn layer(self) -> Extension<AdminConfig> {
        Extension(self)
    }

    /// Why `request` may not reach the admin API, if it may not; else whether it proved the
    /// token (always, when none is set).
    fn check(&self, request: &Request) -> Result<Authenticated, Refused> {
        let headers = request.headers();
        let local = request.extensions().get::<LocalAddr>().map(|l| l.0);
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(Authority::parse);
        let Some(host) = host.filter(|h| self.host_allowed(h, local)) else {
            return Err(Refused::Host);
        };
        if self.cross_site(headers, &host) && !crate::dashboard::is_page_navigation(request) {
            return Err(Refused::CrossSite);
        }
        let authenticated = Authenticated(self.token.as_ref().is_none_or(|t| t.verify(headers)));
        if !authenticated.0 {
            let path = request.uri().path();
            let public = path == "/health" || crate::dashboard::needs_no_token(path);
            if !public {
                return Err(Refused::Unauthorized);
            }
        }
        let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
        if !reads.contains(request.method()) && !is_json(headers) {
            return Err(Refused::ContentType);
        }
        Ok(authenticated)
    }

    /// Loopback names and the listener's own address at its port, or a listed host.
    fn host_allowed(&self, host: &Authority, local: Option<SocketAddr>) -> bool {
        let own = match &host.name {
            Name::Domain(name) => name == "localhost",
            Name::Ip(ip) => ip.is_loopback() || local.is_some_and(|l| canonical(l.ip()) == *ip),
        };
        // Without the listener's address (served by something other than `wscope_axum::serve`),
        // any port of a loopback name: a rebinding page cannot use those names.
        let own_port = local.is_none_or(|l| host.port.unwrap_or(80) == l.port());
        (own && own_port) || self.allowed_hosts.iter().any(|a| a.matches(host))
    }

    /// An `Origin` neither the listener's own nor listed, or a browser saying cross-site.
    fn cross_site(&self, headers: &HeaderMap, host: &Authority) -> bool {
        let origin = headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or(""));
        if let Some(origin) = origin {
            if self.allowed_origins.contains(&normalize_origin(origin)) {
                return false;
            }
            if !same_origin(origin, host) {
                return true;
            }
        }
        headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    }
}

/// The middleware in front of every admin route, with the [`AdminConfig`] that
/// [`AdminConfig::layer`] put on the request, or the default. Add it to routes of your own with
/// `axum::middleware::from_fn(admin_guard)`. Each request passes, in order:
///
/// 1. **Host** on the allow-list (the listener's own address, and `localhost`, `127.0.0.1`,
///    `[::1]`, at the listener's port, plus [`AdminConfig::allowed_hosts`]) — else 421. A DNS
///    rebinding page reaches the listener under the attacker's own name, so its `Host` gives it
///    away.
/// 2. **Same site**: an `Origin` that is neither the listener's own origin nor on
///    [`AdminConfig::allowed_origins`], or `Sec-Fetch-Site: cross-site` — else 403. A browser
///    sends these on a page's cross-site requests, which is what a CSRF attack is. One exception:
///    opening the dashboard page (`GET /`) from a link on another site, a top-level navigation
///    to a page that holds no data and changes nothing (its own API calls are same-origin).
/// 3. **Bearer token**, when one is set ([`AdminConfig::token`]), on every path but `/health`
///    and the dashboard's page and assets (`/`, `/dashboard/…`: the same for every server, no
///    data in them, and the page must load to ask for the token) — else 401 with
///    `WWW-Authenticate: Bearer`. `/health` without the token answers what the main listener's
///    does ([`public_health`](crate::public_health)), no more.
/// 4. **`Content-Type: application/json`** on anything but `GET`/`HEAD`/`OPTIONS` — else 415. A
///    cross-site form can only send `text/plain`, form or multipart bodies, never JSON.
///
/// 1, 2 and 4 hold with or without a token. Each refusal is a JSON `{"error": ...}` that says
/// which rule refused and nothing about the server.
pub async fn admin_guard(mut request: Request, next: Next) -> Response {
    static DEFAULT: OnceLock<AdminConfig> = OnceLock::new();
    let config = match request.extensions().get::<AdminConfig>() {
        Some(config) => config,
        None => DEFAULT.get_or_init(AdminConfig::default),
    };
    match config.check(&request) {
        Ok(authenticated) => {
            request.extensions_mut().insert(authenticated);
            next.run(request).await
        }
        Err(refused) => {
            tracing::debug!(
                path = request.uri().path(),
                why = refused.message(),
                "admin request refused"
            );
            refused.into_response()
        }
    }
}

/// What the guard found of the token, for the routes it lets through without one (`/health`
/// answers the public fields only to a request that did not prove it). True when no token is
/// set: then the listener's address and `Host` check are all that guard it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Authenticated(pub(crate) bool);

/// Why the guard refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Host,
    CrossSite,
    Unauthorized,
    ContentType,
}

impl Refused {
    fn message(self) -> &'static str {
        match self {
            Self::Host => "host not allowed",
            Self::CrossSite => "cross-site request refused",
            Self::Unauthorized => "unauthorized",
            Self::ContentType => "Content-Type must be application/json",
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Host => StatusCode::MISDIRECTED_REQUEST,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        let mut response = ApiError::new(status, self.message()).into_response();
        if self == Self::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A bearer token, kept as its digest.
#[derive(Clone)]
struct Token {
    digest: [u8; 20],
    /// An empty token is a configuration mistake: it must match nothing, not everything empty.
    empty: bool,
}

impl Token {
    fn new(token: &str) -> Self {
        Self {
            digest: Sha1::digest(token.as_bytes()).into(),
            empty: token.is_empty(),
        }
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    fn verify(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return false;
        };
        let digest: [u8; 20] = Sha1::digest(presented.as_bytes()).into();
        constant_time_eq(&digest, &self.digest) && !self.empty
    }
}

/// Compares two digests in time that does not depend on where they differ. Comparing digests
/// rather than the tokens themselves also hides the token's length; the digest is not there for
/// secrecy (a timing leak of a digest's prefix tells nothing about the token). `black_box`
/// keeps the compiler from turning the fold back into an early-exit comparison. (A hand-written
/// fold instead of the `subtle` crate: twenty lines do not warrant a dependency.)
fn constant_time_eq(a: &[u8; 20], b: &[u8; 20]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// A further `Host` value the admin API answers: `name` (any port) or `name:port`; `name` is a
/// domain name, an IPv4 address or a bracketed IPv6 address (`[2001:db8::1]:9090`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost(Authority);

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Authority::parse(s.trim()).map(Self).ok_or_else(|| {
            format!("invalid host {s:?}: use a name or address with an optional port, such as admin.internal or 10.0.0.5:9090")
        })
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.name {
            Name::Domain(d) => f.write_str(d)?,
            Name::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            Name::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.0.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl AllowedHost {
    /// Whether a request's `Host` is this one (any port if this one names none).
    fn matches(&self, host: &Authority) -> bool {
        self.0.name == host.name && self.0.port.is_none_or(|p| Some(p) == host.port)
    }
}

/// A `Host` value or the authority of an origin: a name and an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    name: Name,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Name {
    /// Lowercase.
    Domain(String),
    /// IPv4-mapped IPv6 addresses as IPv4.
    Ip(IpAddr),
}

impl Authority {
    fn parse(s: &str) -> Option<Self> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest.split_once(']')?;
            let ip: std::net::Ipv6Addr = ip.parse().ok()?;
            let name = Name::Ip(canonical(IpAddr::V6(ip)));
            let port = match after {
                "" => None,
                _ => Some(parse_port(after.strip_prefix(':')?)?),
            };
            return Some(Self { name, port });
        } else {
            match s.rsplit_once(':') {
                Some((host, port)) => (host, Some(parse_port(port)?)),
                None => (s, None),
            }
        };
        let name = match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Name::Ip(IpAddr::V4(ip)),
            Err(_) => {
                let ok = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                if !ok {
                    return None;
                }
                Name::Domain(host.to_ascii_lowercase())
            }
        };
        Some(Self { name, port })
    }
}

/// A port: digits only (`u16`'s parser would also take a `+`).
fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `origin` (`http://127.0.0.1:9090`) is the origin of a request whose `Host` is `host`.
fn same_origin(origin: &str, host: &Authority) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some(origin) = Authority::parse(authority) else {
        return false;
    };
    origin.name == host.name
        && origin.port.unwrap_or(default_port) == host.port.unwrap_or(default_port)
}

/// An origin as compared: lowercase, without a trailing `/`.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether the body is declared JSON (`application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn authority(s: &str) -> Authority {
        Authority::parse(s).unwrap()
    }

    #[test]
    fn hosts_parse_with_and_without_ports() {
        assert_eq!(
            authority("LocalHost:9090"),
            Authority {
                name: Name::Domain("localhost".into()),
                port: Some(9090)
            }
        );
        assert_eq!(authority("[::1]").port, None);
        assert_eq!(
            authority("[::ffff:127.0.0.1]:1").name,
            Name::Ip([127, 0, 0, 1].into())
        );
        for bad in [
            "", "a b", "host:", "host:x", "::1", "[::1", "[::1]x", "h:99999",
        ] {
            assert!(Authority::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            "Admin.Internal:9090"
                .parse::<AllowedHost>()
                .unwrap()
                .to_string(),
            "admin.internal:9090"
        );
    }

    #[test]
    fn the_default_answers_loopback_and_its_own_address_at_its_port() {
        let c = AdminConfig::default();
        let local: SocketAddr = "10.0.0.5:9090".parse().unwrap();
        for ok in [
            "localhost:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "10.0.0.5:9090",
        ] {
            assert!(c.host_allowed(&authority(ok), Some(local)), "{ok}");
        }
        for refused in [
            "evil.example:9090",
            "localhost:80",
            "localhost",
            "10.0.0.6:9090",
        ] {
            assert!(
                !c.host_allowed(&authority(refused), Some(local)),
                "{refused}"
            );
        }
        // Not knowing its own address: loopback names at any port.
        assert!(c.host_allowed(&authority("127.0.0.1:1234"), None));
        assert!(!c.host_allowed(&authority("evil.example:1234"), None));
        let listed = c.allowed_hosts(["ops.example".parse().unwrap()]);
        assert!(listed.host_allowed(&authority("ops.example:443"), Some(local)));
    }

    #[test]
    fn origins_are_same_site_or_listed() {
        let host = authority("127.0.0.1:9090");
        assert!(same_origin("http://127.0.0.1:9090", &host));
        assert!(!same_origin(
            "https://127.0.0.1:9090",
            &authority("127.0.0.1")
        ));
        assert!(same_origin(
            "https://a.example",
            &authority("a.example:443")
        ));
        assert!(!same_origin("http://evil.example", &host));
        assert!(!same_origin("null", &host));
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://ops.example/"),
        );
        let c = AdminConfig::new();
        assert!(c.cross_site(&h, &host));
        let c = c.allowed_origins(["HTTPS://ops.example"]);
        assert!(!c.cross_site(&h, &host));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(c.cross_site(&h, &host));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!c.cross_site(&h, &host));
    }

    #[test]
    fn tokens_match_exactly_and_an_empty_one_matches_nothing() {
        let bearer = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        let t = Token::new("s3cret");
        assert!(t.verify(&bearer("Bearer s3cret")));
        assert!(t.verify(&bearer("bearer s3cret")));
        assert!(!t.verify(&bearer("Bearer s3cre")));
        assert!(!t.verify(&bearer("Basic s3cret")));
        assert!(!t.verify(&bearer("s3cret")));
        assert!(!t.verify(&HeaderMap::new()));
        assert!(!Token::new("").verify(&bearer("Bearer ")));
        assert!(constant_time_eq(&[7; 20], &[7; 20]));
        assert!(!constant_time_eq(
            &[7; 20],
            &[[7; 19].as_slice(), &[8]].concat().try_into().unwrap()
        ));
    }

    #[test]
    fn json_bodies_only() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&h));
    }
}
