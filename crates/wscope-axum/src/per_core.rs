//! A runtime per core: one router served by N OS threads, each running a `current_thread` tokio
//! runtime with its own listener on the same address (`SO_REUSEPORT`: the kernel hashes each
//! new connection's addresses to one of them). A connection's tasks then stay on the thread that
//! accepted it: no work stealing bouncing small tasks between cores, no cross-thread wake-ups on
//! the hot path. What the threads share (the registry behind the router, its counters, the
//! cluster node) is shared through `Arc`s and atomics as it is on one multi-thread runtime; the
//! registry's totals that every connection writes (counts, counts by state, the sums behind the
//! averages, closes by initiator) are sharded, each runtime writing its own shard, and summed when
//! read.
//!
//! ```no_run
//! use std::num::NonZeroUsize;
//! use axum::{response::Response, routing::get, Router};
//! use wscope_axum::{admin_router, serve, PerCore, ServeOptions, Tracking, WebSocketUpgrade};
//! use wscope_core::Registry;
//!
//! async fn echo(ws: WebSocketUpgrade) -> Response {
//!     ws.on_upgrade(|mut socket| async move {
//!         while let Some(msg) = socket.recv().await {
//!             if socket.send(msg).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let registry = Registry::new();
//! let app = Router::new()
//!     .route("/ws", get(echo))
//!     .layer(Tracking::new(registry.clone()).layer());
//! let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
//! let main = PerCore::bind("127.0.0.1:8080".parse().unwrap(), threads)?;
//! // The admin API (and its `wscope_runtime_connections` gauge) on the calling runtime.
//! let admin = admin_router(registry.clone()).layer(axum::Extension(main.runtimes()));
//! let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! tokio::spawn(async move { serve(admin_listener, admin, ServeOptions::default()).await });
//! main.serve(app, ServeOptions::default())
//!     .with_graceful_shutdown(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // Drain before the runtimes stop: a runtime's WebSockets end with it.
//!         registry.shutdown().await;
//!     })
//!     .await
//! # }
//! ```
//!
//! Each thread's listener takes what the kernel hashes to it, whatever its load: a few long
//! connections may land unevenly (with 4 connections on 2 runtimes, 3 and 1, or all 4 on one,
//! happen often), while many even out. [`Runtimes`] counts the WebSockets open on each runtime
//! (`wscope_runtime_connections{runtime="0"}` in `/metrics` when handed to the admin router as
//! an extension).

use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::Router;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::serve::{serve, Graceful, ServeOptions};

/// Binds a TCP listener on `addr` listening with `backlog` (the kernel caps it at
/// `net.core.somaxconn`; tokio's own bind listens with 128, which drops connections under a
/// burst of handshakes), with `SO_REUSEADDR` (a restart need not wait out `TIME_WAIT`) and,
/// when `reuse_port`, `SO_REUSEPORT` (several listeners on one address). Non-blocking, ready for
/// [`tokio::net::TcpListener::from_std`] on any runtime.
pub fn bind_listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// N listeners bound on one address with `SO_REUSEPORT`, one for each runtime
/// [`PerCore::serve`] starts.
#[derive(Debug)]
pub struct PerCore {
    listeners: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    runtimes: Runtimes,
}

impl PerCore {
    /// The accept backlog of [`PerCore::bind`]'s listeners.
    pub const DEFAULT_BACKLOG: u32 = 4096;

    /// Binds `threads` listeners on `addr` (see [`PerCore::bind_with_backlog`]).
    pub fn bind(addr: SocketAddr, threads: NonZeroUsize) -> io::Result<Self> {
        Self::bind_with_backlog(addr, threads, Self::DEFAULT_BACKLOG)
    }

    /// Binds `threads` listeners on `addr`, each listening with `backlog`. With port 0 the
    /// first picks the port and the others bind that one.
    pub fn bind_with_backlog(
        addr: SocketAddr,
        threads: NonZeroUsize,
        backlog: u32,
    ) -> io::Result<Self> {
        let first = bind_listener(addr, backlog, true)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads.get() {
            listeners.push(bind_listener(addr, backlog, true)?);
        }
        Ok(Self {
            listeners,
            addr,
            runtimes: Runtimes::new(threads.get()),
        })
    }

    /// The address every listener is bound to (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many runtimes [`PerCore::serve`] starts.
    pub fn threads(&self) -> usize {
        self.listeners.len()
    }

    /// The WebSockets open on each runtime, counted from the moment it serves.
    pub fn runtimes(&self) -> Runtimes {
        self.runtimes.clone()
    }

    /// Serves `router` with `options` on every listener, each on a thread of its own running a
    /// `current_thread` runtime; await it, after [`ServePerCore::with_graceful_shutdown`] if it
    /// should stop.
    pub fn serve(self, router: Router, options: ServeOptions) -> ServePerCore {
        ServePerCore(Graceful::new(self, router, options))
    }
}

/// The server [`PerCore::serve`] made: a future (through `IntoFuture`) that starts the runtimes
/// and runs until its shutdown signal, then stops every listener as [`serve`] does and waits
/// for each runtime to finish its HTTP connections in flight. A runtime's thread ends with it,
/// and the upgraded connections still on it are dropped then: a signal that drains the registry
/// before it completes ([`Registry::shutdown`](wscope_core::Registry::shutdown)) lets them close
/// as they should. A runtime that fails (its thread or listener cannot start) stops the others,
/// and its error is returned.
#[must_use = "a server does nothing until awaited"]
#[derive(Debug)]
pub struct ServePerCore(Graceful<PerCore>);

