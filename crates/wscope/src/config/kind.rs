//! The kinds of setting values — addresses, durations, sizes, counts, limits, rates, switches,
//! lists of networks and of origins, names and instance ids. Each kind reads the same text whether it comes from a flag, an environment
//! variable or the TOML file, and writes its default the way a user would.
//!
//! Every kind is bounded here, so that no source can hand the server a value it cannot use: a
//! duration is at most a week (a setting may say less: `Duration<3600>`), a size at most 1 GiB
//! (`Size<MIN, MAX>` per setting), a count at most 100 million, a token or a host name a few
//! hundred bytes. A value out of bounds is refused like a malformed one: one line, exit 2.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use ipnet::IpNet;
use toml::de::DeValue;

use wscope_axum::{AllowedHost, ClientIpHeader, Engine};
use wscope_core::units::{parse_count, parse_duration, parse_size};
use wscope_core::{Ipv6Prefix, OriginPattern, RateLimit};

/// How one kind of value is read and shown. A setting names its kind next to its type.
pub(crate) trait Kind: 'static {
    /// The value once read.
    type Value: Clone + Send + Sync + 'static;
    /// What `--help` writes after the flag (`--drain-timeout <DURATION>`).
    const PLACEHOLDER: &'static str;
    /// Whether each use of the flag adds to the value (a list) instead of being refused.
    const REPEATABLE: bool = false;
    /// Whether the value is a secret: `--help` never shows its variable's value.
    const SECRET: bool = false;
    /// Whether the flag alone means "on" (`--permessage-deflate`), a value being optional.
    const SWITCH: bool = false;

    /// Reads the text of a flag, of an environment variable or of a TOML string.
    fn parse(text: &str) -> Result<Self::Value, String>;

    /// Reads a TOML value: a string as [`Kind::parse`] does, a number as its digits, so that
    /// `drain_timeout = 3` means what `--drain-timeout 3` means.
    fn from_toml(value: &DeValue<'_>) -> Result<Self::Value, String> {
        Self::parse(&scalar_text(value)?)
    }

    /// The value as a user would write it, for `--help`'s `[default: …]`.
    fn show(value: &Self::Value) -> String;

    /// The names accepted, when there are only a few, for `--help`.
    fn choices() -> Vec<&'static str> {
        Vec::new()
    }

    /// Combines the uses of a repeatable flag; a single-use flag has only one.
    fn join(values: impl Iterator<Item = Self::Value>) -> Option<Self::Value> {
        values.last()
    }
}

/// The text of a TOML string or number (integers in any radix are written in decimal).
fn scalar_text(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(n) => i128::from_str_radix(n.as_str(), n.radix())
            .map(|n| n.to_string())
            .map_err(|_| format!("integer {n} out of range")),
        DeValue::Float(x) => Ok(x.as_str().to_owned()),
        other => Err(format!(
            "expected a string or a number, found {} {}",
            article(other.type_str()),
            other.type_str()
        )),
    }
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A socket address: `127.0.0.1:8080`, `[::]:9090`.
pub(crate) struct Addr;

impl Kind for Addr {
    type Value = SocketAddr;
    const PLACEHOLDER: &'static str = "ADDR";

    fn parse(text: &str) -> Result<SocketAddr, String> {
        text.trim().parse().map_err(|_| {
            format!("invalid address {text:?}: use IP:PORT, such as 0.0.0.0:8080 or [::1]:8080")
        })
    }

    fn show(value: &SocketAddr) -> String {
        value.to_string()
    }
}

/// A week, the longest duration any setting takes: an interval or a timeout longer than that
/// is a mistake, and a larger one overflows the clocks it is added to.
pub(crate) const WEEK_SECS: u64 = 7 * 24 * 3600;

/// A duration of at most `MAX_SECS`, as [`parse_duration`] reads it: `30s`, `500ms`, `2m`, or
/// seconds.
pub(crate) struct Duration<const MAX_SECS: u64 = WEEK_SECS>;

