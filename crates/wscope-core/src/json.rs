//! The stats' JSON (`GET /api/stats`) written by hand into one buffer: byte for byte what
//! `serde_json` writes for a [`Snapshot`] (the tests compare the two on many snapshots), without
//! serde's per-field calls and, through [`ConnectionView`], without building a
//! [`ConnectionInfo`] per connection. At 10,000 connections (`benches/stats.rs`) building the
//! list and serde's serialization cost about the same; by hand the JSON takes about half serde's
//! time, and written straight from the entries the whole answer about half of both. What is
//! left is mostly memory latency: the walk's first touch of each entry and of its user id.
//!
//! Every struct is destructured whole here, so a field added to one of them does not compile
//! until it is written here too. Nothing in the snapshot is a float, so no float formatting is
//! needed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::counts::{ClosedBy, RefusalCounts, StateCounts};
use crate::id::ConnectionId;
use crate::snapshot::{ConnectionInfo, Snapshot, Summary};
use crate::state::ConnectionState;
use crate::strings::SharedStr;

/// One connection's figures, borrowed: from an owned [`ConnectionInfo`], or from a registry
/// entry and its labels while they are locked (what the stats walk writes without copying).
pub(crate) struct ConnectionView<'a, T> {
    /// The registry's id prefix (`{instance}-{boot}`).
    pub(crate) id_prefix: &'a SharedStr,
    /// The id's sequence number.
    pub(crate) seq: u64,
    pub(crate) age: u64,
    pub(crate) idle_time: u64,
    pub(crate) state: ConnectionState,
    pub(crate) remote_address: Option<IpAddr>,
    pub(crate) user_agent: Option<&'a SharedStr>,
    pub(crate) path: &'a SharedStr,
    pub(crate) connected_at: u64,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) queued_messages: u64,
    pub(crate) queued_bytes: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) rtt_ms: Option<u32>,
    pub(crate) user: Option<&'a str>,
    /// `String`s in a [`ConnectionInfo`], interned strings in an entry.
    pub(crate) tags: &'a [T],
    pub(crate) upstream: Option<&'a str>,
}

impl<'a> ConnectionView<'a, String> {
    /// The view of an owned row.
    pub(crate) fn of(info: &'a ConnectionInfo) -> Self {
        let ConnectionInfo {
            id,
            age,
            idle_time,
            state,
            remote_address,
            user_agent,
            path,
            connected_at,
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            queued_messages,
            queued_bytes,
            memory_bytes,
            rtt_ms,
            user,
            tags,
            upstream,
        } = info;
        Self {
            id_prefix: id.prefix(),
            seq: id.seq(),
            age: *age,
            idle_time: *idle_time,
            state: *state,
            remote_address: *remote_address,
            user_agent: user_agent.as_ref(),
            path,
            connected_at: *connected_at,
            messages_in: *messages_in,
            messages_out: *messages_out,
            bytes_in: *bytes_in,
            bytes_out: *bytes_out,
            queued_messages: *queued_messages,
            queued_bytes: *queued_bytes,
            memory_bytes: *memory_bytes,
            rtt_ms: *rtt_ms,
            user: user.as_deref(),
            tags,
            upstream: upstream.as_deref(),
        }
    }
}

impl<T: AsRef<str>> ConnectionView<'_, T> {
    /// The owned row (what [`crate::Registry::snapshot`] lists).
    pub(crate) fn to_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: ConnectionId::new(self.id_prefix.clone(), self.seq),
            age: self.age,
            idle_time: self.idle_time,
            state: self.state,
            remote_address: self.remote_address,
            user_agent: self.user_agent.cloned(),
            path: self.path.clone(),
            connected_at: self.connected_at,
            messages_in: self.messages_in,
            messages_out: self.messages_out,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            queued_messages: self.queued_messages,
            queued_bytes: self.queued_bytes,
            memory_bytes: self.memory_bytes,
            rtt_ms: self.rtt_ms,
            user: self.user.map(str::to_owned),
            tags: self.tags.iter().map(|t| t.as_ref().to_owned()).collect(),
            upstream: self.upstream.map(str::to_owned),
        }
    }
}

