//! The dashboard in a real headless browser: Debian's `chromium`, driven over WebDriver by
//! `chromedriver` (started here on a port of its choosing), against the real `wscope serve`
//! with an admin token, and real WebSocket clients on its main listener.
//!
//! Without chromium and chromedriver the test says "skipped: …" on stderr and passes, so that
//! `cargo test` works on a machine with only Rust; with `WSCOPE_REQUIRE_BROWSER=1` (as `.ci/run`
//! sets) a missing browser fails it. The screenshot goes to `CARGO_TARGET_TMPDIR/dashboard.png`,
//! or to `docs/img/dashboard.png` with `WSCOPE_UPDATE_SCREENSHOT=1` (for the README).

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;
use wscope_testkit::served::Served;

const BIN: &str = env!("CARGO_BIN_EXE_wscope");
const TOKEN: &str = "dashboard-test-token";
/// The longest any one wait for the browser may take (a cold chromium on two busy cores is slow).
const WAIT: Duration = Duration::from_secs(30);

/// The browser and its driver, found on `PATH` (or named by `CHROMIUM` / `CHROMEDRIVER`).
struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn find_browser() -> Result<Browser, String> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(var) {
            return Some(PathBuf::from(path)).filter(|p| p.is_file());
        }
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    };
    let chromium = find("CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = find("CHROMEDRIVER", &["chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Ok(Browser {
            chromium,
            chromedriver,
        }),
        (c, d) => Err(format!(
            "{} not found (apt-get install chromium chromium-driver)",
            [("chromium", c.is_none()), ("chromedriver", d.is_none())]
                .iter()
                .filter(|(_, missing)| *missing)
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// A running chromedriver, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(path: &Path) -> Self {
        // Its own process group, so that the browsers it starts go with it even when the test
        // fails before it could end its session.
        let mut child = Command::new(path)
            .process_group(0)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // "ChromeDriver was started successfully on port 40045."
        let port = loop {
            let line = rx
                .recv_timeout(WAIT)
                .expect("chromedriver did not say which port it listens on");
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().parse().unwrap();
            }
        };
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_browser(browser: &Browser, driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": browser.chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1440,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        WAIT,
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port)),
    )
    .await
    .expect("chromium did not start in time")
    .unwrap()
}

/// The browser, or `None` after one "skipped: {test}: …" line on stderr when it is missing (a
/// failure instead with `WSCOPE_REQUIRE_BROWSER=1`).
fn browser_or_skip(test: &str) -> Option<Browser> {
    match find_browser() {
        Ok(browser) => Some(browser),
        Err(why) => {
            assert!(
                std::env::var_os("WSCOPE_REQUIRE_BROWSER").is_none_or(|v| v != "1"),
                "WSCOPE_REQUIRE_BROWSER=1 but {why}"
            );
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
            None
        }
    }
}

/// A chromedriver, a browser session on it and the browser's throwaway profile.
struct Session {
    client: Client,
    driver: Driver,
    profile: PathBuf,
}

impl Session {
    async fn open(browser: &Browser, name: &str) -> Self {
        let driver = Driver::start(&browser.chromedriver);
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-chromium-profile-{}", std::process::id()));
        let client = open_browser(browser, &driver, &profile).await;
        Self {
            client,
            driver,
            profile,
        }
    }

