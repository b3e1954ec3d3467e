//! Answers a [`ConnectionQuery`]: one page of connections, filtered and sorted, without copying
//! every entry; closes the connections a [`ConnectionFilter`] matches.
//!
//! Cost, for n tracked connections and a page of `limit` rows after `offset`:
//! - sort `age` (registration order, the default): the page is read from the ordered index
//!   (`order`) from the cursor on — O(offset + limit) entries visited without a filter; with one,
//!   the visit goes on until the page is full, so O(limit / fraction matching).
//! - `total`: O(1) without a filter or with `state` alone (the aggregates' counts); with any
//!   other filter, one walk of the entries that reads a few atomics each and allocates nothing.
//! - every other sort: one walk of the entries (O(n)) keeping the best `offset + limit + 1` in a
//!   bounded heap (O(n log(offset + limit))); only the page's rows become [`ConnectionInfo`]s.
//!
//! Lock order: a map shard's read lock, then an entry's labels lock (a tag or user filter); the
//! ordered index's shard locks are never held with another.

use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::close::{CloseCode, CloseFrame, Initiator, ReasonTooLong};
use crate::connection::ConnectionHandle;
use crate::entry::Entry;
use crate::json::{self, FieldMask, List};
use crate::query::{ConnectionFilter, ConnectionQuery, Cursor, Fields, SortKey, SortOrder, Start};
use crate::registry::Registry;
use crate::shared::Shared;
use crate::snapshot::{ConnectionInfo, Snapshot};
use crate::state::{ConnectionState, REMOVED};
use crate::wire::ConnectionPage;

impl Registry {
    /// One page of the connections `query` selects, in its order, with the count of all that
    /// match and the cursor of the next page. See `GET /api/connections`.
    ///
    /// ```
    /// use wscope_core::query::ConnectionQuery;
    /// use wscope_core::{ConnectionMeta, Registry};
    /// let registry = Registry::new();
    /// let held: Vec<_> = (0..3).map(|_| registry.accept(ConnectionMeta::new("/ws")).unwrap()).collect();
    /// let query = ConnectionQuery::from_pairs([("limit", "2")]).unwrap();
    /// let page = registry.connections(&query);
    /// assert_eq!((page.total, page.connections.len()), (3, 2));
    /// assert_eq!(page.connections[0].id, held[0].id()); // oldest first
    /// let rest = ConnectionQuery::from_pairs([("cursor", page.next.unwrap().to_string())]).unwrap();
    /// assert_eq!(registry.connections(&rest).connections[0].id, held[2].id());
    /// ```
    pub fn connections(&self, query: &ConnectionQuery) -> ConnectionPage {
        let shared = self.shared();
        let page = choose(shared, query);
        let connections = page
            .rows
            .iter()
            .map(|r| shared.info(&r.entry, page.now))
            .collect();
        ConnectionPage::new(page.total, connections, page.next)
    }

    /// The JSON of [`connections`](Self::connections)' page, as `GET /api/connections` answers
    /// it: byte for byte what serde writes for that page, or with the query's `fields`, for the
    /// page of those rows cut by [`Fields::project`] (a map: each row's keys in the order of
    /// their names). Written straight from the entries: no [`ConnectionInfo`], map or JSON
    /// value per row (at a page of 10,000, building those cost more than the rest of the
    /// answer; `benches/stats.rs`).
    ///
    /// ```
    /// use wscope_core::query::ConnectionQuery;
    /// use wscope_core::{ConnectionMeta, Registry};
    /// let registry = Registry::new();
    /// let _held = registry.accept(ConnectionMeta::new("/ws")).unwrap();
    /// let query = ConnectionQuery::from_pairs([("fields", "state,age")]).unwrap();
    /// let page = registry
    ///     .connections(&query)
    ///     .map(|info| query.fields.as_ref().unwrap().project(&info));
    /// assert_eq!(registry.connections_json(&query), serde_json::to_vec(&page).unwrap());
    /// ```
    pub fn connections_json(&self, query: &ConnectionQuery) -> Vec<u8> {
        let shared = self.shared();
        let page = choose(shared, query);
        let mut list = match &query.fields {
            None => List::default(),
            Some(fields) => List::by_name(fields.mask()),
        };
        let mut out = Vec::new();
        write_page_head(page.total, &mut out);
        let head = out.len();
        for (i, r) in page.rows.iter().enumerate() {
            r.entry.with_labels(|labels| {
                list.push(&shared.view(&r.entry, labels, page.now), &mut out);
            });
            if i == 0 {
                // The rest sized on the first row, with room for longer ones: a page of 10,000
                // is megabytes, and a buffer grown by doubling copies it again and again.
                let row = out.len() - head;
                let rest = page.rows.len() - 1;
                out.reserve((row + row / 4 + 1).saturating_mul(rest) + PAGE_TAIL);
            }
        }
        write_page_tail(page.next.as_ref(), &mut out);
        out
    }

