//! How a node enters its cluster: restarted with its data it rejoins as itself; with
//! `bootstrap` it starts a new cluster (after asking its seeds once, if it has any); with
//! seeds it asks them until a member lets it in; with none of these it waits, serving no
//! one, until an operator gives it seeds (`Cluster::join_through`, behind
//! `POST /api/v1/cluster/join` and `shoal cluster join`). Seeds given so replace the ones
//! the node was trying.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::BasicNode;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::group_id::GroupId;
use crate::node::{Cluster, ClusterError};
use crate::proto::JoinRequest;
use crate::proto::cluster_client::ClusterClient;
use crate::state::Command;
use crate::type_config::RaftNodeId;

/// How long a bootstrap node with seeds asks them before it starts a cluster of its own.
const BOOTSTRAP_ASK: Duration = Duration::from_secs(3);
/// The pause between two rounds over the seeds.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// Where a node stands in entering its cluster.
pub(crate) struct Entrance {
    /// The seeds to join through: the configured ones, replaced by `join_through`.
    seeds: watch::Sender<Vec<String>>,
    /// Whether the node is a member (it bootstrapped, joined or rejoined).
    joined: watch::Sender<bool>,
    /// Why the last attempt to join failed.
    last_error: Mutex<Option<String>>,
    /// Whether the node had cluster state when it started: it rejoins as itself.
    had_state: bool,
}

impl Entrance {
    pub(crate) fn new(seeds: Vec<String>, had_state: bool) -> Self {
        Self {
            seeds: watch::Sender::new(seeds),
            joined: watch::Sender::new(false),
            last_error: Mutex::new(None),
            had_state,
        }
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
}

/// Why `join_through` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// The node is a member of its cluster already.
    #[error(
        "node {node} is a member of its cluster already: to move it to another cluster, make it leave (shoal cluster leave), delete its data folder and start it again"
    )]
    Member {
        /// This node.
        node: RaftNodeId,
    },
    /// The node has cluster state in its data folder: it rejoins that cluster as itself.
    #[error(
        "node {node} has cluster state in its data folder and rejoins that cluster as itself; it takes no seeds"
    )]
    HasState {
        /// This node.
        node: RaftNodeId,
    },
    /// The node is configured to start a new cluster (`bootstrap`).
    #[error("node {node} starts a new cluster (bootstrap): it takes no seeds")]
    Bootstraps {
        /// This node.
        node: RaftNodeId,
    },
    /// No seed was given.
    #[error("no seed given: name at least one member, host:port of its cluster listener")]
    NoSeeds,
}

/// Where a node stands in entering its cluster (for the admin API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryStatus {
    /// A member (bootstrapped, joined or rejoined).
    pub joined: bool,
    /// Not a member, and no seeds to try: it waits for `shoal cluster join`.
    pub waiting: bool,
    /// The seeds it tries (or joined through).
    pub seeds: Vec<String>,
    /// Why the last attempt to join failed.
    pub last_error: Option<String>,
}

