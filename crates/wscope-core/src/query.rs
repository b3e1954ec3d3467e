//! The connections query: which connections (a [`ConnectionFilter`]), in what order
//! ([`SortKey`], [`SortOrder`]), which page (a limit, and an offset or a [`Cursor`]) and which
//! columns ([`Fields`]) — parsed from the key/value pairs of `GET /api/connections`
//! ([`ConnectionQuery::from_pairs`]) with errors naming the parameter, and carried over the wire
//! as serde types so a cluster peer can run the same query. [`crate::Registry::connections`]
//! answers it with a [`crate::wire::ConnectionPage`].
//!
//! ```
//! use wscope_core::query::{ConnectionQuery, SortKey};
//! let q = ConnectionQuery::from_pairs([("sort", "idle"), ("limit", "50"), ("tag", "beta")]).unwrap();
//! assert_eq!(q.sort, SortKey::Idle);
//! assert_eq!(q.limit, 50);
//! let err = ConnectionQuery::from_pairs([("sort", "size")]).unwrap_err();
//! assert_eq!(err.param(), "sort");
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::snapshot::ConnectionInfo;
use crate::state::ConnectionState;

/// What the connections can be ordered by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    /// Age: registration order (the id's sequence number). The default; pages in this order are
    /// read from an ordered index in time proportional to the page.
    #[default]
    Age,
    /// Idle time (from the last text or binary message).
    Idle,
    /// Messages in plus out.
    Messages,
    /// Payload bytes in plus out.
    Bytes,
    /// Bytes waiting in the outbound queue.
    Queued,
    /// Bytes the connection holds now (`memoryBytes`: its engine's buffers and partly received
    /// message, and its queue).
    Memory,
    /// The last ping round trip (connections without one come last in either order).
    Rtt,
}

impl SortKey {
    /// Every key, as written in `sort=`.
    pub const ALL: [SortKey; 7] = [
        Self::Age,
        Self::Idle,
        Self::Messages,
        Self::Bytes,
        Self::Queued,
        Self::Memory,
        Self::Rtt,
    ];

    /// Its name in `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Idle => "idle",
            Self::Messages => "messages",
            Self::Bytes => "bytes",
            Self::Queued => "queued",
            Self::Memory => "memory",
            Self::Rtt => "rtt",
        }
    }
}

impl FromStr for SortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown sort {s:?}: use {}", names.join(", "))
            })
    }
}

/// Ascending or descending. The default is descending for every key: the oldest, idlest,
/// busiest, most queued or slowest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest first (the default).
    #[default]
    Desc,
}

impl SortOrder {
    /// Its name in `order=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

impl FromStr for SortOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            _ => Err(format!("unknown order {s:?}: use asc or desc")),
        }
    }
}

