//! Listeners: TCP, TLS, WebSocket, WebSocket over TLS and QUIC, each with its own address,
//! limits and authentication policy. Every transport ends as one byte stream handed to the
//! same connection driver (`connection::serve`), with the client's address (the PROXY
//! protocol's, when the listener has it) and the identity of its certificate.
//!
//! Accepting is cheap and bounded: a listener over `max_connections` closes new sockets at
//! once; one over `max_connection_rate` stops accepting for a moment (the kernel's backlog
//! holds them); banned addresses are closed before any byte is read. The expensive part,
//! handshakes (PROXY header, TLS, WebSocket upgrade), runs under a node-wide semaphore
//! (`max_handshakes`): a reconnect storm queues instead of exhausting memory and CPU.

mod proxy;
mod quic;
pub(crate) mod tls;
mod ws;
mod x509;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::config::{IdentitySource, ListenerConfig, ListenerKind};
use crate::connection;
use crate::metrics as m;

pub(crate) use tls::TlsSource;

/// How long a connection may wait for its turn to handshake.
const HANDSHAKE_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handshake (PROXY header, TLS, WebSocket upgrade) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Any transport's byte stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A transport's stream, boxed (every kind but plain TCP).
pub(crate) type BoxedIo = Box<dyn Io>;

/// One configured listener, running.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) config: ListenerConfig,
    pub(crate) tls: Option<Arc<TlsSource>>,
    /// Connections open now.
    active: AtomicUsize,
    /// The QUIC endpoint, to install a reloaded TLS configuration.
    quic: std::sync::Mutex<Option<quinn::Endpoint>>,
}

impl Listener {
    /// Loads the TLS files; refuses unusable ones with a message naming them.
    pub(crate) fn new(config: ListenerConfig) -> Result<Arc<Self>, String> {
        let tls = match &config.kind {
            ListenerKind::Quic(settings) => Some(TlsSource::load(settings.clone(), &[b"mqtt"])?),
            kind => kind
                .tls()
                .map(|settings| TlsSource::load(settings.clone(), &[]))
                .transpose()?,
        };
        Ok(Arc::new(Self {
            config,
            tls: tls.map(Arc::new),
            active: AtomicUsize::new(0),
            quic: std::sync::Mutex::new(None),
        }))
    }

    /// Reloads the TLS files if they changed (or always, with `force`).
    pub(crate) fn reload_tls(&self, force: bool) {
        let Some(tls) = &self.tls else {
            return;
        };
        match tls.reload(force) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(listener = %self.config.name, "TLS certificate and key reloaded");
                let endpoint = self.quic.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(endpoint) = endpoint {
                    match quic::server_config(&tls.config()) {
                        Ok(config) => endpoint.set_server_config(Some(config)),
                        Err(e) => {
                            tracing::error!(listener = %self.config.name, error = %e, "QUIC reload failed")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(
                listener = %self.config.name,
                error = %e,
                "TLS reload failed; the previous certificate stays in use"
            ),
        }
    }

    /// Closes the QUIC endpoint, if any, telling its clients, and waits a moment for them.
    pub(crate) async fn close_quic(&self) {
        let endpoint = self.quic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(endpoint) = endpoint {
            endpoint.close(0u32.into(), b"server shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }

    /// Counts a connection in; `None` when the listener is full.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.max_connections.is_some_and(|max| now > max) {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted(Arc::clone(self)))
    }
}

/// A connection counted against its listener, until dropped.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<Listener>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who is on the other end of a connection.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// The certificate identity, when the listener uses it as the username.
    pub(crate) identity: Option<String>,
    /// The listener, and the connection's place in its count.
    admitted: Admitted,
}

impl Peer {
    pub(crate) fn listener(&self) -> &ListenerConfig {
        &self.admitted.0.config
    }
}

/// A listener's bound socket.
pub(crate) enum Bound {
    Tcp(TcpListener),
    Quic(quinn::Endpoint),
}

impl Bound {
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr(),
            Self::Quic(e) => e.local_addr(),
        }
    }
}

/// Binds the listener's socket.
pub(crate) fn bind(listener: &Listener) -> std::io::Result<Bound> {
    match &listener.config.kind {
        ListenerKind::Quic(_) => {
            let tls = listener.tls.as_ref().expect("a QUIC listener has TLS");
            let config = quic::server_config(&tls.config()).map_err(std::io::Error::other)?;
            let endpoint = quinn::Endpoint::server(config, listener.config.bind)?;
            *listener.quic.lock().unwrap_or_else(|e| e.into_inner()) = Some(endpoint.clone());
            Ok(Bound::Quic(endpoint))
        }
        _ => bind_tcp(listener.config.bind).map(Bound::Tcp),
    }
}

/// Binds a TCP listener with a large backlog (reconnect storms arrive all at once).
pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections until the node shuts down.
pub(crate) async fn run(broker: Arc<Broker>, listener: Arc<Listener>, bound: Bound) {
    match bound {
        Bound::Tcp(tcp) => run_tcp(broker, listener, tcp).await,
        Bound::Quic(endpoint) => quic::run(broker, listener, endpoint).await,
    }
}

async fn run_tcp(broker: Arc<Broker>, listener: Arc<Listener>, tcp: TcpListener) {
    let mut shutdown = broker.shutdown.subscribe();
    let mut rate = listener.config.max_connection_rate.map(RateLimit::new);
    let name = listener.config.name.clone();
    loop {
        if let Some(rate) = &mut rate {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = rate.wait() => {}
            }
        }
        let (stream, addr) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most often: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = listener.admit() else {
            metrics::counter!(m::CONNECTIONS_REFUSED, "listener" => name.clone(), "cause" => "max_connections").increment(1);
            tracing::debug!(listener = %name, %addr, "listener full: connection closed");
            continue;
        };
        if !listener.config.proxy_protocol && broker.access.banned_addr(addr.ip()) {
            metrics::counter!(m::CONNECTIONS_REFUSED, "listener" => name.clone(), "cause" => "banned").increment(1);
            continue;
        }
        // Small messages must not wait for delayed ACKs.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "TCP_NODELAY failed");
        }
        let broker = Arc::clone(&broker);
        if matches!(listener.config.kind, ListenerKind::Tcp) && !listener.config.proxy_protocol {
            // Plain TCP has no handshake: straight to MQTT.
            let peer = Peer {
                addr,
                identity: None,
                admitted,
            };
            tokio::spawn(connection::serve(broker, stream, peer));
            continue;
        }
        tokio::spawn(async move {
            let name = admitted.0.config.name.clone();
            let Some(permit) = queue_for_handshake(&broker, &name).await else {
                return;
            };
            let started = std::time::Instant::now();
            // Boxed: a TLS or WebSocket handshake's future is many kilobytes, and the task
            // must not keep that size for the connection's whole life.
            let handshake = Box::pin(tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                handshake(&broker, stream, addr, admitted),
            ));
            let outcome = handshake.await;
            drop(permit);
            match outcome {
                Ok(Ok((io, peer))) => {
                    metrics::histogram!(m::HANDSHAKE_SECONDS, "listener" => name)
                        .record(started.elapsed().as_secs_f64());
                    connection::serve(broker, io, peer).await;
                }
                Ok(Err(e)) => handshake_failed(&name, addr, &e),
                Err(_) => handshake_failed(&name, addr, "timed out"),
            }
        });
    }
}

