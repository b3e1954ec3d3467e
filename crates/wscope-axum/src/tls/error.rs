//! [`TlsError`]: why a certificate, key or CA bundle cannot be used.

use std::path::PathBuf;

/// A certificate, key or CA bundle that cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{}: cannot read: {why}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        why: std::io::Error,
    },
    /// The file is larger than any PEM bundle needs to be.
    #[error("{}: larger than {max} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes read.
        max: u64,
    },
    /// The file holds no usable PEM item of the kind wanted, or a malformed one.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// The key cannot sign, or does not belong to the certificate.
    #[error("{} with {}: {why}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: tokio_rustls::rustls::Error,
    },
    /// The system's trust store holds no certificate rustls can use.
    #[error("no usable root certificate in the system's trust store{}", if why.is_empty() { String::new() } else { format!(": {why}") })]
    NoRoots {
        /// What went wrong loading them, if anything did.
        why: String,
    },
    /// rustls refused the configuration (no protocol version the provider supports).
    #[error("TLS configuration: {0}")]
    Config(tokio_rustls::rustls::Error),
}
