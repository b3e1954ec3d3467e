//! The listeners' TLS: the certificate and key files of the listeners group read into server
//! configurations, and the reload of each pair on SIGHUP.

use std::sync::Arc;

use wscope_axum::tls::tokio_rustls::rustls::ServerConfig;
use wscope_axum::tls::{server_config, ReloadableCert};

use crate::config::{ConfigError, TlsFiles};
use crate::reload::Reloader;

/// One listener's TLS: the configuration its handshakes use, around a certificate that can be
/// reread in place.
pub(crate) struct ListenerTls {
    pub(crate) config: Arc<ServerConfig>,
    cert: Arc<ReloadableCert>,
    flags: &'static str,
}

impl ListenerTls {
    /// Reads `files` (a listener with no TLS has none); a pair that cannot be used is a
    /// configuration error naming both flags.
    pub(crate) fn load(files: Option<TlsFiles<'_>>) -> Result<Option<Self>, ConfigError> {
        let Some(files) = files else {
            return Ok(None);
        };
        let refuse = |why| ConfigError::Tls {
            flags: files.flags,
            why: Box::new(why),
        };
        let cert = ReloadableCert::load(files.cert, files.key).map_err(refuse)?;
        let config = server_config(cert.clone()).map_err(refuse)?;
        Ok(Some(Self {
            config,
            cert,
            flags: files.flags,
        }))
    }

    /// Adds the reread of this pair to `reloader`.
    pub(crate) fn reload_on(&self, reloader: &mut Reloader) {
        let cert = self.cert.clone();
        reloader.add(self.flags, move || cert.reload().map_err(|e| e.to_string()));
    }
}
