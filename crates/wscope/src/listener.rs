//! TCP listeners with a large accept backlog: tokio's `TcpListener::bind` listens with 128,
//! which drops connections under a burst of handshakes.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds `addr` and listens with `backlog` (the kernel caps it at `net.core.somaxconn`).
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    TcpListener::from_std(wscope_axum::bind_listener(addr, backlog, false)?)
}
