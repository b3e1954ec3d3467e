//! What `wscope top` shows, apart from how: the last live event, the history behind the
//! sparklines, the connections panel, the chosen sort, and what each key does to them.

use std::collections::VecDeque;

use wscope_core::query::{SortKey, SortOrder};
use wscope_core::wire::{ConnectionPage, LiveStats};

/// Events kept for the sparklines: more than the widest terminal shows.
const HISTORY: usize = 240;

/// The order `s` cycles through the sort keys: the busiest first, then the idlest.
const CYCLE: [SortKey; 7] = [
    SortKey::Messages,
    SortKey::Idle,
    SortKey::Age,
    SortKey::Bytes,
    SortKey::Queued,
    SortKey::Memory,
    SortKey::Rtt,
];

/// The key after `key` in [`CYCLE`].
fn next_key(key: SortKey) -> SortKey {
    let i = CYCLE.iter().position(|k| *k == key).unwrap_or(0);
    CYCLE[(i + 1) % CYCLE.len()]
}

/// Which connections the panel lists: the query's sort and order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    /// The column.
    pub key: SortKey,
    /// The direction.
    pub order: SortOrder,
}

impl Default for Sort {
    /// The busiest first.
    fn default() -> Self {
        Self {
            key: SortKey::Messages,
            order: SortOrder::Desc,
        }
    }
}

impl Sort {
    /// The query path for `limit` rows.
    pub fn path(self, limit: usize) -> String {
        format!(
            "/api/connections?sort={}&order={}&limit={limit}",
            self.key.as_str(),
            self.order.as_str()
        )
    }

    /// What the panel's title calls this list.
    pub fn title(self) -> String {
        match (self.key, self.order) {
            (SortKey::Messages, SortOrder::Desc) => "Busiest (most messages)".into(),
            (SortKey::Idle, SortOrder::Desc) => "Idlest (longest idle)".into(),
            (SortKey::Memory, SortOrder::Desc) => "Heaviest (most memory held)".into(),
            (key, order) => format!(
                "By {} ({})",
                key.as_str(),
                match order {
                    SortOrder::Desc => "largest first",
                    SortOrder::Asc => "smallest first",
                }
            ),
        }
    }
}

/// The connections panel's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Panel {
    /// Nothing read yet.
    Waiting,
    /// The last page read.
    Page(ConnectionPage),
    /// Why there is no list (one line: an older server without the endpoint, an error).
    Unavailable(String),
}

/// Whether the live stream is flowing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Events arrive.
    Live,
    /// The stream broke or ended; `top` reconnects. Why, in one line.
    Lost(String),
}

/// The rates behind one sparkline, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Series(VecDeque<u64>);

impl Series {
    fn push(&mut self, value: u64) {
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(value);
    }

    /// The last `n` values, oldest first (fewer if fewer were read).
    pub fn last(&self, n: usize) -> Vec<u64> {
        let skip = self.0.len().saturating_sub(n);
        self.0.iter().skip(skip).copied().collect()
    }
}

/// Everything the screen shows.
#[derive(Clone, Debug)]
pub struct Top {
    /// The admin URL (in the title).
    pub url: String,
    /// The last event read.
    pub stats: Option<LiveStats>,
    /// Open connections, per event.
    pub open: Series,
    /// Messages received per second, per event.
    pub messages_in: Series,
    /// Messages sent per second, per event.
    pub messages_out: Series,
    /// Bytes received per second, per event.
    pub bytes_in: Series,
    /// Bytes sent per second, per event.
    pub bytes_out: Series,
    /// Connections opened per second (rounded up, so one connection shows).
    pub opened: Series,
    /// Connections closed per second (rounded up).
    pub closed: Series,
    /// The connections panel.
    pub panel: Panel,
    /// The panel's sort.
    pub sort: Sort,
    /// The live stream's health.
    pub link: Link,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    None,
    /// Leave.
    Quit,
    /// The sort changed: read the panel again now.
    Resort,
}