    /// One connection as the stats list it, if tracked here.
    pub fn connection_info(&self, id: &str) -> Option<ConnectionInfo> {
        let handle = self.connection(id)?;
        let shared = self.shared();
        Some(shared.info(&handle.entry, shared.clock.now_ms()))
    }

    /// Closes every connection `filter` matches with `code` and `reason`, after flushing what is
    /// queued to each. Returns how many were asked to close (those already closing are not
    /// counted). An empty filter matches every connection, as [`Registry::close_all`] does.
    pub fn close_matching(
        &self,
        filter: &ConnectionFilter,
        code: CloseCode,
        reason: &str,
    ) -> Result<u64, ReasonTooLong> {
        let frame = CloseFrame::new(code, reason)?;
        let closed = matching(self.shared(), filter)
            .iter()
            .filter(|e| {
                e.state() != ConnectionState::Closed
                    && e.request_close(frame.clone(), Initiator::Admin)
            })
            .count() as u64;
        tracing::info!(?filter, closed, "closed matching connections");
        Ok(closed)
    }

    /// Handles to the OPEN connections `filter` matches, to send to or close, with those whose
    /// 101 was given but which are not running yet (an empty filter matches every one, as
    /// [`Registry::active_connections`]). One walk of the entries.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use wscope_core::query::ConnectionFilter;
    /// use wscope_core::{memory, ConnectionMeta, Message, Registry};
    ///
    /// let registry = Registry::new();
    /// let mut clients = Vec::new();
    /// for path in ["/ws/chat", "/ws"] {
    ///     let accepted = registry.accept(ConnectionMeta::new(path)).unwrap();
    ///     let (transport, client) = memory::pair();
    ///     tokio::spawn(accepted.run(transport, |mut s| async move { while s.recv().await.is_some() {} }));
    ///     clients.push(client);
    /// }
    /// # while registry.summary().connections_by_state.open < 2 { tokio::task::yield_now().await; }
    /// let chat = registry.connections_matching(&ConnectionFilter::default().path("/ws/chat"));
    /// assert_eq!(chat.len(), 1);
    /// chat[0].send("to the chat only").unwrap();
    /// assert_eq!(clients[0].recv().await, Some(Message::text("to the chat only")));
    /// # }
    /// ```
    pub fn connections_matching(&self, filter: &ConnectionFilter) -> Vec<ConnectionHandle> {
        let shared = self.shared();
        matching(shared, filter)
            .into_iter()
            .filter(|e| e.reachable())
            .map(|entry| ConnectionHandle::new(entry, shared.clone()))
            .collect()
    }

    /// The statistics with at most `max` connections listed, the oldest first (read from the
    /// ordered index: O(max), not a walk of every entry); `max = 0` lists none, as
    /// [`Registry::summary`].
    pub fn snapshot_capped(&self, max: usize) -> Snapshot {
        let shared = self.shared();
        let mut snapshot = self.summary();
        if max == 0 {
            return snapshot;
        }
        let now = shared.clock.now_ms();
        let mut list = Vec::with_capacity(max.min(snapshot.total_connections as usize));
        oldest(shared, max, &mut |e| list.push(shared.info(e, now)));
        snapshot.connections = list;
        snapshot
    }

    /// The JSON of [`snapshot_capped`](Self::snapshot_capped), written as
    /// [`snapshot_json`](Self::snapshot_json) writes the full one (the rows as of the summary's
    /// uptime).
    pub fn snapshot_capped_json(&self, max: usize) -> Vec<u8> {
        self.stats_json(Some(max), None)
    }

