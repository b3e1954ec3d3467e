//! `wscope top` as a user runs it: in a pseudo-terminal (80×24) against a real `wscope serve`
//! with a real WebSocket client, its screen read through a terminal emulator (vt100); and its
//! one-line errors when the server is unreachable or refuses the token.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use portable_pty::{CommandBuilder, PtySize};
use tokio_tungstenite::tungstenite::Message;
use wscope_testkit::http_get;
use wscope_testkit::raw::{frame_with, BINARY, FIN};
use wscope_testkit::served::Served;

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

/// The longest a screen or an exit is waited for.
const WITHIN: Duration = Duration::from_secs(15);

/// The variables `top` reads, unset so the caller's environment cannot change a test.
const TOP_ENV: [&str; 3] = [
    "WSCOPE_ADMIN_URL",
    "WSCOPE_ADMIN_TOKEN",
    "WSCOPE_ADMIN_TOKEN_FILE",
];

/// `wscope top` in an 80×24 pseudo-terminal, its output fed to a terminal emulator.
struct Top {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Kept open: the terminal lives as long as its master side.
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Top {
    fn spawn(args: &[&str]) -> Self {
        Self::spawn_sized(args, 80, 24)
    }

    /// `wscope top` in a terminal `cols` × `rows`.
    fn spawn_sized(args: &[&str], cols: u16, rows: u16) -> Self {
        let pair = portable_pty::native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(BIN);
        cmd.arg("top");
        cmd.args(args);
        cmd.env("TERM", "xterm");
        for name in TOP_ENV {
            cmd.env_remove(name);
        }
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let (rows, cols) = (
            NonZeroU16::new(rows).unwrap(),
            NonZeroU16::new(cols).unwrap(),
        );
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let fed = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                fed.lock().unwrap().process(&buf[..n]);
            }
        });
        Self {
            child,
            writer,
            screen,
            _master: pair.master,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits (bounded) until the screen satisfies `cond`; returns it.
    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let screen = self.contents();
            if cond(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn press(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "wscope top did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn top_in_a_terminal_follows_a_real_server_and_quits_on_q() {
    let served = Served::start(BIN, &[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    let url = format!("http://{}", served.admin);
    let mut top = Top::spawn(&["--admin-url", &url, "--interval", "200ms"]);
    let screen = top.wait_screen("one open connection", |s| s.contains("Open now 1 "));
    assert!(screen.contains(&url), "{screen}");
    assert!(screen.contains("OPEN 1  CONNECTING 0"), "{screen}");

    // The connections panel: the connection's row where the server lists connections, else
    // one line saying it does not.
    let listed = http_get(served.admin, "/api/connections?limit=1")
        .await
        .status
        == 200;
    if listed {
        top.wait_screen("the connection's row", |s| {
            s.lines()
                .any(|l| l.contains("127.0.0.1") && l.contains("42B"))
        });
    } else {
        top.wait_screen("the panel's one line", |s| {
            s.contains("This server has no GET /api/connections")
        });
    }

    top.press("s");
    top.wait_screen("the sort by idle time", |s| {
        s.contains("Idlest (longest idle)") && s.contains("sort: idle")
    });

    // A client leaving shows.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    top.wait_screen("no open connection", |s| s.contains("Open now 0 "));

    top.press("q");
    let status = top.wait_exit();
    assert!(status.success(), "{status:?}");
    // The terminal is given back: the alternate screen is left.
    let deadline = Instant::now() + WITHIN;
    while top.screen.lock().unwrap().screen().alternate_screen() {
        assert!(Instant::now() < deadline, "still on the alternate screen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_wide_terminal_shows_whole_ids_with_path_and_user_and_an_id_closes_its_connection() {
    let served = Served::start(BIN, &["--instance-id", "eu-1"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws/chat?user=ann"))
        .await
        .unwrap();
    let url = format!("http://{}", served.admin);
    let mut top = Top::spawn_sized(&["--admin-url", &url, "--interval", "200ms"], 120, 30);
    let screen = top.wait_screen("the connection's row, with its path and user", |s| {
        s.lines()
            .any(|l| l.contains("/ws/chat") && l.contains(" ann "))
    });
    let header = screen.lines().find(|l| l.contains("ADDRESS")).unwrap();
    assert!(
        header.contains("PATH") && header.contains("USER"),
        "{header}"
    );
    let row = screen.lines().find(|l| l.contains("/ws/chat")).unwrap();
    // The id as the screen shows it, whole: what an operator copies.
    let id = row
        .trim_start_matches('│')
        .split_whitespace()
        .next()
        .unwrap();
    assert!(id.starts_with("eu-1-") && !id.contains('…'), "{row}");
    top.press("q");
    assert!(top.wait_exit().success());

    let body = format!(r#"{{"action":"close","id":"{id}","code":4000,"reason":"pasted"}}"#);
    let answer = wscope_testkit::http_post(served.admin, "/api/admin", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["success"], true, "{}", answer.text());
    let close = loop {
        match tokio::time::timeout(WITHIN, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.unwrap(),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4000, "pasted")
    );
}

/// The bytes a connection holds show in its MEM column and in the header's `held` total, and
/// `m` sorts by them: here a client stalls halfway through a 600 KiB message.
#[tokio::test]
async fn a_stalled_large_message_shows_in_mem_and_held_and_m_sorts_by_it() {
    const SIZE: usize = 600 << 10;
    let served = Served::start(BIN, &[]);
    let _idle = wscope_testkit::raw::upgrade(served.main, "/ws", &[]).await;
    let mut stalled = wscope_testkit::raw::upgrade(served.main, "/ws", &[]).await;
    let message = vec![7u8; SIZE];
    let framed = frame_with(FIN | BINARY, &message, Some([0; 4]));
    stalled.send(&framed[..framed.len() - SIZE / 2]).await;

    let url = format!("http://{}", served.admin);
    let mut top = Top::spawn(&["--admin-url", &url, "--interval", "200ms"]);
    top.wait_screen("the memory sort key", |s| s.contains(" m  mem"));
    top.press("m");
    let screen = top.wait_screen("the stalled connection first, by memory", |s| {
        s.contains("Heaviest (most memory held)")
            && rows(s)
                .first()
                .is_some_and(|row| kib(mem_cell(row)) >= (SIZE / 2 / 1024) as f64)
    });
    let header = screen.lines().find(|l| l.contains("ADDRESS")).unwrap();
    assert!(header.contains("MEM↓"), "{header}");
    // The other connection holds nothing, and comes after.
    let rows = rows(&screen);
    assert_eq!(rows.len(), 2, "{screen}");
    assert_eq!(mem_cell(rows[1]), "0B", "{screen}");
    // The header's total: at least what the stalled message holds.
    let held = top.wait_screen("the held total", |s| {
        s.lines()
            .find_map(|l| l.split("held ").nth(1))
            .is_some_and(|total| kib(total) >= (SIZE / 2 / 1024) as f64)
    });
    assert!(held.contains(" KiB"), "{held}");
    top.press("q");
    assert!(top.wait_exit().success());
}

/// The connections table's rows (the title line, with the admin URL, is not one).
fn rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.starts_with('│') && l.contains(" 127.0.0.1 "))
        .collect()
}

/// A table row's MEM cell: the tenth of its cells (an 80-column terminal cuts no text cell
/// of a loopback client's row to nothing).
fn mem_cell(row: &str) -> &str {
    row.trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split_whitespace()
        .nth(9)
        .unwrap_or("")
}

/// `813K`, `1.0M`, `42B`, `300.0 KiB`… in KiB (0 for anything else).
fn kib(figure: &str) -> f64 {
    let figure = figure.trim_start();
    let end = figure
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(figure.len());
    let value: f64 = figure[..end].parse().unwrap_or(0.0);
    match figure[end..].trim_start().chars().next() {
        Some('K') => value,
        Some('M') => value * 1024.0,
        Some('B') => value / 1024.0,
        _ => 0.0,
    }
}

#[tokio::test]
async fn ctrl_c_quits_too() {
    let served = Served::start(BIN, &[]);
    let url = format!("http://{}", served.admin);
    let mut top = Top::spawn(&["--admin-url", &url]);
    top.wait_screen("the first event", |s| s.contains("Open now 0 "));
    top.press("\x03");
    assert!(top.wait_exit().success());
}

/// Runs `wscope top` without a terminal; its exit code and stderr.
fn top_fails(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("top").args(args);
    for name in TOP_ENV {
        cmd.env_remove(name);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_wrong_token_or_not_an_admin_listener_is_one_line_and_a_failure() {
    let served = Served::start(BIN, &["--admin-token", "s3cret-token"]);
    // The main listener is no admin listener.
    let main = format!("http://{}", served.main);
    let (code, stderr) = top_fails(&["--admin-url", &main]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is it a wscope admin listener?"),
        "{stderr}"
    );

    let url = format!("http://{}", served.admin);
    for (args, hint) in [
        (
            vec!["--admin-url", &url, "--token", "wrong"],
            "check --token",
        ),
        (vec!["--admin-url", &url], "set --token"),
    ] {
        let (code, stderr) = top_fails(&args);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("refused the token (401)"), "{stderr}");
        assert!(stderr.contains(hint), "{stderr}");
    }

    // A token file others may read is refused before the server is asked, as serve refuses it.
    let dir = std::env::temp_dir().join(format!("wscope-top-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    let path = file.to_str().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = top_fails(&["--admin-url", &url, "--token-file", path]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("error: --token-file {path}: mode 0644 lets other users read the token: make it its owner's alone (chmod 600)\n")
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut top = Top::spawn(&["--admin-url", &url, "--token-file", path]);
    top.wait_screen("the view, with the token from the file", |s| {
        s.contains("Open now 0 ")
    });
    top.press("q");
    assert!(top.wait_exit().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_server_is_one_line_and_a_failure() {
    // A port that was just free: nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let (code, stderr) = top_fails(&["--admin-url", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot reach the admin API at {url}: ")),
        "{stderr}"
    );
    let (code, stderr) = top_fails(&["--admin-url", "localhost:9090"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--admin-url \"localhost:9090\""),
        "{stderr}"
    );
}
