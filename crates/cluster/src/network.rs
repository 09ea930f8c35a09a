//! The Raft network of a group over gRPC: openraft's requests are JSON in a
//! `RaftRequest` naming the group, sent on the peer's shared channel.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::group_id::GroupId;
use crate::lease::Lease;
use crate::peers::Peers;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::{RaftKind, RaftRequest};
use crate::type_config::{GroupConfig, RaftNodeId};

type C = GroupConfig;
type Rpc<T, E = openraft::error::Infallible> =
    Result<T, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>>;

/// Makes the connections of one group to its peers.
pub(crate) struct NetworkFactory {
    pub(crate) group: GroupId,
    pub(crate) peers: Arc<Peers>,
    /// Told of meta's acknowledged appends (this node's lease as meta's leader).
    pub(crate) lease: Arc<Lease>,
}

impl RaftNetworkFactory<C> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> Connection {
        Connection {
            group: self.group,
            target,
            client: self.peers.client(target, &node.addr),
            lease: (self.group == GroupId::Meta).then(|| Arc::clone(&self.lease)),
        }
    }
}

/// One group's connection to one peer (a handle on the peer's shared channel).
pub(crate) struct Connection {
    group: GroupId,
    target: RaftNodeId,
    client: Option<ClusterClient<Channel>>,
    lease: Option<Arc<Lease>>,
}

impl Connection {
    /// Tells the lease that the peer answered (meta only).
    fn heard(&self, answered: bool) {
        if let (Some(lease), true) = (&self.lease, answered) {
            lease.heard(self.target);
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: RaftKind,
        request: &Req,
        option: &RPCOption,
    ) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other("the peer's address is not usable"),
            )));
        };
        let payload =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            group: self.group.to_string(),
            kind: kind as i32,
            payload,
        });
        request.set_timeout(option.hard_ttl());
        let reply = client
            .raft(request)
            .await
            .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?
            .into_inner();
        let result: Result<Resp, RaftError<RaftNodeId, E>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<C> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<RaftNodeId>> {
        let response = self.call(RaftKind::Append, &rpc, &option).await;
        self.heard(response.is_ok());
        response
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        self.call(RaftKind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<RaftNodeId>> {
        let response = self.call(RaftKind::Vote, &rpc, &option).await;
        self.heard(response.is_ok());
        response
    }
}