impl<const MAX_SECS: u64> Kind for Duration<MAX_SECS> {
    type Value = StdDuration;
    const PLACEHOLDER: &'static str = "DURATION";

    fn parse(text: &str) -> Result<StdDuration, String> {
        let value = parse_duration(text)?;
        let max = StdDuration::from_secs(MAX_SECS);
        if value > max {
            return Err(format!(
                "duration {:?} is too long: at most {}",
                text.trim(),
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }

    fn show(value: &StdDuration) -> String {
        humantime::format_duration(*value).to_string()
    }
}

/// 1 GiB, the largest size any setting takes unless it says less.
pub(crate) const GIB: usize = 1 << 30;

/// A size in bytes from `MIN` to `MAX`, as [`parse_size`] reads it: `512`, `64KiB`, `16M`, `2MB`.
pub(crate) struct Size<const MIN: usize = 1, const MAX: usize = GIB>;

impl<const MIN: usize, const MAX: usize> Kind for Size<MIN, MAX> {
    type Value = usize;
    const PLACEHOLDER: &'static str = "SIZE";

    fn parse(text: &str) -> Result<usize, String> {
        let value = parse_size(text)?;
        if !(MIN..=MAX).contains(&value) {
            return Err(format!(
                "size {:?} is out of range: use {} to {}",
                text.trim(),
                show_size(MIN),
                show_size(MAX)
            ));
        }
        Ok(value)
    }

    fn show(value: &usize) -> String {
        show_size(*value)
    }
}

/// A size as a user would write it: in the largest binary unit that divides it.
fn show_size(value: usize) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if value > 0 && value.is_multiple_of(1 << shift) {
            return format!("{}{unit}", value >> shift);
        }
    }
    format!("{value}B")
}

/// What an unset [`Unset`] setting means, for `--help`'s `[default: …]`.
pub(crate) trait Meaning: 'static {
    /// `the message size`, `a quarter of --max-buffered-bytes`.
    const TEXT: &'static str;
}

/// A value of kind `K` that may be left unset, for a setting whose default follows another
/// setting: `M` says what unset means.
pub(crate) struct Unset<K, M>(PhantomData<(K, M)>);

impl<K: Kind, M: Meaning> Kind for Unset<K, M> {
    type Value = Option<K::Value>;
    const PLACEHOLDER: &'static str = K::PLACEHOLDER;

    fn parse(text: &str) -> Result<Self::Value, String> {
        K::parse(text).map(Some)
    }

    fn show(value: &Self::Value) -> String {
        value.as_ref().map_or_else(|| M::TEXT.to_owned(), K::show)
    }
}

/// A hundred million, the largest count any setting takes unless it says less.
pub(crate) const MAX_COUNT: usize = 100_000_000;

/// A count from one to `MAX`, as [`parse_count`] reads it, that fits in `T`.
pub(crate) struct Count<T, const MAX: usize = MAX_COUNT>(PhantomData<T>);

impl<T, const MAX: usize> Kind for Count<T, MAX>
where
    T: TryFrom<usize> + ToString + Clone + Send + Sync + 'static,
{
    type Value = T;
    const PLACEHOLDER: &'static str = "N";

    fn parse(text: &str) -> Result<T, String> {
        let n = parse_count(text)?;
        let too_large = || format!("invalid count {text:?}: too large (at most {MAX})");
        if n > MAX {
            return Err(too_large());
        }
        T::try_from(n).map_err(|_| too_large())
    }

    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// The most items a list setting holds (networks, hosts, origins).
pub(crate) const MAX_ITEMS: usize = 1000;

/// One item of a [`List`]: how it is read and shown.
pub(crate) trait Item: Clone + Send + Sync + 'static {
    /// What `--help` writes after the flag.
    const PLACEHOLDER: &'static str;
    /// How an empty list shows in `--help`'s default (what no item means for the setting).
    const EMPTY: &'static str = "none";
    /// Reads one item (trimmed, not empty).
    fn parse(text: &str) -> Result<Self, String>;
    /// The item as a user would write it.
    fn show(&self) -> String;
}