/// Which connections: every condition set must hold (an empty filter matches every connection).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConnectionFilter {
    /// In this state (`OPEN`, …; read in any case).
    #[serde(
        deserialize_with = "state_any_case",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<ConnectionState>,
    /// Idle for at least this long (`30s`, `2m`, or seconds).
    #[serde(
        with = "crate::wire::opt_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_idle: Option<Duration>,
    /// From an address in this network (an IP is a network of one).
    #[serde(
        with = "crate::wire::opt_net_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip: Option<IpNet>,
    /// Whose user agent contains this (ASCII case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ua: Option<String>,
    /// On exactly this request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// With this tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// With this user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Relayed to this upstream (`wscope proxy`; as the `upstream` column shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl ConnectionFilter {
    /// The filter parameters' names, as in the query and the `close_matching` filter object.
    pub const PARAMS: [&'static str; 8] = [
        "state", "min_idle", "ip", "ua", "path", "tag", "user", "upstream",
    ];

    /// Whether no condition is set (it matches every connection).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Sets [`ConnectionFilter::state`].
    pub fn state(mut self, state: ConnectionState) -> Self {
        self.state = Some(state);
        self
    }

    /// Sets [`ConnectionFilter::min_idle`].
    pub fn min_idle(mut self, idle: Duration) -> Self {
        self.min_idle = Some(idle);
        self
    }

    /// Sets [`ConnectionFilter::ip`].
    pub fn ip(mut self, net: IpNet) -> Self {
        self.ip = Some(net);
        self
    }

    /// Sets [`ConnectionFilter::ua`].
    pub fn ua(mut self, part: impl Into<String>) -> Self {
        self.ua = Some(part.into());
        self
    }

    /// Sets [`ConnectionFilter::path`].
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets [`ConnectionFilter::tag`].
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Sets [`ConnectionFilter::user`].
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets [`ConnectionFilter::upstream`].
    pub fn upstream(mut self, upstream: impl Into<String>) -> Self {
        self.upstream = Some(upstream.into());
        self
    }

    /// Whether an address passes [`ConnectionFilter::ip`] (IPv4-mapped addresses match their
    /// IPv4 form).
    pub(crate) fn ip_matches(&self, addr: Option<IpAddr>) -> bool {
        match self.ip {
            None => true,
            Some(net) => {
                addr.is_some_and(|ip| net.contains(&ip.to_canonical()) || net.contains(&ip))
            }
        }
    }

    /// Whether a user agent passes [`ConnectionFilter::ua`].
    pub(crate) fn ua_matches(&self, ua: Option<&str>) -> bool {
        match &self.ua {
            None => true,
            Some(part) => ua.is_some_and(|ua| contains_ignore_ascii_case(ua, part)),
        }
    }

    /// Sets one condition from a query parameter; `Ok(false)` if `key` names none.
    fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "state" => self.state = Some(parse_state(value)?),
            "min_idle" => self.min_idle = Some(crate::units::parse_duration(value)?),
            "ip" => self.ip = Some(crate::units::parse_net(value)?),
            "ua" => self.ua = Some(non_empty(value)?),
            "path" => self.path = Some(non_empty(value)?),
            "tag" => self.tag = Some(non_empty(value)?),
            "user" => self.user = Some(non_empty(value)?),
            "upstream" => self.upstream = Some(non_empty(value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

/// A state as the reference writes it, in any case.
fn parse_state(value: &str) -> Result<ConnectionState, String> {
    [
        ConnectionState::Connecting,
        ConnectionState::Open,
        ConnectionState::Closing,
        ConnectionState::Closed,
    ]
    .into_iter()
    .find(|s| s.as_str().eq_ignore_ascii_case(value))
    .ok_or_else(|| format!("unknown state {value:?}: use CONNECTING, OPEN, CLOSING or CLOSED"))
}

/// A filter's `state` as JSON: the reference's names, in any case (as in the query).
fn state_any_case<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ConnectionState>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_state(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Where a page of connections starts after: the previous page's last row, as its sort key and
/// sequence number. Connections coming and going between pages do not move it, so a connection
/// that stays open (and keeps its sort key) is neither repeated nor skipped.
///
/// Opaque text on the wire (`next` and `cursor=`); it names the sort and order it was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The sort it was made for.
    pub sort: SortKey,
    /// The order it was made for.
    pub order: SortOrder,
    /// The last row's rank (its sort key, arranged so that pages run in ascending rank).
    pub rank: u64,
    /// The last row's sequence number (the tie-break).
    pub seq: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{:x}.{:x}",
            self.sort.as_str(),
            self.order.as_str(),
            self.rank,
            self.seq
        )
    }
}

