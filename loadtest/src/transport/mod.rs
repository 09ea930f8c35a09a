//! Transports: every one ends in the same boxed `AsyncRead + AsyncWrite` byte stream that
//! the MQTT connection driver reads and writes.

mod quic;
mod tcp;
mod tls;
mod url;
mod ws;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

pub use url::{BrokerUrl, Scheme};

/// A byte stream to the broker.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed byte stream to the broker.
pub type BoxedIo = Box<dyn Io>;

/// TLS settings (TLS, WSS and QUIC).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate chain (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM file of the client private key.
    pub key: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure: bool,
    /// The name to verify the server certificate against (default: the URL's host).
    pub server_name: Option<String>,
}

/// Why a transport connection failed.
#[derive(Debug)]
pub enum TransportError {
    /// TCP connect or socket setup.
    Tcp(io::Error),
    /// TLS handshake.
    Tls(io::Error),
    /// WebSocket upgrade.
    WebSocket(String),
    /// QUIC handshake or stream.
    Quic(String),
}

impl TransportError {
    /// A short key for the error table: the kind, without per-connection detail.
    pub fn key(&self) -> String {
        match self {
            Self::Tcp(e) => format!("tcp: {}", e.kind()),
            Self::Tls(e) => format!("tls: {e}"),
            Self::WebSocket(e) => format!("websocket: {e}"),
            Self::Quic(e) => format!("quic: {e}"),
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(e) => write!(f, "tcp: {e}"),
            Self::Tls(e) => write!(f, "tls: {e}"),
            Self::WebSocket(e) => write!(f, "websocket: {e}"),
            Self::Quic(e) => write!(f, "quic: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Opens byte streams to one broker.
pub struct Connector {
    url: BrokerUrl,
    addr: SocketAddr,
    tls: Option<tls::TlsConnector>,
    quic: Option<quic::QuicConnector>,
}

impl Connector {
    /// Resolves the broker address and loads the TLS configuration.
    pub async fn new(url: &BrokerUrl, tls_options: &TlsOptions) -> anyhow::Result<Self> {
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} resolves to no address", url.host))?;
        let server_name = tls_options
            .server_name
            .clone()
            .unwrap_or_else(|| url.host.clone());
        let tls = match url.scheme {
            Scheme::Tls | Scheme::Wss => {
                Some(tls::TlsConnector::new(tls_options, &server_name, &[])?)
            }
            _ => None,
        };
        let quic = match url.scheme {
            Scheme::Quic => Some(quic::QuicConnector::new(tls_options, &server_name)?),
            _ => None,
        };
        Ok(Self {
            url: url.clone(),
            addr,
            tls,
            quic,
        })
    }

    /// The broker's resolved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens one byte stream, from `source` if given.
    pub async fn connect(&self, source: Option<IpAddr>) -> Result<BoxedIo, TransportError> {
        match self.url.scheme {
            Scheme::Tcp => Ok(Box::new(tcp::connect(self.addr, source).await?)),
            Scheme::Tls => {
                let tcp = tcp::connect(self.addr, source).await?;
                Ok(Box::new(self.tls()?.handshake(tcp).await?))
            }
            Scheme::Ws => {
                let tcp = tcp::connect(self.addr, source).await?;
                Ok(Box::new(ws::handshake(&self.url, tcp).await?))
            }
            Scheme::Wss => {
                let tcp = tcp::connect(self.addr, source).await?;
                let tls = self.tls()?.handshake(tcp).await?;
                Ok(Box::new(ws::handshake(&self.url, tls).await?))
            }
            Scheme::Quic => {
                let quic = self
                    .quic
                    .as_ref()
                    .ok_or_else(|| TransportError::Quic("not configured".into()))?;
                Ok(Box::new(quic.connect(self.addr, source).await?))
            }
        }
    }

    fn tls(&self) -> Result<&tls::TlsConnector, TransportError> {
        self.tls
            .as_ref()
            .ok_or_else(|| TransportError::Tls(io::Error::other("TLS is not configured")))
    }
}