/// Items comma-separated in one text; a repeatable flag, and in TOML either one such string or
/// an array of them. At most [`MAX_ITEMS`]; an empty list shows as [`Item::EMPTY`].
pub(crate) struct List<I>(PhantomData<I>);

impl<I: Item> Kind for List<I> {
    type Value = Vec<I>;
    const PLACEHOLDER: &'static str = I::PLACEHOLDER;
    const REPEATABLE: bool = true;

    fn parse(text: &str) -> Result<Vec<I>, String> {
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(I::parse)
            .collect::<Result<Vec<I>, String>>()?;
        check_items(items)
    }

    fn from_toml(value: &DeValue<'_>) -> Result<Vec<I>, String> {
        match value {
            DeValue::String(s) => Self::parse(s),
            DeValue::Array(items) => {
                let mut all = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => all.extend(Self::parse(s)?),
                        other => return Err(expected_strings(other)),
                    }
                }
                check_items(all)
            }
            other => Err(expected_strings(other)),
        }
    }

    fn show(value: &Vec<I>) -> String {
        if value.is_empty() {
            return I::EMPTY.to_owned();
        }
        let parts: Vec<String> = value.iter().map(I::show).collect();
        parts.join(",")
    }

    fn join(values: impl Iterator<Item = Vec<I>>) -> Option<Vec<I>> {
        values.reduce(|mut all, more| {
            all.extend(more);
            all
        })
    }
}

fn check_items<I>(items: Vec<I>) -> Result<Vec<I>, String> {
    if items.len() > MAX_ITEMS {
        return Err(format!(
            "{} items are too many: at most {MAX_ITEMS}",
            items.len()
        ));
    }
    Ok(items)
}

/// Networks (CIDRs or bare addresses).
pub(crate) type Networks = List<IpNet>;

impl Item for IpNet {
    const PLACEHOLDER: &'static str = "CIDR";

    fn parse(text: &str) -> Result<IpNet, String> {
        wscope_core::units::parse_net(text)
            .map_err(|_| format!("invalid CIDR {text:?}: use 10.0.0.0/8, 192.0.2.1 or ::1"))
    }

    fn show(&self) -> String {
        // A single host as it is usually written: `::1`, not `::1/128`.
        if self.prefix_len() == self.max_prefix_len() {
            self.addr().to_string()
        } else {
            self.to_string()
        }
    }
}

/// `Host` values the admin API also answers (`admin.internal`, `10.0.0.5:9090`).
pub(crate) type Hosts = List<AllowedHost>;

impl Item for AllowedHost {
    const PLACEHOLDER: &'static str = "HOST";

    fn parse(text: &str) -> Result<AllowedHost, String> {
        text.parse()
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

/// Origins whose pages may call the admin API (`https://ops.example.com`).
pub(crate) type Origins = List<Origin>;

/// An origin: `http` or `https`, `://`, and a host with an optional port; no path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// The origin as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Origin {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Item for Origin {
    const PLACEHOLDER: &'static str = "ORIGIN";

    fn parse(text: &str) -> Result<Origin, String> {
        let bad = || {
            format!("invalid origin {text:?}: use http:// or https://, a host and an optional port, such as https://ops.example.com")
        };
        let (scheme, authority) = text.split_once("://").ok_or_else(bad)?;
        let scheme_ok = ["http", "https"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s));
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if !scheme_ok || authority.contains('/') || authority.parse::<AllowedHost>().is_err() {
            return Err(bad());
        }
        Ok(Origin(format!(
            "{}://{authority}",
            scheme.to_ascii_lowercase()
        )))
    }

    fn show(&self) -> String {
        self.0.clone()
    }
}

fn expected_strings(found: &DeValue<'_>) -> String {
    let kind = found.type_str();
    format!(
        "expected a string or an array of strings, found {} {kind}",
        article(kind)
    )
}

/// An instance id, checked by [`wscope_core::check_instance_id`] whatever its source.
pub(crate) struct InstanceId;

