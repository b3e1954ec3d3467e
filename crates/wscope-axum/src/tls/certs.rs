//! The server's certificate: PEM files read into a chain and a key, held by [`ReloadableCert`]
//! (which every handshake asks for the pair in place, so that a reload reaches new connections
//! and leaves open ones alone), and the rustls server configuration around it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;

use super::{provider, TlsError, HTTP_1_1};

/// The most bytes read from a PEM file (a chain, a key or a CA bundle).
const MAX_PEM_BYTES: u64 = 4 << 20;

/// The bytes of `path`, at most [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let unreadable = |why| TlsError::Unreadable {
        path: path.to_owned(),
        why,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
            max: MAX_PEM_BYTES,
        });
    }
    Ok(bytes)
}

/// The certificates of the PEM file `path`, in order (a chain: the leaf first); none is an
/// error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_bounded(path)?;
    let pem = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE in PEM".to_owned()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY in PEM".to_owned(),
            other => format!("malformed PEM: {other}"),
        },
    })
}

/// The chain of `cert` and the key of `key`, checked to belong together.
fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let private = read_key(key)?;
    CertifiedKey::from_der(chain, private, &provider())
        .map(Arc::new)
        .map_err(|why| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            why,
        })
}

/// A certificate chain and key read from two PEM files, handed to every TLS handshake and
/// replaced in place by [`ReloadableCert::reload`]: connections already open keep the session
/// they made, new ones get the new pair. A pair that fails to load replaces nothing.
#[derive(Debug)]
pub struct ReloadableCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Reads the chain in `cert` and the key in `key` (PEM), checked to belong together.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let current = RwLock::new(load_pair(&cert, &key)?);
        Ok(Arc::new(Self { cert, key, current }))
    }

    /// Reads both files again and, if they hold a usable pair, hands it to every later
    /// handshake; otherwise keeps the pair in place and says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = pair;
        Ok(())
    }

    /// The pair in place.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server configuration presenting what `resolver` gives each handshake (a
/// [`ReloadableCert`]), over TLS 1.2 and 1.3 with the `ring` provider, offering HTTP/1.1 only.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}