impl Cluster {
    /// Bootstraps, joins (waiting for seeds if it has none), or (restarted with its data)
    /// just waits to hear from a leader; then records this node in meta.
    pub async fn enter(&self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let config = &inner.config;
        if inner.entrance.had_state {
            tracing::info!(
                node = inner.id,
                "rejoining the cluster with the state on disk"
            );
            self.announce_new_address().await?;
        } else if config.bootstrap {
            // A bootstrap node with seeds asks them once first: if a cluster already
            // answers (this node lost its data folder), it joins it rather than starting a
            // second one.
            let seeds = config.seeds.clone();
            if seeds.is_empty() || self.join_round(&seeds, Some(BOOTSTRAP_ASK)).await.is_err() {
                self.bootstrap().await?;
            }
        } else {
            self.join().await?;
        }
        // Record this node in meta (its address may have changed).
        let command = Command::AddNode {
            node: inner.id,
            address: config.advertise.clone(),
            frontend: config.frontend,
            mqtt: config.mqtt_advertise.clone(),
        };
        let deadline = Instant::now() + config.join_timeout;
        loop {
            match inner.propose(GroupId::Meta, command.clone()).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(ClusterError::Join {
                        seeds: inner.entrance.seeds.borrow().clone(),
                        secs: config.join_timeout.as_secs(),
                        last: e.to_string(),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        if inner.is_down(inner.id) {
            let _ = inner
                .propose(
                    GroupId::Meta,
                    Command::SetDown {
                        node: inner.id,
                        down: false,
                    },
                )
                .await;
        }
        inner.entrance.set_error(None);
        inner.entrance.joined.send_replace(true);
        Ok(())
    }

    /// Gives a node that is not a member yet the seeds to join through (replacing the
    /// ones it was trying): `enter` tries them from now on, for as long as it takes.
    pub fn join_through(&self, seeds: Vec<String>) -> Result<(), JoinRefused> {
        let inner = &self.inner;
        let node = inner.id;
        if *inner.entrance.joined.borrow() {
            return Err(JoinRefused::Member { node });
        }
        if inner.entrance.had_state {
            return Err(JoinRefused::HasState { node });
        }
        if inner.config.bootstrap {
            return Err(JoinRefused::Bootstraps { node });
        }
        if seeds.is_empty() {
            return Err(JoinRefused::NoSeeds);
        }
        tracing::info!(node, ?seeds, "told to join the cluster through these seeds");
        inner.entrance.set_error(None);
        inner.entrance.seeds.send_replace(seeds);
        Ok(())
    }

    /// Where this node stands in entering its cluster.
    pub fn entry(&self) -> EntryStatus {
        let entrance = &self.inner.entrance;
        let seeds = entrance.seeds.borrow().clone();
        let joined = *entrance.joined.borrow();
        EntryStatus {
            joined,
            waiting: !joined
                && !entrance.had_state
                && !self.inner.config.bootstrap
                && seeds.is_empty(),
            seeds,
            last_error: entrance
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Waits at most `within` for this node to be a member; returns whether it is.
    pub async fn wait_joined(&self, within: Duration) -> bool {
        let mut joined = self.inner.entrance.joined.subscribe();
        tokio::time::timeout(within, joined.wait_for(|j| *j))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts a new cluster with this node alone.
    async fn bootstrap(&self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        if inner.config.frontend {
            return Err(ClusterError::Join {
                seeds: inner.config.seeds.clone(),
                secs: 0,
                last: "a front end cannot bootstrap a cluster: give it seeds".to_owned(),
            });
        }
        tracing::info!(
            node = inner.id,
            "bootstrapping a new cluster with this node"
        );
        let me = BTreeMap::from([(inner.id, BasicNode::new(&inner.config.advertise))]);
        for (group, g) in &inner.groups {
            if let Err(e) = g.raft.initialize(me.clone()).await {
                return Err(ClusterError::Start {
                    group: *group,
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// A node restarted with its data at another cluster address (`cluster_advertise`;
    /// a node alone given `cluster_listen`): the groups' memberships still name the old
    /// one, where nobody hears their leaders. It asks the other members (as the groups
    /// know them, and its seeds) to record the new one, as a join does; with no other
    /// member, it records it itself once it leads. Nothing to do if the address is the same.
    async fn announce_new_address(&self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut moved = false;
        let mut others: Vec<String> = config.seeds.clone();
        for g in inner.groups.values() {
            let metrics = g.raft.metrics();
            let metrics = metrics.borrow();
            for (id, node) in metrics.membership_config.membership().nodes() {
                if *id == inner.id {
                    moved |= node.addr != config.advertise;
                } else if !node.addr.is_empty() && !others.contains(&node.addr) {
                    others.push(node.addr.clone());
                }
            }
        }
        if !moved {
            return Ok(());
        }
        tracing::info!(
            node = inner.id,
            address = %config.advertise,
            "this node's cluster address changed: telling the cluster"
        );
        if !others.is_empty() {
            return self.join_round(&others, Some(config.join_timeout)).await;
        }
        for group in inner.groups.keys() {
            inner
                .add_member(*group, inner.id, &config.advertise, config.frontend)
                .await
                .map_err(|last| ClusterError::Join {
                    seeds: Vec::new(),
                    secs: config.join_timeout.as_secs(),
                    last,
                })?;
        }
        Ok(())
    }

    /// Asks the seeds to make this node a member of every group, until one does. Without
    /// seeds, waits for `join_through` to give some; seeds given meanwhile replace the
    /// ones being tried. Configured seeds are tried for the join timeout; seeds an
    /// operator gave, until they work or are replaced.
    async fn join(&self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let mut given = inner.entrance.seeds.subscribe();
        let mut deadline = Some(inner.config.join_timeout);
        if given.borrow().is_empty() {
            tracing::warn!(
                node = inner.id,
                "no seeds, no discovery and no bootstrap: waiting, not serving, until `shoal cluster join` (POST /api/v1/cluster/join) names a member to join through"
            );
        }
        loop {
            let seeds = given.borrow_and_update().clone();
            let round = async {
                if seeds.is_empty() {
                    std::future::pending::<()>().await;
                }
                self.join_round(&seeds, deadline).await
            };
            tokio::select! {
                result = round => return result,
                changed = given.changed() => {
                    if changed.is_err() {
                        return Err(ClusterError::Join { seeds, secs: 0, last: "stopped".to_owned() });
                    }
                    deadline = None;
                }
            }
        }
    }

    /// Asks `seeds`, round after round (for at most `within`, if given), to make this node
    /// a member of every group.
    pub(crate) async fn join_round(
        &self,
        seeds: &[String],
        within: Option<Duration>,
    ) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let config = &inner.config;
        let deadline = within.map(|within| Instant::now() + within);
        let mut last = String::from("no seed answered");
        loop {
            for seed in seeds {
                let addresses: Vec<SocketAddr> = match tokio::net::lookup_host(seed).await {
                    Ok(found) => found.collect(),
                    Err(e) => {
                        last = format!("{seed} does not resolve: {e}");
                        continue;
                    }
                };
                for address in addresses {
                    if Some(address) == config.listen || address.to_string() == config.advertise {
                        continue;
                    }
                    let Ok(endpoint) = Channel::from_shared(format!("http://{address}")) else {
                        continue;
                    };
                    let channel = endpoint
                        .connect_timeout(Duration::from_secs(2))
                        .connect_lazy();
                    let mut client = ClusterClient::new(channel);
                    let mut request = tonic::Request::new(JoinRequest {
                        node_id: inner.id,
                        address: config.advertise.clone(),
                        frontend: config.frontend,
                        group: String::new(),
                    });
                    request.set_timeout(Duration::from_secs(30));
                    match client.join(request).await {
                        Ok(reply) if reply.get_ref().error.is_empty() => {
                            tracing::info!(node = inner.id, through = %address, "joined the cluster");
                            return Ok(());
                        }
                        Ok(reply) => last = format!("{address}: {}", reply.into_inner().error),
                        Err(status) => last = format!("{address}: {}", status.message()),
                    }
                }
            }
            inner.entrance.set_error(Some(last.clone()));
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                return Err(ClusterError::Join {
                    seeds: seeds.to_vec(),
                    secs: within.unwrap_or_default().as_secs(),
                    last,
                });
            }
            tracing::info!(node = inner.id, last = %last, "not joined yet; trying the seeds again");
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }
}
