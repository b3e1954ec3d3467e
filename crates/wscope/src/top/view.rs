//! How `wscope top` draws a [`Top`] on one 80×24 screen (it grows with the terminal): a title
//! line, totals and states beside rates with sparklines, the connections table (its id, address,
//! path and user columns as wide as the terminal lets them be, and the user agent where there is
//! room left), a key line.
//! Only the 16 basic colours and no mouse, so it reads the same over SSH in any terminal.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;
use wscope_core::ConnectionInfo;

use wscope_core::query::SortOrder;

use super::state::{Link, Panel, Series, Top};

/// Rows above the table: the title and the two blocks (7 lines inside their borders).
const HEAD_ROWS: u16 = 1 + 9;
/// The figures' columns (AGE, IDLE, MSGS, BYTES, QUEUED, MEM, RTT): each fits its header with
/// the sort arrow and its widest figure (`2m05s`, `999.9k`, `1023K`, `1234ms`).
const FIGURES: [u16; 7] = [5, 5, 6, 6, 7, 5, 6];
/// The text columns (ID, ADDRESS, PATH, USER) are at least this wide, when their content is (an
/// id with its instance and sequence number, `eu-1-…-77`; an IPv4 address whole); past that they take the terminal's width as they need it, the id first
/// (whole, it can be pasted into a `close`), then the address, the user, the path.
const TEXT_MIN: [u16; 4] = [9, 15, 4, 4];
/// The order in which the text columns get width beyond [`TEXT_MIN`] (and give it back, last
/// first, when even that does not fit).
const TEXT_PRIORITY: [usize; 4] = [0, 1, 3, 2];
/// A path or user is shown at most this wide; longer ones are cut.
const TEXT_MAX: u16 = 48;
/// The user agent gets a column of its own where this many cells are left after the others.
const AGENT_MIN: u16 = 12;

/// How many table rows fit in a terminal `height` rows high (what to ask the server for).
pub fn table_rows(height: u16) -> usize {
    // The key line, the table's borders and its header.
    usize::from(height.saturating_sub(HEAD_ROWS + 1 + 2 + 1)).max(1)
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, top: &Top) {
    let [title, head, table, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(9),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(title_line(top), title);
    let [totals, rates] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(head);
    frame.render_widget(totals_block(top), totals);
    draw_rates(frame, top, rates);
    draw_table(frame, top, table);
    frame.render_widget(key_line(top), keys);
}

fn title_line(top: &Top) -> Paragraph<'static> {
    let (state, color) = match (&top.link, &top.stats) {
        (Link::Lost(why), _) => (format!(" reconnecting: {why} "), Color::Red),
        (Link::Live, Some(s)) if s.shut_down => (" SHUTTING DOWN ".to_owned(), Color::Yellow),
        (Link::Live, Some(_)) => (" live ".to_owned(), Color::Green),
        (Link::Live, None) => (" waiting for the first event ".to_owned(), Color::Yellow),
    };
    // The state first: a long URL or reason is cut at the right edge, not the state.
    let mut spans = vec![
        Span::styled(" wscope top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(state, Style::new().fg(color).add_modifier(Modifier::BOLD)),
    ];
    if let Some(s) = &top.stats {
        spans.push(Span::raw(format!(
            " {}  up {} ",
            s.instance_id,
            duration(s.uptime)
        )));
    }
    spans.push(Span::raw(format!(" {} ", top.url)));
    Paragraph::new(Line::from(spans)).style(Style::new().add_modifier(Modifier::REVERSED))
}

fn totals_block(top: &Top) -> Paragraph<'static> {
    let block = Block::bordered().title(" Connections ");
    let Some(s) = &top.stats else {
        return Paragraph::new("waiting for the live stream…").block(block);
    };
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let st = s.connections_by_state;
    let lines = vec![
        Line::from(vec![
            Span::raw("Open now "),
            Span::styled(format!("{:<8}", s.total_connections), bold),
            Span::raw(format!("ever {}", s.total_connections_ever)),
        ]),
        Line::from(format!(
            "Closed   {:<8}refused {}",
            s.total_connections_closed,
            s.refused.total()
        )),
        Line::from(format!("OPEN {}  CONNECTING {}", st.open, st.connecting)),
        Line::from(format!("CLOSING {}  CLOSED {}", st.closing, st.closed)),
        Line::from(format!(
            "Avg age {}  idle {}",
            duration(s.average_age),
            duration(s.average_idle_time)
        )),
        Line::from(format!(
            "Avg rtt {:<8}held {}",
            s.average_rtt_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms")),
            bytes(s.traffic.memory_bytes as f64)
        )),
        Line::from(format!(
            "Queued  {} msgs, {}",
            count(s.traffic.queued_messages as f64),
            bytes(s.traffic.queued_bytes as f64)
        )),
    ];
    Paragraph::new(lines).block(block)
}

