//! `wscope_axum::tls`: the client side against a rustls server (a CA made at test time trusted,
//! another refused), `serve` over TLS (the addresses still reach requests, a graceful stop),
//! and a certificate reloaded in place, a broken pair leaving the last good one.
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wscope_axum::tls::tokio_rustls::TlsAcceptor;
use wscope_axum::tls::{client_config, connect_tls, server_config, ReloadableCert, TlsError};
use wscope_axum::{serve, LocalAddr, ServeOptions};
use wscope_testkit::pki::TestCa;
use wscope_testkit::WAIT;

/// A rustls server on loopback that echoes one line per connection, presenting `cert`.
async fn echo_server(cert: Arc<ReloadableCert>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(cert).unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                let n = tls.read(&mut buf).await.unwrap();
                tls.write_all(&buf[..n]).await.unwrap();
                tls.shutdown().await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test]
async fn client_config_with_a_ca_bundle_connects_to_a_rustls_server() {
    let ca = TestCa::new("client test CA");
    let leaf = ca.leaf("server");
    let addr = echo_server(ReloadableCert::load(&leaf.cert, &leaf.key).unwrap()).await;
    let config = client_config(Some(&ca.ca_path())).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio::time::timeout(WAIT, connect_tls(config.clone(), host, tcp))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, b"ping", "through {host}");
    }
}

#[tokio::test]
async fn client_config_refuses_what_its_ca_did_not_sign_or_another_name() {
    let ca = TestCa::new("client test CA");
    let leaf = ca.leaf("server");
    let addr = echo_server(ReloadableCert::load(&leaf.cert, &leaf.key).unwrap()).await;
    let stranger = TestCa::new("a stranger");
    let config = client_config(Some(&stranger.ca_path())).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = connect_tls(config, "localhost", tcp).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // The right CA, the wrong name.
    let config = client_config(Some(&ca.ca_path())).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = connect_tls(config.clone(), "example.com", tcp)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = connect_tls(config, "not a name", tcp).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_ca_bundle_with_no_certificate_is_refused_naming_the_file() {
    let ca = TestCa::new("client test CA");
    let leaf = ca.leaf("server");
    let err = client_config(Some(&leaf.key)).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    let missing = ca.dir().join("missing.pem");
    let err = client_config(Some(&missing)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
}

#[tokio::test]
async fn serve_over_tls_gives_requests_their_addresses() {
    let ca = TestCa::new("serve test CA");
    let leaf = ca.leaf("server");
    let cert = ReloadableCert::load(&leaf.cert, &leaf.key).unwrap();
    let app = Router::new().route(
        "/who",
        get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>, Extension(LocalAddr(local))| async move {
                format!("{peer} -> {local}")
            },
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions::default().tls(server_config(cert).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = serve(listener, app, options).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    let task = tokio::spawn(server.into_future());

    let tcp = TcpStream::connect(addr).await.unwrap();
    let mine = tcp.local_addr().unwrap();
    let config = client_config(Some(&ca.ca_path())).unwrap();
    let mut tls = connect_tls(config, "localhost", tcp).await.unwrap();
    let request = format!("GET /who HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&format!("{mine} -> {addr}")), "{answer}");

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the server stops in time")
        .unwrap()
        .unwrap();
}

#[test]
fn reload_takes_a_good_pair_and_keeps_the_last_good_one_otherwise() {
    let ca = TestCa::new("reload test CA");
    let first = ca.leaf("first");
    let second = ca.leaf("second");
    let live = ca.leaf("live");
    let put = |from: &wscope_testkit::pki::Leaf| {
        std::fs::copy(&from.cert, &live.cert).unwrap();
        std::fs::copy(&from.key, &live.key).unwrap();
    };
    put(&first);
    let cert = ReloadableCert::load(&live.cert, &live.key).unwrap();
    let presented = |cert: &ReloadableCert| cert.current().end_entity_cert().unwrap().to_vec();
    assert_eq!(presented(&cert), first.der);
    put(&second);
    cert.reload().unwrap();
    assert_eq!(presented(&cert), second.der);
    // A key that is not the certificate's: refused, naming both files.
    std::fs::copy(&first.key, &live.key).unwrap();
    let err = cert.reload().unwrap_err();
    assert!(matches!(err, TlsError::Pair { .. }), "{err}");
    assert!(
        err.to_string().contains(live.key.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(presented(&cert), second.der);
    // An empty key file.
    std::fs::write(&live.key, "").unwrap();
    let err = cert.reload().unwrap_err();
    assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");
    assert_eq!(presented(&cert), second.der);
}