impl ServePerCore {
    /// Stops when `signal` completes.
    pub fn with_graceful_shutdown(self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(self.0.until(signal))
    }

    async fn run(self) -> io::Result<()> {
        let Graceful {
            on: per_core,
            router,
            options,
            mut signal,
        } = self.0;
        let stop = CancellationToken::new();
        let mut finished = Vec::with_capacity(per_core.listeners.len());
        let mut started = Ok(());
        for (index, listener) in per_core.listeners.into_iter().enumerate() {
            let (done, receiver) = oneshot::channel();
            let runtime = RuntimeTask {
                index,
                listener,
                router: router.clone(),
                options: options.clone(),
                stop: stop.clone(),
                gauge: per_core.runtimes.0[index].clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("wscope-rt-{index}"))
                .spawn(move || {
                    let _ = done.send(runtime.run());
                });
            match spawned {
                Ok(_) => finished.push(receiver),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        let mut results: Vec<Option<io::Result<()>>> = finished.iter().map(|_| None).collect();
        if started.is_ok() {
            // Until the signal, or until a runtime ends early (it failed).
            tokio::select! {
                () = &mut signal => {}
                (result, index, _) = futures_util::future::select_all(finished.iter_mut()) => {
                    results[index] = Some(ended(result));
                }
            }
        }
        stop.cancel();
        for (result, receiver) in results.into_iter().zip(finished) {
            let result = match result {
                Some(result) => result,
                None => ended(receiver.await),
            };
            started = started.and(result);
        }
        started
    }
}

/// What a runtime's thread sent when it ended; nothing if it panicked.
fn ended(sent: Result<io::Result<()>, oneshot::error::RecvError>) -> io::Result<()> {
    sent.unwrap_or_else(|_| Err(io::Error::other("a runtime thread panicked")))
}

impl IntoFuture for ServePerCore {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// What one runtime's thread runs: its listener served until `stop`.
struct RuntimeTask {
    /// Which runtime of the server this is (from 0).
    index: usize,
    listener: std::net::TcpListener,
    router: Router,
    options: ServeOptions,
    stop: CancellationToken,
    /// The count of the WebSockets open on this runtime.
    gauge: Arc<AtomicU64>,
}

impl RuntimeTask {
    fn run(self) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        CURRENT.with(|current| *current.borrow_mut() = Some(self.gauge.clone()));
        // The registry's totals this thread writes: a shard no other runtime of this server
        // writes (up to 16 of them).
        wscope_core::set_shard(self.index);
        let stop = self.stop.clone();
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener)?;
            serve(listener, self.router, self.options)
                .with_graceful_shutdown(self.stop.cancelled_owned())
                .await
        });
        if served.is_err() {
            // The others stop too: a server missing a runtime is not the one asked for.
            stop.cancel();
        }
        served
    }
}

thread_local! {
    /// The gauge of the runtime this thread runs, if it is one of [`PerCore`]'s.
    static CURRENT: RefCell<Option<Arc<AtomicU64>>> = const { RefCell::new(None) };
}

/// The WebSockets open on each runtime of a [`PerCore`] server. Handed to the admin router as
/// an extension (`admin_router(registry).layer(Extension(runtimes))`), it is
/// `wscope_runtime_connections{runtime="0"}` in `/metrics`.
#[derive(Clone, Debug)]
pub struct Runtimes(Arc<[Arc<AtomicU64>]>);

impl Runtimes {
    fn new(threads: usize) -> Self {
        Self((0..threads).map(|_| Arc::default()).collect())
    }

    /// The WebSockets open now on each runtime, by index.
    pub fn connections(&self) -> Vec<u64> {
        self.0.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }
}

/// A WebSocket counted on the runtime it runs on, until dropped (its task ends). One pointer:
/// every connection's task holds it while the connection lives.
#[derive(Debug)]
pub(crate) struct OnRuntime(Arc<AtomicU64>);

impl OnRuntime {
    /// Counts a WebSocket whose task is about to be spawned on this thread, if this thread runs
    /// one of [`PerCore`]'s runtimes (a `current_thread` runtime spawns on itself).
    pub(crate) fn enter() -> Option<Self> {
        CURRENT.with(|current| {
            let gauge = current.borrow().clone()?;
            gauge.fetch_add(1, Ordering::Relaxed);
            Some(Self(gauge))
        })
    }
}

impl Drop for OnRuntime {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_every_listener_on_the_port_the_first_picked() {
        let threads = NonZeroUsize::new(3).unwrap();
        let per_core = PerCore::bind("127.0.0.1:0".parse().unwrap(), threads).unwrap();
        assert_ne!(per_core.local_addr().port(), 0);
        assert_eq!(per_core.threads(), 3);
        for listener in &per_core.listeners {
            assert_eq!(listener.local_addr().unwrap(), per_core.local_addr());
        }
        assert_eq!(per_core.runtimes().connections(), [0, 0, 0]);
    }

    #[test]
    fn a_connection_counts_on_its_runtime_only_while_it_lives() {
        assert!(OnRuntime::enter().is_none(), "not a per-core thread");
        let runtimes = Runtimes::new(2);
        let counted = runtimes.clone();
        std::thread::spawn(move || {
            CURRENT.with(|c| *c.borrow_mut() = Some(counted.0[1].clone()));
            let on = OnRuntime::enter().unwrap();
            assert_eq!(counted.connections(), [0, 1]);
            drop(on);
            assert_eq!(counted.connections(), [0, 0]);
        })
        .join()
        .unwrap();
        assert_eq!(runtimes.connections(), [0, 0]);
    }
}