impl Kind for InstanceId {
    type Value = String;
    const PLACEHOLDER: &'static str = "ID";

    fn parse(text: &str) -> Result<String, String> {
        wscope_core::check_instance_id(text.trim()).map_err(|e| e.to_string())
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

/// A path on the main listener for one of the server's own routes (`/health`): it starts with
/// `/`, is at most 256 bytes of visible ASCII, and holds no `?`, `#`, `{`, `}` or `*` (no query,
/// fragment or route pattern).
pub(crate) struct RoutePath;

impl Kind for RoutePath {
    type Value = String;
    const PLACEHOLDER: &'static str = "PATH";

    fn parse(text: &str) -> Result<String, String> {
        let text = text.trim();
        let ok = text.starts_with('/')
            && text.len() <= 256
            && text
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'{' | b'}' | b'*'));
        if ok {
            Ok(text.to_owned())
        } else {
            Err(format!(
                "invalid path {text:?}: start with / and use at most 256 visible ASCII \
                 characters, without ? # {{ }} *"
            ))
        }
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

/// A cluster name: what an instance id may be (it names keys and channels).
pub(crate) struct ClusterName;

impl Kind for ClusterName {
    type Value = String;
    const PLACEHOLDER: &'static str = "NAME";

    fn parse(text: &str) -> Result<String, String> {
        let text = text.trim();
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(text.to_owned())
        } else {
            Err(format!(
                "invalid cluster name {text:?}: use 1 to 64 of A-Z a-z 0-9 . _ -"
            ))
        }
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

/// An optional Redis URL (`redis://[:password@]host[:port][/db]`, or `rediss://`): kept out of
/// `--help`, as it may carry a password.
pub(crate) struct RedisUrl;

impl Kind for RedisUrl {
    type Value = Option<Secret>;
    const PLACEHOLDER: &'static str = "URL";
    const SECRET: bool = true;

    fn parse(text: &str) -> Result<Option<Secret>, String> {
        let text = text.trim();
        let Some(rest) = text
            .strip_prefix("redis://")
            .or_else(|| text.strip_prefix("rediss://"))
        else {
            return Err(format!(
                "invalid Redis URL: use redis://HOST[:PORT][/DB] (or rediss:// for TLS), not \
                 {:?}",
                text.split("://").next().unwrap_or_default()
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err("invalid Redis URL: no host (redis://127.0.0.1:6379)".to_owned());
        }
        Secret::new(text).map(Some)
    }

    fn show(value: &Option<Secret>) -> String {
        match value {
            Some(_) => "<set>".to_owned(),
            None => "none".to_owned(),
        }
    }
}

/// A secret (the admin token): shown nowhere, not even in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The longest token taken.
    pub const MAX_LEN: usize = 1024;

    /// Checks a token: 1 to [`Secret::MAX_LEN`] visible ASCII characters (what fits in an
    /// `Authorization: Bearer` header as written).
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let visible = text.bytes().all(|b| b.is_ascii_graphic());
        if text.is_empty() || text.len() > Self::MAX_LEN || !visible {
            return Err(format!(
                "invalid token: use 1-{} visible ASCII characters, no spaces",
                Self::MAX_LEN
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An optional secret, read as [`Secret::new`] checks it.
pub(crate) struct Token;

impl Kind for Token {
    type Value = Option<Secret>;
    const PLACEHOLDER: &'static str = "TOKEN";
    const SECRET: bool = true;

    fn parse(text: &str) -> Result<Option<Secret>, String> {
        Secret::new(text).map(Some)
    }

    fn show(value: &Option<Secret>) -> String {
        match value {
            Some(_) => "<set>".to_owned(),
            None => "none".to_owned(),
        }
    }
}

/// An optional path to a file.
pub(crate) struct File;

impl Kind for File {
    type Value = Option<PathBuf>;
    const PLACEHOLDER: &'static str = "FILE";

    fn parse(text: &str) -> Result<Option<PathBuf>, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > 4096 {
            return Err(format!("invalid path {text:?}"));
        }
        Ok(Some(PathBuf::from(text)))
    }

    fn show(value: &Option<PathBuf>) -> String {
        value
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    }
}

/// One of a few named choices (an engine, a log format).
pub(crate) struct OneOf<T>(PhantomData<T>);

/// A type with a few variants, each known by a name.
pub(crate) trait Named: Copy + Send + Sync + 'static {
    /// What the choice is, for error messages (`engine`).
    const WHAT: &'static str;
    /// Every variant.
    fn all() -> &'static [Self];
    /// The name a user writes.
    fn name(self) -> &'static str;

    /// Why `text` names no variant (by default: the names to use).
    fn unknown(text: &str) -> String {
        let names: Vec<&str> = Self::all().iter().map(|choice| choice.name()).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        let listed = if rest.is_empty() {
            (*last).to_owned()
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        format!("unknown {} {text:?}: use {listed}", Self::WHAT)
    }
}

impl<T: Named> Kind for OneOf<T> {
    type Value = T;
    const PLACEHOLDER: &'static str = "NAME";

    fn parse(text: &str) -> Result<T, String> {
        let text = text.trim();
        T::all()
            .iter()
            .copied()
            .find(|choice| choice.name() == text)
            .ok_or_else(|| T::unknown(text))
    }

    fn show(value: &T) -> String {
        value.name().to_owned()
    }

    fn choices() -> Vec<&'static str> {
        T::all().iter().map(|choice| choice.name()).collect()
    }
}

/// On or off: the flag alone is on; a value is `true`/`false` (also `on`/`off`, `yes`/`no`,
/// `1`/`0`), and in TOML a boolean.
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;
    const PLACEHOLDER: &'static str = "BOOL";
    const SWITCH: bool = true;

    fn parse(text: &str) -> Result<bool, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(format!("invalid switch {text:?}: use true or false")),
        }
    }

    fn from_toml(value: &DeValue<'_>) -> Result<bool, String> {
        match value {
            DeValue::Boolean(on) => Ok(*on),
            DeValue::String(s) => Self::parse(s),
            other => Err(format!(
                "expected a boolean, found {} {}",
                article(other.type_str()),
                other.type_str()
            )),
        }
    }

    fn show(value: &bool) -> String {
        value.to_string()
    }
}

impl Named for Engine {
    const WHAT: &'static str = "engine";

    fn all() -> &'static [Self] {
        Engine::ALL
    }

    fn name(self) -> &'static str {
        self.as_str()
    }

    /// Says when the engine exists but this build was made without its feature.
    fn unknown(text: &str) -> String {
        match text.parse::<Engine>() {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        }
    }
}

/// The runtime layout of a server (`--runtime`; what each runs is in `crate::runtime`). Declared
/// here with the other kinds a setting takes, so that the settings do not depend on the code that
/// builds the runtimes from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeLayout {
    /// One `current_thread` runtime per thread, each with its own `SO_REUSEPORT` listener.
    #[default]
    PerCore,
    /// One multi-thread runtime with `--threads` workers.
    Multi,
}

