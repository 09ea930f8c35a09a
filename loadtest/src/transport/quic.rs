//! QUIC (quinn): ALPN `mqtt`, the MQTT byte stream on the first bidirectional stream. One
//! UDP endpoint per source address carries every connection from it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::QuicClientConfig;
use shoal_transport::QuicIo;

use crate::transport::{TlsOptions, TransportError, tls};

/// QUIC connections to one broker.
pub(crate) struct QuicConnector {
    config: quinn::ClientConfig,
    server_name: String,
    endpoints: Mutex<HashMap<Option<IpAddr>, quinn::Endpoint>>,
}

impl QuicConnector {
    pub(crate) fn new(options: &TlsOptions, server_name: &str) -> anyhow::Result<Self> {
        let crypto = tls::client_config(options, &[b"mqtt"])?;
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| anyhow::anyhow!("no TLS 1.3 cipher suite for QUIC: {e}"))?;
        Ok(Self {
            config: quinn::ClientConfig::new(Arc::new(crypto)),
            server_name: server_name.to_owned(),
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    fn endpoint(&self, remote: SocketAddr, source: Option<IpAddr>) -> io::Result<quinn::Endpoint> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = endpoints.get(&source) {
            return Ok(e.clone());
        }
        let ip = source.unwrap_or(if remote.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        });
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(ip, 0))?;
        endpoint.set_default_client_config(self.config.clone());
        endpoints.insert(source, endpoint.clone());
        Ok(endpoint)
    }

    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<QuicIo, TransportError> {
        let endpoint = self
            .endpoint(addr, source)
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        let connection = endpoint
            .connect(addr, &self.server_name)
            .map_err(|e| TransportError::Quic(e.to_string()))?
            .await
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        Ok(QuicIo::new(connection, send, recv))
    }
}