    /// Ends the browser session, stops the driver and removes the profile.
    async fn end(self) {
        self.client.close().await.unwrap();
        drop(self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Polls `check` every 100 ms until it gives a value; panics naming `what` after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(client: &Client, css: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// Waits until the element at `css` reads `expected`; on timeout, says what it read last and
/// what the page's notice and live indicator said.
async fn wait_text(client: &Client, css: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = text(client, css).await;
        if seen.as_deref() == Some(expected) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out waiting until {css} reads {expected:?}: it reads {seen:?}; \
                 #live: {:?}; #notice: {:?}",
                text(client, "#live").await,
                text(client, "#notice").await,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The connection table's rows, as the user-agent cell of each.
async fn table_user_agents(client: &Client) -> Option<Vec<String>> {
    let rows = client
        .find_all(Locator::Css("#conn-rows tr td.ua"))
        .await
        .ok()?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.text().await.ok()?);
    }
    Some(out)
}

/// Clicks the element at `css`; found again when the page redrew it between the find and the
/// click (the connection rows are redrawn at live events), as a user would click the new one.
async fn click(client: &Client, css: &str) -> Element {
    wait_for(&format!("{css} takes a click"), || async {
        let element = client.find(Locator::Css(css)).await.unwrap();
        match element.click().await {
            Ok(()) => Some(element),
            Err(e) if e.is_stale_element_reference() => None,
            Err(e) => panic!("clicking {css}: {e}"),
        }
    })
    .await
}

/// Waits for the page's `confirm()` and accepts it, returning its text.
async fn accept_confirmation(client: &Client) -> String {
    let text = wait_for("a confirmation opens", || async {
        client.get_alert_text().await.ok()
    })
    .await;
    client.accept_alert().await.unwrap();
    text
}

/// A WebSocket client on `path` (`/ws`, with `?user=`/`?tag=` labels) with user agent `ua`, sending a message every `every` (so that
/// the charts have traffic) until told to leave or closed by the server, whose close code it
/// records.
struct WsClient {
    leave: Option<oneshot::Sender<()>>,
    /// `None` while open; `Some(code)` once closed by the server (`Some(None)`: no close frame).
    closed: Arc<Mutex<Option<Option<u16>>>>,
}

async fn ws_client(served: &Served, path: &str, ua: &str, every: Duration) -> WsClient {
    let mut request = served.url(path).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("user-agent", ua.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    let (leave_tx, mut leave_rx) = oneshot::channel::<()>();
    let closed = Arc::new(Mutex::new(None));
    let record = closed.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let code = loop {
            tokio::select! {
                _ = &mut leave_rx => {
                    let _ = ws.close(None).await;
                    // Read until the server's close answer, so that the server sees a clean close.
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() { break; }
                    }
                    return;
                }
                _ = tick.tick() => {
                    if ws.send(Message::text("hello from the dashboard test")).await.is_err() {
                        break None;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break None,
                },
            }
        };
        *record.lock().unwrap() = Some(code);
    });
    WsClient {
        leave: Some(leave_tx),
        closed,
    }
}

impl WsClient {
    fn leave(&mut self) {
        let _ = self.leave.take().unwrap().send(());
    }

    /// The close code the server sent, once it closed this client.
    fn closed_with(&self) -> Option<Option<u16>> {
        *self.closed.lock().unwrap()
    }
}

/// Waits until exactly `n` of `clients` were closed by the server with `code`, and the others
/// not at all.
async fn wait_closed(what: &str, clients: &[&WsClient], n: usize, code: u16) {
    wait_for(what, || async {
        let closes: Vec<_> = clients.iter().filter_map(|c| c.closed_with()).collect();
        assert!(
            closes.iter().all(|c| *c == Some(code)),
            "{what}: closed with {closes:?}"
        );
        (closes.len() == n).then_some(())
    })
    .await;
}

/// Replaces the text of the input at `css`.
async fn fill(client: &Client, css: &str, text: &str) {
    let input = client.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

fn screenshot_path() -> PathBuf {
    if std::env::var_os("WSCOPE_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/dashboard.png")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_clients_filters_and_closes_them_in_headless_chromium() {
    let Some(browser) = browser_or_skip("dashboard browser test") else {
        return;
    };
    let served = Served::start(BIN, &["--admin-token", TOKEN, "--ping-interval", "1s"]);
    let session = Session::open(&browser, "dashboard").await;
    let client = &session.client;

    client
        .goto(&format!("http://{}/", served.admin))
        .await
        .unwrap();

    // The page loads without the token; its first API call gets 401 and it asks for the token.
    let input = wait_for("the token dialog opens", || async {
        client
            .find(Locator::Css("#token-dialog[open] #token-input"))
            .await
            .ok()
    })
    .await;
    input.send_keys(TOKEN).await.unwrap();
    click(client, "#token-submit").await;
    wait_text(client, "#live", "live").await;
    wait_text(client, "#open-count", "0").await;

    // The open-connection count follows clients connecting and leaving.
    let mut alphas = Vec::new();
    for i in 0..3 {
        let every = Duration::from_millis(40 + 30 * i);
        let path = format!("/ws?user=ann-{i}&tag=alpha");
        alphas.push(ws_client(&served, &path, &format!("alpha-bot/{i}"), every).await);
    }
    let mut betas = Vec::new();
    for i in 0..2 {
        let every = Duration::from_millis(150 + 100 * i);
        let path = format!("/ws?user=bob-{i}&tag=beta,canary");
        betas.push(ws_client(&served, &path, &format!("beta-bot/{i}"), every).await);
    }
    wait_text(client, "#open-count", "5").await;
    let mut leaver = alphas.pop().unwrap();
    leaver.leave();
    wait_text(client, "#open-count", "4").await;

    // The table, filtered by user agent on the server.
    let all = wait_for("the table shows the 4 open connections", || async {
        table_user_agents(client)
            .await
            .filter(|rows| rows.len() == 4)
    })
    .await;
    assert_eq!(
        all.iter().filter(|ua| ua.starts_with("alpha-bot/")).count(),
        2
    );
    fill(client, "#filters input[name=ua]", "beta-bot").await;
    click(client, "#filter-apply").await;
    let filtered = wait_for("the table shows only the beta clients", || async {
        table_user_agents(client)
            .await
            .filter(|rows| rows.len() == 2)
    })
    .await;
    assert!(
        filtered.iter().all(|ua| ua.starts_with("beta-bot/")),
        "{filtered:?}"
    );
    wait_text(client, "#page-info", "1–2 of 2").await;
    // The labels the application attached (here from the demo route's query) are shown.
    for row in client
        .find_all(Locator::Css("#conn-rows tr"))
        .await
        .unwrap()
    {
        let text = row.text().await.unwrap();
        assert!(
            text.contains("bob-") && text.contains("beta · canary"),
            "{text}"
        );
    }

    // The picture for the README: traffic flowing, the table filtered. For the README's copy,
    // let the charts gather some history first.
    let path = screenshot_path();
    if path.starts_with(env!("CARGO_MANIFEST_DIR")) {
        wait_for("the dashboard has 30 s of history", || async {
            let up = text(client, "#uptime").await?;
            let secs: f64 = up.strip_prefix("up ")?.strip_suffix(" s")?.parse().ok()?;
            (secs >= 30.0).then_some(())
        })
        .await;
    }
    let png = client.screenshot().await.unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "dashboard screenshot: {}",
        path.display()
    );

    // Close one, from its row, confirmed.
    click(client, "#conn-rows tr:first-child button.close-one").await;
    let question = accept_confirmation(client).await;
    assert!(question.starts_with("Close connection "), "{question}");
    wait_closed(
        "one beta client is closed",
        &betas.iter().collect::<Vec<_>>(),
        1,
        1000,
    )
    .await;
    wait_for("the table shows the other beta client", || async {
        table_user_agents(client)
            .await
            .filter(|rows| rows.len() == 1)
    })
    .await;

    // Close matching, by tag, with the code and reason from the toolbar: only the alphas go.
    fill(client, "#filters input[name=ua]", "").await;
    fill(client, "#filters input[name=tag]", "alpha").await;
    click(client, "#filter-apply").await;
    wait_text(client, "#page-info", "1–2 of 2").await;
    fill(client, "#close-code", "4001").await;
    fill(client, "#close-reason", "maintenance").await;
    click(client, "#close-matching").await;
    let question = accept_confirmation(client).await;
    assert_eq!(question, "Close the 2 connections matching tag=alpha?");
    wait_closed(
        "the alpha clients are closed",
        &alphas.iter().collect::<Vec<_>>(),
        2,
        4001,
    )
    .await;
    wait_text(client, "#open-count", "1").await;

    // Close all, confirmed: the last client receives the close frame.
    click(client, "#filter-reset").await;
    fill(client, "#close-code", "1000").await;
    fill(client, "#close-reason", "").await;
    click(client, "#close-all").await;
    let question = accept_confirmation(client).await;
    assert_eq!(question, "Close all connections (1 now)?");
    wait_closed(
        "both beta clients are closed",
        &betas.iter().collect::<Vec<_>>(),
        2,
        1000,
    )
    .await;
    wait_text(client, "#open-count", "0").await;
    wait_for(
        "the recently closed list shows the admin's closes",
        || async {
            let rows = client
                .find_all(Locator::Css("#closed-rows tr"))
                .await
                .ok()?;
            let mut texts = Vec::new();
            for row in rows {
                texts.push(row.text().await.ok()?);
            }
            let by_admin = texts.iter().filter(|t| t.contains("admin")).count();
            let maintenance = texts
                .iter()
                .filter(|t| t.contains("4001 maintenance"))
                .count();
            (by_admin == 4 && maintenance == 2).then_some(())
        },
    )
    .await;

    // The strict Content-Security-Policy blocked nothing the page needs.
    let violations = client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .attr("data-csp-violations")
        .await
        .unwrap();
    assert_eq!(violations, None, "the page broke its own policy");
    session.end().await;
}

/// A size as the dashboard writes it ("300 KiB", "1.2 MiB", "512 B"), in KiB.
fn kib(shown: &str) -> f64 {
    let (value, unit) = shown.split_once(' ').unwrap_or((shown, "B"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("not a size: {shown:?}"));
    match unit {
        "B" => value / 1024.0,
        "KiB" => value,
        "MiB" => value * 1024.0,
        other => panic!("unit {other:?} in {shown:?}"),
    }
}

/// The Memory column: a client stalled half-way through a large message makes the server hold
/// that half; its row shows it, the summary's "held" counts it, and one click on Memory (largest
/// first) puts it above the idle clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_column_shows_a_stalled_message_and_sorts_by_it() {
    let Some(browser) = browser_or_skip("the dashboard's memory column") else {
        return;
    };
    let served = Served::start(BIN, &["--ping-interval", "0"]);
    let mut idle = Vec::new();
    for i in 0..2 {
        let ua = format!("idle-bot/{i}");
        idle.push(ws_client(&served, "/ws", &ua, Duration::from_secs(3600)).await);
    }
    // Half of a 600 KiB binary message in one frame (masked with a zero key: the payload goes
    // as it is), then nothing more.
    let mut request = served.url("/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("user-agent", "stalled-bot/0".parse().unwrap());
    let (mut stalled, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    const WHOLE: u64 = 600 * 1024;
    const SENT: usize = 300 * 1024;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&WHOLE.to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.resize(frame.len() + SENT, 7);
    let MaybeTlsStream::Plain(tcp) = stalled.get_mut() else {
        panic!("a plain TCP client")
    };
    tcp.write_all(&frame).await.unwrap();

    let session = Session::open(&browser, "dashboard-memory").await;
    let client = &session.client;
    client
        .goto(&format!("http://{}/", served.admin))
        .await
        .unwrap();
    wait_text(client, "#open-count", "3").await;
    click(client, "thead button[data-sort=memory]").await;
    // Id, State, Address, Path, User agent, User / tags, Age, Idle, Messages, Bytes, Queued,
    // Memory: the twelfth cell.
    let rows = wait_for(
        "the table sorted by memory, the stalled client first",
        || async {
            let rows = client.find_all(Locator::Css("#conn-rows tr")).await.ok()?;
            let mut seen = Vec::new();
            for row in rows {
                let ua = row
                    .find(Locator::Css("td.ua"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let memory = row
                    .find(Locator::Css("td:nth-child(12)"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                seen.push((ua, memory));
            }
            (seen.len() == 3 && seen[0].0 == "stalled-bot/0" && kib(&seen[0].1) >= 300.0)
                .then_some(seen)
        },
    )
    .await;
    // Largest first; the idle clients hold a small fraction of it.
    assert!(rows[1].0.starts_with("idle-bot/"), "{rows:?}");
    assert!(kib(&rows[1].1) <= kib(&rows[0].1) / 10.0, "{rows:?}");
    assert!(kib(&rows[2].1) <= kib(&rows[1].1), "{rows:?}");
    let button = client
        .find(Locator::Css("thead button[data-sort=memory]"))
        .await
        .unwrap();
    assert_eq!(
        button.attr("aria-sort").await.unwrap().as_deref(),
        Some("descending")
    );
    // The summary's "held" counts what the stalled client holds.
    let held = wait_for("the summary's held counts the stalled half", || async {
        let held = text(client, "#held").await?;
        (held != "–" && kib(&held) >= 300.0).then_some(held)
    })
    .await;
    assert!(kib(&held) < 2048.0, "held {held}");
    session.end().await;
    drop(stalled);
}

/// Sets the page's viewport (the window's inner size) to `width` × `height` CSS pixels.
async fn set_viewport(client: &Client, width: u32, height: u32) {
    client.set_window_size(width, height).await.unwrap();
    let inner = client
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .unwrap();
    let (w, h) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
    // The window's frame, if any, is added to what was asked.
    let (dw, dh) = (
        u64::from(width) - w.min(u64::from(width)),
        u64::from(height) - h.min(u64::from(height)),
    );
    if dw > 0 || dh > 0 {
        client
            .set_window_size(width + dw as u32, height + dh as u32)
            .await
            .unwrap();
    }
    let inner = client
        .execute("return window.innerWidth;", vec![])
        .await
        .unwrap();
    assert_eq!(
        inner.as_u64(),
        Some(u64::from(width)),
        "the viewport's width"
    );
}

/// The summary cards' tops, lefts (rounded CSS pixels) and how far their content overflows them,
/// in order, after `script` ran (in the same turn, so the page's own updates cannot interleave).
async fn card_positions(client: &Client, script: &str) -> Vec<(i64, i64, i64)> {
    let js = format!(
        "{script}\n\
         return [...document.querySelectorAll('#summary .card')].map((c) => {{ \
           const r = c.getBoundingClientRect(); \
           return [Math.round(r.top), Math.round(r.left), c.scrollWidth - c.clientWidth]; }});"
    );
    let cards = client.execute(&js, vec![]).await.unwrap();
    cards
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |i: usize| c[i].as_i64().unwrap();
            (n(0), n(1), n(2))
        })
        .collect()
}

/// The text of each chart's legend.
async fn legends(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for chart in ["chart-open", "chart-messages", "chart-bytes"] {
        let legend = client
            .find(Locator::Css(&format!("#{chart} .u-legend")))
            .await
            .unwrap();
        out.push(legend.text().await.unwrap());
    }
    out
}

/// The page at 1,400 px: the summary stays on one row with busy rates (the per-second card
/// wrapped onto a row of its own once its figures grew), and the charts' legends show the
/// latest values before anything is hovered (they read "Time --").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_1400_px_the_summary_is_one_row_and_legends_show_the_latest_values() {
    let test = "at_1400_px_the_summary_is_one_row_and_legends_show_the_latest_values";
    let Some(browser) = browser_or_skip(test) else {
        return;
    };
    let served = Served::start(BIN, &[]);
    let session = Session::open(&browser, "dashboard-layout").await;
    let client = &session.client;
    set_viewport(client, 1400, 900).await;
    client
        .goto(&format!("http://{}/", served.admin))
        .await
        .unwrap();
    let _busy = ws_client(&served, "/ws", "layout-bot/0", Duration::from_millis(20)).await;
    wait_text(client, "#live", "live").await;
    wait_text(client, "#open-count", "1").await;

    // Legends: once the charts have points, each names the time and the latest figures.
    let seen = wait_for("the legends show the latest values", || async {
        let seen = legends(client).await;
        seen.iter()
            .all(|l| !l.contains("--") && !l.contains('–') && l.contains(':'))
            .then_some(seen)
    })
    .await;
    assert!(
        seen[1].contains("in") && seen[1].contains("out"),
        "{seen:?}"
    );

    // The summary with the widest figures its formatters give busy servers: one row.
    let baseline = card_positions(client, "").await;
    let busy = card_positions(
        client,
        "const set = (id, t) => { document.getElementById(id).textContent = t; };\n\
         set('open-count', '123,456'); set('total', '123,456'); set('ever', '12,345,678');\n\
         set('closed-total', '12,222,222'); set('avg-age', '12d 23h'); set('avg-idle', '59m 59s');\n\
         set('avg-rtt', '1234 ms'); set('queued', '1023 MiB'); set('held', '1023 MiB');\n\
         for (const st of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) set('state-' + st, '123,456');\n\
         set('rate-messages', '1,234,567 / 1,234,567'); set('rate-bytes', '1023 MiB / 1023 MiB');\n\
         set('rate-conns', '12,345 / 12,345'); set('rate-refused', '12,345');",
    )
    .await;
    let _ = writeln!(
        std::io::stderr(),
        "cards at rest: {baseline:?}\ncards busy: {busy:?}"
    );
    for cards in [&baseline, &busy] {
        assert_eq!(cards.len(), 5);
        assert!(
            cards.iter().all(|c| c.0 == cards[0].0),
            "every card on the first row: {cards:?}"
        );
        assert!(
            cards.iter().all(|c| c.2 <= 0),
            "no card's figures overflow it: {cards:?}"
        );
    }
    session.end().await;
}

/// The cluster view: two `wscope serve` instances on one Redis, clients on both, the dashboard of
/// one switched to "the cluster": the summary counts both instances' clients, the instances table
/// lists both, the connection table holds every client, and a row's Close closes a client held by
/// the other instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_cluster_view_sees_and_closes_another_instances_clients() {
    let test = "dashboard_cluster_view_sees_and_closes_another_instances_clients";
    let Some(browser) = browser_or_skip(test) else {
        return;
    };
    let Some(url) = wscope_redis::testing::redis_url_or_skip(test).await else {
        return;
    };
    let name = format!(
        "t-dashboard-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let instance = |id: &str| {
        Served::start(
            BIN,
            &[
                "--redis-url",
                &url,
                "--cluster-name",
                &name,
                "--instance-id",
                id,
                "--cluster-heartbeat",
                "200ms",
                "--ping-interval",
                "0",
            ],
        )
    };
    let a = instance("dash-a");
    let b = instance("dash-b");
    let _here = ws_client(&a, "/ws", "here-bot/0", Duration::from_millis(200)).await;
    let mut there = Vec::new();
    for i in 0..2 {
        let ua = format!("there-bot/{i}");
        there.push(ws_client(&b, "/ws", &ua, Duration::from_millis(200)).await);
    }

    let session = Session::open(&browser, "dashboard-cluster").await;
    let client = &session.client;
    client.goto(&format!("http://{}/", a.admin)).await.unwrap();
    wait_text(client, "#open-count", "1").await;

    // The switch appears in cluster mode; the cluster view counts both instances' clients.
    let select = wait_for("the view switch appears", || async {
        let pick = client.find(Locator::Css("#scope-pick")).await.ok()?;
        pick.is_displayed().await.ok()?.then_some(())?;
        client.find(Locator::Css("#scope-select")).await.ok()
    })
    .await;
    select.select_by_value("cluster").await.unwrap();
    wait_text(client, "#scope-select option:checked", "the cluster").await;
    // The header names the view once: the switch, not the switch and a badge beside it.
    let badge = client.find(Locator::Css("#scope")).await.unwrap();
    assert!(
        !badge.is_displayed().await.unwrap(),
        "a second 'the cluster' in the header"
    );
    wait_text(client, "#open-count", "3").await;
    wait_for("the instances table lists both", || async {
        let rows = client
            .find_all(Locator::Css("#instance-rows tr"))
            .await
            .ok()?;
        let mut texts = Vec::new();
        for row in rows {
            texts.push(row.text().await.ok()?);
        }
        (texts.len() == 2
            && texts[0].starts_with("dash-a live")
            && texts[1].starts_with("dash-b live"))
        .then_some(())
    })
    .await;
    let agents = wait_for("the table holds every client", || async {
        table_user_agents(client)
            .await
            .filter(|rows| rows.len() == 3)
    })
    .await;
    assert_eq!(
        agents
            .iter()
            .filter(|ua| ua.starts_with("there-bot/"))
            .count(),
        2
    );

    // Close one of the other instance's clients from its row.
    fill(client, "#filters input[name=ua]", "there-bot/1").await;
    click(client, "#filter-apply").await;
    wait_for("the table shows that client alone", || async {
        table_user_agents(client)
            .await
            .filter(|rows| rows.len() == 1)
    })
    .await;
    click(client, "#conn-rows tr:first-child button.close-one").await;
    let question = accept_confirmation(client).await;
    assert!(
        question.starts_with("Close connection dash-b-"),
        "{question}"
    );
    wait_closed(
        "the other instance's client is closed",
        &there.iter().collect::<Vec<_>>(),
        1,
        1000,
    )
    .await;
    wait_text(client, "#open-count", "2").await;

    // Back to this instance: its own figures again.
    let select = client.find(Locator::Css("#scope-select")).await.unwrap();
    select.select_by_value("instance").await.unwrap();
    wait_text(client, "#scope-select option:checked", "this instance").await;
    wait_text(client, "#open-count", "1").await;
    session.end().await;
    let backend =
        wscope_redis::RedisBackend::connect(&url, wscope_redis::RedisOptions::default()).unwrap();
    let _ = backend.delete_matching(&format!("wscope:{name}:*")).await;
}