impl FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid cursor {s:?}: pass the previous page's `next` unchanged");
        let mut parts = s.split('.');
        let (Some(sort), Some(order), Some(rank), Some(seq), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        Ok(Self {
            sort: sort.parse().map_err(|_| bad())?,
            order: order.parse().map_err(|_| bad())?,
            rank: u64::from_str_radix(rank, 16).map_err(|_| bad())?,
            seq: u64::from_str_radix(seq, 16).map_err(|_| bad())?,
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// At the first matching connection.
    #[default]
    First,
    /// After skipping this many matching connections (O(offset + limit) in the default sort).
    Offset(u64),
    /// After the row a previous page ended on.
    After(Cursor),
}

/// The columns of each row: [`ConnectionInfo`]'s JSON names; `id` is always included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Fields(Vec<&'static str>);

impl Fields {
    /// The picked names, `id` first.
    pub fn names(&self) -> &[&'static str] {
        &self.0
    }

    /// These fields as the stats' JSON writer takes them.
    pub(crate) fn mask(&self) -> crate::json::FieldMask {
        crate::json::FieldMask::of(&self.0)
    }

    /// `rows` as a JSON array, each row cut to these fields: byte for byte what serde writes for
    /// the rows [projected](Self::project) (each row's keys in the order of their names),
    /// without building a map per row. The cluster's answers list their rows with it.
    ///
    /// ```
    /// use wscope_core::query::Fields;
    /// use wscope_core::{ConnectionMeta, Registry};
    /// let registry = Registry::new();
    /// let _held = registry.accept(ConnectionMeta::new("/ws")).unwrap();
    /// let rows = registry.snapshot().connections;
    /// let fields: Fields = "state,age".parse().unwrap();
    /// let mut json = Vec::new();
    /// fields.write_rows(&rows, &mut json);
    /// let projected: Vec<_> = rows.iter().map(|r| fields.project(r)).collect();
    /// assert_eq!(json, serde_json::to_vec(&projected).unwrap());
    /// ```
    pub fn write_rows(&self, rows: &[ConnectionInfo], out: &mut Vec<u8>) {
        out.push(b'[');
        let mut list = crate::json::List::by_name(self.mask());
        for info in rows {
            list.push(&crate::json::ConnectionView::of(info), out);
        }
        out.push(b']');
    }

    /// `info` as a JSON object with only these fields (a field the row omits, such as an unset
    /// `user`, stays omitted). The reference the hand-written rows are tested against
    /// ([`write_rows`](Self::write_rows), [`Registry::connections_json`](crate::Registry::connections_json)
    /// write the same bytes without a map per row); no answer of the admin API builds it.
    pub fn project(&self, info: &ConnectionInfo) -> serde_json::Map<String, serde_json::Value> {
        let mut full = match serde_json::to_value(info) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let mut out = serde_json::Map::with_capacity(self.0.len());
        for &name in &self.0 {
            if let Some(v) = full.remove(name) {
                out.insert(name.to_owned(), v);
            }
        }
        out
    }
}

impl FromStr for Fields {
    type Err = String;
    /// A comma-separated list of field names (spaces around names are ignored).
    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(
            s.split(',')
                .map(|f| f.trim().to_owned())
                .collect::<Vec<_>>(),
        )
    }
}

impl TryFrom<Vec<String>> for Fields {
    type Error = String;
    fn try_from(names: Vec<String>) -> Result<Self, String> {
        let mut picked = vec!["id"];
        for name in names.iter().filter(|n| !n.is_empty()) {
            let known = ConnectionInfo::FIELDS
                .into_iter()
                .find(|f| *f == name.as_str())
                .ok_or_else(|| {
                    format!(
                        "unknown field {name:?}: use {}",
                        ConnectionInfo::FIELDS.join(", ")
                    )
                })?;
            if !picked.contains(&known) {
                picked.push(known);
            }
        }
        Ok(Self(picked))
    }
}

impl From<Fields> for Vec<String> {
    fn from(f: Fields) -> Self {
        f.0.into_iter().map(str::to_owned).collect()
    }
}

/// A query parameter that cannot be used, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct QueryError {
    param: String,
    message: String,
}