impl Snapshot {
    /// Appends this snapshot's JSON to `out`: byte for byte what `serde_json::to_writer` writes,
    /// in about half its time (no serde calls per field, text checked a word at a time; see
    /// `benches/stats.rs`).
    /// [`Registry::snapshot_json`](crate::Registry::snapshot_json) writes the registry's
    /// without building the snapshot's list at all.
    ///
    /// ```
    /// let registry = wscope_core::Registry::new();
    /// let snapshot = registry.snapshot();
    /// let mut json = Vec::new();
    /// snapshot.write_json(&mut json);
    /// assert_eq!(json, serde_json::to_vec(&snapshot).unwrap());
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(SizeHint::default().capacity(self.connections.len()));
        write_head(self, out);
        let mut list = List::default();
        for info in &self.connections {
            list.push(&ConnectionView::of(info), out);
        }
        write_tail(self, out);
    }
}

/// The bytes one connection took in the last stats answer, to size the next one's buffer up
/// front: at 10,000 connections the answer is megabytes, and a buffer grown by doubling copies
/// it again and again.
#[derive(Debug, Default)]
pub(crate) struct SizeHint(AtomicUsize);

impl SizeHint {
    /// Bytes per connection before any answer was written: a connection with an address, a
    /// browser's user agent, a user id and two tags.
    const FIRST_GUESS: usize = 384;
    /// Room above the last answer's mean, for entries a little longer than those.
    const MARGIN: usize = 32;
    /// Bytes outside the list (the summary's figures).
    const HEAD: usize = 1024;

    /// The capacity to start an answer listing `connections` with.
    pub(crate) fn capacity(&self, connections: usize) -> usize {
        let per = match self.0.load(Ordering::Relaxed) {
            0 => Self::FIRST_GUESS,
            last => last,
        };
        per.saturating_mul(connections).saturating_add(Self::HEAD)
    }

    /// Records an answer of `len` bytes that listed `connections`.
    pub(crate) fn record(&self, len: usize, connections: usize) {
        if let Some(per) = len.saturating_sub(Self::HEAD).checked_div(connections) {
            self.0.store(per + Self::MARGIN, Ordering::Relaxed);
        }
    }
}

/// Everything before the connections' first entry: the summary's figures and
/// `"connections":[`.
pub(crate) fn write_head(snapshot: &Snapshot, out: &mut Vec<u8>) {
    let Summary {
        total_connections,
        total_connections_ever,
        total_connections_closed,
        average_age,
        average_idle_time,
        connections_by_state,
    } = snapshot.summary;
    let StateCounts {
        connecting,
        open,
        closing,
        closed,
    } = connections_by_state;
    out.extend_from_slice(b"{\"totalConnections\":");
    write_u64(out, total_connections);
    out.extend_from_slice(b",\"totalConnectionsEver\":");
    write_u64(out, total_connections_ever);
    out.extend_from_slice(b",\"totalConnectionsClosed\":");
    write_u64(out, total_connections_closed);
    out.extend_from_slice(b",\"averageAge\":");
    write_u64(out, average_age);
    out.extend_from_slice(b",\"averageIdleTime\":");
    write_u64(out, average_idle_time);
    out.extend_from_slice(b",\"connectionsByState\":{\"CONNECTING\":");
    write_u64(out, connecting);
    out.extend_from_slice(b",\"OPEN\":");
    write_u64(out, open);
    out.extend_from_slice(b",\"CLOSING\":");
    write_u64(out, closing);
    out.extend_from_slice(b",\"CLOSED\":");
    write_u64(out, closed);
    out.extend_from_slice(b"},\"connections\":[");
}

/// Everything after the connections' last entry: `]` and the snapshot's other fields.
pub(crate) fn write_tail(snapshot: &Snapshot, out: &mut Vec<u8>) {
    let Snapshot {
        summary: _,
        connections: _,
        instance_id,
        uptime,
        shut_down,
        closed_by,
        refused,
        average_rtt_ms,
    } = snapshot;
    out.extend_from_slice(b"],\"instanceId\":");
    write_str(out, instance_id);
    out.extend_from_slice(b",\"uptime\":");
    write_u64(out, *uptime);
    out.extend_from_slice(if *shut_down {
        b",\"shutDown\":true"
    } else {
        b",\"shutDown\":false"
    });
    out.extend_from_slice(b",\"closedBy\":");
    write_closed_by(out, closed_by);
    out.extend_from_slice(b",\"refused\":");
    write_refused(out, refused);
    if let Some(rtt) = average_rtt_ms {
        out.extend_from_slice(b",\"averageRttMs\":");
        write_u64(out, *rtt);
    }
    out.push(b'}');
}

