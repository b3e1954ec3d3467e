//! The real `wscope` binary: spawned as a process, driven through real sockets, stopped by signals.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wscope_core::wire::{AdminRequest, CloseAllAnswer, ErrorBody, Health, HealthStatus};
use wscope_testkit::{http_get, http_post};

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

/// A spawned `wscope serve` and the addresses it reported.
struct Served {
    child: Child,
    main: SocketAddr,
    admin: SocketAddr,
    /// The rest of stderr, line by line.
    lines: mpsc::Receiver<String>,
}

impl Served {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("INSTANCE_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = wait_line(&rx, "listening", Duration::from_secs(20));
        let field = |name: &str| -> SocketAddr {
            let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (main, admin) = (field("main"), field("admin"));
        Self {
            child,
            main,
            admin,
            lines: rx,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.main)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wscope did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?} within {within:?}: {e}"),
        }
    }
}

async fn stats(addr: SocketAddr) -> serde_json::Value {
    let response = http_get(addr, "/api/stats").await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[tokio::test]
async fn sigterm_drains_clients_with_1001_and_exits_zero() {
    let mut served = Served::start(&["--drain-timeout", "5s", "--instance-id", "node-t"]);
    let mut clients = Vec::new();
    for i in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("hello {i}"));
        clients.push(ws);
    }
    let s = stats(served.admin).await;
    assert_eq!(s["totalConnections"], 3);
    assert_eq!(s["instanceId"], "node-t");
    assert!(s["connections"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("node-t-"));

    let started = Instant::now();
    served.signal("TERM");
    for mut ws in clients {
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("close frame within the drain deadline")
        .expect("close frame with a code");
        assert_eq!(close.code, CloseCode::Away);
        assert_eq!(close.reason.as_str(), "Server shutting down");
    }
    let status = served.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sigint_with_no_clients_exits_zero() {
    let mut served = Served::start(&[]);
    served.signal("INT");
    assert_eq!(served.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test]
async fn drain_deadline_drops_a_client_that_never_answers() {
    let mut served = Served::start(&["--drain-timeout", "500ms"]);
    // A client that completes the handshake and then never reads or answers the close.
    let mut raw = tokio::net::TcpStream::connect(served.main).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        served.main
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = raw.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .starts_with("HTTP/1.1 101"));
    served.signal("TERM");
    let line = wait_line(&served.lines, "drained", Duration::from_secs(10));
    assert!(line.contains("dropped=1"), "{line}");
    assert_eq!(served.wait_exit(Duration::from_secs(10)).code(), Some(0));
    drop(raw);
}

#[tokio::test]
async fn chat_fans_out_to_every_chat_connection_only() {
    let served = Served::start(&[]);
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(
            tokio_tungstenite::connect_async(served.url("/ws/chat"))
                .await
                .unwrap()
                .0,
        );
    }
    let (mut echo_only, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    // Every member is OPEN before the message is sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(served.admin).await["connectionsByState"]["OPEN"] != 4 {
        assert!(Instant::now() < deadline, "members never became OPEN");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    members[0].send(Message::text("hi all")).await.unwrap();
    for m in &mut members {
        let got = tokio::time::timeout(Duration::from_secs(5), m.next())
            .await
            .unwrap();
        assert_eq!(got.unwrap().unwrap(), Message::text("hi all"));
    }
    // The echo connection got nothing from chat: its next message is its own echo.
    echo_only.send(Message::text("mine")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), echo_only.next())
        .await
        .unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text("mine"));
}

#[tokio::test]
async fn main_listener_health_and_426() {
    let served = Served::start(&["--instance-id", "hc-1"]);
    let response = http_get(served.main, "/health").await;
    assert_eq!(response.status, 200);
    let h: Health = response.parse();
    assert_eq!(h.status, HealthStatus::Healthy);
    assert_eq!(h.instance_id, "hc-1");
    assert_eq!(h.active_connections, 0);
    assert!(!h.shut_down);
    let response = http_get(served.main, "/ws").await;
    assert_eq!(response.status, 426);
    let body: ErrorBody = response.parse();
    assert_eq!(body.error, "Upgrade required");
    // The admin API is not on the main listener.
    assert_eq!(http_get(served.main, "/api/stats").await.status, 404);
}