impl RuntimeLayout {
    /// Every layout.
    pub const ALL: &'static [Self] = &[Self::PerCore, Self::Multi];

    /// The name `--runtime` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerCore => "per-core",
            Self::Multi => "multi",
        }
    }
}

impl Named for RuntimeLayout {
    const WHAT: &'static str = "runtime";

    fn all() -> &'static [Self] {
        Self::ALL
    }

    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Named for ClientIpHeader {
    const WHAT: &'static str = "client IP header";

    fn all() -> &'static [Self] {
        ClientIpHeader::ALL
    }

    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// A cap: a whole number, where `0` means none (`--max-connections 0` is unlimited).
pub(crate) struct Limit<T>(PhantomData<T>);

impl<T> Kind for Limit<T>
where
    T: TryFrom<usize> + ToString + Clone + Send + Sync + 'static,
{
    type Value = T;
    const PLACEHOLDER: &'static str = "N";

    fn parse(text: &str) -> Result<T, String> {
        let n = match text.trim() {
            "0" => 0,
            other => parse_count(other).map_err(|_| {
                format!("invalid limit {text:?}: use a whole number, or 0 for no limit")
            })?,
        };
        T::try_from(n).map_err(|_| format!("invalid limit {text:?}: too large"))
    }

    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// A rate, as [`RateLimit`] reads it (`10/s`, `600/m`, `5/10s`); `0` or `off` for none.
pub(crate) struct Rate;

impl Kind for Rate {
    type Value = Option<RateLimit>;
    const PLACEHOLDER: &'static str = "RATE";

    fn parse(text: &str) -> Result<Option<RateLimit>, String> {
        match text.trim() {
            "0" | "off" => Ok(None),
            other => other
                .parse()
                .map(Some)
                .map_err(|e| format!("{e}, or 0 for no limit")),
        }
    }

    fn show(value: &Option<RateLimit>) -> String {
        value.map_or_else(|| "off".to_owned(), |rate| rate.to_string())
    }
}

/// The leading bits of an IPv6 address that name one client, as [`Ipv6Prefix`] reads them
/// (`64`, `/56`): 48 to 128.
pub(crate) struct Ipv6Group;

impl Kind for Ipv6Group {
    type Value = Ipv6Prefix;
    const PLACEHOLDER: &'static str = "BITS";

    fn parse(text: &str) -> Result<Ipv6Prefix, String> {
        text.parse()
            .map_err(|e: wscope_core::InvalidIpv6Prefix| e.to_string())
    }

    fn show(value: &Ipv6Prefix) -> String {
        value.to_string()
    }
}

/// `true` or `false`; in TOML a boolean or one of those strings.
pub(crate) struct Bool;

impl Kind for Bool {
    type Value = bool;
    const PLACEHOLDER: &'static str = "BOOL";

    fn parse(text: &str) -> Result<bool, String> {
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("invalid switch {text:?}: use true or false")),
        }
    }

    fn from_toml(value: &DeValue<'_>) -> Result<bool, String> {
        match value {
            DeValue::Boolean(b) => Ok(*b),
            other => Self::parse(&scalar_text(other)?),
        }
    }

    fn show(value: &bool) -> String {
        value.to_string()
    }

    fn choices() -> Vec<&'static str> {
        vec!["true", "false"]
    }
}