impl QueryError {
    pub(crate) fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The parameter at fault.
    pub fn param(&self) -> &str {
        &self.param
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A query of the connections: filter, order, page and columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConnectionQuery {
    /// Which connections.
    pub filter: ConnectionFilter,
    /// Ordered by.
    pub sort: SortKey,
    /// In which direction.
    pub order: SortOrder,
    /// Most rows in the page (1 to [`ConnectionQuery::MAX_LIMIT`]).
    pub limit: usize,
    /// Where the page starts.
    pub start: Start,
    /// The columns (all, with `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
}

impl Default for ConnectionQuery {
    fn default() -> Self {
        Self {
            filter: ConnectionFilter::default(),
            sort: SortKey::default(),
            order: SortOrder::default(),
            limit: Self::DEFAULT_LIMIT,
            start: Start::First,
            fields: None,
        }
    }
}

impl ConnectionQuery {
    /// Rows in a page when `limit` is not given.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest `limit`.
    pub const MAX_LIMIT: usize = 10_000;
    /// Every query parameter's name.
    pub const PARAMS: [&'static str; 14] = [
        "limit", "cursor", "offset", "sort", "order", "fields", "state", "min_idle", "ip", "ua",
        "path", "tag", "user", "upstream",
    ];

    /// Reads the query from URL-decoded key/value pairs. An unknown or repeated parameter, a
    /// value that does not parse, `cursor` with `offset`, or a cursor made for another sort or
    /// order is an error naming the parameter. A cursor sets the sort and order it was made for
    /// when the query does not name them.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, QueryError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut q = Self::default();
        let mut seen: Vec<String> = Vec::new();
        let (mut sort, mut order, mut cursor, mut offset) = (None, None, None, None);
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            if !Self::PARAMS.contains(&key) {
                return Err(QueryError::new(
                    key,
                    format!("unknown parameter: use {}", Self::PARAMS.join(", ")),
                ));
            }
            if seen.iter().any(|k| k == key) {
                return Err(QueryError::new(key, "given more than once"));
            }
            seen.push(key.to_owned());
            let bad = |message: String| QueryError::new(key, message);
            match key {
                "limit" => q.limit = parse_limit(value).map_err(bad)?,
                "offset" => {
                    offset = Some(value.trim().parse::<u64>().map_err(|_| {
                        bad(format!("invalid offset {value:?}: use a whole number"))
                    })?)
                }
                "cursor" => cursor = Some(value.parse::<Cursor>().map_err(bad)?),
                "sort" => sort = Some(value.parse::<SortKey>().map_err(bad)?),
                "order" => order = Some(value.parse::<SortOrder>().map_err(bad)?),
                "fields" => q.fields = Some(value.parse::<Fields>().map_err(bad)?),
                _ => {
                    q.filter.set(key, value).map_err(bad)?;
                }
            }
        }
        q.sort = sort.or(cursor.map(|c| c.sort)).unwrap_or_default();
        q.order = order.or(cursor.map(|c| c.order)).unwrap_or_default();
        q.start = match (cursor, offset) {
            (Some(_), Some(_)) => {
                return Err(QueryError::new(
                    "offset",
                    "give either cursor or offset, not both",
                ))
            }
            (Some(c), None) => {
                if c.sort != q.sort || c.order != q.order {
                    return Err(QueryError::new(
                        "cursor",
                        format!(
                            "made for sort={} order={}, not sort={} order={}",
                            c.sort.as_str(),
                            c.order.as_str(),
                            q.sort.as_str(),
                            q.order.as_str()
                        ),
                    ));
                }
                Start::After(c)
            }
            (None, Some(n)) => Start::Offset(n),
            (None, None) => Start::First,
        };
        Ok(q)
    }
}