    /// The statistics' JSON as `GET /api/stats?connections=N&fields=…` answers it: at most `max`
    /// connections listed, the oldest first ([`snapshot_capped_json`](Self::snapshot_capped_json);
    /// `None`: every connection, as [`snapshot_json`](Self::snapshot_json)), each row with only
    /// `fields` (`None`: every field; `id` always), in the order of the full row. A scraper that
    /// needs a few columns of every connection gets them without the bytes of the rest.
    ///
    /// ```
    /// let registry = wscope_core::Registry::new();
    /// let fields = "age,remoteAddress".parse().unwrap();
    /// let json: serde_json::Value =
    ///     serde_json::from_slice(&registry.stats_json(None, Some(&fields))).unwrap();
    /// assert_eq!(json["connections"], serde_json::json!([]));
    /// ```
    pub fn stats_json(&self, max: Option<usize>, fields: Option<&Fields>) -> Vec<u8> {
        let shared = self.shared();
        let fields = fields.map_or(FieldMask::ALL, Fields::mask);
        let Some(max) = max else {
            return shared.snapshot_json(fields);
        };
        let head = self.summary();
        let expected = max.min(head.total_connections as usize);
        shared.stats_json(&head, expected, fields, |each| oldest(shared, max, each))
    }
}

/// Hands `each` the `max` oldest entries (read from the ordered index, O(max)).
fn oldest(shared: &Shared, max: usize, each: &mut dyn FnMut(&Entry)) {
    if max == 0 {
        return;
    }
    let mut seen = 0;
    shared.order().walk(None, false, max.min(4096), |seq| {
        if let Some(e) = shared.entry(seq) {
            each(&e);
            seen += 1;
        }
        seen < max
    });
}

/// The entries `filter` matches now, collected, so that no shard lock is held while the
/// caller takes outbox locks.
fn matching(shared: &Shared, filter: &ConnectionFilter) -> Vec<Arc<Entry>> {
    let now = shared.clock.now_ms();
    shared.entries_where(|e| matches(filter, e, now))
}

/// Whether `e` passes every condition of `filter` at `now` (ms).
fn matches(filter: &ConnectionFilter, e: &Entry, now: u64) -> bool {
    if filter.state.is_some_and(|s| s != e.state()) {
        return false;
    }
    if let Some(min) = filter.min_idle {
        let last = e.last_activity_ms.load(Ordering::Relaxed);
        if last == REMOVED || u128::from(now.saturating_sub(last)) < min.as_millis() {
            return false;
        }
    }
    if !filter.ip_matches(e.remote_addr) || !filter.ua_matches(e.user_agent.as_deref()) {
        return false;
    }
    if filter.path.as_deref().is_some_and(|p| p != &*e.path) {
        return false;
    }
    if filter.tag.as_deref().is_some_and(|t| !e.has_tag(t)) {
        return false;
    }
    if filter.user.as_deref().is_some_and(|u| !e.has_user(u)) {
        return false;
    }
    if filter
        .upstream
        .as_deref()
        .is_some_and(|u| !e.has_upstream(u))
    {
        return false;
    }
    true
}

/// `e`'s rank under `sort` and `order`: pages run in ascending (rank, seq). `None` when the entry
/// has just left (its activity reads as removed).
fn rank(e: &Entry, sort: SortKey, order: SortOrder) -> Option<u64> {
    // The value whose larger end comes first in the default (descending) order.
    let larger_first = match sort {
        SortKey::Age => u64::MAX - e.seq, // older = smaller seq
        SortKey::Idle => {
            let last = e.last_activity_ms.load(Ordering::Relaxed);
            if last == REMOVED {
                return None;
            }
            u64::MAX - last // idler = earlier activity
        }
        SortKey::Messages => {
            let c = e.counts();
            c.messages_in.saturating_add(c.messages_out)
        }
        SortKey::Bytes => {
            let c = e.counts();
            c.bytes_in.saturating_add(c.bytes_out)
        }
        SortKey::Queued => e.outbox.queued().1 as u64,
        SortKey::Memory => e.memory_bytes(),
        SortKey::Rtt => match e.rtt() {
            Some(rtt) => u64::from(rtt),
            // Unknown round trips come last in either order.
            None => return Some(u64::MAX),
        },
    };
    Some(match order {
        SortOrder::Desc => u64::MAX - larger_first,
        SortOrder::Asc => larger_first.min(u64::MAX - 1),
    })
}