fn write_closed_by(out: &mut Vec<u8>, closed_by: &ClosedBy) {
    let ClosedBy {
        client,
        server,
        admin,
        shutdown,
        error,
        panic,
        deadline,
        limit,
        timeout,
        upstream,
    } = *closed_by;
    let fields = [
        ("client", client),
        ("server", server),
        ("admin", admin),
        ("shutdown", shutdown),
        ("error", error),
        ("panic", panic),
        ("deadline", deadline),
        ("limit", limit),
        ("timeout", timeout),
        ("upstream", upstream),
    ];
    write_counts(out, fields.into_iter());
}

fn write_refused(out: &mut Vec<u8>, refused: &RefusalCounts) {
    write_counts(out, refused.iter().map(|(kind, n)| (kind.as_str(), n)));
}

/// `{"name":n,...}`; the names are the crate's own and need no escaping.
fn write_counts<'a>(out: &mut Vec<u8>, counts: impl Iterator<Item = (&'a str, u64)>) {
    out.push(b'{');
    for (i, (name, n)) in counts.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_u64(out, n);
    }
    out.push(b'}');
}

/// The connections' array being written: the separator goes before every entry but the first.
pub(crate) struct List {
    written: usize,
    /// The fields each entry is written with, in the order written ([`Columns`]).
    columns: Columns,
}

impl Default for List {
    fn default() -> Self {
        Self::with_fields(FieldMask::ALL)
    }
}

impl List {
    /// A list whose entries have only `fields`, in the order of the full row (serde's order
    /// for a [`ConnectionInfo`]: what `GET /api/stats?fields=` writes).
    pub(crate) fn with_fields(fields: FieldMask) -> Self {
        Self::with_columns(Columns::declared(fields))
    }

    /// A list whose entries have only `fields`, in the order of their names: what serde writes
    /// for the `serde_json::Map` of [`Fields::project`](crate::query::Fields::project) (a
    /// `BTreeMap`), so `GET /api/connections?fields=` answers as it did when it built one.
    pub(crate) fn by_name(fields: FieldMask) -> Self {
        Self::with_columns(Columns::by_name(fields))
    }

    fn with_columns(columns: Columns) -> Self {
        Self {
            written: 0,
            columns,
        }
    }

    /// Writes `c` as the array's next entry.
    pub(crate) fn push<T: AsRef<str>>(&mut self, c: &ConnectionView<'_, T>, out: &mut Vec<u8>) {
        if self.written > 0 {
            out.push(b',');
        }
        self.written += 1;
        write_connection(c, self.columns.as_slice(), out);
    }

    /// Entries written.
    pub(crate) fn len(&self) -> usize {
        self.written
    }
}

/// Which of a row's fields are written: bit `i` for [`ConnectionInfo::FIELDS`]`[i]` (`id`, bit 0,
/// always is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldMask(u32);

impl FieldMask {
    /// Every field: the row serde writes.
    pub(crate) const ALL: Self = Self(u32::MAX);

    /// The fields named (names of [`ConnectionInfo::FIELDS`]; others are ignored), and `id`.
    pub(crate) fn of(names: &[&str]) -> Self {
        let bits = ConnectionInfo::FIELDS
            .iter()
            .enumerate()
            .filter(|(_, f)| names.contains(f))
            .fold(1, |bits, (i, _)| bits | 1 << i);
        Self(bits)
    }

    /// Whether `field` is written.
    fn has(self, field: Field) -> bool {
        self.0 & (1 << field as usize) != 0
    }
}

/// A row's fields, in the order of [`ConnectionInfo::FIELDS`] (checked in the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Id,
    Age,
    IdleTime,
    State,
    RemoteAddress,
    UserAgent,
    Path,
    ConnectedAt,
    MessagesIn,
    MessagesOut,
    BytesIn,
    BytesOut,
    QueuedMessages,
    QueuedBytes,
    MemoryBytes,
    RttMs,
    User,
    Tags,
    Upstream,
}