fn draw_rates(frame: &mut Frame<'_>, top: &Top, area: Rect) {
    let block = Block::bordered().title(" Rates per second ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let r = top.stats.as_ref().map(|s| s.rates).unwrap_or_default();
    let open = top.stats.as_ref().map_or(0, |s| s.total_connections);
    let rows: [(&str, String, &Series, Color); 7] = [
        ("open", count(open as f64), &top.open, Color::Cyan),
        (
            "msgs in",
            count(r.messages_in),
            &top.messages_in,
            Color::Green,
        ),
        (
            "msgs out",
            count(r.messages_out),
            &top.messages_out,
            Color::Green,
        ),
        ("bytes in", bytes(r.bytes_in), &top.bytes_in, Color::Blue),
        ("bytes out", bytes(r.bytes_out), &top.bytes_out, Color::Blue),
        ("opened", count(r.opened), &top.opened, Color::Magenta),
        ("closed", count(r.closed), &top.closed, Color::Magenta),
    ];
    let lines = Layout::vertical([Constraint::Length(1); 7]).split(inner);
    for ((label, value, series, color), line) in rows.into_iter().zip(lines.iter()) {
        let [text, spark] =
            Layout::horizontal([Constraint::Length(20), Constraint::Min(1)]).areas(*line);
        frame.render_widget(Paragraph::new(format!("{label:<9}{value:>10} ")), text);
        let data = series.last(usize::from(spark.width));
        frame.render_widget(
            Sparkline::default()
                .data(&data)
                .style(Style::new().fg(color)),
            spark,
        );
    }
}

fn draw_table(frame: &mut Frame<'_>, top: &Top, area: Rect) {
    let title = match &top.panel {
        Panel::Page(page) => format!(
            " {} — {} of {} ",
            top.sort.title(),
            page.connections.len(),
            page.total
        ),
        _ => format!(" {} ", top.sort.title()),
    };
    let block = Block::bordered().title(title);
    let page = match &top.panel {
        Panel::Page(page) => page,
        Panel::Waiting => {
            frame.render_widget(Paragraph::new("reading connections…").block(block), area);
            return;
        }
        Panel::Unavailable(why) => {
            frame.render_widget(
                Paragraph::new(why.clone())
                    .style(Style::new().fg(Color::Yellow))
                    .block(block),
                area,
            );
            return;
        }
    };
    let (texts, figures): (Vec<_>, Vec<_>) = page
        .connections
        .iter()
        .map(|c| (texts(c), figures(c)))
        .unzip();
    let widths = column_widths(block.inner(area).width, &texts);
    let rows = texts
        .iter()
        .zip(figures)
        .map(|(text, figures)| table_row(text, figures, &widths))
        .collect::<Vec<_>>();
    let header = header_cells(top, widths.len());
    let table = Table::new(rows, widths.into_iter().map(Constraint::Length))
        .header(Row::new(header).style(Style::new().fg(Color::Cyan)))
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

/// The table's first `columns` headers, the sorted column's with the order's arrow.
fn header_cells(top: &Top, columns: usize) -> Vec<Cell<'static>> {
    let order = match top.sort.order {
        SortOrder::Desc => "↓",
        SortOrder::Asc => "↑",
    };
    let sorted = top.sort.key.as_str();
    [
        ("ID", ""),
        ("ADDRESS", ""),
        ("PATH", ""),
        ("USER", ""),
        ("AGE", "age"),
        ("IDLE", "idle"),
        ("MSGS", "messages"),
        ("BYTES", "bytes"),
        ("QUEUED", "queued"),
        ("MEM", "memory"),
        ("RTT", "rtt"),
        ("USER AGENT", ""),
    ]
    .into_iter()
    .take(columns)
    .map(|(name, key)| {
        if key == sorted {
            Cell::from(format!("{name}{order}"))
                .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
        } else {
            Cell::from(name)
        }
    })
    .collect()
}

/// One connection's row: its text cells cut to their columns, its figures, and its user agent
/// where there is a column for it.
fn table_row(text: &[String; 5], figures: [String; 7], widths: &[u16]) -> Row<'static> {
    let [id, address, path, user, agent] = text;
    let mut cells = vec![
        cut_middle(id, widths[0]),
        cut_end(address, widths[1]),
        cut_end(path, widths[2]),
        cut_end(user, widths[3]),
    ];
    cells.extend(figures);
    if let Some(&width) = widths.get(4 + FIGURES.len()) {
        cells.push(cut_end(agent, width));
    }
    Row::new(cells)
}

