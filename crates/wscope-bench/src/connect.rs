//! Opening and closing client connections: a TCP socket bound to a spread source address, then
//! the WebSocket handshake over it; many at once under a concurrency bound; close handshakes at
//! the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::addrs::SourceAddrs;
use crate::deadline::Deadline;
use crate::error::BenchError;
use crate::failures::Failures;
use crate::keeper::Keeper;
use crate::latency;
use crate::options::CommonOptions;
use crate::reason::{io_reason, ws_reason};
use crate::target::Target;
use crate::ws::{Ws, CLOSE_TIMEOUT};

/// Why one connection attempt failed, worded for a one-line report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{}", io_reason(.0))]
    Tcp(std::io::Error),
    #[error("{}", ws_reason(.0))]
    Handshake(WsError),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Opens connections to one target, spreading them over source addresses.
#[derive(Debug)]
pub(crate) struct Connector {
    target: Target,
    sources: SourceAddrs,
    config: WebSocketConfig,
    /// Bounds TCP connect plus handshake of one attempt.
    timeout: Duration,
    /// Attempts so far: picks the next source address.
    next: AtomicUsize,
}

impl Connector {
    /// A connector for up to `connections` open at once, reading through buffers of
    /// `read_buffer` bytes (small for idle connections, larger for busy ones).
    pub(crate) fn new(
        target: Target,
        connections: usize,
        read_buffer: usize,
        common: &CommonOptions,
    ) -> Self {
        let sources =
            SourceAddrs::for_connections(target.addr.ip(), connections, common.per_source);
        let timeout = common.connect_timeout;
        let config = WebSocketConfig::default().read_buffer_size(read_buffer.max(256));
        Self {
            target,
            sources,
            config,
            timeout,
            next: AtomicUsize::new(0),
        }
    }

    /// Source addresses the client sockets are spread over.
    pub(crate) fn source_addresses(&self) -> usize {
        self.sources.len()
    }

    /// A bare TCP connect (no HTTP request, so the server registers nothing), to fail fast and
    /// clearly when nothing listens.
    pub(crate) async fn preflight(&self) -> Result<(), BenchError> {
        let unreachable = |reason: String| BenchError::Unreachable {
            url: self.target.url.clone(),
            reason,
        };
        match tokio::time::timeout(self.timeout, TcpStream::connect(self.target.addr)).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => Err(unreachable(io_reason(&e))),
            Err(_) => Err(unreachable(format!("timed out after {:?}", self.timeout))),
        }
    }

    /// One connection: bind, connect, handshake, all within the connect timeout.
    pub(crate) async fn connect(&self) -> Result<Ws, ConnectError> {
        match tokio::time::timeout(self.timeout, self.connect_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::TimedOut(self.timeout)),
        }
    }

    async fn connect_unbounded(&self) -> Result<Ws, ConnectError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let addr = self.target.addr;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(ConnectError::Tcp)?;
        if let Some(source) = self.sources.pick(n) {
            socket
                .bind(std::net::SocketAddr::new(source, 0))
                .map_err(ConnectError::Tcp)?;
        }
        // Latency is what is measured: never let Nagle hold a small frame back.
        socket.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let stream = socket.connect(addr).await.map_err(ConnectError::Tcp)?;
        let (ws, _response) = tokio_tungstenite::client_async_with_config(
            self.target.url.as_str(),
            stream,
            Some(self.config),
        )
        .await
        .map_err(ConnectError::Handshake)?;
        Ok(ws)
    }
}

/// What [`open_all`] got.
#[derive(Debug)]
pub(crate) struct Opened {
    /// Every connection that opened, held and read by the keeper (so that each answers the
    /// server's pings while the others open) until a mode takes them.
    pub(crate) keeper: Keeper,
    /// Handshakes that succeeded.
    pub(crate) count: usize,
    pub(crate) failures: Failures,
    /// Time from the first attempt to the last completion.
    pub(crate) elapsed: Duration,
    /// Time each successful connect + handshake took.
    pub(crate) handshakes: Histogram<u64>,
    /// The deadline cut the opening short.
    pub(crate) timed_out: bool,
}

/// Opens `count` connections, at most `concurrency` handshakes at once, each attempt in its own
/// task so handshakes use every runtime thread. Stops early at `deadline`.
pub(crate) async fn open_all(
    connector: &Arc<Connector>,
    count: usize,
    concurrency: usize,
    deadline: Deadline,
    bar: &ProgressBar,
) -> Opened {
    let started = Instant::now();
    let mut set = JoinSet::new();
    let keeper = Keeper::start();
    let mut opened = 0;
    let mut failures = Failures::default();
    let mut handshakes = latency::histogram();
    let mut spawned = 0;
    let mut timed_out = false;
    loop {
        while spawned < count && set.len() < concurrency.max(1) {
            let connector = connector.clone();
            set.spawn(async move {
                let t = Instant::now();
                connector.connect().await.map(|ws| (ws, t.elapsed()))
            });
            spawned += 1;
        }
        let joined = tokio::select! {
            biased;
            _ = deadline.reached() => {
                timed_out = true;
                break;
            }
            joined = set.join_next() => joined,
        };
        match joined {
            None => break,
            Some(Ok(Ok((ws, took)))) => {
                latency::record(&mut handshakes, took);
                keeper.hold(ws);
                opened += 1;
                bar.inc(1);
            }
            Some(Ok(Err(e))) => {
                failures.add(|| e.to_string());
                bar.inc(1);
            }
            Some(Err(e)) => failures.add(|| format!("connect task failed: {e}")),
        }
    }
    set.abort_all();
    Opened {
        keeper,
        count: opened,
        failures,
        elapsed: started.elapsed(),
        handshakes,
        timed_out,
    }
}

/// Closes every connection with a close handshake (each bounded by [`CLOSE_TIMEOUT`]), all at
/// once in their own tasks. Returns how many did not close cleanly.
pub(crate) async fn close_all(conns: Vec<Ws>) -> u64 {
    let mut set = JoinSet::new();
    for ws in conns {
        set.spawn(close(ws));
    }
    let mut unclean = 0;
    while let Some(r) = set.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            unclean += 1;
        }
    }
    unclean
}

/// Sends a close frame and reads until the server's reply ends the stream.
pub(crate) async fn close(mut ws: Ws) -> Result<(), String> {
    let handshake = async {
        ws.close(None)
            .await
            .map_err(|e| format!("close: {}", ws_reason(&e)))?;
        loop {
            match ws.next().await {
                None | Some(Err(WsError::ConnectionClosed)) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("close: {}", ws_reason(&e))),
            }
        }
    };
    tokio::time::timeout(CLOSE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| Err(format!("close: no reply within {CLOSE_TIMEOUT:?}")))
}