impl Field {
    /// Every field, in [`ConnectionInfo::FIELDS`]' order.
    const ALL: [Field; ConnectionInfo::FIELDS.len()] = [
        Self::Id,
        Self::Age,
        Self::IdleTime,
        Self::State,
        Self::RemoteAddress,
        Self::UserAgent,
        Self::Path,
        Self::ConnectedAt,
        Self::MessagesIn,
        Self::MessagesOut,
        Self::BytesIn,
        Self::BytesOut,
        Self::QueuedMessages,
        Self::QueuedBytes,
        Self::MemoryBytes,
        Self::RttMs,
        Self::User,
        Self::Tags,
        Self::Upstream,
    ];

    /// Its JSON name.
    fn name(self) -> &'static str {
        ConnectionInfo::FIELDS[self as usize]
    }

    /// Its key as written, `"name":` (one copy per field written, not three).
    fn key(self) -> &'static [u8] {
        match self {
            Self::Id => b"\"id\":",
            Self::Age => b"\"age\":",
            Self::IdleTime => b"\"idleTime\":",
            Self::State => b"\"state\":",
            Self::RemoteAddress => b"\"remoteAddress\":",
            Self::UserAgent => b"\"userAgent\":",
            Self::Path => b"\"path\":",
            Self::ConnectedAt => b"\"connectedAt\":",
            Self::MessagesIn => b"\"messagesIn\":",
            Self::MessagesOut => b"\"messagesOut\":",
            Self::BytesIn => b"\"bytesIn\":",
            Self::BytesOut => b"\"bytesOut\":",
            Self::QueuedMessages => b"\"queuedMessages\":",
            Self::QueuedBytes => b"\"queuedBytes\":",
            Self::MemoryBytes => b"\"memoryBytes\":",
            Self::RttMs => b"\"rttMs\":",
            Self::User => b"\"user\":",
            Self::Tags => b"\"tags\":",
            Self::Upstream => b"\"upstream\":",
        }
    }
}

/// The fields a row is written with, in the order written: worked out once per answer, so
/// that each row only walks what it writes.
#[derive(Clone, Copy, Debug)]
struct Columns {
    fields: [Field; Field::ALL.len()],
    len: usize,
}

impl Columns {
    /// `mask`'s fields in declaration order.
    fn declared(mask: FieldMask) -> Self {
        Self::of(mask, Field::ALL)
    }

    /// `mask`'s fields in the byte order of their names (`id` after `connectedAt`, `user`
    /// before `userAgent`), as a `BTreeMap<String, _>` holds them.
    fn by_name(mask: FieldMask) -> Self {
        let mut order = Field::ALL;
        order.sort_unstable_by_key(|f| f.name());
        Self::of(mask, order)
    }

    fn of(mask: FieldMask, order: [Field; Field::ALL.len()]) -> Self {
        let mut columns = Self {
            fields: order,
            len: 0,
        };
        for field in order.into_iter().filter(|&f| mask.has(f)) {
            columns.fields[columns.len] = field;
            columns.len += 1;
        }
        columns
    }

    fn as_slice(&self) -> &[Field] {
        &self.fields[..self.len]
    }
}

/// One connection as serde writes a [`ConnectionInfo`] (the optional fields skipped when absent,
/// empty for `tags`), with only `columns`, in their order.
fn write_connection<T: AsRef<str>>(
    c: &ConnectionView<'_, T>,
    columns: &[Field],
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    let open = out.len();
    for &field in columns {
        write_field(c, field, open, out);
    }
    out.push(b'}');
}