/// Origins and origin patterns allowed to open WebSockets (`https://app.example.com`,
/// `https://*.example.com`); none given: any origin.
pub(crate) type OriginPatterns = List<OriginPattern>;

impl Item for OriginPattern {
    const PLACEHOLDER: &'static str = "ORIGIN";
    const EMPTY: &'static str = "any";

    fn parse(text: &str) -> Result<OriginPattern, String> {
        text.parse()
            .map_err(|e: wscope_core::InvalidOriginPattern| e.to_string())
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_value(text: &str) -> DeValue<'_> {
        DeValue::parse(text).unwrap().into_inner()
    }

    #[test]
    fn toml_numbers_read_as_their_digits() {
        assert_eq!(
            <Duration>::from_toml(&toml_value("3")),
            Ok(StdDuration::from_secs(3))
        );
        assert_eq!(
            <Duration>::from_toml(&toml_value("0.5")),
            Ok(StdDuration::from_millis(500))
        );
        assert_eq!(<Size>::from_toml(&toml_value("0x400")), Ok(1024));
        assert_eq!(<Size>::from_toml(&toml_value("\"1MiB\"")), Ok(1 << 20));
        assert_eq!(<Count<u32>>::from_toml(&toml_value("1_000")), Ok(1000));
        let err = <Duration>::from_toml(&toml_value("true")).unwrap_err();
        assert!(err.contains("found a boolean"), "{err}");
    }

