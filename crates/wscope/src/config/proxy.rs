//! The proxy group (`wscope proxy` only): where WebSockets and other requests are relayed — the
//! fallback upstream and routes by path prefix — and how long an upstream may take to answer.

use std::path::PathBuf;
use std::time::Duration;

use wscope_axum::relay::RelayConfig;

use super::declare::declare_group;
use super::kind::{self, Item, Kind};

declare_group! {
    /// Where requests are relayed.
    pub struct ProxyRoutes (PartialProxyRoutes) "Proxy" {
        /// The upstream every request goes to unless a route says otherwise
        /// (http://HOST:PORT; https:// for TLS).
        upstream: Option<UpstreamUrl> as UpstreamKind = None;
        /// A path prefix sent to another upstream (/prefix=http://HOST:PORT; repeatable; the
        /// longest prefix wins).
        #[key = "route"]
        routes: Vec<RouteSpec> as kind::List<RouteSpec> = Vec::new();
        /// How long an upstream may take to accept and answer before the client gets 504.
        upstream_timeout: Duration as kind::Duration<3600> = RelayConfig::DEFAULT_TIMEOUT;
        /// PEM bundle of the CAs https:// and wss:// upstreams are checked against (unset: the
        /// system's roots).
        upstream_ca: Option<PathBuf> as kind::File = None;
    }
}

/// An upstream's base URL: `http://` or `ws://` (`https://` or `wss://` over TLS), a host and
/// an optional port and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl(String);

impl UpstreamUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| format!("invalid upstream {text:?}: {why}");
        let uri: axum::http::Uri = text
            .parse()
            .map_err(|_| bad("use http://HOST:PORT (or https://, ws://, wss://)"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https" | "ws" | "wss")) {
            return Err(bad("use http://HOST:PORT (or https://, ws://, wss://)"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("no query in an upstream's URL"));
        }
        Ok(Self(text.to_owned()))
    }
}

/// [`UpstreamUrl`], optional.
pub(crate) struct UpstreamKind;

impl Kind for UpstreamKind {
    type Value = Option<UpstreamUrl>;
    const PLACEHOLDER: &'static str = "URL";

    fn parse(text: &str) -> Result<Self::Value, String> {
        UpstreamUrl::parse(text).map(Some)
    }

    fn show(value: &Self::Value) -> String {
        value
            .as_ref()
            .map_or_else(|| "none".to_owned(), |u| u.0.clone())
    }
}

/// One route: a path prefix and its upstream (`/chat=http://127.0.0.1:3001`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// The prefix: `/` then path segments, without a trailing `/` (but `/` itself).
    pub prefix: String,
    /// Where its requests go.
    pub upstream: UpstreamUrl,
}

impl Item for RouteSpec {
    const PLACEHOLDER: &'static str = "PREFIX=URL";

    fn parse(text: &str) -> Result<RouteSpec, String> {
        let (prefix, url) = text
            .split_once('=')
            .ok_or_else(|| format!("invalid route {text:?}: use /prefix=http://HOST:PORT"))?;
        let prefix = prefix.trim();
        let ok = prefix.starts_with('/')
            && prefix.len() <= 256
            && prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'=' | b','));
        if !ok {
            return Err(format!(
                "invalid route prefix {prefix:?}: start with / and use visible ASCII without ? # = ,"
            ));
        }
        let prefix = match prefix.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        Ok(RouteSpec {
            prefix,
            upstream: UpstreamUrl::parse(url)?,
        })
    }

    fn show(&self) -> String {
        format!("{}={}", self.prefix, self.upstream.0)
    }
}

impl std::str::FromStr for RouteSpec {
    type Err = String;

    /// `/prefix=http://HOST:PORT`, as `--route` takes it.
    fn from_str(text: &str) -> Result<Self, String> {
        <Self as Item>::parse(text)
    }
}

impl ProxyRoutes {
    /// The routes, the fallback last as `/`; refused when there is nothing to relay to or a
    /// prefix is given twice (naming the flag).
    pub fn table(&self) -> Result<Vec<RouteSpec>, String> {
        let mut table = self.routes.clone();
        for (i, route) in table.iter().enumerate() {
            if table[..i].iter().any(|r| r.prefix == route.prefix) {
                return Err(format!(
                    "--route: the prefix {} is given twice",
                    route.prefix
                ));
            }
        }
        match &self.upstream {
            Some(upstream) if !table.iter().any(|r| r.prefix == "/") => table.push(RouteSpec {
                prefix: "/".to_owned(),
                upstream: upstream.clone(),
            }),
            Some(_) => {
                return Err("--upstream and --route /=… both name where / goes: give one".into())
            }
            None if table.is_empty() => {
                return Err("--upstream: required (or at least one --route)".to_owned())
            }
            None => {}
        }
        Ok(table)
    }

    /// How relays open their upstreams.
    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig::default().timeout(self.upstream_timeout)
    }
}

impl UpstreamUrl {
    /// Whether it is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("https://") || self.0.starts_with("wss://")
    }
}