/// A row's text cells (id, address, path, user, user agent), whole; cut to their columns once
/// the widths are known.
fn texts(c: &ConnectionInfo) -> [String; 5] {
    [
        c.id.to_string(),
        c.remote_address
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        c.path.to_string(),
        c.user.clone().unwrap_or_else(|| "-".to_owned()),
        c.user_agent
            .as_ref()
            .map_or_else(|| "-".to_owned(), |ua| ua.to_string()),
    ]
}

/// A row's figures.
fn figures(c: &ConnectionInfo) -> [String; 7] {
    [
        duration(c.age),
        duration(c.idle_time),
        count((c.messages_in + c.messages_out) as f64),
        short_bytes(c.bytes_in + c.bytes_out),
        short_bytes(c.queued_bytes),
        short_bytes(c.memory_bytes),
        c.rtt_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms")),
    ]
}

/// The columns' widths in a table `inner` cells wide: the figures' fixed widths; each text
/// column as wide as its widest cell (or header) where the width allows, else at least
/// [`TEXT_MIN`], with what is left given in [`TEXT_PRIORITY`] order; and, where at least
/// [`AGENT_MIN`] cells are still left, a last column: the user agent, in what remains.
fn column_widths(inner: u16, texts: &[[String; 5]]) -> Vec<u16> {
    const HEADERS: [&str; 5] = ["ID", "ADDRESS", "PATH", "USER", "USER AGENT"];
    // One cell between each two of the text and figure columns.
    let spacing = 4 + FIGURES.len() as u16 - 1;
    let mut wanted = HEADERS.map(|h| h.len() as u16);
    for row in texts {
        for (want, cell) in wanted.iter_mut().zip(row) {
            let len = u16::try_from(cell.chars().count()).unwrap_or(u16::MAX);
            *want = (*want).max(len);
        }
    }
    wanted[2] = wanted[2].min(TEXT_MAX);
    wanted[3] = wanted[3].min(TEXT_MAX);
    let mut text = [0u16; 4];
    for i in 0..4 {
        text[i] = wanted[i].min(TEXT_MIN[i]);
    }
    let room = inner.saturating_sub(FIGURES.iter().sum::<u16>() + spacing);
    // Narrower than the minimums: the last in priority give way first, down to 3 cells.
    let mut over = text.iter().sum::<u16>().saturating_sub(room);
    for i in TEXT_PRIORITY.into_iter().rev() {
        let less = text[i].saturating_sub(3).min(over);
        text[i] -= less;
        over -= less;
    }
    let mut spare = room.saturating_sub(text.iter().sum());
    for i in TEXT_PRIORITY {
        let more = wanted[i].saturating_sub(text[i]).min(spare);
        text[i] += more;
        spare -= more;
    }
    let mut widths: Vec<u16> = text.into_iter().chain(FIGURES).collect();
    // The user agent, after a column's spacing, in what is left.
    if spare > AGENT_MIN {
        widths.push(wanted[4].min(spare - 1));
    }
    widths
}