    #[test]
    fn networks_read_from_a_string_or_an_array() {
        let two: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert_eq!(Networks::parse("10.0.0.0/8, ::1"), Ok(two.clone()));
        assert_eq!(
            Networks::from_toml(&toml_value("\"10.0.0.0/8,::1\"")),
            Ok(two.clone())
        );
        assert_eq!(
            Networks::from_toml(&toml_value("[\"10.0.0.0/8\", \"::1\"]")),
            Ok(two.clone())
        );
        assert_eq!(Networks::from_toml(&toml_value("[]")), Ok(vec![]));
        assert!(Networks::from_toml(&toml_value("[1]")).is_err());
        assert!(Networks::parse("10.0.0.0/99").is_err());
        assert_eq!(
            Networks::join([two[..1].to_vec(), two[1..].to_vec()].into_iter()),
            Some(two)
        );
    }

    #[test]
    fn counts_fit_their_type() {
        assert_eq!(<Count<u32>>::parse("4096"), Ok(4096));
        assert!(<Count<u32>>::parse("0").is_err());
        assert!(<Count<u32>>::parse("99999999999").is_err());
    }

    #[test]
    fn names_list_the_choices() {
        let err = OneOf::<Engine>::parse("warp-drive").unwrap_err();
        assert_eq!(
            err,
            format!(
                "unknown engine \"warp-drive\": use {}",
                Engine::compiled_names()
            )
        );
    }

    #[test]
    fn defaults_show_as_written() {
        assert_eq!(<Size>::show(&(64 << 20)), "64MiB");
        assert_eq!(<Size>::show(&512), "512B");
        assert_eq!(<Duration>::show(&StdDuration::from_secs(30)), "30s");
        assert_eq!(
            <Duration>::show(&StdDuration::from_millis(1500)),
            "1s 500ms"
        );
    }

    #[test]
    fn switches_read_words_and_booleans() {
        assert_eq!(Switch::parse("on"), Ok(true));
        assert_eq!(Switch::parse("FALSE"), Ok(false));
        assert!(Switch::parse("maybe").is_err());
        assert_eq!(Switch::from_toml(&toml_value("true")), Ok(true));
        assert_eq!(Switch::from_toml(&toml_value("\"off\"")), Ok(false));
        let err = Switch::from_toml(&toml_value("1")).unwrap_err();
        assert!(
            err.contains("expected a boolean, found an integer"),
            "{err}"
        );
    }

    #[test]
    fn instance_ids_are_checked() {
        assert_eq!(InstanceId::parse("eu-1"), Ok("eu-1".to_owned()));
        assert!(InstanceId::parse("a b/c").is_err());
    }

    #[test]
    fn limits_take_zero_for_none() {
        assert_eq!(Limit::<usize>::parse("0"), Ok(0));
        assert_eq!(Limit::<usize>::parse("10_000"), Ok(10_000));
        assert_eq!(Limit::<u32>::from_toml(&toml_value("0")), Ok(0));
        let err = Limit::<usize>::parse("-1").unwrap_err();
        assert!(err.contains("0 for no limit"), "{err}");
        assert!(Limit::<u32>::parse("99999999999").is_err());
    }

    #[test]
    fn rates_read_as_written_or_off() {
        assert_eq!(Rate::parse("10/s"), Ok(RateLimit::per_second(10)));
        assert_eq!(Rate::parse("0"), Ok(None));
        assert_eq!(Rate::parse("off"), Ok(None));
        assert_eq!(
            Rate::from_toml(&toml_value("5")),
            Ok(RateLimit::per_second(5))
        );
        assert_eq!(Rate::show(&None), "off");
        assert_eq!(Rate::show(&"600/m".parse().ok()), "600/m");
        let err = Rate::parse("fast").unwrap_err();
        assert!(
            err.contains("invalid rate \"fast\"") && err.contains("0 for no limit"),
            "{err}"
        );
    }

    #[test]
    fn switches_are_true_or_false() {
        assert_eq!(Bool::parse("false"), Ok(false));
        assert_eq!(Bool::from_toml(&toml_value("true")), Ok(true));
        assert_eq!(Bool::from_toml(&toml_value("\"false\"")), Ok(false));
        assert!(Bool::parse("maybe")
            .unwrap_err()
            .contains("use true or false"));
        assert!(Bool::from_toml(&toml_value("1")).is_err());
    }

