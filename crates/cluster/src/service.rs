//! The cluster's gRPC service: what other nodes ask of this one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_core::Stream;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::batch::Written;
use crate::drain::Taking;
use crate::group_id::GroupId;
use crate::node::BoxFuture;
use crate::node::{Forwarded, Inner};
use crate::proto::cluster_server::{Cluster, ClusterServer};
use crate::proto::{
    Applied, CampaignReply, CampaignRequest, ForwardAck, ForwardBatch, GroupStatus, JoinReply,
    JoinRequest, KickReply, KickRequest, LeaveReply, LeaveRequest, ProposeReply, ProposeRequest,
    RaftKind, RaftReply, RaftRequest, StatusReply, StatusRequest, WaitAppliedReply,
    WaitAppliedRequest, propose_reply,
};
use crate::state::Command;
use crate::type_config::GroupConfig;

/// The longest a `WaitApplied` may be held.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How many forwarded batches a stream delivers ahead of the one being made durable.
const FORWARD_PIPELINE: usize = 8;

/// Serves the cluster service on `listener` until the task is aborted.
pub(crate) fn serve(
    inner: Arc<Inner>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let service = ClusterServer::new(Service { inner })
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    tokio::spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the cluster listener stopped");
        }
    })
}

struct Service {
    inner: Arc<Inner>,
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("the payload does not decode: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))
}

impl Service {
    fn raft(&self, group: &str) -> Result<openraft::Raft<GroupConfig>, Status> {
        let group: GroupId = group.parse().map_err(Status::invalid_argument)?;
        self.inner
            .group(group)
            .map(|g| g.raft.clone())
            .ok_or_else(|| Status::not_found(format!("this node does not run {group}")))
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<ForwardAck, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Cluster for Service {
    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = self.raft(&request.group)?;
        let payload = match RaftKind::try_from(request.kind) {
            Ok(RaftKind::Append) => {
                let rpc: AppendEntriesRequest<GroupConfig> = decode(&request.payload)?;
                let sender = rpc.vote.leader_id().voted_for();
                let result = raft.append_entries(rpc).await;
                if request.group == "meta"
                    && let Some(sender) = sender
                {
                    match &result {
                        Ok(AppendEntriesResponse::HigherVote(_)) => self.inner.lease.heard(sender),
                        Ok(_) => self.inner.lease.heard_leader(sender),
                        Err(_) => {}
                    }
                }
                encode(&result)?
            }
            Ok(RaftKind::Vote) => {
                let rpc: VoteRequest<u64> = decode(&request.payload)?;
                if request.group == "meta"
                    && let Some(candidate) = rpc.vote.leader_id().voted_for()
                {
                    self.inner.lease.heard(candidate);
                }
                encode(&raft.vote(rpc).await)?
            }
            Ok(RaftKind::Snapshot) => {
                let rpc: InstallSnapshotRequest<GroupConfig> = decode(&request.payload)?;
                encode(&raft.install_snapshot(rpc).await)?
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown Raft message kind {}",
                    request.kind
                )));
            }
        };
        Ok(Response::new(RaftReply { payload }))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let request = request.into_inner();
        let group: GroupId = request.group.parse().map_err(Status::invalid_argument)?;
        let g = self
            .inner
            .group(group)
            .ok_or_else(|| Status::not_found(format!("this node does not run {group}")))?;
        let command: Command = decode(&request.command)?;
        if g.handing_off.load(Ordering::SeqCst) {
            // The asker waits and asks again, by then the new leader.
            return Ok(Response::new(ProposeReply {
                outcome: Some(propose_reply::Outcome::Leader(0)),
            }));
        }
        let outcome = match g.writes.write(command).await {
            Written::Applied(index, response) => propose_reply::Outcome::Applied(Applied {
                index,
                response: encode(&response)?,
            }),
            Written::NotLeader(leader) => propose_reply::Outcome::Leader(leader.unwrap_or(0)),
            Written::Failed(message) => propose_reply::Outcome::Error(message),
        };
        Ok(Response::new(ProposeReply {
            outcome: Some(outcome),
        }))
    }

    async fn wait_applied(
        &self,
        request: Request<WaitAppliedRequest>,
    ) -> Result<Response<WaitAppliedReply>, Status> {
        let request = request.into_inner();
        let raft = self.raft(&request.group)?;
        let timeout = Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
        let applied = raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(request.index), "a peer's route barrier")
            .await
            .is_ok();
        Ok(Response::new(WaitAppliedReply { applied }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let request = request.into_inner();
        if request.node_id == 0 {
            return Ok(Response::new(JoinReply {
                error: "node id 0 is not allowed".to_owned(),
            }));
        }
        // A node that is no member itself (it is joining too, or has no state) says so at
        // once: the joiner tries the next seed.
        let meta = self.raft("meta")?;
        if !meta.is_initialized().await.unwrap_or(false) || request.node_id == self.inner.id {
            return Ok(Response::new(JoinReply {
                error: "this node is not a member of a cluster (yet)".to_owned(),
            }));
        }
        let groups: Vec<GroupId> = if request.group.is_empty() {
            self.inner.groups.keys().copied().collect()
        } else {
            vec![request.group.parse().map_err(Status::invalid_argument)?]
        };
        tracing::info!(node = request.node_id, address = %request.address, groups = groups.len(), "a node asks to join");
        for group in groups {
            if let Err(e) = self
                .inner
                .add_member(group, request.node_id, &request.address, request.frontend)
                .await
            {
                return Ok(Response::new(JoinReply {
                    error: format!("{group}: {e}"),
                }));
            }
        }
        Ok(Response::new(JoinReply {
            error: String::new(),
        }))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let request = request.into_inner();
        let groups: Vec<GroupId> = if request.group.is_empty() {
            self.inner.groups.keys().copied().collect()
        } else {
            vec![request.group.parse().map_err(Status::invalid_argument)?]
        };
        tracing::info!(
            node = request.node_id,
            groups = groups.len(),
            "a node leaves"
        );
        for group in groups {
            if let Err(e) = self.inner.remove_member(group, request.node_id).await {
                return Ok(Response::new(LeaveReply {
                    error: format!("{group}: {e}"),
                }));
            }
        }
        Ok(Response::new(LeaveReply {
            error: String::new(),
        }))
    }

    async fn kick(&self, request: Request<KickRequest>) -> Result<Response<KickReply>, Status> {
        let request = request.into_inner();
        let closed = self
            .inner
            .kick_local(request.client_id, request.epoch)
            .await;
        Ok(Response::new(KickReply { closed }))
    }

    type ForwardStream = AckStream;

    async fn forward(
        &self,
        request: Request<Streaming<ForwardBatch>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut inbound = request.into_inner();
        let host = Arc::clone(&self.inner.host);
        let drain = Arc::clone(&self.inner.drain);
        let (tx, rx) = mpsc::channel::<Result<ForwardAck, Status>>(16);
        // Two stages, so that a batch is delivered while the ones before it are still
        // being made durable: the reader delivers each batch to the sessions as it comes
        // (in order: each publisher's order holds) and queues the wait for its writes;
        // the answerer awaits those waits in order and answers each batch.
        let (waits, mut queued) =
            mpsc::channel::<(Taking, bool, BoxFuture<ForwardAck>)>(FORWARD_PIPELINE);
        tokio::spawn(async move {
            while let Some((_taking, answer, wait)) = queued.recv().await {
                let ack = wait.await;
                if answer && tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let taking = drain.taking();
                let up_to = batch.publications.last().map_or(0, |p| p.seq);
                // A batch of QoS 0 publications only has nobody waiting for its answer: a
                // later answer's `up_to` covers its sequence numbers.
                let answer = batch.publications.iter().any(|p| p.acknowledge);
                let mut failed = Vec::new();
                let mut seqs = Vec::with_capacity(batch.publications.len());
                let mut messages = Vec::with_capacity(batch.publications.len());
                for publication in batch.publications {
                    match shoal_store::message_from_bytes(&publication.message) {
                        Ok(message) => {
                            seqs.push(publication.seq);
                            messages.push(Forwarded {
                                message,
                                shared: publication.shared,
                                tag: (publication.tag != 0).then_some(publication.tag),
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a forwarded publication does not decode; refused");
                            failed.push(publication.seq);
                        }
                    }
                }
                // Delivered now; the future waits for what it wrote.
                let delivered = host.deliver(messages);
                let wait: BoxFuture<ForwardAck> = Box::pin(async move {
                    let results = delivered.await;
                    for (seq, ok) in seqs.into_iter().zip(results) {
                        if !ok {
                            failed.push(seq);
                        }
                    }
                    ForwardAck { up_to, failed }
                });
                if waits.send((taking, answer, wait)).await.is_err() {
                    break;
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|ack| (ack, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        let request = request.into_inner();
        let raft = self.raft(&request.group)?;
        if self.inner.drain.is_draining() {
            return Ok(Response::new(CampaignReply {
                error: format!("node {} is draining", self.inner.id),
                draining: true,
            }));
        }
        let after = Duration::from_millis(request.after_ms).min(MAX_WAIT);
        let group = request.group;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = raft.trigger().elect().await {
                tracing::info!(group = %group, error = %e, "could not campaign for a leadership handed over");
            }
        });
        Ok(Response::new(CampaignReply {
            error: String::new(),
            draining: false,
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let status = self.inner.status();
        Ok(Response::new(StatusReply {
            node_id: status.node_id,
            groups: status
                .groups
                .into_iter()
                .map(|g| GroupStatus {
                    group: g.group,
                    leader: g.leader,
                    term: g.term,
                    committed: g.last_log,
                    applied: g.applied,
                    voters: g.voters,
                    learners: g.learners,
                })
                .collect(),
        }))
    }
}