/// Counts and logs a handshake that did not complete.
fn handshake_failed(listener: &str, addr: SocketAddr, why: &str) {
    metrics::counter!(m::HANDSHAKES_FAILED, "listener" => listener.to_owned()).increment(1);
    tracing::debug!(listener, %addr, why, "handshake failed");
}

/// Waits for a handshake slot; `None` if the wait is too long (the client has likely given
/// up) or the node is shutting down.
async fn queue_for_handshake(
    broker: &Broker,
    name: &str,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let semaphore = Arc::clone(&broker.handshakes);
    match tokio::time::timeout(HANDSHAKE_QUEUE_TIMEOUT, semaphore.acquire_owned()).await {
        Ok(Ok(permit)) => Some(permit),
        _ => {
            metrics::counter!(m::CONNECTIONS_REFUSED, "listener" => name.to_owned(), "cause" => "handshake_queue").increment(1);
            None
        }
    }
}

/// The PROXY header, TLS and the WebSocket upgrade, as the listener has them.
async fn handshake(
    broker: &Broker,
    mut stream: TcpStream,
    addr: SocketAddr,
    admitted: Admitted,
) -> Result<(BoxedIo, Peer), String> {
    let listener = Arc::clone(&admitted.0);
    let mut peer = Peer {
        addr,
        identity: None,
        admitted,
    };
    if !listener.config.proxy_protocol {
        let io = upgrade(broker, &listener, stream, &mut peer).await?;
        return Ok((io, peer));
    }
    let (source, rest) = proxy::read_header(&mut stream)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(source) = source {
        peer.addr = source;
    }
    if broker.access.banned_addr(peer.addr.ip()) {
        return Err(format!("{} is banned", peer.addr.ip()));
    }
    let stream = proxy::Prefixed::new(rest, stream);
    let io = upgrade(broker, &listener, stream, &mut peer).await?;
    Ok((io, peer))
}

/// TLS and WebSocket over `stream`.
async fn upgrade<S>(
    broker: &Broker,
    listener: &Listener,
    stream: S,
    peer: &mut Peer,
) -> Result<BoxedIo, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_packet_size = broker.config().session.maximum_packet_size;
    match &listener.config.kind {
        ListenerKind::Tcp | ListenerKind::Quic(_) => Ok(Box::new(stream)),
        ListenerKind::Ws { path } => Ok(Box::new(ws::accept(stream, path, max_packet_size).await?)),
        ListenerKind::Tls(settings) => {
            let tls = accept_tls(listener, stream).await?;
            peer.identity = identity(tls.get_ref().1.peer_certificates(), settings.identity);
            Ok(Box::new(tls))
        }
        ListenerKind::Wss {
            tls: settings,
            path,
        } => {
            let tls = accept_tls(listener, stream).await?;
            peer.identity = identity(tls.get_ref().1.peer_certificates(), settings.identity);
            Ok(Box::new(ws::accept(tls, path, max_packet_size).await?))
        }
    }
}

async fn accept_tls<S>(
    listener: &Listener,
    stream: S,
) -> Result<tokio_rustls::server::TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = listener
        .tls
        .as_ref()
        .expect("a TLS listener has TLS")
        .config();
    TlsAcceptor::from(config)
        .accept(stream)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// The identity of the client's certificate, when the listener wants one.
pub(crate) fn identity(
    certificates: Option<&[CertificateDer<'_>]>,
    source: Option<IdentitySource>,
) -> Option<String> {
    let leaf = certificates?.first()?;
    x509::identity(leaf, source?)
}

/// A token bucket of new connections per second: a burst of one second's worth, then the
/// rate.
#[derive(Debug)]
struct RateLimit {
    per_second: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            at: tokio::time::Instant::now(),
        }
    }

    /// Waits until a connection may be accepted, and takes its token.
    async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second)
            .min(self.per_second.max(1.0));
        self.at = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.per_second;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.tokens = 1.0;
            self.at = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}