fn parse_limit(value: &str) -> Result<usize, String> {
    let n = crate::units::parse_count(value)?;
    if n > ConnectionQuery::MAX_LIMIT {
        return Err(format!(
            "{n} is more than the most a page holds, {}",
            ConnectionQuery::MAX_LIMIT
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ConnectionQuery, QueryError> {
        ConnectionQuery::from_pairs(pairs.iter().copied())
    }

    fn param_of(pairs: &[(&str, &str)]) -> String {
        parse(pairs).unwrap_err().param().to_owned()
    }

    #[test]
    fn defaults() {
        let q = parse(&[]).unwrap();
        assert_eq!(q, ConnectionQuery::default());
        assert_eq!(
            (q.limit, q.sort, q.order),
            (100, SortKey::Age, SortOrder::Desc)
        );
        assert_eq!(q.start, Start::First);
        assert!(q.filter.is_empty());
    }

    #[test]
    fn every_parameter_parses() {
        let q = parse(&[
            ("limit", "10000"),
            ("offset", "20"),
            ("sort", "rtt"),
            ("order", "asc"),
            ("fields", "age, userAgent,age"),
            ("state", "open"),
            ("min_idle", "30s"),
            ("ip", "10.0.0.0/8"),
            ("ua", "Firefox"),
            ("path", "/ws/chat"),
            ("tag", "beta"),
            ("user", "u-1"),
        ])
        .unwrap();
        assert_eq!(q.limit, 10_000);
        assert_eq!(q.start, Start::Offset(20));
        assert_eq!((q.sort, q.order), (SortKey::Rtt, SortOrder::Asc));
        assert_eq!(q.fields.unwrap().names(), ["id", "age", "userAgent"]);
        let f = q.filter;
        assert_eq!(f.state, Some(ConnectionState::Open));
        assert_eq!(f.min_idle, Some(Duration::from_secs(30)));
        assert_eq!(f.ip.unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(f.ua.as_deref(), Some("Firefox"));
        assert_eq!(f.path.as_deref(), Some("/ws/chat"));
        assert_eq!(f.tag.as_deref(), Some("beta"));
        assert_eq!(f.user.as_deref(), Some("u-1"));
        for key in SortKey::ALL {
            assert_eq!(key.as_str().parse::<SortKey>(), Ok(key));
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(param_of(&[("limit", "0")]), "limit");
        assert_eq!(param_of(&[("limit", "10001")]), "limit");
        assert_eq!(param_of(&[("limit", "ten")]), "limit");
        assert_eq!(param_of(&[("offset", "-1")]), "offset");
        assert_eq!(param_of(&[("sort", "size")]), "sort");
        assert_eq!(param_of(&[("order", "up")]), "order");
        assert_eq!(param_of(&[("fields", "id,nope")]), "fields");
        assert_eq!(param_of(&[("state", "HALF_OPEN")]), "state");
        assert_eq!(param_of(&[("min_idle", "soon")]), "min_idle");
        assert_eq!(param_of(&[("ip", "10.0.0.0/33")]), "ip");
        assert_eq!(param_of(&[("ua", "")]), "ua");
        assert_eq!(param_of(&[("tag", "")]), "tag");
        assert_eq!(param_of(&[("cursor", "garbage")]), "cursor");
        assert_eq!(param_of(&[("colour", "red")]), "colour");
        assert_eq!(param_of(&[("limit", "5"), ("limit", "6")]), "limit");
        let err = parse(&[("sort", "size")]).unwrap_err();
        assert!(
            err.to_string().starts_with("sort: unknown sort \"size\""),
            "{err}"
        );
        assert!(
            err.message().contains("messages"),
            "lists the valid keys: {err}"
        );
    }

    #[test]
    fn cursors_round_trip_and_must_fit_the_query() {
        let c = Cursor {
            sort: SortKey::Idle,
            order: SortOrder::Asc,
            rank: 0xdead_beef,
            seq: 42,
        };
        let text = c.to_string();
        assert_eq!(text.parse::<Cursor>(), Ok(c));
        // The cursor alone brings its sort and order.
        let q = parse(&[("cursor", &text)]).unwrap();
        assert_eq!(
            (q.sort, q.order, q.start),
            (SortKey::Idle, SortOrder::Asc, Start::After(c))
        );
        assert_eq!(param_of(&[("cursor", &text), ("sort", "age")]), "cursor");
        assert_eq!(param_of(&[("cursor", &text), ("order", "desc")]), "cursor");
        assert_eq!(param_of(&[("cursor", &text), ("offset", "3")]), "offset");
        for bad in [
            "",
            "idle.asc.1",
            "idle.asc.1.2.3",
            "idle.up.1.2",
            "idle.asc.zz.2",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_addresses_and_agents() {
        let f = ConnectionFilter::default().ip("203.0.113.0/24".parse().unwrap());
        assert!(f.ip_matches(Some("203.0.113.9".parse().unwrap())));
        assert!(f.ip_matches(Some("::ffff:203.0.113.9".parse().unwrap())));
        assert!(!f.ip_matches(Some("198.51.100.1".parse().unwrap())));
        assert!(!f.ip_matches(None));
        let f = ConnectionFilter::default().ua("firefox");
        assert!(f.ua_matches(Some("Mozilla/5.0 Firefox/128")));
        assert!(!f.ua_matches(Some("curl/8")));
        assert!(!f.ua_matches(None));
        assert!(ConnectionFilter::default().ua_matches(None));
    }

    #[test]
    fn the_filter_object_reads_and_writes_json() {
        let f: ConnectionFilter = serde_json::from_str(
            r#"{"tag":"beta","min_idle":"2m","ip":"10.1.2.3","state":"open"}"#,
        )
        .unwrap();
        assert_eq!(f.tag.as_deref(), Some("beta"));
        assert_eq!(f.min_idle, Some(Duration::from_secs(120)));
        assert_eq!(f.ip.unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(f.state, Some(ConnectionState::Open));
        let back: ConnectionFilter =
            serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_str::<ConnectionFilter>(r#"{"colour":"red"}"#).is_err());
        assert!(serde_json::from_str::<ConnectionFilter>("{}")
            .unwrap()
            .is_empty());
    }
}