    #[test]
    fn origins_read_from_a_string_or_an_array() {
        let two: Vec<OriginPattern> = vec![
            "https://app.example.com".parse().unwrap(),
            "https://*.example.org".parse().unwrap(),
        ];
        let text = "https://app.example.com, https://*.example.org";
        assert_eq!(OriginPatterns::parse(text), Ok(two.clone()));
        assert_eq!(
            OriginPatterns::from_toml(&toml_value(&format!("\"{text}\""))),
            Ok(two.clone())
        );
        let array = "[\"https://app.example.com\", \"https://*.example.org\"]";
        assert_eq!(
            OriginPatterns::from_toml(&toml_value(array)),
            Ok(two.clone())
        );
        assert_eq!(
            OriginPatterns::show(&two),
            "https://app.example.com,https://*.example.org"
        );
        assert_eq!(OriginPatterns::show(&Vec::new()), "any");
        let err = OriginPatterns::parse("app.example.com").unwrap_err();
        assert!(
            err.starts_with("invalid origin \"app.example.com\""),
            "{err}"
        );
        assert!(OriginPatterns::from_toml(&toml_value("[1]")).is_err());
    }

    #[test]
    fn every_kind_is_bounded() {
        // Durations: at most a week by default, less where a setting says so.
        assert_eq!(
            <Duration>::parse("7d"),
            Ok(StdDuration::from_secs(WEEK_SECS))
        );
        for text in ["8d", "1e20", "18446744073709551615", "1e400"] {
            let err = <Duration>::parse(text).unwrap_err();
            assert!(
                err.contains("too long") || err.contains("invalid"),
                "{text}: {err}"
            );
        }
        assert_eq!(
            <Duration>::parse("18446744073709551615").unwrap_err(),
            "duration \"18446744073709551615\" is too long: at most 7days"
        );
        assert!(Duration::<3600>::parse("2h").is_err());
        // Sizes: 1 B to 1 GiB by default, a range of their own where a setting says so.
        assert_eq!(<Size>::parse("1GiB"), Ok(GIB));
        assert_eq!(
            <Size>::parse("2GiB").unwrap_err(),
            "size \"2GiB\" is out of range: use 1B to 1GiB"
        );
        assert!(Size::<1024, { 1 << 20 }>::parse("512").is_err());
        assert!(Size::<1024, { 1 << 20 }>::parse("2MiB").is_err());
        assert_eq!(Size::<1024, { 1 << 20 }>::parse("16KiB"), Ok(16 << 10));
        // Counts: at most a hundred million.
        assert!(<Count<usize>>::parse("100_000_001").is_err());
        // Lists: at most a thousand items.
        let many = vec!["10.0.0.1"; MAX_ITEMS + 1].join(",");
        assert!(Networks::parse(&many).is_err());
    }

    #[test]
    fn tokens_hosts_and_origins_are_checked() {
        assert_eq!(
            Token::parse(" s3cr3t\n").unwrap().unwrap().expose(),
            "s3cr3t"
        );
        for bad in [
            "",
            "two words",
            &"x".repeat(Secret::MAX_LEN + 1),
            "tab\there",
            "é",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", Secret::new("s3cr3t").unwrap()),
            "Secret(<redacted>)"
        );
        assert_eq!(Token::show(&None), "none");
        assert_eq!(
            Hosts::parse("admin.internal, 10.0.0.5:9090").unwrap().len(),
            2
        );
        assert!(Hosts::parse("bad host").is_err());
        assert_eq!(Hosts::show(&Vec::new()), "none");
        assert_eq!(
            Origins::parse("HTTPS://Ops.example.com/").unwrap()[0].as_str(),
            "https://Ops.example.com"
        );
        for bad in [
            "ops.example.com",
            "ftp://ops.example.com",
            "https://a/b",
            "https://",
        ] {
            assert!(Origins::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            OneOf::<ClientIpHeader>::parse("forwarded"),
            Ok(ClientIpHeader::Forwarded)
        );
    }
}