/// Writes `field` of `c`, if the row has it, after a separator unless it is the first in the
/// object opened at `open`.
fn write_field<T: AsRef<str>>(
    c: &ConnectionView<'_, T>,
    field: Field,
    open: usize,
    out: &mut Vec<u8>,
) {
    let key = |out: &mut Vec<u8>| {
        if out.len() > open {
            out.push(b',');
        }
        out.extend_from_slice(field.key());
    };
    let number = |out: &mut Vec<u8>, n: u64| {
        key(out);
        write_u64(out, n);
    };
    let text = |out: &mut Vec<u8>, s: &str| {
        key(out);
        write_str(out, s);
    };
    match field {
        Field::Id => {
            // `ConnectionId` serializes through its `Display`: `{prefix}-{seq}`.
            key(out);
            out.push(b'"');
            write_escaped(out, c.id_prefix);
            out.push(b'-');
            write_u64(out, c.seq);
            out.push(b'"');
        }
        Field::Age => number(out, c.age),
        Field::IdleTime => number(out, c.idle_time),
        Field::State => {
            // The reference's state names: nothing in them is escaped.
            key(out);
            out.push(b'"');
            out.extend_from_slice(c.state.as_str().as_bytes());
            out.push(b'"');
        }
        Field::RemoteAddress => {
            if let Some(ip) = c.remote_address {
                key(out);
                out.push(b'"');
                write_ip(out, ip);
                out.push(b'"');
            }
        }
        Field::UserAgent => {
            if let Some(ua) = c.user_agent {
                text(out, ua);
            }
        }
        Field::Path => text(out, c.path),
        Field::ConnectedAt => number(out, c.connected_at),
        Field::MessagesIn => number(out, c.messages_in),
        Field::MessagesOut => number(out, c.messages_out),
        Field::BytesIn => number(out, c.bytes_in),
        Field::BytesOut => number(out, c.bytes_out),
        Field::QueuedMessages => number(out, c.queued_messages),
        Field::QueuedBytes => number(out, c.queued_bytes),
        Field::MemoryBytes => number(out, c.memory_bytes),
        Field::RttMs => {
            if let Some(rtt) = c.rtt_ms {
                number(out, u64::from(rtt));
            }
        }
        Field::User => {
            if let Some(user) = c.user {
                text(out, user);
            }
        }
        Field::Tags => {
            if let Some((first, rest)) = c.tags.split_first() {
                key(out);
                out.push(b'[');
                write_str(out, first.as_ref());
                for tag in rest {
                    out.push(b',');
                    write_str(out, tag.as_ref());
                }
                out.push(b']');
            }
        }
        Field::Upstream => {
            if let Some(upstream) = c.upstream {
                text(out, upstream);
            }
        }
    }
}

pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as its `Display` writes it (serde's form): IPv4 by hand, the common case; IPv6
/// (rarer, and with its zero-run compression) through `Display`.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            write_u64(out, a.into());
            for octet in [b, c, d] {
                out.push(b'.');
                write_u64(out, octet.into());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a `Vec` cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// `s` quoted and escaped as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// What serde_json escapes: `"` and `\` with a backslash; the control characters below 0x20 as
/// `\b \t \n \f \r`, the others as `\u00XX` (lowercase hex). Everything else, non-ASCII and DEL
/// included, goes as it is. Eight bytes are checked at once, so text without any of these (a
/// user agent, a path) is copied a word at a time: byte by byte, escaping took a quarter of
/// the stats' time.
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            Some(word) if !any_to_escape(u64::from_ne_bytes(word)) => {
                i += 8;
                continue;
            }
            Some(_) => i + 8,
            None => bytes.len(),
        };
        for (at, &byte) in bytes.iter().enumerate().take(end).skip(i) {
            if byte >= 0x20 && byte != b'"' && byte != b'\\' {
                continue;
            }
            out.extend_from_slice(&bytes[start..at]);
            start = at + 1;
            write_escape(out, byte);
        }
        i = end;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any of the eight bytes in `word` is escaped: below 0x20, `"` or `\` (the classic
/// bit tricks: a byte's high bit survives `x - 0x01..` and `!x` only where it was zero, and
/// `x - 0x20..` only where it was below 0x20; exact for whether any byte matches).
fn any_to_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH != 0;
    below(word, 0x20)
        || below(word ^ (ONES * u64::from(b'"')), 1)
        || below(word ^ (ONES * u64::from(b'\\')), 1)
}

/// The escape serde_json writes for `byte` (one it escapes).
fn write_escape(out: &mut Vec<u8>, byte: u8) {
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\n' => out.extend_from_slice(b"\\n"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\r' => out.extend_from_slice(b"\\r"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn info(id: &str) -> ConnectionInfo {
        ConnectionInfo {
            id: id.parse().unwrap(),
            age: 0,
            idle_time: 0,
            state: ConnectionState::Open,
            remote_address: None,
            user_agent: None,
            path: SharedStr::default(),
            connected_at: 0,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            queued_messages: 0,
            queued_bytes: 0,
            memory_bytes: 0,
            rtt_ms: None,
            user: None,
            tags: Vec::new(),
            upstream: None,
        }
    }

    fn assert_same(snapshot: &Snapshot) {
        let mut mine = Vec::new();
        snapshot.write_json(&mut mine);
        let serde = serde_json::to_vec(snapshot).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&mine),
            String::from_utf8_lossy(&serde)
        );
    }

    #[test]
    fn every_byte_serde_escapes_is_escaped_the_same() {
        let every_ascii: String = (0u8..=0x7f).map(char::from).collect();
        for s in [
            every_ascii.as_str(),
            "",
            "\"",
            "\\",
            "plain",
            "é ü 漢字 🦀 \u{2028}\u{2029} \u{7f} \u{fffd}",
            "end\\",
            "\"start",
        ] {
            let mut mine = Vec::new();
            write_str(&mut mine, s);
            assert_eq!(mine, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn the_word_check_finds_every_byte_to_escape_at_every_place() {
        for fill in [b'a', 0x80, 0xff, 0x20, 0x7f] {
            for place in 0..8 {
                for byte in 0..=u8::MAX {
                    let mut word = [fill; 8];
                    word[place] = byte;
                    let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(
                        any_to_escape(u64::from_ne_bytes(word)),
                        expected,
                        "{word:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_escape_at_any_offset_of_long_text_matches_serde() {
        for escaped in ["\"", "\\", "\n", "\u{1}", "é"] {
            for at in 0..40 {
                let s = format!("{}{escaped}{}", "x".repeat(at), "y".repeat(40 - at));
                let mut mine = Vec::new();
                write_str(&mut mine, &s);
                assert_eq!(mine, serde_json::to_vec(&s).unwrap(), "{s:?}");
            }
        }
    }

    #[test]
    fn empty_and_extreme_snapshots_match_serde() {
        let mut snapshot = Snapshot {
            summary: Summary::default(),
            connections: Vec::new(),
            instance_id: String::new(),
            uptime: 0,
            shut_down: false,
            closed_by: ClosedBy::default(),
            refused: RefusalCounts::default(),
            average_rtt_ms: None,
        };
        assert_same(&snapshot);
        snapshot.summary.total_connections = u64::MAX;
        snapshot.summary.connections_by_state.closed = u64::MAX;
        snapshot.closed_by.upstream = u64::MAX;
        snapshot.closed_by.client = 1;
        snapshot.instance_id = "node \"a\"\n\u{1}".to_owned();
        snapshot.uptime = u64::MAX;
        snapshot.shut_down = true;
        snapshot.average_rtt_ms = Some(0);
        let mut c = info("x\"y\\-z\t-18446744073709551615");
        c.remote_address = Some("::ffff:1.2.3.4".parse().unwrap());
        c.user_agent = Some(SharedStr::default());
        c.rtt_ms = Some(u32::MAX);
        c.user = Some(String::new());
        c.tags = vec![String::new()];
        c.upstream = Some("ws://up:1/\u{0}".to_owned());
        snapshot.connections.push(c);
        snapshot.connections.push(info("n-0"));
        assert_same(&snapshot);
    }

    /// Text serde must escape, or must not: controls, quotes, backslashes, non-ASCII, anything.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[\\x00-\\x1f\"\\\\a-z/\\x7f]{0,12}",
            "[a-zé漢🦀\u{2028} .:;-]{0,24}",
            any::<String>(),
        ]
    }

    fn address() -> impl Strategy<Value = Option<IpAddr>> {
        prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|a| Some(IpAddr::from(a))),
            any::<[u16; 8]>().prop_map(|a| Some(IpAddr::from(a))),
            // Runs of zeros, compressed by `Display`, and IPv4-mapped addresses.
            (0u16..3, 0u16..2, any::<u16>()).prop_map(|(a, b, c)| Some(IpAddr::from([
                0,
                0,
                a,
                0,
                0,
                0xffff * b,
                c,
                1
            ]))),
        ]
    }

    pub(crate) fn figure() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(u64::MAX), 0u64..1000, any::<u64>()]
    }

    pub(crate) fn connection() -> impl Strategy<Value = ConnectionInfo> {
        let id = ("[a-z0-9\"\\\\\\x00-\\x1f-]{1,12}", any::<u64>());
        let text_fields = (
            proptest::option::of(text()),
            text(),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..4),
            proptest::option::of(text()),
        );
        let figures = proptest::collection::vec(figure(), 9);
        let state = prop_oneof![
            Just(ConnectionState::Connecting),
            Just(ConnectionState::Open),
            Just(ConnectionState::Closing),
            Just(ConnectionState::Closed),
        ];
        let rtt = proptest::option::of(prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]);
        (id, text_fields, figures, state, address(), rtt).prop_map(
            |((prefix, seq), (ua, path, user, tags, upstream), f, state, ip, rtt)| {
                let mut c = info(&format!("{prefix}-{seq}"));
                c.age = f[0];
                c.idle_time = f[1];
                c.state = state;
                c.remote_address = ip;
                c.user_agent = ua.map(|ua| SharedStr::Counted(ua.into()));
                c.path = SharedStr::Counted(path.into());
                c.connected_at = f[2];
                c.messages_in = f[3];
                c.messages_out = f[4];
                c.bytes_in = f[5];
                c.bytes_out = f[6];
                c.queued_messages = f[7];
                c.queued_bytes = f[8];
                c.memory_bytes = f[8] ^ f[0];
                c.rtt_ms = rtt;
                c.user = user;
                c.tags = tags;
                c.upstream = upstream;
                c
            },
        )
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        let summary = proptest::collection::vec(figure(), 9).prop_map(|f| Summary {
            total_connections: f[0],
            total_connections_ever: f[1],
            total_connections_closed: f[2],
            average_age: f[3],
            average_idle_time: f[4],
            connections_by_state: StateCounts {
                connecting: f[5],
                open: f[6],
                closing: f[7],
                closed: f[8],
            },
        });
        let closed_by = any::<[u64; 10]>().prop_map(ClosedBy::from_counts);
        let refused = proptest::collection::vec(figure(), RefusalCounts::default().iter().count())
            .prop_map(|f| RefusalCounts::from_counts(f.try_into().unwrap()));
        (
            summary,
            proptest::collection::vec(connection(), 0..6),
            text(),
            figure(),
            any::<bool>(),
            closed_by,
            refused,
            proptest::option::of(figure()),
        )
            .prop_map(
                |(
                    summary,
                    connections,
                    instance_id,
                    uptime,
                    shut_down,
                    closed_by,
                    refused,
                    rtt,
                )| {
                    Snapshot {
                        summary,
                        connections,
                        instance_id,
                        uptime,
                        shut_down,
                        closed_by,
                        refused,
                        average_rtt_ms: rtt,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The hand-written JSON is serde's, byte for byte, whatever the snapshot holds.
        #[test]
        fn any_snapshot_matches_serde(snapshot in snapshot()) {
            let mut mine = Vec::new();
            snapshot.write_json(&mut mine);
            let serde = serde_json::to_vec(&snapshot).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&mine), String::from_utf8_lossy(&serde));
        }

        /// A row cut to some fields holds what serde's row holds of those fields, and nothing
        /// else, in the order of the full row: the same object as
        /// [`Fields::project`](crate::query::Fields::project) gives, its keys as `/api/stats`
        /// writes them.
        #[test]
        fn a_row_cut_to_any_fields_is_serde_row_projected(
            info in connection(),
            picked in proptest::sample::subsequence(ConnectionInfo::FIELDS.to_vec(), 0..=19),
        ) {
            let mut mine = Vec::new();
            let mut list = List::with_fields(FieldMask::of(&picked));
            list.push(&ConnectionView::of(&info), &mut mine);
            let mine: serde_json::Value = serde_json::from_slice(&mine).unwrap();
            let fields: crate::query::Fields = picked.join(",").parse().unwrap();
            prop_assert_eq!(mine, serde_json::Value::Object(fields.project(&info)));
        }

    }

    #[test]
    fn the_fields_are_those_of_the_field_list() {
        assert_eq!(Field::ALL.len(), ConnectionInfo::FIELDS.len());
        for (i, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(field as usize, i, "{field:?}");
            let key = format!("\"{}\":", ConnectionInfo::FIELDS[i]);
            assert_eq!(field.key(), key.as_bytes(), "{field:?}");
        }
    }

    #[test]
    fn columns_by_name_sort_as_a_map_of_strings_does() {
        let columns = Columns::by_name(FieldMask::ALL);
        let names: Vec<&str> = columns.as_slice().iter().map(|f| f.name()).collect();
        let mut sorted = ConnectionInfo::FIELDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let some = Columns::by_name(FieldMask::of(&["userAgent", "user", "age"]));
        let names: Vec<&str> = some.as_slice().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["age", "id", "user", "userAgent"]);
        let declared = Columns::declared(FieldMask::of(&["userAgent", "user", "age"]));
        let names: Vec<&str> = declared.as_slice().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["id", "age", "userAgent", "user"]);
    }
}
