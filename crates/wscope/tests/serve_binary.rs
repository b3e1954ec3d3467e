//! The real `wscope` binary: spawned as a process, driven through real sockets, stopped by signals.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wscope_core::wire::{
    AdminRequest, BanAnswer, CloseAllAnswer, CloseMatchingAnswer, ConnectionPage, ErrorBody,
    Health, HealthStatus, PublicHealth, UnbanAnswer,
};
use wscope_testkit::{http_get, http_post, send_raw};

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

use wscope_testkit::raw;
use wscope_testkit::served::{wait_line, Served};

async fn stats(addr: SocketAddr) -> serde_json::Value {
    let response = http_get(addr, "/api/stats").await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[tokio::test]
async fn sigterm_drains_clients_with_1001_and_exits_zero() {
    let mut served = Served::start(BIN, &["--drain-timeout", "5s", "--instance-id", "node-t"]);
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

    // The main listener's /ready: 200 while serving.
    let ready = http_get(served.main, "/ready").await;
    assert_eq!(
        (ready.status, ready.text()),
        (200, r#"{"ready":true}"#.to_owned())
    );

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
    // The last word of the drain: how many closed cleanly, how many were dropped.
    let line = wait_line(&served.lines, "closed cleanly", Duration::from_secs(10));
    assert!(
        line.contains("3 of 3 connections closed cleanly, 0 dropped"),
        "{line}"
    );
    let status = served.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sigint_with_no_clients_exits_zero() {
    let mut served = Served::start(BIN, &[]);
    served.signal("INT");
    assert_eq!(served.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test]
async fn drain_deadline_drops_a_client_that_never_answers() {
    let mut served = Served::start(BIN, &["--drain-timeout", "500ms"]);
    // A client that completes the handshake and then never reads or answers the close.
    let silent = raw::upgrade(served.main, "/ws", &[]).await;
    served.signal("TERM");
    let line = wait_line(&served.lines, "closed cleanly", Duration::from_secs(10));
    assert!(line.contains("dropped=1"), "{line}");
    assert_eq!(served.wait_exit(Duration::from_secs(10)).code(), Some(0));
    drop(silent);
}

#[tokio::test]
async fn chat_fans_out_to_every_chat_connection_only() {
    let served = Served::start(BIN, &[]);
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
    let served = Served::start(BIN, &["--instance-id", "hc-1"]);
    // The public health: the reference's fields, no instance id (by default the host name).
    let response = http_get(served.main, "/health").await;
    assert_eq!(response.status, 200);
    let h: PublicHealth = response.parse();
    assert_eq!(h.status, HealthStatus::Healthy);
    assert_eq!(h.active_connections, 0);
    assert!(!response.text().contains("hc-1"), "{}", response.text());
    // The admin listener's tells all.
    let h: Health = http_get(served.admin, "/health").await.parse();
    assert_eq!(h.instance_id, "hc-1");
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
    let served = Served::start(BIN, &[]);
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

/// `--health-path` and `--ready-path` move the main listener's own checks off the
/// application's namespace: the new paths answer, the old ones are the application's (here,
/// nothing: a JSON 404), and a drain shows on the moved readiness path.
#[tokio::test]
async fn health_and_ready_move_to_the_paths_given() {
    let mut served = Served::start(
        BIN,
        &[
            "--health-path",
            "/_wscope/health",
            "--ready-path",
            "/_wscope/ready",
        ],
    );
    let health = http_get(served.main, "/_wscope/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "healthy");
    let ready = http_get(served.main, "/_wscope/ready").await;
    assert_eq!(
        (ready.status, ready.text()),
        (200, r#"{"ready":true}"#.to_owned())
    );
    for old in ["/health", "/ready"] {
        let gone = http_get(served.main, old).await;
        assert_eq!(gone.status, 404, "{old}: {}", gone.text());
        assert!(gone.json()["error"].is_string(), "{old}: {}", gone.text());
    }
    // The WebSocket routes are where they were.
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");
    drop(ws);
    served.signal("TERM");
    assert_eq!(served.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn a_health_or_ready_path_that_is_no_path_is_refused_naming_the_flag() {
    for (flag, value) in [
        ("--health-path", "health"),
        ("--ready-path", "/ready?x=1"),
        ("--health-path", "/{id}"),
    ] {
        let (code, stderr) = run_fail(&["serve", flag, value], &[]);
        assert_eq!(code, 2, "{flag} {value}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flag}: {stderr}");
        assert!(lines[0].contains(flag), "{flag}: {stderr}");
    }
    let (code, stderr) = run_fail(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--health-path",
            "/same",
            "--ready-path",
            "/same",
        ],
        &[],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("--health-path") && stderr.contains("--ready-path"),
        "{stderr}"
    );
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

    /// A token file: its owner's alone, as `--admin-token-file` wants it.
    fn secret(name: &str, text: &str) -> Self {
        let file = Self::new(name, text);
        file.chmod(0o600);
        file
    }

    fn chmod(&self, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(mode)).unwrap();
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
    let listeners = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    refused_as_given(&[&listeners, args].concat(), envs)
}

/// [`refused`] with exactly `args` after `serve`.
fn refused_as_given(args: &[&str], envs: &[(&str, &str)]) -> (i32, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("serve")
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
    let served = Served::start(BIN, &["--config", file.path()]);
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
        let mut served = Served::start(BIN, &["--engine", engine, "--drain-timeout", "5s"]);
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

#[tokio::test]
async fn protocol_violations_get_a_close_code_and_reason_and_others_keep_working() {
    let served = Served::start(BIN, &["--max-message-size", "1KiB"]);
    let (mut bystander, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();

    let mut raw = raw::upgrade(served.main, "/ws", &[]).await;
    raw.send(&raw::client_frame(0x1, &[0xc3, 0x28])).await;
    assert_eq!(raw.expect_close().await, (1007, "Invalid UTF-8".to_owned()));

    let mut raw = raw::upgrade(served.main, "/ws", &[]).await;
    raw.send(&raw::client_frame(0x2, &[7u8; 2000])).await;
    assert_eq!(
        raw.expect_close().await,
        (1009, "Message too big".to_owned())
    );

    let mut raw = raw::upgrade(served.main, "/ws", &[]).await;
    // A text message, then a frame with a reserved opcode: the echo comes first, then 1002.
    let mut burst = raw::client_frame(0x1, b"first");
    burst.extend(raw::client_frame(0x5, b""));
    raw.send(&burst).await;
    let mut echo = [0u8; 7];
    raw.tcp.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\x81\x05first");
    assert_eq!(
        raw.expect_close().await,
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

/// A raw upgrade of `/ws` with extra headers, expected to be refused: its response.
async fn refused_upgrade(addr: SocketAddr, extra: &[(&str, &str)]) -> wscope_testkit::HttpResponse {
    let mut headers = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    let response = wscope_testkit::http(addr, "GET", "/ws", &headers, None).await;
    assert_ne!(response.status, 101, "the upgrade was accepted");
    response
}

/// A WebSocket to `/ws` with extra request headers; panics unless it gets 101.
async fn connect_with(
    served: &Served,
    headers: &[(&'static str, &'static str)],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = served.url("/ws").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// One flag of each kind of the limits, end to end: an origin list with a required `Origin`
/// (403), a handshake rate with a burst (429 with `Retry-After`), a global cap (503 with
/// `Retry-After: 1`); each refusal counted by kind.
#[tokio::test]
async fn limits_flags_refuse_by_origin_rate_and_cap() {
    let served = Served::start(
        BIN,
        &[
            "--max-connections",
            "3",
            "--handshake-rate-per-ip",
            "1/m",
            "--handshake-burst",
            "2",
            "--allowed-origin",
            "https://app.example.com",
            "--allow-missing-origin",
            "false",
        ],
    );
    const APP: (&str, &str) = ("Origin", "https://app.example.com");
    let response = refused_upgrade(served.main, &[]).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.parse::<ErrorBody>().error, "origin not allowed");
    let response = refused_upgrade(served.main, &[("Origin", "https://evil.example")]).await;
    assert_eq!(response.status, 403);

    let mut first = connect_with(&served, &[APP]).await;
    first.send(Message::text("hello")).await.unwrap();
    assert_eq!(first.next().await.unwrap().unwrap(), Message::text("hello"));
    let _second = connect_with(&served, &[APP]).await;

    // 127.0.0.1 has spent its burst of two (the server has room: the cap is checked first).
    let response = refused_upgrade(served.main, &[APP]).await;
    assert_eq!(response.status, 429);
    assert_eq!(
        response.parse::<ErrorBody>().error,
        "too many handshakes from this address"
    );
    let retry: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");

    // Another address (forwarded by the trusted loopback peer) has tokens and takes the last
    // slot; a third finds the server full.
    let _third = connect_with(&served, &[APP, ("X-Forwarded-For", "198.51.100.1")]).await;
    let response = refused_upgrade(served.main, &[APP, ("X-Forwarded-For", "198.51.100.2")]).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.parse::<ErrorBody>().error, "too many connections");

    let refused = &stats(served.admin).await["refused"];
    assert_eq!(refused["originNotAllowed"], 2);
    assert_eq!(refused["handshakeRate"], 1);
    assert_eq!(refused["tooManyConnections"], 1);
}

/// A ban through the binary's admin API closes the banned client with 1008 and refuses it with
/// 403 until it is lifted.
#[tokio::test]
async fn admin_ban_and_unban_through_the_binary() {
    let served = Served::start(BIN, &[]);
    let mut ws = connect_with(&served, &[]).await;
    let ban = AdminRequest::from_json(
        br#"{"action":"ban","target":"127.0.0.0/8","duration":"5m","reason":"go away"}"#,
    )
    .unwrap();
    let response = http_post(
        served.admin,
        "/api/admin",
        &serde_json::to_string(&ban).unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let answer: BanAnswer = response.parse();
    assert_eq!(answer.closed, 1);
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1008);
            assert_eq!(f.reason.as_str(), "go away");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let response = refused_upgrade(served.main, &[]).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.parse::<ErrorBody>().error, "address banned");

    let response = http_post(
        served.admin,
        "/api/admin",
        r#"{"action":"unban","target":"127.0.0.0/8"}"#,
    )
    .await;
    assert!(response.parse::<UnbanAnswer>().removed);
    let mut ws = connect_with(&served, &[]).await;
    ws.send(Message::text("back")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("back"));
}

// ---- The HTTP edge: request heads, handshakes, the admin API's guard, hostile settings, and a
// ---- shutdown that neither hangs nor waits when told twice.

/// An upgrade request for `/ws` with one extra header of `padding` bytes.
fn upgrade_with_padding(addr: SocketAddr, padding: usize) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(padding)
    )
    .into_bytes()
}

#[tokio::test]
async fn oversized_and_slow_heads_are_cut_off_and_clients_are_still_served() {
    let served = Served::start(BIN, &["--handshake-timeout", "1s"]);
    // 64 KiB of headers: 431 (the default bound is 16 KiB), on either listener.
    for addr in [served.main, served.admin] {
        let answer = send_raw(addr, &upgrade_with_padding(addr, 64 << 10)).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    // A byte-a-tick slowloris: dropped at the deadline, long before its head is complete.
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(served.main)
        .await
        .unwrap()
        .into_split();
    let closed = tokio::spawn(async move {
        let mut chunk = [0u8; 256];
        while let Ok(1..) = reader.read(&mut chunk).await {}
    });
    let head = upgrade_with_padding(served.main, 100);
    let mut sent = 0;
    for byte in &head {
        if closed.is_finished() || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent < head.len(), "the slow head was let through");
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("closed by the server")
        .unwrap();

    // A real client still connects, and its address still comes from the TCP peer.
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    let s = stats(served.admin).await;
    assert_eq!(s["totalConnectionsEver"], 1, "{s}");
    assert_eq!(s["connections"][0]["remoteAddress"], "127.0.0.1");
}

#[tokio::test]
async fn malformed_handshakes_get_400_and_are_counted() {
    let served = Served::start(BIN, &[]);
    let addr = served.main;
    let with_key = |key: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n"
        )
    };
    let requests = [
        with_key(""),
        with_key("Sec-WebSocket-Key: c2hvcnQ=\r\n"),
        with_key("Sec-WebSocket-Key: dGhpcyBrZXkgaXMgbXVjaCB0b28gbG9uZw==\r\n"),
        format!(
            "GET /ws HTTP/1.0\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    ];
    for request in &requests {
        let answer = send_raw(addr, request.as_bytes()).await;
        assert!(answer.contains(" 400 "), "{request}: {answer}");
        assert!(
            answer.contains(r#"{"error":"invalid handshake: "#),
            "{answer}"
        );
    }
    let s = stats(served.admin).await;
    assert_eq!(s["refused"]["invalidHandshake"], requests.len(), "{s}");
    assert_eq!(s["totalConnectionsEver"], 0);
}

#[tokio::test]
async fn the_admin_listener_wants_its_token_and_refuses_forged_requests() {
    let token = TomlFile::secret("admin-token", "  s3cr3t-t0ken\n");
    let served = Served::start(BIN, &["--admin-token-file", token.path()]);
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    let host = served.admin.to_string();
    let bearer = ("Authorization", "Bearer s3cr3t-t0ken");

    let response = http_get(served.admin, "/api/stats").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        response.json(),
        serde_json::json!({"error": "unauthorized"})
    );
    let response = wscope_testkit::http(served.admin, "GET", "/api/stats", &[bearer], None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(http_get(served.admin, "/health").await.status, 200);

    // A cross-site form post, token and all: refused, and nothing is closed.
    let forged = format!(
        "POST /api/admin HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nAuthorization: Bearer s3cr3t-t0ken\r\nContent-Length: 22\r\nConnection: close\r\n\r\n{{\"action\":\"close_all\"}}"
    );
    let answer = send_raw(served.admin, forged.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    // DNS rebinding: the attacker's own name as Host.
    let rebound = "GET /api/stats HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer s3cr3t-t0ken\r\nConnection: close\r\n\r\n";
    let answer = send_raw(served.admin, rebound.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 421 "), "{answer}");

    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still open")
    );
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_exits_2() {
    let (code, lines) = refused_as_given(
        &["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"],
        &[],
    );
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(
        lines,
        ["error: --admin-listen 0.0.0.0:0 is not a loopback address: set --admin-token or --admin-token-file, or listen on 127.0.0.1"]
    );
    let empty = TomlFile::secret("empty-token", "\n");
    let (code, lines) = refused(&["--admin-token-file", empty.path()], &[]);
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(
        lines,
        [format!(
            "error: --admin-token-file {}: the file is empty",
            empty.path()
        )]
    );
}

#[test]
fn a_token_file_other_users_may_read_exits_2_naming_the_flag_and_the_mode() {
    // What `head -c 32 /dev/urandom | base64 > FILE` makes under the usual umask (022).
    let token = TomlFile::new("open-token", "s3cr3t-t0ken\n");
    token.chmod(0o644);
    let (code, lines) = refused(&["--admin-token-file", token.path()], &[]);
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(
        lines,
        [format!(
            "error: --admin-token-file {}: mode 0644 lets other users read the token: make it its owner's alone (chmod 600)",
            token.path()
        )]
    );
    let (code, lines) = refused(&[], &[("WSCOPE_ADMIN_TOKEN_FILE", token.path())]);
    assert_eq!(code, 2, "{lines:?}");
    assert!(
        lines[0].contains("mode 0644 lets other users read"),
        "{lines:?}"
    );
}

/// Environment variables to set.
type Envs<'a> = &'a [(&'a str, &'a str)];

#[test]
fn hostile_settings_exit_2_with_one_line() {
    let cases: [(&[&str], Envs, &str); 7] = [
        (&["--stats-interval", "1e20"], &[], "--stats-interval"),
        (
            &["--cleanup-interval", "18446744073709551615"],
            &[],
            "--cleanup-interval",
        ),
        (&["--drain-timeout", "30d"], &[], "--drain-timeout"),
        (&["--read-buffer-size", "100GiB"], &[], "--read-buffer-size"),
        (&["--max-header-size", "100"], &[], "--max-header-size"),
        (&["--handshake-timeout", "1d"], &[], "--handshake-timeout"),
        (
            &[],
            &[("WSCOPE_STATS_INTERVAL", "1e20")],
            "--stats-interval",
        ),
    ];
    for (args, envs, flag) in cases {
        let (code, lines) = refused(args, envs);
        assert_eq!(code, 2, "{args:?} {envs:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?} {envs:?}: {lines:?}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(flag),
            "{lines:?}"
        );
    }
    // A settings file past 1 MiB is not read.
    let big = TomlFile::new("big", &format!("#{}\n", "x".repeat(2 << 20)));
    let (code, lines) = refused(&["--config", big.path()], &[]);
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(
        lines,
        [format!(
            "error: --config {}: larger than 1048576 bytes",
            big.path()
        )]
    );
}

#[tokio::test]
async fn a_close_reason_cannot_forge_a_log_line() {
    let mut served = Served::start_with_env(BIN, &[], &[("RUST_LOG", "info,wscope_core=debug")]);
    let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
        .await
        .unwrap();
    let reason = "bye\n[fake] line\r\u{1b}[31m\u{7}";
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let line = wait_line(&served.lines, "connection removed", Duration::from_secs(10));
    assert!(
        line.contains(r"bye\n[fake] line\r\u{1b}[31m\u{7}"),
        "the reason is escaped: {line:?}"
    );
    served.signal("TERM");
    served.wait_exit(Duration::from_secs(10));
    let rest: Vec<String> = served.lines.try_iter().collect();
    assert!(
        rest.iter().all(|l| !l.starts_with("[fake]")),
        "a forged line: {rest:?}"
    );
}

#[tokio::test]
async fn shutdown_with_stderr_closed_still_drains_and_exits() {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--drain-timeout", "2s"])
        .env_remove("INSTANCE_ID")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut listening = String::new();
    while !listening.contains("listening") {
        listening.clear();
        assert!(
            stderr.read_line(&mut listening).unwrap() > 0,
            "no listening line"
        );
    }
    let start = listening.find("main=").unwrap() + 5;
    let main: SocketAddr = listening[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Nobody reads stderr any more: every log line from here on fails to be written.
    drop(stderr);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{main}/ws"))
        .await
        .unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
    let mut served = Served {
        child,
        main,
        admin: main,
        lines: mpsc::channel().1,
    };
    served.signal("TERM");
    // The client is closed with 1001 and the process exits, well within the drain deadline.
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close, got {other:?}"),
    }
    while let Some(Ok(_)) = ws.next().await {}
    let status = served.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let mut served = Served::start(BIN, &["--drain-timeout", "60s"]);
        // A client that never answers the close: the drain would wait the full minute.
        let _silent = raw::upgrade(served.main, "/ws", &[]).await;
        served.signal(sig);
        wait_line(&served.lines, "send it again", Duration::from_secs(10));
        wait_line(
            &served.lines,
            "closing every connection",
            Duration::from_secs(10),
        );
        served.signal(sig);
        let status = served.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(code), "{sig}: {status:?}");
    }
}

/// `--max-frame-size`, `--max-buffered-bytes` and `--permessage-deflate` reach the sockets: a
/// frame over 1 KiB is refused though the message limit is 64 KiB, fragments of 1 KiB pass until
/// the message outgrows the 16 KiB budget (1013), and a client offering compression gets it.
#[tokio::test]
async fn message_limit_budget_and_compression_flags_reach_the_sockets() {
    let served = Served::start(
        BIN,
        &[
            "--max-message-size=64KiB",
            "--max-frame-size=1KiB",
            "--max-buffered-bytes=16KiB",
            "--permessage-deflate",
        ],
    );
    let fragment = |first: bool, fin: bool| {
        let mut f = raw::client_frame(if first { 0x2 } else { 0x0 }, &[7u8; 1024]);
        if !fin {
            f[0] &= 0x7f;
        }
        f
    };

    let mut raw = raw::upgrade(served.main, "/ws", &[]).await;
    raw.send(&raw::client_frame(0x2, &[7u8; 1025])).await;
    assert_eq!(
        raw.expect_close().await,
        (1009, "Message too big".to_owned())
    );

    // Four 1 KiB fragments make a message that echoes (small enough to be free of the budget).
    let mut raw = raw::upgrade(served.main, "/ws", &[]).await;
    let mut message = fragment(true, false);
    for i in 1..4 {
        message.extend(fragment(false, i == 3));
    }
    raw.send(&message).await;
    let mut head = [0u8; 4];
    raw.tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head, [0x82, 126, 0x10, 0x00], "a 4 KiB binary echo");
    let mut echoed = vec![0u8; 4096];
    raw.tcp.read_exact(&mut echoed).await.unwrap();

    // Sixteen fragments fill the budget; the seventeenth does not fit.
    let mut raw = raw::upgrade(served.main, "/ws", &[]).await;
    let mut message = fragment(true, false);
    for _ in 1..17 {
        message.extend(fragment(false, false));
    }
    raw.send(&message).await;
    assert_eq!(
        raw.expect_close().await,
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

/// The connections API and `close_matching` are served by the binary's admin listener.
#[tokio::test]
async fn the_connections_api_is_served_by_the_binary() {
    let served = Served::start(BIN, &[]);
    let mut echo = Vec::new();
    for _ in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text("x")).await.unwrap();
        ws.next().await.unwrap().unwrap();
        echo.push(ws);
    }
    let (mut chat, _) =
        tokio_tungstenite::connect_async(served.url("/ws/chat?user=ann&tag=red,blue&x=1"))
            .await
            .unwrap();
    // The chat echoes to its sender too: once this comes back, the handler has applied the labels.
    chat.send(Message::text("hi")).await.unwrap();
    assert_eq!(chat.next().await.unwrap().unwrap(), Message::text("hi"));
    let mut open = 0;
    for _ in 0..200 {
        open = stats(served.admin).await["connectionsByState"]["OPEN"]
            .as_u64()
            .unwrap();
        if open == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, 4);

    let response = http_get(served.admin, "/api/connections?limit=2").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let page: ConnectionPage = response.parse();
    assert_eq!((page.total, page.connections.len()), (4, 2));
    let next = page.next.unwrap();
    let rest: ConnectionPage = http_get(served.admin, &format!("/api/connections?cursor={next}"))
        .await
        .parse();
    assert_eq!(rest.connections.len(), 2);
    assert_eq!(rest.next, None);
    let chat_row = &rest.connections[1];
    assert_eq!(&*chat_row.path, "/ws/chat");

    let one = http_get(served.admin, &format!("/api/connections/{}", chat_row.id)).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["path"], "/ws/chat");
    // The demo routes label a connection from its URL.
    assert_eq!(one.json()["user"], "ann");
    assert_eq!(one.json()["tags"], serde_json::json!(["red", "blue"]));
    let blue: ConnectionPage = http_get(served.admin, "/api/connections?tag=blue")
        .await
        .parse();
    assert_eq!(
        (blue.total, blue.connections[0].id.clone()),
        (1, chat_row.id.clone())
    );
    assert!(rest.connections[0].user.is_none());
    let response = http_get(served.admin, "/api/connections?sort=loudness").await;
    assert_eq!(response.status, 400);
    assert!(response.parse::<ErrorBody>().error.starts_with("sort: "));

    let response = http_post(
        served.admin,
        "/api/admin",
        r#"{"action":"close_matching","filter":{"user":"ann"},"code":4002}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.parse::<CloseMatchingAnswer>().closed, 1);
    match chat.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4002),
        other => panic!("expected close, got {other:?}"),
    }
    for ws in echo.iter_mut() {
        ws.send(Message::text("still")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("still"));
    }
}

/// The start-up line gives the URLs to paste (the echo and chat WebSockets, the dashboard) and
/// still the bare addresses (`main=`, `admin=`) for scripts; the drain's outcome is one line.
#[tokio::test]
async fn the_start_up_line_gives_the_urls_and_the_drain_logs_its_outcome_once() {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--instance-id",
            "urls-1",
        ])
        .env_remove("INSTANCE_ID")
        .env_remove("WSCOPE_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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
    for url in [
        format!("ws://{main}/ws"),
        format!("ws://{main}/ws/chat"),
        format!("http://{admin}/"),
    ] {
        assert!(
            line.split([' ', ',']).any(|word| word == url),
            "{url} in {line}"
        );
    }
    // The URLs work as given.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{main}/ws"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    let page = http_get(admin, "/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
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
    .unwrap();
    assert_eq!(close.unwrap().code, CloseCode::Away);
    drop(ws);
    // Bounded: the drain deadline is 10 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "wscope did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    // stderr is closed: the reader thread has sent every line.
    let rest: Vec<String> = rx.iter().collect();
    let outcome: Vec<&String> = rest.iter().filter(|l| l.contains("dropped")).collect();
    assert_eq!(outcome.len(), 1, "the drain's outcome once: {rest:#?}");
    assert!(
        outcome[0].contains("1 of 1 connections closed cleanly, 0 dropped"),
        "{}",
        outcome[0]
    );
}

/// Every 404 and 405 of the main listener is JSON, as its other errors are; a 405 has `Allow`.
#[tokio::test]
async fn the_main_listener_answers_unknown_paths_and_methods_in_json() {
    let served = Served::start(BIN, &[]);
    let response = http_get(served.main, "/api/stats").await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: ErrorBody = response.parse();
    assert_eq!(body.error, "no route for GET /api/stats");
    let response = http_post(served.main, "/ws", "{}").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET,HEAD"));
    let body: ErrorBody = response.parse();
    assert_eq!(body.error, "POST /ws: method not allowed; use GET, HEAD");
    let response = http_post(served.main, "/health", "{}").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET,HEAD"));
    assert!(response
        .parse::<ErrorBody>()
        .error
        .contains("use GET, HEAD"));
    // And the admin listener's: a GET of the action route.
    let response = http_get(served.admin, "/api/admin").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST"));
    let body: ErrorBody = response.parse();
    assert_eq!(body.error, "GET /api/admin: method not allowed; use POST");
}

/// `broadcast` reaches one connection (`id`), one user's (`user`) or those a `filter` matches,
/// answers how many it was sent to, and is a 404 for an unknown id (as `close` is) and a 400 for
/// two targets or an empty filter. Labels come from the demo routes' URLs.
#[tokio::test]
async fn admin_broadcast_reaches_an_id_a_user_or_a_filter() {
    let served = Served::start(BIN, &[]);
    let connect = |path: &str| {
        let url = served.url(path);
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    let mut ann_1 = connect("/ws?user=ann").await;
    let mut ann_2 = connect("/ws?user=ann").await;
    let mut bob = connect("/ws?user=bob").await;
    let mut red = connect("/ws/chat?tag=red").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(served.admin).await["connectionsByState"]["OPEN"] != 4 {
        assert!(Instant::now() < deadline, "clients never became OPEN");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let page = http_get(served.admin, "/api/connections?user=ann&limit=1").await;
    let ann_1_id = page.json()["connections"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = |body: serde_json::Value| {
        let body = body.to_string();
        let addr = served.admin;
        async move { http_post(addr, "/api/admin", &body).await }
    };
    let sent = |response: wscope_testkit::HttpResponse| {
        assert_eq!(response.status, 200, "{}", response.text());
        let answer = response.json();
        assert_eq!(answer["success"], true, "{answer}");
        answer["sent"].as_u64().unwrap()
    };
    use serde_json::json;
    let one = admin(json!({"action": "broadcast", "id": ann_1_id, "text": "just you"})).await;
    assert_eq!(sent(one), 1);
    let user = admin(json!({"action": "broadcast", "user": "ann", "text": "to ann"})).await;
    assert_eq!(sent(user), 2);
    let tagged = json!({"action": "broadcast", "filter": {"tag": "red"}, "text": "to red"});
    assert_eq!(sent(admin(tagged).await), 1);
    let both = json!({"action": "broadcast", "filter": {"path": "/ws", "user": "bob"},
                      "binary": "AAEC"});
    assert_eq!(sent(admin(both).await), 1);
    let all = admin(json!({"action": "broadcast", "text": "to all"})).await;
    assert_eq!(sent(all), 4);

    // What each client received, in order, up to the message to all.
    async fn received(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Vec<Message> {
        let mut got = Vec::new();
        while got.last() != Some(&Message::text("to all")) {
            let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a message in time")
                .unwrap()
                .unwrap();
            if msg.is_text() || msg.is_binary() {
                got.push(msg);
            }
        }
        got
    }
    let text = |t: &str| Message::text(t.to_owned());
    assert_eq!(
        received(&mut ann_1).await,
        [text("just you"), text("to ann"), text("to all")]
    );
    assert_eq!(received(&mut ann_2).await, [text("to ann"), text("to all")]);
    assert_eq!(
        received(&mut bob).await,
        [Message::binary(vec![0u8, 1, 2]), text("to all")]
    );
    assert_eq!(received(&mut red).await, [text("to red"), text("to all")]);

    // An unknown id: 404, as for close; two targets or an empty filter: 400 naming the rule.
    let unknown = admin(json!({"action": "broadcast", "id": "nobody-1-2", "text": "x"})).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(unknown.parse::<ErrorBody>().error.contains("nobody-1-2"));
    let two =
        admin(json!({"action": "broadcast", "user": "ann", "path": "/ws", "text": "x"})).await;
    assert_eq!(two.status, 400, "{}", two.text());
    assert!(two
        .parse::<ErrorBody>()
        .error
        .contains("give at most one target: path, id, user or filter"));
    let empty = admin(json!({"action": "broadcast", "filter": {}, "text": "x"})).await;
    assert_eq!(empty.status, 400, "{}", empty.text());
    assert!(empty
        .parse::<ErrorBody>()
        .error
        .contains("filter: set at least one of"));
    // Nobody got any of those.
    let last = admin(json!({"action": "broadcast", "text": "to all"})).await;
    assert_eq!(sent(last), 4);
    for ws in [&mut ann_1, &mut ann_2, &mut bob, &mut red] {
        assert_eq!(received(ws).await, [text("to all")]);
    }
}

/// The README's tour, replayed against the binary (five echo clients; close one by id, sweep,
/// close the rest with 1001), produces the answers and the metrics the README shows for it.
#[tokio::test]
async fn the_readme_tour_produces_what_the_readme_shows() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    // The `# wscope_…` lines of the README block that follows `marker`.
    let sample = |marker: &str| -> Vec<String> {
        let from = readme.find(marker).unwrap_or_else(|| panic!("{marker:?}"));
        let block = &readme[from..];
        block[..block.find("```").unwrap()]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("wscope_"))
            .map(str::to_owned)
            .collect()
    };
    let served = Served::start(BIN, &["--instance-id", "myhost"]);
    let mut clients = Vec::new();
    for i in 0..5 {
        let (mut ws, _) = tokio_tungstenite::connect_async(served.url("/ws"))
            .await
            .unwrap();
        ws.send(Message::text(format!("echo {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("echo {i}"))
        );
        // Read on, as the tour's bench does, so that close frames are answered.
        clients.push(tokio::spawn(async move {
            let mut code = None;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(Some(frame)) = msg {
                    code = Some(u16::from(frame.code));
                }
            }
            code
        }));
    }
    let metrics = || async {
        let text = http_get(served.admin, "/metrics").await.text();
        text.lines()
            .filter(|l| l.starts_with("wscope_"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // Step 2, in "Prometheus metrics": the same series, and the same figures where they do not
    // depend on how fast the clients echo.
    let shown = sample("# while the tour's five clients echo (step 2):");
    let scraped = metrics().await;
    let name = |line: &str| line.rsplit_once(' ').unwrap().0.to_owned();
    for line in &shown {
        let series = name(line);
        let got = scraped
            .iter()
            .find(|l| name(l) == series)
            .unwrap_or_else(|| panic!("no {series} in {scraped:#?}"));
        if !series.starts_with("wscope_messages_") {
            assert_eq!(got, line);
        }
    }
    assert_eq!(
        scraped
            .iter()
            .filter(|l| l.starts_with("wscope_messages_received_total "))
            .count(),
        1
    );

    // Steps 4 and 5, with the answers the README gives.
    let admin = |body: String| {
        let addr = served.admin;
        async move { http_post(addr, "/api/admin", &body).await.text() }
    };
    let id = stats(served.admin).await["connections"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let close = format!(r#"{{"action":"close","id":"{id}"}}"#);
    let answer = r#"{"success":true}"#;
    assert_eq!(admin(close).await, answer);
    assert!(readme.contains(&format!("\n# {answer}\n")), "{answer}");
    // The closed one has left by the time a person types the next command (until its handler
    // is done, a sweep would count it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(served.admin).await["totalConnections"] != 4 {
        assert!(
            Instant::now() < deadline,
            "the closed connection never left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = r#"{"cleaned":0}"#;
    assert_eq!(admin(r#"{"action":"cleanup"}"#.to_owned()).await, answer);
    assert!(readme.contains(&format!("\n# {answer}\n")), "{answer}");
    let body = r#"{"action":"close_all","code":1001,"reason":"maintenance"}"#;
    let answer = r#"{"success":true,"closed":4}"#;
    assert_eq!(admin(body.to_owned()).await, answer);
    assert!(readme.contains(&format!("\n# {answer}\n")), "{answer}");
    let mut codes = Vec::new();
    for client in clients {
        let code = tokio::time::timeout(Duration::from_secs(5), client).await;
        codes.push(code.unwrap().unwrap().unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, [1000, 1001, 1001, 1001, 1001]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(served.admin).await["totalConnections"] != 0 {
        assert!(Instant::now() < deadline, "the connections never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Step 6: exactly the lines the README shows.
    let shown = sample("# 6. The same story in Prometheus's terms");
    let scraped: Vec<String> = metrics()
        .await
        .into_iter()
        .filter(|l| l.starts_with("wscope_connections"))
        .collect();
    assert_eq!(scraped, shown);
}
