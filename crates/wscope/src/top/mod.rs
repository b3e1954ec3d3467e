//! `wscope top --admin-url http://127.0.0.1:9090 [--token …]`: a live terminal view of a wscope
//! server, read from its admin API — totals, states and averages from the live stream
//! (`GET /api/stats/stream`), rates with sparklines, and the busiest or idlest connections from
//! `GET /api/connections`, sortable with keys. `q` or Ctrl-C quits and restores the terminal.
//!
//! The server is reached before the terminal is touched, so an unreachable server or a refused
//! token is one line on stderr and a non-zero exit.
//!
//! # Layout
//! - `client`: the admin API over HTTP (hyper), errors as one line each.
//! - `sse`: the live stream's events parsed as bytes arrive.
//! - `state`: what the screen shows ([`state::Top`]) and what each key does.
//! - `view`: how it is drawn (ratatui), testable on a `TestBackend`.

mod client;
mod sse;
mod state;
mod view;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::{mpsc, watch};
use wscope_core::wire::{ConnectionPage, LiveStats};

use client::{AdminClient, AdminError, EventStream};
use state::{Action, Link, Panel, Sort, Top};

/// How long to wait before opening the live stream again after it broke.
const RETRY: Duration = Duration::from_secs(1);

/// `wscope top`'s flags (its own: none of `serve`'s apply).
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The admin listener of the wscope server to watch.
    #[arg(
        long,
        env = "WSCOPE_ADMIN_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub admin_url: String,
    /// The admin token (sent as `Authorization: Bearer TOKEN`).
    #[arg(
        long,
        env = "WSCOPE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding the admin token (trimmed), to keep it out of process listings; refused
    /// when users other than its owner may read or change it (chmod 600).
    #[arg(long, env = "WSCOPE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Time between refreshes, from 100ms to 60s.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
}

impl TopArgs {
    /// `--token`, else the content of `--token-file`.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if self.token.is_some() {
            return Ok(self.token.clone());
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        // A token is at most 1,024 characters; the file is read with room for white space.
        let token = wscope::config::token_file::read(path, 2048)
            .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
        Ok(Some(token))
    }
}

/// `--interval`: a duration the live stream accepts.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let every = wscope_core::units::parse_duration(text)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&every) {
        return Err(format!("{text:?} is out of range: use 100ms to 60s"));
    }
    Ok(every)
}

/// What the background tasks tell the screen.
#[derive(Debug)]
enum Update {
    /// A live event.
    Stats(Box<LiveStats>),
    /// The live stream broke (why); it is being opened again.
    Lost(String),
    /// The connections panel's answer for `sort`.
    Page(Sort, Result<ConnectionPage, String>),
}

/// Runs `wscope top` until `q`, Ctrl-C, SIGINT or SIGTERM.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.admin_url, args.token()?)?;
    let stream_path = format!("/api/stats/stream?interval={}ms", args.interval.as_millis());
    // Before the terminal is touched, so that a failure is one plain line.
    let stream = client.stream(&stream_path).await.map_err(|e| match e {
        AdminError::NotFound { .. } => anyhow::anyhow!(
            "{} has no live stream (GET /api/stats/stream: 404): is it a wscope admin listener?",
            client.url()
        ),
        e => e.into(),
    })?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("wscope top needs a terminal: its standard output is not one");
    }
    let mut signals = wscope_core::StopSignals::install().context("cannot handle signals")?;
    let mut screen = Screen::enter().context("cannot set up the terminal")?;
    let mut top = Top::new(client.url());
    let rows = view::table_rows(screen.0.size().map(|s| s.height).unwrap_or(24));

    let (updates_tx, mut updates) = mpsc::channel(64);
    let (query_tx, query) = watch::channel((top.sort, rows));
    tokio::spawn(follow(
        client.clone(),
        stream_path,
        stream,
        updates_tx.clone(),
    ));
    tokio::spawn(poll_connections(client, args.interval, query, updates_tx));
    let mut keys = Keys::start();
    loop {
        screen.0.draw(|frame| view::draw(frame, &top))?;
        tokio::select! {
            Some(update) = updates.recv() => match update {
                Update::Stats(stats) => top.apply(*stats),
                Update::Lost(why) => top.link = Link::Lost(why),
                Update::Page(sort, page) if sort == top.sort => {
                    top.panel = match page {
                        Ok(page) => Panel::Page(page),
                        Err(why) => Panel::Unavailable(why),
                    }
                }
                Update::Page(..) => {} // answered for a sort no longer shown
            },
            Some(input) = keys.rx.recv() => match input {
                Input::Key(c) => match top.key(c) {
                    Action::Quit => break,
                    Action::Resort => {
                        top.panel = Panel::Waiting;
                        query_tx.send_modify(|q| q.0 = top.sort);
                    }
                    Action::None => {}
                },
                Input::Resize(height) => {
                    let rows = view::table_rows(height);
                    query_tx.send_if_modified(|q| std::mem::replace(&mut q.1, rows) != rows);
                }
            },
            _ = signals.recv() => break,
            else => break,
        }
    }
    drop(screen);
    Ok(())
}