/// A connection id cut to `width` in the middle: the instance that holds it (its prefix) and its
/// sequence number (its end) stay, the boot stamp between gives way (`eu-1-187b0c2…-77`).
fn cut_middle(id: &str, width: u16) -> String {
    let width = usize::from(width);
    let len = id.chars().count();
    if len <= width {
        return id.to_owned();
    }
    if width < 2 {
        return "…".chars().take(width).collect();
    }
    // "{instance}-{boot}-{seq}": the instance ends at the second '-' from the right.
    let seq = id.rfind('-').map_or(0, |i| id[i..].chars().count());
    let instance = id
        .rsplitn(3, '-')
        .nth(2)
        .map_or(0, |instance| instance.chars().count() + 1);
    // The tail keeps the sequence number unless the instance needs the room: the instance is
    // what a `close` across a cluster is routed by.
    let tail = seq.min(width - 1 - instance.min(width - 1));
    let head = width - 1 - tail;
    let start: String = id.chars().take(head).collect();
    let end: String = id.chars().skip(len - tail).collect();
    format!("{start}…{end}")
}

/// `text` cut to `width` at its end, with `…` where it was cut.
fn cut_end(text: &str, width: u16) -> String {
    let width = usize::from(width);
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

fn key_line(top: &Top) -> Paragraph<'static> {
    let key = Style::new().add_modifier(Modifier::REVERSED);
    Paragraph::new(Line::from(vec![
        Span::styled(" q ", key),
        Span::raw(" quit  "),
        Span::styled(" s ", key),
        Span::raw(format!(" sort: {}  ", top.sort.key.as_str())),
        Span::styled(" o ", key),
        Span::raw(format!(" order: {}  ", top.sort.order.as_str())),
        Span::styled(" b ", key),
        Span::raw(" busiest  "),
        Span::styled(" i ", key),
        Span::raw(" idlest  "),
        Span::styled(" m ", key),
        Span::raw(" mem"),
    ]))
}

/// Milliseconds as `850ms`, `45s`, `2m05s`, `1h02m`, `3d04h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A count or rate as `7`, `2.5`, `4.1k`, `3.2M`, `1.1G`.
pub fn count(n: f64) -> String {
    match n {
        _ if n < 10.0 && n.fract() != 0.0 => format!("{n:.1}"),
        _ if n < 1e3 => format!("{n:.0}"),
        _ if n < 1e6 => format!("{:.1}k", n / 1e3),
        _ if n < 1e9 => format!("{:.1}M", n / 1e6),
        _ => format!("{:.1}G", n / 1e9),
    }
}