#[tokio::test]
async fn admin_close_all_reaches_clients_through_the_binary() {
    let served = Served::start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text("x")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let request = AdminRequest::CloseAll {
        code: Some(wscope_core::CloseCode::new(4000).unwrap()),
        reason: Some("maintenance".into()),
    };
    let response = http_post(
        served.admin,
        "/api/admin",
        &serde_json::to_string(&request).unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let answer: CloseAllAnswer = response.parse();
    assert_eq!(
        answer,
        CloseAllAnswer {
            success: true,
            closed: 1
        }
    );
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4000);
            assert_eq!(f.reason.as_str(), "maintenance");
        }
        other => panic!("expected close, got {other:?}"),
    }
    let response = http_post(
        served.admin,
        "/api/admin",
        r#"{"action":"close_all","code":1005}"#,
    )
    .await;
    assert_eq!(response.status, 400);
    let body: ErrorBody = response.parse();
    assert!(
        body.error.contains("invalid close code 1005"),
        "{}",
        body.error
    );
}

fn run_fail(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("INSTANCE_ID")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_flag_value_is_one_line_naming_the_flag() {
    for (flag, value) in [
        ("--stats-interval", "often"),
        ("--listen", "not-an-address"),
        ("--trusted-proxy", "10.0.0.0/99"),
        ("--backlog", "0"),
        ("--max-message-size", "huge"),
    ] {
        let (code, stderr) = run_fail(&["serve", flag, value], &[]);
        assert_eq!(code, 2, "{flag} {value}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flag}: {stderr}");
        assert!(lines[0].starts_with("error:"), "{stderr}");
        assert!(lines[0].contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn bad_env_value_names_the_flag() {
    let (code, stderr) = run_fail(&["serve"], &[("WSCOPE_DRAIN_TIMEOUT", "forever")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--drain-timeout"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn address_in_use_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_fail(
        &["serve", "--listen", "127.0.0.1:0", "--admin-listen", &addr],
        &[],
    );
    assert_ne!(code, 0);
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("--admin-listen") && line.contains(&addr),
        "{stderr}"
    );
    assert!(line.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn bad_config_file_names_the_key() {
    let dir = std::env::temp_dir().join(format!("wscope-bin-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "cleanup_interval = \"sometimes\"\n").unwrap();
    let (code, stderr) = run_fail(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "a bad value exits as a bad flag does: {stderr}");
    assert!(stderr.contains("cleanup_interval"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn config_file_and_env_are_read() {
    let dir = std::env::temp_dir().join(format!("wscope-bin-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        "instance_id = \"from-file\"\nstats_interval = \"200ms\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--config", path.to_str().unwrap()])
        .env_remove("INSTANCE_ID")
        .env("WSCOPE_INSTANCE_ID", "from-env")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = wait_line(&rx, "listening", Duration::from_secs(20));
    assert!(
        listening.contains("from-env"),
        "env beats file: {listening}"
    );
    // The file's 200ms stats interval logs the reference lines soon after start.
    wait_line(
        &rx,
        "[WebSocket Stats] Active: 0, Total: 0, Closed: 0",
        Duration::from_secs(10),
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// A TOML file in a directory of its own; the directory goes with it.
struct TomlFile(std::path::PathBuf);

impl TomlFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wscope-bin-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serve.toml");
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TomlFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `wscope serve` with settings it must refuse: its status and its stderr's lines. The
/// settings are checked before anything binds, so a process still running after a while took
/// them: it is killed and the test fails instead of hanging.
fn refused(args: &[&str], envs: &[(&str, &str)]) -> (i32, Vec<String>) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env_remove("INSTANCE_ID")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wscope serve accepted {args:?} {envs:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (status.code().unwrap_or(-1), lines)
}

#[test]
fn bad_toml_value_exits_2_with_one_line_naming_the_key_and_its_line() {
    let file = TomlFile::new(
        "bad-value",
        "# wscope.toml\nlisten = \"127.0.0.1:0\"\n\nmax_message_size = \"huge\"\n",
    );
    let (code, lines) = refused(&["--config", file.path()], &[]);
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(
        lines,
        [format!(
            "error: {}:4: max_message_size: invalid size \"huge\": use bytes, or a unit: KiB, MiB, GiB (or K, M, G), KB, MB, GB",
            file.path()
        )]
    );
}

#[test]
fn unknown_toml_key_exits_2_naming_it_and_its_line() {
    let file = TomlFile::new(
        "unknown-key",
        "stats_interval = \"1s\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    );
    let (code, lines) = refused(&["--config", file.path()], &[]);
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(
        lines,
        [format!(
            "error: {}:2: unknown key `trusted_proxies`; did you mean `trusted_proxy`?",
            file.path()
        )]
    );
}

#[test]
fn bad_env_value_exits_2_naming_the_flag_and_the_variable() {
    let (code, lines) = refused(&[], &[("WSCOPE_MAX_MESSAGE_SIZE", "huge")]);
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "error: WSCOPE_MAX_MESSAGE_SIZE (for --max-message-size): invalid size \"huge\""
        ),
        "{lines:?}"
    );
}

#[test]
fn invalid_instance_id_exits_2_from_every_source() {
    let file = TomlFile::new("instance-id", "instance_id = \"a b/c\"\n");
    let flag: &[&str] = &["--instance-id", "a b/c"];
    let config: &[&str] = &["--config", file.path()];
    let from_file = format!("error: {}:1: instance_id: ", file.path());
    for (args, envs, source) in [
        (flag, &[][..], "error: --instance-id: "),
        (
            &[][..],
            &[("WSCOPE_INSTANCE_ID", "a b/c")][..],
            "error: WSCOPE_INSTANCE_ID (for --instance-id): ",
        ),
        (
            &[][..],
            &[("INSTANCE_ID", "a b/c")][..],
            "error: INSTANCE_ID (for --instance-id): ",
        ),
        (config, &[][..], from_file.as_str()),
    ] {
        let (code, lines) = refused(args, envs);
        assert_eq!(code, 2, "{source}: {lines:?}");
        assert_eq!(lines.len(), 1, "{source}: {lines:?}");
        let expected = format!("{source}invalid instance id \"a b/c\": use 1-64 characters");
        assert!(lines[0].starts_with(&expected), "{lines:?}");
    }
}

/// The address the admin API reports for a client that says, through `X-Forwarded-For`, that
/// it is 203.0.113.9, when the server reads `trusted_proxy` from its config file.
async fn client_address_with_trusted_proxy(toml: &str) -> String {
    let file = TomlFile::new("trusted-proxy", toml);
    let served = Served::start(&["--config", file.path()]);
    let mut request = served.url("/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    let s = stats(served.admin).await;
    s["connections"][0]["remoteAddress"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn trusted_proxy_as_a_toml_string_is_read() {
    // Loopback (the test client's address) named alone: its header is believed.
    let believed = client_address_with_trusted_proxy("trusted_proxy = \"127.0.0.1\"\n").await;
    assert_eq!(believed, "203.0.113.9");
    // A comma-separated list without loopback replaces the default, which trusts it.
    let ignored =
        client_address_with_trusted_proxy("trusted_proxy = \"10.0.0.0/8, 192.168.0.0/16\"\n").await;
    assert_eq!(ignored, "127.0.0.1");
}

#[tokio::test]
async fn every_engine_echoes_counts_and_drains() {
    for engine in wscope_axum::Engine::ALL.iter().map(|e| e.as_str()) {
        let mut served = Served::start(&["--engine", engine, "--drain-timeout", "5s"]);
        let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("héllo"),
            "{engine}"
        );
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2, 255]),
            "{engine}"
        );
        ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(b"p".to_vec().into()),
            "{engine}"
        );
        let s = stats(served.admin).await;
        let conn = &s["connections"][0];
        // Two data messages in and their two echoes out; the ping and its pong are control
        // frames, counted in neither direction.
        assert_eq!(conn["messagesIn"], 2, "{engine}: {conn}");
        assert_eq!(conn["messagesOut"], 2, "{engine}: {conn}");
        assert_eq!(conn["bytesIn"], 6 + 4, "{engine}: {conn}");
        served.signal("TERM");
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001, "{engine}"),
            other => panic!("{engine}: expected close, got {other:?}"),
        }
        // Reading on sends the client's close reply, completing the handshake.
        let rest = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        });
        rest.await.unwrap();
        assert_eq!(
            served.wait_exit(Duration::from_secs(10)).code(),
            Some(0),
            "{engine}"
        );
    }
}

#[test]
fn unknown_engine_is_refused() {
    let (code, stderr) = run_fail(&["serve", "--engine", "warp-drive"], &[]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--engine") && stderr.contains("warp-drive"),
        "{stderr}"
    );
}

/// Does the opening handshake by hand on a raw TCP stream.
async fn raw_upgrade(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(raw.read(&mut byte).await.unwrap(), 1, "handshake cut short");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    raw
}

/// A client frame (masked with a zero key, so the payload goes as is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Reads server frames until a close frame; returns its code and reason.
async fn read_close(raw: &mut tokio::net::TcpStream) -> (u16, String) {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            raw.read_exact(&mut h).await.unwrap();
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    raw.read_exact(&mut l).await.unwrap();
                    u16::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            raw.read_exact(&mut payload).await.unwrap();
            if h[0] & 0x0f == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8(payload[2..].to_vec()).unwrap());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a close frame")
}

#[tokio::test]
async fn protocol_violations_get_a_close_code_and_reason_and_others_keep_working() {
    let served = Served::start(&["--max-message-size", "1KiB"]);
    let (mut bystander, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();

    let mut raw = raw_upgrade(served.main, "/ws").await;
    raw.write_all(&client_frame(0x1, &[0xc3, 0x28]))
        .await
        .unwrap();
    assert_eq!(
        read_close(&mut raw).await,
        (1007, "Invalid UTF-8".to_owned())
    );

    let mut raw = raw_upgrade(served.main, "/ws").await;
    raw.write_all(&client_frame(0x2, &[7u8; 2000]))
        .await
        .unwrap();
    assert_eq!(
        read_close(&mut raw).await,
        (1009, "Message too big".to_owned())
    );

    let mut raw = raw_upgrade(served.main, "/ws").await;
    // A text message, then a frame with a reserved opcode: the echo comes first, then 1002.
    let mut burst = client_frame(0x1, b"first");
    burst.extend(client_frame(0x5, b""));
    raw.write_all(&burst).await.unwrap();
    let mut echo = [0u8; 7];
    raw.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\x81\x05first");
    assert_eq!(
        read_close(&mut raw).await,
        (1002, "Protocol error".to_owned())
    );

    bystander.send(Message::text("still here")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), bystander.next())
        .await
        .unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text("still here"));
    // The failed connections leave the registry, recorded as errors (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = stats(served.admin).await;
        if s["closedBy"]["error"] == 3 && s["totalConnections"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `--max-frame-size`, `--max-buffered-bytes` and `--permessage-deflate` reach the sockets: a
/// frame over 1 KiB is refused though the message limit is 64 KiB, fragments of 1 KiB pass until
/// the message outgrows the 16 KiB budget (1013), and a client offering compression gets it.
#[tokio::test]
async fn message_limit_budget_and_compression_flags_reach_the_sockets() {
    let served = Served::start(&[
        "--max-message-size=64KiB",
        "--max-frame-size=1KiB",
        "--max-buffered-bytes=16KiB",
        "--permessage-deflate",
    ]);
    let fragment = |first: bool, fin: bool| {
        let mut f = client_frame(if first { 0x2 } else { 0x0 }, &[7u8; 1024]);
        if !fin {
            f[0] &= 0x7f;
        }
        f
    };

    let mut raw = raw_upgrade(served.main, "/ws").await;
    raw.write_all(&client_frame(0x2, &[7u8; 1025]))
        .await
        .unwrap();
    assert_eq!(
        read_close(&mut raw).await,
        (1009, "Message too big".to_owned())
    );

    // Four 1 KiB fragments make a message that echoes (small enough to be free of the budget).
    let mut raw = raw_upgrade(served.main, "/ws").await;
    let mut message = fragment(true, false);
    for i in 1..4 {
        message.extend(fragment(false, i == 3));
    }
    raw.write_all(&message).await.unwrap();
    let mut head = [0u8; 4];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(head, [0x82, 126, 0x10, 0x00], "a 4 KiB binary echo");
    let mut echoed = vec![0u8; 4096];
    raw.read_exact(&mut echoed).await.unwrap();

    // Sixteen fragments fill the budget; the seventeenth does not fit.
    let mut raw = raw_upgrade(served.main, "/ws").await;
    let mut message = fragment(true, false);
    for _ in 1..17 {
        message.extend(fragment(false, false));
    }
    raw.write_all(&message).await.unwrap();
    assert_eq!(
        read_close(&mut raw).await,
        (1013, "Try again later".to_owned())
    );

    let mut request = served.url("/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    ws.close(None).await.unwrap();
}