/// The terminal in raw mode on the alternate screen, restored when dropped (and on a panic,
/// by the hook `ratatui::try_init` installs).
struct Screen(ratatui::DefaultTerminal);

impl Screen {
    fn enter() -> std::io::Result<Self> {
        ratatui::try_init().map(Self)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// A key pressed, or the terminal's new height.
#[derive(Debug)]
enum Input {
    Key(char),
    Resize(u16),
}

/// The thread reading the terminal's input (crossterm reads block), stopped when dropped.
struct Keys {
    rx: mpsc::UnboundedReceiver<Input>,
    stop: Arc<AtomicBool>,
}

impl Keys {
    fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            // Polls with a timeout so that the thread sees `stop` and ends.
            while !stopped.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => break,
                }
                let input = match event::read() {
                    Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => match key.code {
                        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                            Input::Key('\x03')
                        }
                        KeyCode::Char(c) => Input::Key(c),
                        _ => continue,
                    },
                    Ok(Event::Resize(_, height)) => Input::Resize(height),
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.send(input).is_err() {
                    break;
                }
            }
        });
        Self { rx, stop }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads the live stream into `updates`; when it breaks, says why and opens it again after the
/// last event read (`lastEventId`), until the screen goes.
async fn follow(
    client: AdminClient,
    path: String,
    mut stream: EventStream,
    updates: mpsc::Sender<Update>,
) {
    let mut last = None;
    loop {
        let why = loop {
            match stream.next().await {
                Ok(Some(event)) if event.event == "stats" => {
                    match serde_json::from_str::<LiveStats>(&event.data) {
                        Ok(stats) => {
                            last = Some(stats.seq);
                            if updates.send(Update::Stats(Box::new(stats))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => break format!("unexpected event: {e}"),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break "the server ended the stream".to_owned(),
                Err(e) => break e.to_string(),
            }
        };
        if updates.send(Update::Lost(why)).await.is_err() {
            return;
        }
        stream = loop {
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = updates.closed() => return,
            }
            let again = match last {
                Some(seq) => format!("{path}&lastEventId={seq}"),
                None => path.clone(),
            };
            match client.stream(&again).await {
                Ok(stream) => break stream,
                Err(e) => {
                    if updates.send(Update::Lost(e.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        };
    }
}

/// Reads the connections panel every `every`, and at once when the sort or the height changes.
async fn poll_connections(
    client: AdminClient,
    every: Duration,
    mut query: watch::Receiver<(Sort, usize)>,
    updates: mpsc::Sender<Update>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = query.changed() => if changed.is_err() { return },
        }
        let (sort, rows) = *query.borrow_and_update();
        let page = client
            .json::<ConnectionPage>(&sort.path(rows))
            .await
            .map_err(|e| panel_error(&e));
        if updates.send(Update::Page(sort, page)).await.is_err() {
            return;
        }
    }
}

/// The connections panel's one line for `e`.
fn panel_error(e: &AdminError) -> String {
    match e {
        AdminError::NotFound { .. } => {
            "This server has no GET /api/connections (an older wscope): totals and rates only."
                .to_owned()
        }
        e => format!("Cannot list connections: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("10ms")
            .unwrap_err()
            .contains("use 100ms to 60s"));
        assert!(parse_interval("2m").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn a_missing_endpoint_is_one_line_in_the_panel() {
        let line = panel_error(&AdminError::NotFound {
            path: "/api/connections".into(),
        });
        assert!(line.contains("no GET /api/connections"));
        assert!(!line.contains('\n'));
    }
}
