//! TLS for a listener (TLS, WSS and QUIC): the rustls server configuration built from PEM
//! files, optional client-certificate verification (mutual TLS), and reloading when the
//! files change or on SIGHUP. A handshake takes the configuration current when it starts,
//! so a reload never touches an established connection.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use shoal_transport::pem;

use crate::config::TlsSettings;

/// A listener's TLS configuration, reloadable.
#[derive(Debug)]
pub(crate) struct TlsSource {
    settings: TlsSettings,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Vec<Option<SystemTime>>>,
}

impl TlsSource {
    /// Loads the files; `alpn` is the protocols offered (QUIC: `mqtt`).
    pub(crate) fn load(settings: TlsSettings, alpn: &[&[u8]]) -> Result<Self, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(&settings, &alpn)?;
        Ok(Self {
            stamp: Mutex::new(stamp(&settings)),
            settings,
            alpn,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration for a new handshake.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reloads the files if their modification times changed (or unconditionally with
    /// `force`). Returns whether a new configuration is in place; on error the old one
    /// stays.
    pub(crate) fn reload(&self, force: bool) -> Result<bool, String> {
        let now = stamp(&self.settings);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let config = server_config(&self.settings, &self.alpn)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(true)
    }
}

/// The modification times of the files, to notice changes.
fn stamp(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut out = vec![modified(&settings.cert), modified(&settings.key)];
    if let Some(ca) = &settings.client_ca {
        out.push(modified(ca));
    }
    out
}

/// Builds the rustls configuration of `settings`.
pub(crate) fn server_config(
    settings: &TlsSettings,
    alpn: &[Vec<u8>],
) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem::load_certs(ca).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?,
            )
        }
    };
    let certs = pem::load_certs(&settings.cert).map_err(|e| e.to_string())?;
    let key = pem::load_key(&settings.key).map_err(|e| e.to_string())?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} and {} do not make a usable certificate and key: {e}",
            settings.cert.display(),
            settings.key.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
