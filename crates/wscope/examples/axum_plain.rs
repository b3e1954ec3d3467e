//! A plain axum WebSocket echo server: the baseline a Rust user writes by hand, for the peer
//! benchmark suite (`scripts/run-peers.sh`).
//!
//! axum 0.8 `WebSocketUpgrade` with its default settings, no connection tracking, no admin API.
//! Three optional flags turn it into the same engine as `wscope serve` with wscope's settings, but
//! untracked (the tracking-overhead baseline): `--nodelay` (TCP_NODELAY on accepted sockets, as
//! wscope sets), `--read-buffer-size N` and `--write-buffer-size N` (wscope: 512 and 16384;
//! axum's defaults: 128 KiB each).
//! Routes: `/ws` (echo every text or binary message), `/ws/chat` (every message goes to every chat
//! connection, the sender included, through a `tokio::sync::broadcast` channel) and `/health`.
//!
//! ```text
//! cargo build --release --example axum_plain
//! target/release/examples/axum_plain --listen 127.0.0.1:8080
//! ```
//!
//! SIGINT/SIGTERM stop the server (open sockets are dropped; this example does no drain).

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Extension, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

/// Capacity of the chat channel; a receiver that falls further behind skips messages.
const CHAT_CAPACITY: usize = 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(opts))
}

/// Command-line options.
#[derive(Clone, Copy)]
struct Opts {
    listen: SocketAddr,
    nodelay: bool,
    read_buffer_size: Option<usize>,
    write_buffer_size: Option<usize>,
}

/// Reads `--listen ADDR` (else `AXUM_PLAIN_LISTEN`, else 127.0.0.1:8080), `--nodelay`,
/// `--read-buffer-size N`, `--write-buffer-size N`.
fn parse_args() -> Result<Opts, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen = std::env::var("AXUM_PLAIN_LISTEN").ok();
    let (mut nodelay, mut read_buffer_size, mut write_buffer_size) = (false, None, None);
    let size = |flag: &str, v: Option<String>| -> Result<usize, String> {
        v.ok_or(format!("{flag} needs a number of bytes"))?
            .parse()
            .map_err(|e| format!("bad {flag}: {e}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = Some(args.next().ok_or("--listen needs an address")?),
            "--nodelay" => nodelay = true,
            "--read-buffer-size" => read_buffer_size = Some(size(&arg, args.next())?),
            "--write-buffer-size" => write_buffer_size = Some(size(&arg, args.next())?),
            "-h" | "--help" => {
                println!(
                    "usage: axum_plain [--listen 127.0.0.1:8080] [--nodelay] \
                     [--read-buffer-size N] [--write-buffer-size N]"
                );
                std::process::exit(0);
            }
            _ => match arg.strip_prefix("--listen=") {
                Some(v) => listen = Some(v.to_owned()),
                None => return Err(format!("unknown argument {arg:?}").into()),
            },
        }
    }
    let listen = listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listen = listen
        .parse()
        .map_err(|e| format!("bad --listen {listen:?}: {e}"))?;
    Ok(Opts {
        listen,
        nodelay,
        read_buffer_size,
        write_buffer_size,
    })
}

async fn serve(opts: Opts) -> Result<(), Box<dyn std::error::Error>> {
    let listen = opts.listen;
    let (chat, _) = broadcast::channel::<Message>(CHAT_CAPACITY);
    let app = Router::new()
        .route("/ws", get(echo))
        .route("/ws/chat", get(chat_route))
        .route("/health", get(|| async { r#"{"status":"healthy"}"# }))
        .with_state(chat)
        .layer(axum::Extension(opts));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("axum_plain listening on {}", listener.local_addr()?);
    let nodelay = opts.nodelay;
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Applies the buffer-size flags (axum's defaults when absent).
fn tune(ws: WebSocketUpgrade, opts: Opts) -> WebSocketUpgrade {
    let ws = match opts.read_buffer_size {
        Some(n) => ws.read_buffer_size(n),
        None => ws,
    };
    match opts.write_buffer_size {
        Some(n) => ws.write_buffer_size(n),
        None => ws,
    }
}

/// `/ws`: sends each text or binary message back unchanged.
async fn echo(ws: WebSocketUpgrade, Extension(opts): Extension<Opts>) -> Response {
    tune(ws, opts).on_upgrade(|mut socket: WebSocket| async move {
        // Keep reading after a Close frame: tungstenite sends the close reply on the next read,
        // which then ends the stream.
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Text(_) | Message::Binary(_))
                && socket.send(msg).await.is_err()
            {
                break;
            }
        }
    })
}

/// `/ws/chat`: each text or binary message goes to every chat connection, the sender included.
async fn chat_route(
    ws: WebSocketUpgrade,
    State(chat): State<broadcast::Sender<Message>>,
    Extension(opts): Extension<Opts>,
) -> Response {
    tune(ws, opts).on_upgrade(move |socket: WebSocket| async move {
        let mut rx = chat.subscribe();
        let (mut sink, mut stream) = socket.split();
        let mut writer = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(msg) => {
                        if sink.send(msg).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        // No receivers is not an error worth reporting here.
                        let _ = chat.send(msg);
                    }
                    // Ping, pong and close are answered by tungstenite; the stream ends after
                    // the close handshake.
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                _ = &mut writer => return,
            }
        }
        writer.abort();
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