/// An entry in the bounded heap, ordered by (rank, seq) only.
struct Ranked {
    rank: u64,
    seq: u64,
    entry: Arc<Entry>,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        (self.rank, self.seq) == (other.rank, other.seq)
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.rank, self.seq).cmp(&(other.rank, other.seq))
    }
}

/// `GET /api/connections`' answer up to its first row: `{"total":N,"connections":[`, as serde
/// writes a [`ConnectionPage`](crate::wire::ConnectionPage) (the tests compare the two).
fn write_page_head(total: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"total\":");
    json::write_u64(out, total);
    out.extend_from_slice(b",\"connections\":[");
}

/// The page's end after its last row: `],"next":` the cursor or `null`, `}`.
fn write_page_tail(next: Option<&Cursor>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"],\"next\":");
    match next {
        None => out.extend_from_slice(b"null"),
        Some(cursor) => {
            use std::io::Write;
            // A cursor is `sort.order.hex.hex`: nothing in it is escaped. Writing into a `Vec`
            // cannot fail.
            let _ = write!(out, "\"{cursor}\"");
        }
    }
    out.push(b'}');
}

/// Room for a page's end: `],"next":` and a cursor.
const PAGE_TAIL: usize = 64;

/// A page's entries, chosen: what [`Registry::connections`] lists and
/// [`Registry::connections_json`] writes.
struct Chosen {
    /// Entries matching the filter (all pages together).
    total: u64,
    /// The page's entries, in order.
    rows: Vec<Ranked>,
    /// Where the next page starts, if there is one.
    next: Option<Cursor>,
    /// The time (ms) the rows' figures are read at.
    now: u64,
}

fn choose(shared: &Shared, query: &ConnectionQuery) -> Chosen {
    let now = shared.clock.now_ms();
    let limit = query.limit.clamp(1, ConnectionQuery::MAX_LIMIT);
    let (offset, after) = match query.start {
        Start::First => (0, None),
        Start::Offset(n) => (usize::try_from(n).unwrap_or(usize::MAX), None),
        Start::After(c) => (0, Some(c)),
    };
    // One more than the page, to know whether a next page exists.
    let want = limit + 1;
    let (total, mut rows) = if query.sort == SortKey::Age {
        let rows = ordered_rows(shared, query, now, offset, after, want);
        (matching_total(shared, &query.filter, now), rows)
    } else {
        ranked_rows(shared, query, now, offset, after, want)
    };
    let next = (rows.len() > limit).then(|| {
        let last = &rows[limit - 1];
        Cursor {
            sort: query.sort,
            order: query.order,
            rank: last.rank,
            seq: last.seq,
        }
    });
    rows.truncate(limit);
    Chosen {
        total,
        rows,
        next,
        now,
    }
}

/// Registration order from the ordered index: visits the page (and the offset), not the
/// registry.
fn ordered_rows(
    shared: &Shared,
    query: &ConnectionQuery,
    now: u64,
    mut skip: usize,
    after: Option<Cursor>,
    want: usize,
) -> Vec<Ranked> {
    // Age descending (the default) is the oldest first: ascending sequence numbers.
    let descending = query.order == SortOrder::Asc;
    let batch = skip.saturating_add(want).min(4096);
    let mut rows = Vec::with_capacity(want);
    shared
        .order()
        .walk(after.map(|c| c.seq), descending, batch, |seq| {
            let Some(entry) = shared.entry(seq) else {
                return true; // left meanwhile
            };
            if !matches(&query.filter, &entry, now) {
                return true;
            }
            if skip > 0 {
                skip -= 1;
                return true;
            }
            if let Some(rank) = rank(&entry, query.sort, query.order) {
                rows.push(Ranked { rank, seq, entry });
            }
            rows.len() < want
        });
    rows
}

/// How many entries `filter` matches: O(1) when the aggregates know, else one walk.
fn matching_total(shared: &Shared, filter: &ConnectionFilter, now: u64) -> u64 {
    if filter.is_empty() {
        return shared.aggregates().figures(now).current;
    }
    if let Some(state) = filter.state {
        if ConnectionFilter::default().state(state) == *filter {
            return shared.aggregates().figures(now).by_state.get(state);
        }
    }
    let mut total = 0;
    shared.for_each_entry(|e| total += u64::from(matches(filter, e, now)));
    total
}