/// Bytes in at most 5 characters, for the table: `512B`, `9.5K`, `813K`, `1.2M`, `40G` (binary
/// units).
pub fn short_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.5 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// Bytes as `512 B`, `1.2 KiB`, `3.4 MiB`, `1.1 GiB`.
pub fn bytes(n: f64) -> String {
    const KIB: f64 = 1024.0;
    match n {
        _ if n < KIB => format!("{n:.0} B"),
        _ if n < KIB * KIB => format!("{:.1} KiB", n / KIB),
        _ if n < KIB * KIB * KIB => format!("{:.1} MiB", n / KIB / KIB),
        _ => format!("{:.1} GiB", n / KIB / KIB / KIB),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use serde_json::json;

    use super::*;
    use wscope_core::query::SortKey;
    use wscope_core::wire::ConnectionPage;

    use crate::top::state::Sort;

    /// The screen `top` draws on an 80×24 terminal, line by line.
    fn screen(top: &Top) -> Vec<String> {
        screen_sized(top, 80, 24)
    }

    /// The screen `top` draws on a terminal `width` × `height`, line by line.
    fn screen_sized(top: &Top, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, top)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", lines.join("\n")))
    }

    fn stats(seq: u64, open: u64, messages_in: f64) -> wscope_core::wire::LiveStats {
        serde_json::from_value(json!({
            "seq": seq, "time": 1_796_010_121_894u64, "instanceId": "eu-1", "uptime": 3_723_000,
            "shutDown": false, "totalConnections": open, "totalConnectionsEver": 5678,
            "totalConnectionsClosed": 4444, "averageAge": 45_000, "averageIdleTime": 125_000,
            "averageRttMs": 7,
            "connectionsByState": {"CONNECTING": 3, "OPEN": open - 4, "CLOSING": 1, "CLOSED": 0},
            "closedBy": {}, "refused": {"banned": 2, "handshakeRate": 1},
            "traffic": {"messagesIn": 10, "messagesOut": 10, "bytesIn": 10, "bytesOut": 10,
                        "queuedMessages": 12, "queuedBytes": 3 * 1024 * 1024,
                        "memoryBytes": 5 * 1024 * 1024},
            "rates": {"messagesIn": messages_in, "messagesOut": 12.0, "bytesIn": 131_840.0,
                      "bytesOut": 512.0, "opened": 2.5, "closed": 0.0, "refused": 0.0}
        }))
        .unwrap()
    }

    fn page() -> ConnectionPage {
        serde_json::from_value(json!({
            "total": 1234,
            "connections": [
                {"id": "eu-1-187b0c2d1e5f3a10-77", "age": 3_723_000, "idleTime": 400,
                 "state": "OPEN", "remoteAddress": "203.0.113.7", "path": "/ws",
                 "messagesIn": 900, "messagesOut": 1100, "bytesIn": 2048, "bytesOut": 0,
                 "queuedBytes": 0, "memoryBytes": 832_307, "rttMs": 12, "user": "ann"},
                {"id": "eu-1-187b0c2d1e5f3a10-5", "age": 61_000, "idleTime": 61_000,
                 "state": "OPEN", "path": "/ws/chat", "messagesIn": 1, "messagesOut": 0}
            ],
            "next": null
        }))
        .unwrap()
    }

    #[test]
    fn totals_states_averages_and_rates_show_the_event_figures() {
        let mut top = Top::new("http://127.0.0.1:9090");
        top.apply(stats(1, 1230, 100.0));
        top.apply(stats(2, 1234, 4120.0));
        let lines = screen(&top);
        let title = line_with(&lines, "wscope top");
        assert!(title.contains("http://127.0.0.1:9090"), "{title}");
        assert!(title.contains("eu-1  up 1h02m"), "{title}");
        assert!(title.contains("live"), "{title}");
        assert!(line_with(&lines, "Open now").contains("Open now 1234"));
        assert!(line_with(&lines, "Open now").contains("ever 5678"));
        assert!(line_with(&lines, "Closed").contains("Closed   4444    refused 3"));
        assert!(line_with(&lines, "CONNECTING").contains("OPEN 1230  CONNECTING 3"));
        assert!(line_with(&lines, "CLOSING").contains("CLOSING 1  CLOSED 0"));
        assert!(line_with(&lines, "Avg age").contains("Avg age 45s  idle 2m05s"));
        assert!(line_with(&lines, "Avg rtt").contains("Avg rtt 7ms     held 5.0 MiB"));
        assert!(line_with(&lines, "Queued").contains("Queued  12 msgs, 3.0 MiB"));
        assert!(line_with(&lines, "msgs in").contains("msgs in        4.1k"));
        assert!(line_with(&lines, "msgs out").contains("msgs out         12"));
        assert!(line_with(&lines, "bytes in").contains("bytes in  128.8 KiB"));
        assert!(line_with(&lines, "bytes out").contains("bytes out     512 B"));
        assert!(line_with(&lines, "opened").contains("opened          2.5"));
        // The sparkline of messages in: the first event low, the second full.
        let spark = line_with(&lines, "msgs in");
        assert!(spark.contains('█'), "{spark}");
    }

    #[test]
    fn the_table_lists_the_page_in_order_with_the_sort_marked() {
        let mut top = Top::new("http://127.0.0.1:9090");
        top.apply(stats(1, 1234, 0.0));
        top.panel = Panel::Page(page());
        let lines = screen(&top);
        assert!(line_with(&lines, "Busiest").contains("Busiest (most messages) — 2 of 1234"));
        let header = line_with(&lines, "ADDRESS");
        assert!(header.contains("MSGS↓"), "{header}");
        let first = lines
            .iter()
            .position(|l| l.contains("203.0.113.7"))
            .unwrap();
        let busy = &lines[first];
        for cell in [
            "│eu-1-…-77 203.0.113.7 /ws  ann ",
            "1h02m",
            "400ms",
            "2.0k",
            "2.0K",
            "0B",
            "813K",
            "12ms",
        ] {
            assert!(busy.contains(cell), "{cell:?} in {busy}");
        }
        let quiet = &lines[first + 1];
        for cell in ["│eu-1-1…-5 ", " /ws… ", "1m01s", " - "] {
            assert!(quiet.contains(cell), "{cell:?} in {quiet}");
        }

        top.sort = Sort {
            key: SortKey::Idle,
            order: SortOrder::Desc,
        };
        let lines = screen(&top);
        assert!(line_with(&lines, "Idlest").contains("Idlest (longest idle)"));
        assert!(line_with(&lines, "ADDRESS").contains("IDLE↓"));
        assert!(line_with(&lines, " q ").contains("sort: idle"));

        top.sort = Sort {
            key: SortKey::Memory,
            order: SortOrder::Desc,
        };
        let lines = screen(&top);
        assert!(line_with(&lines, "Heaviest").contains("Heaviest (most memory held)"));
        assert!(line_with(&lines, "ADDRESS").contains("MEM↓"));
        assert!(line_with(&lines, " q ").contains(" m  mem"));
    }

    #[test]
    fn a_wider_terminal_shows_whole_ids_paths_and_users() {
        let mut top = Top::new("http://127.0.0.1:9090");
        top.apply(stats(1, 1234, 0.0));
        top.panel = Panel::Page(page());
        let lines = screen_sized(&top, 120, 24);
        let header = line_with(&lines, "ADDRESS");
        for name in ["ID", "ADDRESS", "PATH", "USER", "AGE", "RTT"] {
            assert!(header.contains(name), "{name} in {header}");
        }
        let busy = line_with(&lines, "203.0.113.7");
        assert!(
            busy.contains("│eu-1-187b0c2d1e5f3a10-77 203.0.113.7 /ws      ann "),
            "{busy}"
        );
        let quiet = line_with(&lines, "eu-1-187b0c2d1e5f3a10-5 ");
        assert!(quiet.contains(" /ws/chat "), "{quiet}");
        // Every line stays within the terminal: nothing is pushed off the right edge.
        assert!(lines.iter().all(|l| l.chars().count() == 120));
        assert!(busy.trim_end().ends_with('│'), "{busy}");
    }

    #[test]
    fn ids_are_cut_in_the_middle_keeping_their_instance() {
        let id = "eu-1-187b0c2d1e5f3a10-77";
        assert_eq!(cut_middle(id, 24), id);
        assert_eq!(cut_middle(id, 30), id);
        assert_eq!(cut_middle(id, 15), "eu-1-187b0c…-77");
        assert_eq!(cut_middle(id, 9), "eu-1-…-77");
        // Too narrow for both: the instance wins over the sequence number.
        assert_eq!(cut_middle(id, 6), "eu-1-…");
        let long = format!("{}-187b0c2d1e5f3a10-123456", "node".repeat(10));
        let cut = cut_middle(&long, 20);
        assert_eq!(cut, "nodenodenodenodenod…");
        assert_eq!(cut.chars().count(), 20);
        assert_eq!(cut_end("/ws/chat", 4), "/ws…");
        assert_eq!(cut_end("/ws", 4), "/ws");
    }

    #[test]
    fn the_columns_fill_the_width_without_passing_it() {
        let rows = [[
            "eu-1-187b0c2d1e5f3a10-77".to_owned(),
            "2001:db8:85a3::8a2e:370:7334".to_owned(),
            "/ws/chat/rooms/a-long-room-name".to_owned(),
            "someone@example.com".to_owned(),
            "Mozilla/5.0 (X11; Linux x86_64)".to_owned(),
        ]];
        for inner in 40..=300u16 {
            let widths = column_widths(inner, &rows);
            let spacing = widths.len() as u16 - 1;
            let total: u16 = widths.iter().sum::<u16>() + spacing;
            assert!(total <= inner.max(10 + 40 + 12), "{inner}: {widths:?}");
            assert_eq!(widths[4..11], FIGURES);
        }
        // Wide enough: each text column as wide as its content, and no wider.
        assert_eq!(
            column_widths(300, &rows),
            [24, 28, 31, 19, 5, 5, 6, 6, 7, 5, 6, 31]
        );
        // At 80 columns (78 inside the borders) the minimums do not all fit: the path, the user
        // and the address give way, and there is no room for the user agent.
        assert_eq!(column_widths(78, &rows), [9, 13, 3, 3, 5, 5, 6, 6, 7, 5, 6]);
        // The user agent takes what is left, once there is enough of it.
        let agent = column_widths(50 + 102 + 13, &rows);
        assert_eq!(agent[11], 12, "{agent:?}");
        assert_eq!(column_widths(50 + 102 + 12, &rows).len(), 11);
    }

    #[test]
    fn a_missing_endpoint_and_a_lost_stream_are_one_line_each() {
        let mut top = Top::new("http://127.0.0.1:9090");
        top.apply(stats(1, 5, 0.0));
        top.panel = Panel::Unavailable("This server has no GET /api/connections.".into());
        top.link = Link::Lost("the server ended the stream".into());
        let lines = screen(&top);
        assert!(line_with(&lines, "no GET /api/connections").contains("This server has"));
        assert!(line_with(&lines, "wscope top").contains("reconnecting: the server ended"));
        assert_eq!(lines.len(), 24);
    }

    #[test]
    fn the_first_screen_waits_without_figures() {
        let lines = screen(&Top::new("http://127.0.0.1:9090"));
        line_with(&lines, "waiting for the first event");
        line_with(&lines, "waiting for the live stream");
        line_with(&lines, "reading connections");
    }

    #[test]
    fn rows_fit_the_height_and_figures_read_short() {
        assert_eq!(table_rows(24), 10);
        assert_eq!(table_rows(5), 1);
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(3_723_000), "1h02m");
        assert_eq!(duration(273_600_000), "3d04h");
        assert_eq!(count(7.0), "7");
        assert_eq!(count(2.5), "2.5");
        assert_eq!(count(4120.0), "4.1k");
        assert_eq!(count(3.2e6), "3.2M");
        assert_eq!(short_bytes(42), "42B");
        assert_eq!(short_bytes(1023), "1023B");
        assert_eq!(short_bytes(9 * 1024 + 512), "9.5K");
        assert_eq!(short_bytes(832_307), "813K");
        assert_eq!(short_bytes(1_048_000), "1023K");
        assert_eq!(short_bytes(1_048_500), "1.0M");
        assert_eq!(short_bytes(40 << 30), "40G");
        assert_eq!(short_bytes(u64::MAX), "16384P");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(1.1 * 1024.0 * 1024.0 * 1024.0), "1.1 GiB");
    }
}
