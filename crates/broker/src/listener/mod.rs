//! The TCP listener: accepts connections and starts a connection task for each.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::connection;

/// Accepts MQTT connections on `listener` until the node shuts down.
pub(crate) async fn run(broker: Arc<Broker>, listener: TcpListener) {
    let mut shutdown = broker.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small messages must not wait for delayed ACKs.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "TCP_NODELAY failed");
                    }
                    tokio::spawn(connection::serve(Arc::clone(&broker), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors, most often: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Binds a TCP listener with a large backlog (reconnect storms arrive all at once).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
