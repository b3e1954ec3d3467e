//! TLS over rustls with the `ring` provider: for [`serve()`](crate::serve()) a certificate and
//! key read from PEM files and swapped in place on reload ([`ReloadableCert`], made a server
//! configuration by [`server_config`] and given to [`ServeOptions::tls`](crate::ServeOptions::tls)),
//! and for client connections upstream a configuration trusting the system's roots or one CA
//! bundle ([`client_config`]) and a handshake over a connected socket ([`connect_tls`]).
//!
//! ```no_run
//! use wscope_axum::tls::{server_config, ReloadableCert};
//! use wscope_axum::{serve, ServeOptions};
//!
//! # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let cert = ReloadableCert::load("cert.pem", "key.pem")?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let options = ServeOptions::default().tls(server_config(cert.clone())?);
//! tokio::spawn(serve(listener, app, options).into_future());
//! // Later (on SIGHUP): new handshakes get the new pair, open connections keep theirs; a pair
//! // that fails to load leaves the last good one in place.
//! cert.reload()?;
//! # Ok(())
//! # }
//! # use std::future::IntoFuture;
//! ```
//!
//! # Layout
//! - `tls/certs`: reading PEM certificates and keys, [`ReloadableCert`] and [`server_config`].
//! - `tls/client`: [`client_config`] and [`connect_tls`].
//! - `tls/error`: [`TlsError`].

mod certs;
mod client;
mod error;

use std::sync::Arc;

pub use certs::{read_certs, server_config, ReloadableCert};
pub(crate) use client::trusting_nothing;
pub use client::{client_config, connect_tls};
pub use error::TlsError;
/// The TLS crates these types come from (`rustls` through `tokio_rustls::rustls`), for naming
/// their configurations and streams without depending on them.
pub use tokio_rustls;

/// The one cryptography provider wscope's TLS uses (`ring`), named explicitly so that no other
/// crate's choice of rustls's default provider changes it.
// rustls 0.23.48 deprecates it for lacking post-quantum key exchange (which only its aws-lc-rs
// provider has, and aws-lc-rs needs cmake and nasm to build): classical X25519 and the NIST
// curves are what it offers, as every rustls release before did.
#[allow(deprecated)]
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The application protocol both sides offer: HTTP/1.1, over which WebSockets upgrade.
const HTTP_1_1: &[u8] = b"http/1.1";
