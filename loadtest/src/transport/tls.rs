//! TLS over TCP (rustls with ring): trusted authorities from a PEM file, optional client
//! certificate, optional "accept anything" for test brokers.

use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::transport::{TlsOptions, TransportError};

/// A TLS client: configuration and the server name to verify.
pub(crate) struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    pub(crate) fn new(
        options: &TlsOptions,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Self> {
        let config = client_config(options, alpn)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("{server_name:?} is not a valid TLS server name"))?;
        Ok(Self {
            inner: tokio_rustls::TlsConnector::from(config),
            server_name,
        })
    }

    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, TransportError> {
        self.inner
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(TransportError::Tls)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration of `options`.
pub(crate) fn client_config(
    options: &TlsOptions,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let Some(ca) = &options.ca else {
            bail!(
                "TLS needs --ca FILE (the authority that signed the broker's certificate) or --insecure"
            );
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in shoal_transport::pem::load_certs(ca)? {
            roots
                .add(cert)
                .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                shoal_transport::pem::load_certs(cert)?,
                shoal_transport::pem::load_key(key)?,
            )
            .context("client certificate and key do not match")?,
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("--cert and --key go together"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any server certificate, still checking handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