/// Any order: one walk of the entries keeping the best `skip + want` in a bounded heap;
/// returns the total matching and the rows after the skip, in order.
fn ranked_rows(
    shared: &Shared,
    query: &ConnectionQuery,
    now: u64,
    skip: usize,
    after: Option<Cursor>,
    want: usize,
) -> (u64, Vec<Ranked>) {
    let keep = skip.saturating_add(want);
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
    let mut total = 0u64;
    shared.for_each_entry(|e| {
        if !matches(&query.filter, e, now) {
            return;
        }
        total += 1;
        let Some(rank) = rank(e, query.sort, query.order) else {
            return;
        };
        let key = (rank, e.seq);
        if after.is_some_and(|c| key <= (c.rank, c.seq)) {
            return;
        }
        if heap.len() < keep {
            heap.push(Ranked {
                rank,
                seq: e.seq,
                entry: e.clone(),
            });
        } else if heap
            .peek()
            .is_some_and(|worst| key < (worst.rank, worst.seq))
        {
            heap.pop();
            heap.push(Ranked {
                rank,
                seq: e.seq,
                entry: e.clone(),
            });
        }
    });
    let mut rows = heap.into_sorted_vec();
    rows.drain(..skip.min(rows.len()));
    (total, rows)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::json::tests::{connection, figure};
    use crate::json::ConnectionView;

    proptest! {
        /// A page of rows cut to any fields, named in any order, is byte for byte what
        /// `GET /api/connections?fields=` answered when it built a `serde_json::Map` per row:
        /// the envelope, the rows' keys in name order, escaping, a `null` or a cursor `next`.
        #[test]
        fn a_page_of_rows_cut_to_any_fields_is_serde_page_of_projected_rows(
            rows in proptest::collection::vec(connection(), 0..5),
            picked in proptest::sample::subsequence(ConnectionInfo::FIELDS.to_vec(), 0..=19)
                .prop_shuffle(),
            total in figure(),
            next in proptest::option::of(cursor()),
        ) {
            let fields: crate::query::Fields = picked.join(",").parse().unwrap();
            let mut mine = Vec::new();
            write_page_head(total, &mut mine);
            let mut list = List::by_name(fields.mask());
            for info in &rows {
                list.push(&ConnectionView::of(info), &mut mine);
            }
            write_page_tail(next.as_ref(), &mut mine);
            let projected: Vec<_> = rows.iter().map(|info| fields.project(info)).collect();
            let page = crate::wire::ConnectionPage::new(total, projected, next);
            let serde = serde_json::to_vec(&page).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&mine), String::from_utf8_lossy(&serde));
            // The cluster's rows, by the public writer: serde's array of projected rows.
            let mut rows_json = Vec::new();
            fields.write_rows(&rows, &mut rows_json);
            let serde = serde_json::to_vec(&page.connections).unwrap();
            prop_assert_eq!(
                String::from_utf8_lossy(&rows_json),
                String::from_utf8_lossy(&serde)
            );
        }

        /// A page of whole rows is byte for byte serde's `ConnectionPage`.
        #[test]
        fn a_page_of_whole_rows_is_serde_page(
            rows in proptest::collection::vec(connection(), 0..5),
            total in figure(),
            next in proptest::option::of(cursor()),
        ) {
            let mut mine = Vec::new();
            write_page_head(total, &mut mine);
            let mut list = List::default();
            for info in &rows {
                list.push(&ConnectionView::of(info), &mut mine);
            }
            write_page_tail(next.as_ref(), &mut mine);
            let serde = serde_json::to_vec(&crate::wire::ConnectionPage::new(total, rows, next))
                .unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&mine), String::from_utf8_lossy(&serde));
        }
    }

    fn cursor() -> impl Strategy<Value = Cursor> {
        let sort = proptest::sample::select(SortKey::ALL.to_vec());
        let order = prop_oneof![Just(SortOrder::Asc), Just(SortOrder::Desc)];
        (sort, order, figure(), figure()).prop_map(|(sort, order, rank, seq)| Cursor {
            sort,
            order,
            rank,
            seq,
        })
    }
}
