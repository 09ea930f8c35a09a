//! Transports: every one ends in the same boxed `AsyncRead + AsyncWrite` byte stream that
//! the MQTT connection driver reads and writes.

mod brokers;
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

pub use brokers::{Brokers, BrokersError};
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

/// Opens byte streams to the brokers of a run, each client to the one its plan names (by
/// position in [`Brokers::urls`], from the run's placement).
pub struct Connector {
    targets: Vec<Target>,
}

/// One broker: its URL, resolved address and handshake configuration.
struct Target {
    url: BrokerUrl,
    addr: SocketAddr,
    tls: Option<tls::TlsConnector>,
    quic: Option<quic::QuicConnector>,
}

impl Connector {
    /// Resolves every broker's address and loads the TLS configuration.
    pub async fn new(brokers: &Brokers, tls_options: &TlsOptions) -> anyhow::Result<Self> {
        let mut targets = Vec::with_capacity(brokers.count());
        for url in brokers.urls() {
            targets.push(Target::new(url, tls_options).await?);
        }
        Ok(Self { targets })
    }

    /// The resolved address of broker `broker` (its position in [`Brokers::urls`]).
    pub fn addr(&self, broker: usize) -> SocketAddr {
        self.target(broker).addr
    }

    /// Opens one byte stream to broker `broker` (its position in [`Brokers::urls`]), from
    /// `source` if given.
    pub async fn connect(
        &self,
        broker: usize,
        source: Option<IpAddr>,
    ) -> Result<BoxedIo, TransportError> {
        self.target(broker).connect(source).await
    }

    /// How many brokers.
    pub fn count(&self) -> usize {
        self.targets.len()
    }

    /// Broker `broker`; a position past the end wraps around (a plan is checked against
    /// the run's brokers when it is made, so it does not happen).
    fn target(&self, broker: usize) -> &Target {
        &self.targets[broker % self.targets.len()]
    }
}

impl Target {
    async fn new(url: &BrokerUrl, tls_options: &TlsOptions) -> anyhow::Result<Self> {
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

    async fn connect(&self, source: Option<IpAddr>) -> Result<BoxedIo, TransportError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_broker_position_resolves_to_its_url() {
        let first: BrokerUrl = "mqtt://127.0.0.1:1883".parse().expect("valid");
        let more = ["mqtt://127.0.0.1:1884", "mqtt://127.0.0.2:1885"]
            .map(|u| u.parse::<BrokerUrl>().expect("valid"));
        let brokers = Brokers::new(first, more).expect("one scheme");
        let connector = Connector::new(&brokers, &TlsOptions::default())
            .await
            .expect("addresses resolve without a network");
        let ports: Vec<u16> = (0..3).map(|i| connector.addr(i).port()).collect();
        assert_eq!(ports, [1883, 1884, 1885]);
        assert_eq!(connector.count(), 3);
        assert_eq!(connector.addr(2).ip().to_string(), "127.0.0.2");
    }
}
