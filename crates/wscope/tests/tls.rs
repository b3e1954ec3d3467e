//! The real `wscope` binary over TLS: certificates made at test time, `https://` and `wss://`
//! on either listener, the certificate reread on SIGHUP, and what a client that speaks no TLS,
//! or stalls in the handshake, gets.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wscope_axum::tls::tokio_rustls::client::TlsStream;
use wscope_axum::tls::tokio_rustls::rustls::ClientConfig;
use wscope_axum::tls::{client_config, connect_tls};
use wscope_testkit::pki::{Leaf, TestCa};
use wscope_testkit::served::{wait_line, Served};
use wscope_testkit::{http_get, raw, send_raw, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_wscope");

/// `wscope serve` with the main listener on `leaf`, and `extra` flags.
fn serve_tls(leaf: &Leaf, extra: &[&str]) -> Served {
    let mut args = vec![
        "--tls-cert",
        leaf.cert.to_str().unwrap(),
        "--tls-key",
        leaf.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Served::start(BIN, &args)
}

/// A TLS connection to `addr` trusting `ca` only, checked for `localhost`.
async fn tls(addr: SocketAddr, ca: &TestCa) -> TlsStream<TcpStream> {
    let config = client_config(Some(&ca.ca_path())).unwrap();
    tls_with(addr, config).await.unwrap()
}

async fn tls_with(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(WAIT, async {
        let tcp = TcpStream::connect(addr).await?;
        connect_tls(config, "localhost", tcp).await
    })
    .await
    .expect("TLS handshake in time")
}

/// The certificate the server presented on `stream`, in DER.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// `GET path` over TLS with `Connection: close`: the status and the body.
async fn https_get(addr: SocketAddr, ca: &TestCa, path: &str) -> (u16, String) {
    let mut stream = tls(addr, ca).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("HTTPS answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// A `wss://` echo connection to `/ws`, and the certificate the server presented for it.
async fn wss(addr: SocketAddr, ca: &TestCa) -> (WebSocketStream<TlsStream<TcpStream>>, Vec<u8>) {
    let stream = tls(addr, ca).await;
    let cert = presented(&stream);
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    (ws, cert)
}

/// Sends `text` and expects it back.
async fn echo<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    let got = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text(text));
}

/// Puts `leaf`'s files where the server reads its certificate and key.
fn replace_files(with: &Leaf, at: &Leaf) {
    std::fs::copy(&with.key, &at.key).unwrap();
    std::fs::copy(&with.cert, &at.cert).unwrap();
}

#[tokio::test]
async fn https_health_and_wss_echo_on_the_main_listener() {
    let ca = TestCa::new("wscope test CA");
    let leaf = ca.leaf("main");
    let served = serve_tls(&leaf, &[]);
    let (status, body) = https_get(served.main, &ca, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"healthy""#), "{body}");
    let (mut ws, cert) = wss(served.main, &ca).await;
    assert_eq!(cert, leaf.der);
    echo(&mut ws, "over tls").await;
    // The client address reaches the registry through TLS as without it.
    let stats = http_get(served.admin, "/api/stats").await.json();
    assert_eq!(stats["connections"][0]["remoteAddress"], "127.0.0.1");
}

#[tokio::test]
async fn admin_listener_over_tls() {
    let ca = TestCa::new("wscope test CA");
    let leaf = ca.leaf("admin");
    let served = Served::start(
        BIN,
        &[
            "--admin-tls-cert",
            leaf.cert.to_str().unwrap(),
            "--admin-tls-key",
            leaf.key.to_str().unwrap(),
        ],
    );
    let (status, body) = https_get(served.admin, &ca, "/api/stats").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""totalConnections":0"#), "{body}");
    // The main listener is still plain HTTP.
    assert_eq!(http_get(served.main, "/health").await.status, 200);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_only() {
    let ca = TestCa::new("wscope test CA");
    let first = ca.leaf("first");
    let second = ca.leaf("second");
    // The server reads its own copy of the files, replaced in place.
    let live = ca.leaf("live");
    replace_files(&first, &live);
    let served = serve_tls(&live, &[]);
    let (mut before, cert) = wss(served.main, &ca).await;
    assert_eq!(cert, first.der);
    echo(&mut before, "before").await;

    replace_files(&second, &live);
    served.signal("HUP");
    wait_line(&served.lines, "reloaded --tls-cert and --tls-key", WAIT);
    let (mut after, cert) = wss(served.main, &ca).await;
    assert_eq!(
        cert, second.der,
        "a new connection gets the new certificate"
    );
    echo(&mut after, "after").await;
    // The connection opened before keeps its session and echoes on.
    echo(&mut before, "still here").await;
}

#[tokio::test]
async fn sighup_with_a_broken_certificate_keeps_the_old_one() {
    let ca = TestCa::new("wscope test CA");
    let first = ca.leaf("first");
    let live = ca.leaf("live");
    replace_files(&first, &live);
    let served = serve_tls(&live, &[]);
    let (mut before, _) = wss(served.main, &ca).await;

    std::fs::write(&live.cert, "not a certificate\n").unwrap();
    served.signal("HUP");
    let line = wait_line(&served.lines, "not reloaded", WAIT);
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("--tls-cert and --tls-key"), "{line}");
    assert!(line.contains(live.cert.to_str().unwrap()), "{line}");
    assert!(line.contains("no CERTIFICATE"), "{line}");
    // The last good pair is still served, to new connections and old.
    let (mut after, cert) = wss(served.main, &ca).await;
    assert_eq!(cert, first.der);
    echo(&mut after, "after").await;
    echo(&mut before, "before").await;
    // One error line, no more.
    let errors: Vec<String> = served
        .lines
        .try_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // Still alive: a second SIGHUP with the file fixed reloads.
    replace_files(&first, &live);
    served.signal("HUP");
    wait_line(&served.lines, "reloaded --tls-cert and --tls-key", WAIT);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_nothing_and_harms_no_one() {
    let ca = TestCa::new("wscope test CA");
    let leaf = ca.leaf("main");
    let served = serve_tls(&leaf, &[]);
    let (mut open, _) = wss(served.main, &ca).await;
    let answer = send_raw(
        served.main,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    assert!(!answer.contains("healthy"), "{answer:?}");
    // A client that trusts another CA is refused by its own side; the server is unmoved.
    let other = TestCa::new("another CA");
    let config = client_config(Some(&other.ca_path())).unwrap();
    assert!(tls_with(served.main, config).await.is_err());
    echo(&mut open, "unharmed").await;
    assert_eq!(https_get(served.main, &ca, "/health").await.0, 200);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_at_the_handshake_timeout() {
    let ca = TestCa::new("wscope test CA");
    let leaf = ca.leaf("main");
    let served = serve_tls(&leaf, &["--handshake-timeout", "300ms"]);
    // Connects and never says hello.
    let mut silent = raw::Raw::connect(served.main).await;
    // Meanwhile others are served.
    assert_eq!(https_get(served.main, &ca, "/health").await.0, 200);
    assert!(
        silent.closed_within(WAIT).await,
        "the stalled client was kept"
    );
}

#[test]
fn a_certificate_without_its_key_exits_2_naming_both_flags() {
    let ca = TestCa::new("wscope test CA");
    let leaf = ca.leaf("main");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env_remove("WSCOPE_REDIS_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert = leaf.cert.to_str().unwrap();
    let key = leaf.key.to_str().unwrap();
    let (code, stderr) = run(&["--tls-cert", cert]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: --tls-cert and --tls-key: set both or neither (--tls-key is missing)"
    );
    let (code, stderr) = run(&["--admin-tls-key", key]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: --admin-tls-cert and --admin-tls-key: set both or neither (--admin-tls-cert is missing)"
    );
    // A key that is no key: one line naming the flags and the file.
    let (code, stderr) = run(&["--tls-cert", cert, "--tls-key", cert]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: --tls-cert and --tls-key: {cert}: no PRIVATE KEY"
        )),
        "{stderr}"
    );
    // A key that is another certificate's.
    let other = ca.leaf("other");
    let (code, stderr) = run(&["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-cert and --tls-key"), "{stderr}");
}
