//! Certificates for tests, made in the test (rcgen): a CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates (good, expired, self-signed, from another
//! CA), written as PEM files in a temp folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test PKI in a folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
    /// Another CA, that the server does not trust.
    pub other_ca: PathBuf,
    pub server: Pair,
    /// CN `device-1`, SAN `device-1.fleet.example`.
    pub client: Pair,
    /// Signed by the CA, but expired in 2001.
    pub expired: Pair,
    /// Self-signed, CN `device-1`.
    pub self_signed: Pair,
    /// Signed by the other CA, CN `device-1`.
    pub wrong_ca: Pair,
    ca_issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_issuer = ca("shoal test CA");
        let other = ca("some other CA");
        let ca = write(dir.path(), "ca.pem", &ca_issuer.pem());
        let other_ca = write(dir.path(), "other-ca.pem", &other.pem());
        let issue = |name: &str,
                     params: CertificateParams,
                     issuer: Option<&CertifiedIssuer<'static, KeyPair>>| {
            let key = KeyPair::generate().expect("key");
            let cert = match issuer {
                Some(issuer) => params.signed_by(&key, issuer).expect("signed"),
                None => params.self_signed(&key).expect("self-signed"),
            };
            Pair {
                cert: write(dir.path(), &format!("{name}.pem"), &cert.pem()),
                key: write(dir.path(), &format!("{name}.key"), &key.serialize_pem()),
            }
        };
        let server = issue(
            "server",
            server_params("shoal test server"),
            Some(&ca_issuer),
        );
        let client = issue("client", client_params("device-1"), Some(&ca_issuer));
        let mut expired_params = client_params("device-1");
        expired_params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        expired_params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = issue("expired", expired_params, Some(&ca_issuer));
        let self_signed = issue("self-signed", client_params("device-1"), None);
        let wrong_ca = issue("wrong-ca", client_params("device-1"), Some(&other));
        Self {
            dir,
            ca,
            other_ca,
            server,
            client,
            expired,
            self_signed,
            wrong_ca,
            ca_issuer,
        }
    }

    /// Writes a new server certificate (CN `cn`) over the current files.
    pub fn replace_server(&self, cn: &str) {
        let key = KeyPair::generate().expect("key");
        let cert = server_params(cn)
            .signed_by(&key, &self.ca_issuer)
            .expect("signed");
        // Key first: a reload between the two writes fails and keeps the old pair.
        std::fs::write(&self.server.key, key.serialize_pem()).expect("write key");
        std::fs::write(&self.server.cert, cert.pem()).expect("write cert");
    }
}

fn server_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec![format!("{cn}.fleet.example")]).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// A rustls client configuration trusting `ca`, with `client` as its certificate if given.
pub fn client_config(
    ca: &Path,
    client: Option<&Pair>,
    alpn: &[&[u8]],
) -> std::sync::Arc<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in shoal_transport::pem::load_certs(ca).expect("CA") {
        roots.add(cert).expect("CA cert");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => builder
            .with_client_auth_cert(
                shoal_transport::pem::load_certs(&pair.cert).expect("cert"),
                shoal_transport::pem::load_key(&pair.key).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(config)
}