impl Top {
    /// The screen before anything is read.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stats: None,
            open: Series::default(),
            messages_in: Series::default(),
            messages_out: Series::default(),
            bytes_in: Series::default(),
            bytes_out: Series::default(),
            opened: Series::default(),
            closed: Series::default(),
            panel: Panel::Waiting,
            sort: Sort::default(),
            link: Link::Live,
        }
    }

    /// Takes in a live event.
    pub fn apply(&mut self, stats: LiveStats) {
        let r = stats.rates;
        self.open.push(stats.total_connections);
        self.messages_in.push(r.messages_in.round() as u64);
        self.messages_out.push(r.messages_out.round() as u64);
        self.bytes_in.push(r.bytes_in.round() as u64);
        self.bytes_out.push(r.bytes_out.round() as u64);
        self.opened.push(r.opened.ceil() as u64);
        self.closed.push(r.closed.ceil() as u64);
        self.stats = Some(stats);
        self.link = Link::Live;
    }

    /// What `key` (a character, or `'\x03'` for Ctrl-C) does.
    pub fn key(&mut self, key: char) -> Action {
        let before = self.sort;
        match key {
            'q' | 'Q' | '\x03' => return Action::Quit,
            's' => {
                self.sort.key = next_key(self.sort.key);
                self.sort.order = SortOrder::Desc;
            }
            'o' => {
                self.sort.order = match self.sort.order {
                    SortOrder::Desc => SortOrder::Asc,
                    SortOrder::Asc => SortOrder::Desc,
                }
            }
            'b' => self.sort = Sort::default(),
            'i' => {
                self.sort = Sort {
                    key: SortKey::Idle,
                    order: SortOrder::Desc,
                }
            }
            'm' => {
                self.sort = Sort {
                    key: SortKey::Memory,
                    order: SortOrder::Desc,
                }
            }
            _ => {}
        }
        if self.sort == before {
            Action::None
        } else {
            Action::Resort
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_cycle_the_sort_and_flip_the_order() {
        let mut top = Top::new("http://x");
        assert_eq!(
            top.sort.path(5),
            "/api/connections?sort=messages&order=desc&limit=5"
        );
        assert_eq!(top.key('s'), Action::Resort);
        assert_eq!(
            top.sort.path(5),
            "/api/connections?sort=idle&order=desc&limit=5"
        );
        assert_eq!(top.sort.title(), "Idlest (longest idle)");
        assert_eq!(top.key('o'), Action::Resort);
        assert_eq!(top.sort.order, SortOrder::Asc);
        assert_eq!(top.key('s'), Action::Resort);
        assert_eq!(
            (top.sort.key, top.sort.order),
            (SortKey::Age, SortOrder::Desc)
        );
        for _ in 0..CYCLE.len() - 1 {
            top.key('s');
        }
        assert_eq!(top.sort.key, SortKey::Idle);
        assert_eq!(top.key('b'), Action::Resort);
        assert_eq!(top.key('b'), Action::None);
        assert_eq!(top.sort.title(), "Busiest (most messages)");
        assert_eq!(top.key('m'), Action::Resort);
        assert_eq!(
            top.sort.path(5),
            "/api/connections?sort=memory&order=desc&limit=5"
        );
        assert_eq!(top.sort.title(), "Heaviest (most memory held)");
        assert_eq!(top.key('m'), Action::None);
        assert_eq!(top.key('x'), Action::None);
        assert_eq!(top.key('q'), Action::Quit);
        assert_eq!(top.key('\x03'), Action::Quit);
    }

    #[test]
    fn series_keep_the_last_values() {
        let mut s = Series::default();
        for v in 0..(HISTORY as u64 + 10) {
            s.push(v);
        }
        assert_eq!(
            s.last(3),
            vec![HISTORY as u64 + 7, HISTORY as u64 + 8, HISTORY as u64 + 9]
        );
        assert_eq!(s.last(10_000).len(), HISTORY);
    }
}
