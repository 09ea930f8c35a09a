//! MQTT over QUIC (quinn): ALPN `mqtt`, TLS 1.3, and the client's first bidirectional
//! stream carries MQTT exactly as TCP does (the single-stream mode of EMQX and NanoSDK
//! clients). Other streams the client opens are not read.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use shoal_transport::QuicIo;

use super::{
    HANDSHAKE_TIMEOUT, Listener, Peer, RateLimit, handshake_failed, identity, queue_for_handshake,
};
use crate::broker::Broker;
use crate::config::ListenerKind;
use crate::connection;
use crate::metrics as m;

/// How long a finished connection waits for the client to close it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The quinn server configuration over a rustls one (which must offer TLS 1.3).
pub(super) fn server_config(
    tls: &Arc<rustls::ServerConfig>,
) -> Result<quinn::ServerConfig, String> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::clone(tls))
        .map_err(|e| format!("TLS configuration unusable for QUIC: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // MQTT's keep alive decides when an idle client is gone; QUIC's idle timeout would end
    // connections whose keep alive is longer than its default of 30 s.
    transport.max_idle_timeout(None);
    transport.max_concurrent_uni_streams(0u8.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts QUIC connections until shutdown.
pub(super) async fn run(broker: Arc<Broker>, listener: Arc<Listener>, endpoint: quinn::Endpoint) {
    let mut shutdown = broker.shutdown.subscribe();
    let mut rate = listener.config.max_connection_rate.map(RateLimit::new);
    let name = listener.config.name.clone();
    loop {
        if let Some(rate) = &mut rate {
            tokio::select! {
                _ = shutdown.changed() => break,
                () = rate.wait() => {}
            }
        }
        let incoming = tokio::select! {
            _ = shutdown.changed() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let addr = incoming.remote_address();
        let Some(admitted) = listener.admit() else {
            metrics::counter!(m::CONNECTIONS_REFUSED, "listener" => name.clone(), "cause" => "max_connections").increment(1);
            incoming.refuse();
            continue;
        };
        if broker.access.banned_addr(addr.ip()) {
            metrics::counter!(m::CONNECTIONS_REFUSED, "listener" => name.clone(), "cause" => "banned").increment(1);
            incoming.refuse();
            continue;
        }
        let broker = Arc::clone(&broker);
        let name = name.clone();
        tokio::spawn(async move {
            let Some(permit) = queue_for_handshake(&broker, &name).await else {
                return;
            };
            let started = std::time::Instant::now();
            let source = match &admitted.0.config.kind {
                ListenerKind::Quic(settings) => settings.identity,
                _ => None,
            };
            let handshake = async {
                let connection = incoming.await.map_err(|e| e.to_string())?;
                let certificates = connection
                    .peer_identity()
                    .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
                let identity = identity(certificates.as_deref().map(Vec::as_slice), source);
                let (send, recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((QuicIo::new(connection, send, recv), identity))
            };
            // Boxed, so the connection's task does not keep the handshake's size.
            let outcome = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)).await;
            drop(permit);
            match outcome {
                Ok(Ok((io, identity))) => {
                    metrics::histogram!(m::HANDSHAKE_SECONDS, "listener" => name)
                        .record(started.elapsed().as_secs_f64());
                    let peer = Peer {
                        addr,
                        identity,
                        admitted,
                    };
                    let connection = io.connection().clone();
                    let io: super::BoxedIo = Box::new(io);
                    connection::serve(broker, io, peer).await;
                    // Let the last packets (DISCONNECT, a refusing CONNACK) arrive: the
                    // client closes once it has read them; dropping closes at once.
                    let _ = tokio::time::timeout(CLOSE_LINGER, connection.closed()).await;
                }
                Ok(Err(e)) => handshake_failed(&name, addr, &e),
                Err(_) => handshake_failed(&name, addr, "timed out"),
            }
        });
    }
}
