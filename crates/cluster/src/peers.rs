//! `Peers`: one gRPC channel per peer node, shared by every group's Raft messages, the
//! forwarding stream and the other calls (HTTP/2 multiplexes them on one connection).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::cluster_client::ClusterClient;
use crate::type_config::RaftNodeId;

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The channels to the other nodes, made on first use and reused.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    channels: Mutex<HashMap<RaftNodeId, (String, Channel)>>,
}

impl Peers {
    /// A client of `node` at `address` (host:port). The channel connects lazily and
    /// reconnects by itself; a new address for the node replaces the old channel.
    pub(crate) fn client(&self, node: RaftNodeId, address: &str) -> Option<ClusterClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, channel)) = channels.get(&node)
            && known == address
        {
            return Some(ClusterClient::new(channel.clone()));
        }
        let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::warn!(node, address, error = %e, "a peer's address is not usable");
                return None;
            }
        };
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // A connection whose packets vanish (a partition) is found dead within two
            // seconds, not after TCP's retransmission backoff.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(node, (address.to_owned(), channel.clone()));
        Some(ClusterClient::new(channel))
    }

    /// Drops the channel to `node`: the next use connects anew.
    pub(crate) fn forget(&self, node: RaftNodeId) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }
}
