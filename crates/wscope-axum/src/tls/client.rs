//! The client side, for connections upstream: a configuration trusting the system's roots or
//! one CA bundle ([`client_config`]), and the handshake over a connected socket
//! ([`connect_tls`]).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{provider, read_certs, TlsError, HTTP_1_1};

/// A client configuration (TLS 1.2 and 1.3, the `ring` provider, HTTP/1.1 offered) trusting
/// the system's root certificates (rustls-native-certs), or, when `ca` is given, only the
/// certificates of that PEM bundle.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(path) => bundle_roots(path)?,
        None => system_roots()?,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of the PEM bundle `path`, each a trust anchor.
fn bundle_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The system's trust store; refused when not one certificate in it is usable.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError::NoRoots {
            why: why.join("; "),
        });
    }
    Ok(roots)
}

/// A TLS handshake as a client over `tcp` with `config`, checking the server's certificate for
/// `host` (a DNS name or an IP address; an IPv6 one with or without brackets).
pub async fn connect_tls(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// A client configuration that trusts no certificate: what a connector that must have one is
/// given when no TLS upstream is configured (nothing is ever dialled with it).
pub(crate) fn trusting_nothing() -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider());
    match builder.with_safe_default_protocol_versions() {
        Ok(builder) => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        // The ring provider supports the default versions: unreachable, but no panic.
        Err(_) => ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    }
}
