//! `Cluster`: this node's part of the cluster. It runs the node's Raft groups (meta, the
//! route shards, the retained shards), serves the cluster's gRPC service, joins or
//! bootstraps, writes this node's routes, forwards publications, claims client ids and
//! watches the other nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::Serialize;
use shoal_session::Message;
use shoal_store::Store;
use tonic::transport::Channel;

use crate::batch::{Batcher, Written};
use crate::drain::Drain;
use crate::entry::Entrance;
use crate::forward::{ForwardWait, Forwarder, Outgoing};
use crate::group_id::GroupId;
use crate::lease::Lease;
use crate::log_store::SledLogStore;
use crate::network::NetworkFactory;
use crate::peers::Peers;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::{JoinRequest, KickRequest, ProposeRequest, WaitAppliedRequest, propose_reply};
use crate::routes::{RemoteRoutes, RemoteTargets, RouteWait, RouteWriter, shard_of};
use crate::state::{BanRecord, Command, GroupState, Response, Touched};
use crate::state_machine::{Observer, SledStateMachine};
use crate::type_config::{GroupConfig, RaftNodeId};

/// A boxed future, as the host's callbacks return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How long a command may look for its group's leader.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most voters a group has; other full nodes follow as learners.
const MAX_VOTERS: usize = 5;
/// How many route changes one log entry carries at most.
const ROUTE_BATCH: usize = 4_096;

/// How a node takes part in the cluster. Durations are documented with their config keys
/// in the broker.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id: stable across restarts, unique in the cluster, not 0.
    pub node_id: RaftNodeId,
    /// Where the cluster (gRPC) listener binds. `None`: a node alone (a cluster of one
    /// that no other node can reach: it runs every group by itself, with no listener).
    pub listen: Option<SocketAddr>,
    /// host:port at which the other nodes reach this one (empty for a node alone).
    pub advertise: String,
    /// host:port at which MQTT clients reach this node, recorded in meta: the Server
    /// Reference the other nodes give their MQTT 5 clients when they send them elsewhere
    /// (DISCONNECT or CONNACK 0x9C). `None`: not said; clients get 0x8B or 0x89 instead.
    pub mqtt_advertise: Option<String>,
    /// Where to look for the cluster when joining: host:port each, names resolving to
    /// every address they have (a Kubernetes headless service).
    pub seeds: Vec<String>,
    /// Start a new cluster with this node alone if it has no state yet (after asking the
    /// seeds once, if it has any: a cluster that answers is joined instead). Without it
    /// and without seeds, a node with no state waits for seeds from `Cluster::join_through`
    /// (`shoal cluster join`).
    pub bootstrap: bool,
    /// A front end: joins every group as a learner, holds no vote.
    pub frontend: bool,
    /// How many route shards (`routes/0..R`).
    pub route_shards: u16,
    /// How many retained shards (`retained/0..T`).
    pub retained_shards: u16,
    /// How many session shards (`sessions/0..S`): a client's persistent session lives in
    /// shard `session_shard(client id)`. Fixed for a data folder (`check_session_shards`).
    pub session_shards: u16,
    /// How many voters each session shard has at most (1, 3 or 5); other full nodes are
    /// its learners.
    pub session_replicas: usize,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout (the lower bound; the upper is twice it).
    pub election_timeout: Duration,
    /// How long a node may not answer before it is declared down (its routes removed).
    pub failure_timeout: Duration,
    /// How long a new node keeps trying to join.
    pub join_timeout: Duration,
    /// A group snapshots its state after this many log entries since its last snapshot,
    /// and keeps a tenth of that many entries before the snapshot in its log; a node that
    /// fell further behind is sent the snapshot. Fewer: more snapshot work, smaller logs.
    pub snapshot_logs: u64,
}

/// The key under which a data folder keeps its number of session shards.
const SESSION_SHARDS_KEY: &[u8] = b"session_shards";

/// Keeps the number of session shards with the data folder, and refuses a different one:
/// the shards a folder's sessions were written through would no longer be where their
/// clients are looked for. A folder from before shards had one.
fn check_session_shards(store: &Store, shards: u16) -> Result<(), ClusterError> {
    let failed = |message: String| ClusterError::Start {
        group: GroupId::Sessions(0),
        message,
    };
    let tree = store
        .open_tree("cluster")
        .map_err(|e| failed(e.to_string()))?;
    let had_sessions = !store
        .open_tree(&GroupId::Sessions(0).tree_name("sm"))
        .map_err(|e| failed(e.to_string()))?
        .is_empty();
    let stored = tree
        .get(SESSION_SHARDS_KEY)
        .map_err(|e| failed(e.to_string()))?;
    let kept = match &stored {
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u16::from_be_bytes)
            .map_err(|_| failed("the data folder's session_shards does not read".to_owned()))?,
        None if had_sessions => 1,
        None => shards,
    };
    if kept != shards {
        return Err(ClusterError::WrongSessionShards {
            stored: kept,
            configured: shards,
        });
    }
    if stored.is_none() {
        tree.insert(SESSION_SHARDS_KEY, &shards.to_be_bytes())
            .and_then(|_| tree.flush())
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

impl ClusterConfig {
    /// Every group a node of this configuration runs.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut groups = vec![GroupId::Meta];
        groups.extend((0..self.route_shards).map(GroupId::Routes));
        groups.extend((0..self.retained_shards).map(GroupId::Retained));
        groups.extend((0..self.session_shards.max(1)).map(GroupId::Sessions));
        groups
    }
}

/// A publication forwarded from another node, for this node's sessions.
#[derive(Debug)]
pub struct Forwarded {
    /// The message.
    pub message: Message,
    /// The shared groups (`$share/name/filter`) whose delivery falls to this node; this
    /// node delivers to no other shared group.
    pub shared: Vec<String>,
    /// The dedup tag of a QoS 2 message whose publisher's receipt is replicated: a
    /// recipient that took a copy under it does not take a resend.
    pub tag: Option<u64>,
}

/// What the cluster needs of the broker it runs in.
pub trait Host: Send + Sync + 'static {
    /// Delivers forwarded publications to this node's sessions when called (the stream
    /// delivers its next batch meanwhile); the future answers, per publication, whether
    /// what it queued is durable (the sender acknowledges on it).
    fn deliver(&self, messages: Vec<Forwarded>) -> BoxFuture<Vec<bool>>;
    /// A client id was claimed on another node with `epoch`: close the local connection
    /// holding it under an older claim; answers once it is closed (`true`) or if there was
    /// none (`false`).
    fn kick(&self, client_id: String, epoch: u64) -> BoxFuture<bool>;
    /// The retained message of `topic` changed (the Raft apply): keep it in memory for
    /// subscribe-time delivery (`None`: cleared).
    fn retained_changed(&self, topic: &str, message: Option<Message>);
    /// The ban of `target` changed (meta's apply): enforce it here (`None`: lifted). Must
    /// not block.
    fn ban_changed(&self, target: &str, ban: Option<&BanRecord>);
    /// The session of `client_id` was fenced with `epoch` in the session group (a node
    /// took it up): a session held here under an older claim must be let go (the apply;
    /// must not block).
    fn session_fenced(&self, client_id: &str, epoch: u64) {
        let _ = (client_id, epoch);
    }
    /// `node` was declared down: take up its persistent sessions here (their routes, their
    /// queues, their Wills) before its routes are removed. Called on the node that leads
    /// meta; answers once done.
    fn adopt_sessions(&self, node: RaftNodeId) -> BoxFuture<()> {
        let _ = node;
        Box::pin(async {})
    }
    /// A forwarded publication that asked for it was accepted by its destination,
    /// `latency` after it was queued here (for the forwarding latency metric).
    fn forward_accepted(&self, latency: Duration) {
        let _ = latency;
    }
}

/// Why the cluster could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster listener could not bind.
    #[error("cannot listen for other nodes on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data folder belongs to another node id than the configured one.
    #[error(
        "`node_id` is {configured}, but this data folder holds the cluster state of node {stored}: set node_id = {stored}, or start node {configured} with a data folder of its own"
    )]
    WrongNode {
        /// The id in the data folder.
        stored: RaftNodeId,
        /// The configured id.
        configured: RaftNodeId,
    },
    /// The data folder's sessions are in another number of session shards than the
    /// configured one.
    #[error(
        "`session_shards` is {configured}, but this data folder's sessions are in {stored} shard(s): set session_shards = {stored} (the number cannot change for a data folder, and every node of a cluster has the same)"
    )]
    WrongSessionShards {
        /// The number the data folder's sessions are in.
        stored: u16,
        /// The configured number.
        configured: u16,
    },
    /// The node's identity could not be read or written in its data folder.
    #[error("the node id in the data folder could not be read or written: {message}")]
    Identity {
        /// Why.
        message: String,
    },
    /// A group could not open its storage or start.
    #[error("Raft group {group} could not start: {message}")]
    Start {
        /// The group.
        group: GroupId,
        /// Why.
        message: String,
    },
    /// Joining through the seeds did not succeed in time.
    #[error("could not join the cluster through {seeds:?} within {secs} s: {last}")]
    Join {
        /// The seeds tried.
        seeds: Vec<String>,
        /// The time allowed.
        secs: u64,
        /// The last failure.
        last: String,
    },
    /// No leader of a group took a command in time.
    #[error("no leader of {group} took the command within {secs} s")]
    NoLeader {
        /// The group.
        group: GroupId,
        /// The time allowed.
        secs: u64,
    },
    /// A group refused a command (storage failure, shutting down).
    #[error("{group} refused the command: {message}")]
    Refused {
        /// The group.
        group: GroupId,
        /// Why.
        message: String,
    },
    /// The forwarding queue to a peer is full.
    #[error("the forwarding queue to node {node} is full")]
    Backlogged {
        /// The peer.
        node: RaftNodeId,
    },
}

/// One running group.
pub(crate) struct Group {
    pub(crate) raft: Raft<GroupConfig>,
    pub(crate) state: Arc<RwLock<GroupState>>,
    /// This node is handing the group's leadership to another node: it takes no new
    /// commands (they wait for the new leader).
    pub(crate) handing_off: AtomicBool,
    /// The group commit of this node's proposals while it leads the group.
    pub(crate) writes: Batcher,
    /// How many snapshots the group installed from its leader since the node started.
    pub(crate) installed: Arc<AtomicU64>,
}

pub(crate) struct Inner {
    pub(crate) id: RaftNodeId,
    pub(crate) config: ClusterConfig,
    /// The node's store (its session trees are the session shards' state).
    pub(crate) store: Store,
    pub(crate) peers: Arc<Peers>,
    pub(crate) groups: BTreeMap<GroupId, Group>,
    pub(crate) routes: Arc<RemoteRoutes>,
    pub(crate) writer: Arc<RouteWriter>,
    pub(crate) host: Arc<dyn Host>,
    forwarders: Arc<Mutex<HashMap<RaftNodeId, Forwarder>>>,
    /// Client id -> the newest epoch another node claimed it with (for CONNECTs here that
    /// lost the race).
    kicked: Mutex<HashMap<String, u64>>,
    shared_cursor: AtomicUsize,
    /// The round robin of `server_reference`.
    redirect_cursor: AtomicUsize,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Whether this node is in touch with a majority (see `lease.rs`).
    pub(crate) lease: Arc<Lease>,
    /// How this node enters its cluster: its seeds, whether it is a member yet.
    pub(crate) entrance: Entrance,
    /// Whether this node is draining, and the forwarded publications it is still taking
    /// (see `drain.rs`).
    pub(crate) drain: Arc<Drain>,
    /// The queue of this node's writes to the session group (see `sessions.rs`).
    pub(crate) sessions: crate::sessions::SessionWriter,
}

/// This node's part of the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.id)
            .field("groups", &self.inner.groups.len())
            .finish_non_exhaustive()
    }
}

/// Reports route and retained changes of the applies to the node's lookups and host.
struct NodeObserver {
    own: RaftNodeId,
    routes: Arc<RemoteRoutes>,
    writer: Arc<RouteWriter>,
    host: Arc<dyn Host>,
    forwarders: Arc<Mutex<HashMap<RaftNodeId, Forwarder>>>,
    peers: Arc<Peers>,
}

impl Observer for NodeObserver {
    fn changed(&self, _group: GroupId, state: &GroupState, key: &Touched) {
        match key {
            Touched::Route(filter) => {
                let nodes = state.route(filter).cloned().unwrap_or_default();
                self.routes.set(filter, &nodes);
                if !nodes.contains(&self.own) {
                    self.writer.restore(filter);
                }
            }
            Touched::Retained(topic) => {
                let message = state.retained(topic).and_then(|bytes| {
                    shoal_store::message_from_bytes(bytes)
                        .inspect_err(|e| {
                            tracing::warn!(topic, error = %e, "a replicated retained message does not decode; ignored");
                        })
                        .ok()
                });
                self.host.retained_changed(topic, message);
            }
            Touched::Node(node) if *node != self.own => {
                if state.nodes().get(node).is_some_and(|m| m.down) {
                    // Declared down: what waits on its forwarding stream fails now (its
                    // publishers get 0x80), and its connection is made anew when it is back.
                    self.forwarders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(node);
                    self.peers.forget(*node);
                }
            }
            Touched::Fence(client) => {
                if let Some(epoch) = state.fences.get(client) {
                    self.host.session_fenced(client, *epoch);
                }
            }
            Touched::Ban(target) => self.host.ban_changed(target, state.ban(target)),
            Touched::Owner(_) | Touched::Node(_) | Touched::Epoch => {}
        }
    }
}

impl Cluster {
    /// Opens this node's groups in `store`, starts the cluster listener, then enters the
    /// cluster (`open`, then `enter`).
    pub async fn start(
        config: ClusterConfig,
        store: &Store,
        host: Arc<dyn Host>,
    ) -> Result<Self, ClusterError> {
        let cluster = Self::open(config, store, host).await?;
        cluster.enter().await?;
        Ok(cluster)
    }

    /// Opens this node's groups in `store` and starts the cluster listener; the node is
    /// not a member yet: `enter` bootstraps, joins or rejoins.
    pub async fn open(
        config: ClusterConfig,
        store: &Store,
        host: Arc<dyn Host>,
    ) -> Result<Self, ClusterError> {
        let id = config.node_id;
        check_identity(store, id).await?;
        let listener = match config.listen {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| ClusterError::Listen { address, source })?,
            ),
            None => None,
        };
        let raft_config = openraft::Config {
            cluster_name: "shoal".to_owned(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: 2 * config.election_timeout.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
            max_in_snapshot_log_to_keep: config.snapshot_logs / 10,
            // An entry of the session group can carry up to a MiB of writes: at 300 entries
            // (openraft's default) an append to a node catching up would pass the 64 MiB
            // message limit and be retried for ever.
            max_payload_entries: 32,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| ClusterError::Start {
            group: GroupId::Meta,
            message: e.to_string(),
        })?);
        let peers = Arc::new(Peers::default());
        let lease = Arc::new(Lease::default());
        let routes = Arc::new(RemoteRoutes::new(id));
        let writer = Arc::new(RouteWriter::default());
        let forwarders: Arc<Mutex<HashMap<RaftNodeId, Forwarder>>> = Arc::default();
        let observer: Arc<dyn Observer> = Arc::new(NodeObserver {
            own: id,
            routes: Arc::clone(&routes),
            writer: Arc::clone(&writer),
            host: Arc::clone(&host),
            forwarders: Arc::clone(&forwarders),
            peers: Arc::clone(&peers),
        });
        check_session_shards(store, config.session_shards)?;
        let mut groups = BTreeMap::new();
        for group in config.groups() {
            let start_error = |message: String| ClusterError::Start { group, message };
            let log = SledLogStore::open(store, group).map_err(|e| start_error(e.to_string()))?;
            let state_machine =
                SledStateMachine::open(store, group, config.session_shards, Arc::clone(&observer))
                    .map_err(|e| start_error(e.to_string()))?;
            for (filter, nodes) in state_machine.state().routes() {
                if nodes.contains(&id) {
                    writer.mark_live(filter);
                }
            }
            let state = state_machine.shared();
            let installed = state_machine.installed();
            let network = NetworkFactory {
                group,
                peers: Arc::clone(&peers),
                lease: Arc::clone(&lease),
            };
            let raft = Raft::new(id, Arc::clone(&raft_config), network, log, state_machine)
                .await
                .map_err(|e| start_error(e.to_string()))?;
            groups.insert(
                group,
                Group {
                    writes: Batcher::start(raft.clone()),
                    raft,
                    state,
                    handing_off: AtomicBool::new(false),
                    installed,
                },
            );
        }
        let had_state = groups[&GroupId::Meta]
            .raft
            .is_initialized()
            .await
            .unwrap_or(false);
        let entrance = Entrance::new(config.seeds.clone(), had_state);
        let sessions = crate::sessions::SessionWriter::new(config.session_shards);
        let inner = Arc::new(Inner {
            id,
            config,
            store: store.clone(),
            peers,
            groups,
            routes,
            writer,
            host,
            forwarders,
            kicked: Mutex::new(HashMap::new()),
            shared_cursor: AtomicUsize::new(0),
            redirect_cursor: AtomicUsize::new(0),
            tasks: Mutex::new(Vec::new()),
            lease,
            entrance,
            drain: Arc::default(),
            sessions,
        });
        let server = listener.map(|l| crate::service::serve(Arc::clone(&inner), l));
        let writer_task = tokio::spawn(write_routes(Arc::downgrade(&inner)));
        let watch_task = tokio::spawn(watch_nodes(Arc::downgrade(&inner)));
        let spread_task = tokio::spawn(crate::handoff::spread_leaders(Arc::downgrade(&inner)));
        let sessions_tasks = (0..inner.config.session_shards.max(1))
            .map(|shard| {
                tokio::spawn(crate::sessions::write_sessions(
                    Arc::downgrade(&inner),
                    shard,
                ))
            })
            .collect::<Vec<_>>();
        inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(
                server
                    .into_iter()
                    .chain([writer_task, watch_task, spread_task])
                    .chain(sessions_tasks),
            );
        Ok(Self { inner })
    }

    /// This node's id.
    pub fn id(&self) -> RaftNodeId {
        self.inner.id
    }

    /// This node has its first local subscriber of `filter`: its route is written; the
    /// answer (`true`) comes once every live node has applied it.
    pub fn route_add(&self, filter: &str) -> RouteWait {
        self.inner.writer.add(filter)
    }

    /// Another local subscriber of `filter`: waits for its route if it is still pending.
    pub fn route_pending(&self, filter: &str) -> Option<RouteWait> {
        self.inner.writer.pending(filter)
    }

    /// This node lost its last local subscriber of `filter`.
    pub fn route_remove(&self, filter: &str) {
        self.inner.writer.remove(filter);
    }

    /// Makes this node's routes in the index those of `local` (its filters with local
    /// subscribers, e.g. of persistent sessions read back at start): routes left from
    /// before a restart are removed, missing ones written. Returns what to wait for.
    pub fn reconcile_routes(&self, local: &BTreeSet<String>) -> Vec<RouteWait> {
        let writer = &self.inner.writer;
        for filter in writer.live() {
            if !local.contains(&filter) {
                writer.remove(&filter);
            }
        }
        let live: BTreeSet<String> = writer.live().into_iter().collect();
        local
            .iter()
            .filter(|f| !live.contains(*f))
            .map(|f| writer.add(f))
            .collect()
    }

    /// Where a message on `topic` goes beyond this node (a lookup in local memory).
    pub fn targets(&self, topic: &str) -> RemoteTargets {
        let cursor = self.inner.shared_cursor.fetch_add(1, Ordering::Relaxed);
        self.inner.routes.targets(topic, cursor)
    }

    /// Whether any route at all exists (a single node skips the lookup when none does).
    pub fn has_routes(&self) -> bool {
        self.inner.routes.len() > 0
    }

    /// A publication in the form it is forwarded in (the store's message format): made
    /// once per publication, whatever the number of destinations.
    pub fn encode(message: &Message) -> Result<Bytes, ClusterError> {
        shoal_store::message_to_bytes(message).map_err(|e| ClusterError::Refused {
            group: GroupId::Meta,
            message: e.to_string(),
        })
    }

    /// Forwards `message` ([`Cluster::encode`]d) to `node` for its subscribers (and the
    /// shared groups `shared`). With `acknowledge`, returns what waits for the peer to
    /// have it durably.
    pub fn forward(
        &self,
        node: RaftNodeId,
        message: &Bytes,
        shared: Vec<String>,
        tag: Option<u64>,
        acknowledge: bool,
    ) -> Result<Option<ForwardWait>, ClusterError> {
        let (ack, wait) = if acknowledge {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let forwarder = {
            let mut forwarders = self
                .inner
                .forwarders
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            forwarders
                .entry(node)
                .or_insert_with(|| Forwarder::start(&self.inner, node))
                .clone()
        };
        forwarder
            .tx
            .try_send(Outgoing {
                message: message.clone(),
                shared,
                tag,
                ack,
                queued: Instant::now(),
            })
            .map_err(|_| ClusterError::Backlogged { node })?;
        Ok(wait)
    }

    /// Claims `client_id` for a connection on this node: returns the claim's epoch once the
    /// registry has it and a connection holding it on another node is closed.
    pub async fn claim(&self, client_id: &str) -> Result<u64, ClusterError> {
        self.claim_owner(client_id).await.map(|(epoch, _)| epoch)
    }

    /// [`claim`](Self::claim), also naming the previous owner, if another claim was live.
    pub async fn claim_owner(
        &self,
        client_id: &str,
    ) -> Result<(u64, Option<crate::state::Owner>), ClusterError> {
        let inner = &self.inner;
        let group = GroupId::Routes(shard_of(client_id, inner.config.route_shards));
        let command = Command::Claim {
            client_id: client_id.to_owned(),
            node: inner.id,
        };
        let (_, response) = inner.propose(group, command).await?;
        let Response::Claimed { epoch, previous } = response else {
            return Err(ClusterError::Refused {
                group,
                message: format!("a claim was answered with {response:?}"),
            });
        };
        if let Some(previous) = previous
            && previous.node != inner.id
            && !inner.is_down(previous.node)
        {
            inner.kick_remote(previous.node, client_id, epoch).await;
        }
        Ok((epoch, previous))
    }

    /// Whether another node claimed `client_id` after the claim of `epoch` made here: the
    /// connection that made it lost the race and must not go on.
    pub fn overtaken(&self, client_id: &str, epoch: u64) -> bool {
        let kicked = self.inner.kicked.lock().unwrap_or_else(|e| e.into_inner());
        kicked.get(client_id).is_some_and(|newer| *newer > epoch)
    }

    /// The connection of `client_id` under the claim of `epoch` ended: the registry forgets
    /// it, unless a later claim replaced it (in the background).
    pub fn release(&self, client_id: &str, epoch: u64) {
        let inner = Arc::clone(&self.inner);
        let group = GroupId::Routes(shard_of(client_id, inner.config.route_shards));
        let command = Command::Release {
            client_id: client_id.to_owned(),
            epoch,
        };
        tokio::spawn(async move {
            if let Err(e) = inner.propose(group, command).await {
                tracing::debug!(error = %e, "a client id's release was not recorded");
            }
        });
    }

    /// Sets (or with `None`, clears) the retained message of `topic` through its shard;
    /// returns once every live node has applied it.
    pub async fn retain(&self, topic: &str, message: Option<&Message>) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let group = GroupId::Retained(shard_of(topic, inner.config.retained_shards));
        let command = match message {
            Some(message) => Command::Retain {
                topic: topic.to_owned(),
                message: shoal_store::message_to_bytes(message)
                    .map_err(|e| ClusterError::Refused {
                        group,
                        message: e.to_string(),
                    })?
                    .to_vec(),
            },
            None => Command::ClearRetained {
                topic: topic.to_owned(),
            },
        };
        let (index, _) = inner.propose(group, command).await?;
        inner.barrier(group, index).await;
        Ok(())
    }

    /// `message`, the retained message of its topic, expired (by this node's clock): the
    /// leader of its group clears it from the group (if it is still that message; other
    /// nodes only drop their copy in memory, and the leader's clear reaches them). A node
    /// that leads after a crash meets the message again when it applies it at start.
    pub async fn expire_retained(&self, message: &Message) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let group = GroupId::Retained(shard_of(
            message.topic.as_str(),
            inner.config.retained_shards,
        ));
        let leads = inner
            .groups
            .get(&group)
            .is_some_and(|g| g.raft.metrics().borrow().current_leader == Some(inner.id));
        if !leads {
            return Ok(());
        }
        let bytes = shoal_store::message_to_bytes(message).map_err(|e| ClusterError::Refused {
            group,
            message: e.to_string(),
        })?;
        let command = Command::ExpireRetained {
            topic: message.topic.as_str().to_owned(),
            digest: crate::state::digest(&bytes),
        };
        inner.propose(group, command).await.map(drop)
    }

    /// Bans `target` (or replaces its ban) on every node: a command of `meta`; returns once
    /// every live node has applied it (each enforces it as it applies).
    pub async fn ban(&self, target: &str, ban: BanRecord) -> Result<(), ClusterError> {
        let command = Command::Ban {
            target: target.to_owned(),
            ban,
        };
        let (index, _) = self.inner.propose(GroupId::Meta, command).await?;
        self.inner.barrier(GroupId::Meta, index).await;
        Ok(())
    }

    /// Lifts the ban of `target` on every node (`meta`); false if there was none.
    pub async fn unban(&self, target: &str) -> Result<bool, ClusterError> {
        if self.inner.meta().ban(target).is_none() {
            return Ok(false);
        }
        let command = Command::Unban {
            target: target.to_owned(),
        };
        let (index, _) = self.inner.propose(GroupId::Meta, command).await?;
        self.inner.barrier(GroupId::Meta, index).await;
        Ok(true)
    }

    /// Whether this node may serve clients: it is in touch with a majority of the
    /// cluster (its membership lease, `lease.rs`). A node whose lease lapsed (the minority
    /// side of a partition, a paused process) stops serving until it is back in touch.
    pub fn lease_holds(&self) -> bool {
        self.inner.lease_holds()
    }

    /// Leaves the cluster: asks a member (another node, if there is one) to remove this
    /// node from every group, its routes and client ids with it. The caller has drained
    /// its clients; the node must not serve afterwards (its data folder no longer makes it
    /// a member: delete it before reusing it).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let others: Vec<RaftNodeId> = {
            let meta = inner.meta();
            meta.nodes()
                .keys()
                .copied()
                .filter(|n| *n != inner.id)
                .collect()
        };
        let refused = |last: String| ClusterError::Refused {
            group: GroupId::Meta,
            message: last,
        };
        if others.is_empty() {
            return Err(refused(
                "the last node of a cluster cannot leave it".to_owned(),
            ));
        }
        // Its routes and client ids first, and its record in meta, while it is a member
        // (its route writer stops, so that nothing writes them again).
        inner.writer.stop();
        self.drop_routes_and_record(inner.id).await?;
        let mut last = String::from("no other node answered");
        for group in self.groups_meta_last() {
            let mut done = false;
            for other in &others {
                let Some(mut client) = inner.client_of(*other) else {
                    continue;
                };
                let mut request = tonic::Request::new(crate::proto::LeaveRequest {
                    node_id: inner.id,
                    group: group.to_string(),
                });
                request.set_timeout(PROPOSE_TIMEOUT * 5);
                match client.leave(request).await {
                    Ok(reply) if reply.get_ref().error.is_empty() => {
                        done = true;
                        break;
                    }
                    Ok(reply) => last = reply.into_inner().error,
                    Err(status) => last = status.message().to_owned(),
                }
            }
            if !done {
                return Err(refused(last));
            }
        }
        inner.drain.left();
        tracing::info!(node = inner.id, "left the cluster");
        Ok(())
    }

    /// Removes `node`, a member declared down (dead for good: a lost machine, a pod scaled
    /// away), from the cluster, as its own `leave` would: its routes and client ids, its
    /// record in meta, and its place in every group, where a learner takes its vote
    /// (`replacement`). Refused for this node (it leaves itself), for a node that is not a
    /// member, and for one that is up (it would go on as if it were a member).
    pub async fn forget(&self, node: RaftNodeId) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let refused = |message: String| ClusterError::Refused {
            group: GroupId::Meta,
            message,
        };
        if node == inner.id {
            return Err(refused(format!(
                "node {node} is this node: make it leave (`shoal cluster leave`)"
            )));
        }
        let member = inner.meta().nodes().get(&node).cloned();
        match member {
            None => return Err(refused(format!("node {node} is not a member"))),
            Some(member) if !member.down => {
                return Err(refused(format!(
                    "node {node} is up: only a node declared down is forgotten; make it leave itself (`shoal cluster leave` against it)"
                )));
            }
            Some(_) => {}
        }
        self.drop_routes_and_record(node).await?;
        for group in self.groups_meta_last() {
            inner
                .remove_member(group, node)
                .await
                .map_err(|message| ClusterError::Refused { group, message })?;
        }
        tracing::info!(node, "forgot a node declared down");
        Ok(())
    }

    /// Removes `node`'s routes and client ids from every route shard, then its record from
    /// meta (a node leaving, or forgotten).
    async fn drop_routes_and_record(&self, node: RaftNodeId) -> Result<(), ClusterError> {
        let inner = &self.inner;
        for shard in 0..inner.config.route_shards {
            inner
                .propose(GroupId::Routes(shard), Command::RemoveNode { node })
                .await?;
        }
        inner
            .propose(GroupId::Meta, Command::ForgetNode { node })
            .await
            .map(drop)
    }

    /// Every group of this node, meta last: while a node is in meta's membership, the
    /// others still know its address.
    fn groups_meta_last(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = self
            .inner
            .groups
            .keys()
            .copied()
            .filter(|g| *g != GroupId::Meta)
            .collect();
        groups.push(GroupId::Meta);
        groups
    }

    /// Whether this node's copy of meta says it is declared down (its routes were removed
    /// and route barriers pass it by): it must not serve until it is declared up again.
    pub fn declared_down(&self) -> bool {
        self.inner
            .meta()
            .nodes()
            .get(&self.inner.id)
            .is_some_and(|m| m.down)
    }

    /// Whether the cluster has another member than this node (as its copy of meta says).
    pub fn has_peers(&self) -> bool {
        self.inner
            .meta()
            .nodes()
            .keys()
            .any(|n| *n != self.inner.id)
    }

    /// Another node for an MQTT client to use (the Server Reference of DISCONNECT or
    /// CONNACK 0x9C): round robin over the other members that are up, as this node's
    /// copy of meta has them (possibly stale, for a node cut off), and that recorded an
    /// MQTT address. `None`: none known.
    pub fn server_reference(&self) -> Option<String> {
        let inner = &self.inner;
        let others: Vec<String> = {
            let meta = inner.meta();
            meta.nodes()
                .iter()
                .filter(|(id, m)| **id != inner.id && !m.down)
                .filter_map(|(_, m)| m.mqtt.clone())
                .collect()
        };
        if others.is_empty() {
            return None;
        }
        let len = others.len();
        let turn = inner.redirect_cursor.fetch_add(1, Ordering::Relaxed);
        others.into_iter().nth(turn % len)
    }

    /// What this node knows of the cluster.
    pub fn status(&self) -> ClusterStatus {
        self.inner.status()
    }

    /// Stops the groups and the listener.
    pub async fn shutdown(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        for group in self.inner.groups.values() {
            let _ = group.raft.shutdown().await;
        }
    }
}

/// What a node knows of the cluster (for `GET /cluster` and `shoal cluster status`).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node_id: RaftNodeId,
    /// The members as meta records them.
    pub nodes: Vec<NodeStatus>,
    /// Each group as this node sees it.
    pub groups: Vec<GroupStatus>,
    /// How many filters have routes.
    pub routes: usize,
    /// Whether this node's membership lease holds (it serves clients).
    pub lease: bool,
}

/// A member.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its id.
    pub id: RaftNodeId,
    /// Its cluster address.
    pub address: String,
    /// A front end.
    pub frontend: bool,
    /// Declared down by failure detection.
    pub down: bool,
    /// Where its MQTT clients connect (`mqtt_advertise`), if it said.
    pub mqtt: Option<String>,
}

/// A group as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// The group.
    pub group: String,
    /// Its leader (0: none known).
    pub leader: RaftNodeId,
    /// This node's role in it.
    pub role: String,
    /// The term.
    pub term: u64,
    /// The last log index.
    pub last_log: u64,
    /// The last applied index.
    pub applied: u64,
    /// The last index its current snapshot covers (0: none).
    pub snapshot: u64,
    /// The last index purged from its log (0: none).
    pub purged: u64,
    /// How many snapshots this node installed from the group's leader since it started
    /// (it had fallen behind the leader's log).
    pub snapshots_installed: u64,
    /// The voters.
    pub voters: Vec<RaftNodeId>,
    /// The learners.
    pub learners: Vec<RaftNodeId>,
}

impl Inner {
    pub(crate) fn lease_holds(&self) -> bool {
        let (leading, voters) = {
            let metrics = self.groups[&GroupId::Meta].raft.metrics();
            let metrics = metrics.borrow();
            let voters: Vec<RaftNodeId> =
                metrics.membership_config.membership().voter_ids().collect();
            (metrics.current_leader == Some(self.id), voters)
        };
        self.lease
            .holds(self.id, leading, &voters, self.config.failure_timeout / 2)
    }

    /// This node's copy of meta's state (read-locked: hold it briefly).
    pub(crate) fn meta(&self) -> std::sync::RwLockReadGuard<'_, GroupState> {
        self.groups[&GroupId::Meta]
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn group(&self, group: GroupId) -> Option<&Group> {
        self.groups.get(&group)
    }

    /// The address of `node` as the groups' memberships (or meta) know it.
    pub(crate) fn address_of(&self, node: RaftNodeId) -> Option<String> {
        for group in self.groups.values() {
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow();
            if let Some(n) = metrics.membership_config.membership().get_node(&node) {
                return Some(n.addr.clone());
            }
        }
        let meta = self.meta();
        meta.nodes().get(&node).map(|m| m.address.clone())
    }

    pub(crate) fn client_of(&self, node: RaftNodeId) -> Option<ClusterClient<Channel>> {
        let address = self.address_of(node)?;
        self.peers.client(node, &address)
    }

    pub(crate) fn is_down(&self, node: RaftNodeId) -> bool {
        let meta = self.meta();
        meta.nodes().get(&node).is_some_and(|m| m.down)
    }

    /// Proposes `command` to `group`'s leader, wherever it is; returns the entry's index
    /// and the response once the leader has applied it.
    pub(crate) async fn propose(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<(u64, Response), ClusterError> {
        let Some(g) = self.group(group) else {
            return Err(ClusterError::Refused {
                group,
                message: "this node does not run the group".to_owned(),
            });
        };
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            // A group whose Raft core stopped on a storage error (a full disk) takes no
            // more writes here: say so at once rather than wait for a leader.
            if let Err(fatal) = &g.raft.metrics().borrow().running_state {
                return Err(ClusterError::Refused {
                    group,
                    message: format!("the group stopped on this node: {fatal}"),
                });
            }
            let leader = g.raft.metrics().borrow().current_leader;
            match leader {
                // Handing the leadership over: wait for the next leader.
                Some(leader) if leader == self.id && g.handing_off.load(Ordering::SeqCst) => {}
                Some(leader) if leader == self.id => match g.writes.write(command.clone()).await {
                    Written::Applied(index, response) => return Ok((index, response)),
                    Written::NotLeader(_) => {}
                    Written::Failed(message) => {
                        return Err(ClusterError::Refused { group, message });
                    }
                },
                Some(leader) => {
                    if let Some(mut client) = self.client_of(leader) {
                        let payload =
                            serde_json::to_vec(&command).map_err(|e| ClusterError::Refused {
                                group,
                                message: e.to_string(),
                            })?;
                        let mut request = tonic::Request::new(ProposeRequest {
                            group: group.to_string(),
                            command: payload,
                        });
                        request.set_timeout(PROPOSE_TIMEOUT);
                        match client
                            .propose(request)
                            .await
                            .map(|r| r.into_inner().outcome)
                        {
                            Ok(Some(propose_reply::Outcome::Applied(applied))) => {
                                let response =
                                    serde_json::from_slice(&applied.response).map_err(|e| {
                                        ClusterError::Refused {
                                            group,
                                            message: format!(
                                                "the leader's answer does not decode: {e}"
                                            ),
                                        }
                                    })?;
                                return Ok((applied.index, response));
                            }
                            Ok(Some(propose_reply::Outcome::Error(message))) => {
                                return Err(ClusterError::Refused { group, message });
                            }
                            Ok(Some(propose_reply::Outcome::Leader(_)) | None) | Err(_) => {}
                        }
                    }
                }
                None => {}
            }
            if Instant::now() > deadline {
                return Err(ClusterError::NoLeader {
                    group,
                    secs: PROPOSE_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every member of `group` that is not down has applied its log up to
    /// `index`; a member that does not answer is waited for at most the failure timeout,
    /// and one whose address refuses connections (no process) is not waited for. Returns
    /// whether all of them confirmed.
    pub(crate) async fn barrier(&self, group: GroupId, index: u64) -> bool {
        let Some(g) = self.group(group) else {
            return false;
        };
        let members: Vec<(RaftNodeId, String)> = {
            let metrics = g.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        let timeout = self.config.failure_timeout;
        let waits = members.into_iter().map(|(node, address)| async move {
            if node == self.id {
                return g
                    .raft
                    .wait(Some(timeout))
                    .applied_index_at_least(Some(index), "route barrier")
                    .await
                    .is_ok();
            }
            if self.is_down(node) {
                return true;
            }
            let Some(mut client) = self.peers.client(node, &address) else {
                return false;
            };
            let mut request = tonic::Request::new(WaitAppliedRequest {
                group: group.to_string(),
                index,
                timeout_ms: timeout.as_millis() as u64,
            });
            request.set_timeout(timeout + Duration::from_millis(500));
            match client.wait_applied(request).await {
                Ok(reply) => reply.into_inner().applied,
                // Its process is not running: it serves no client, and when it comes back
                // it catches up before it serves (`Cluster::sync_groups`). Waiting for it
                // to be declared down would hold every takeover of its sessions meanwhile.
                Err(status) if nobody_listens(&status) => {
                    tracing::debug!(node, group = %group, "a node that is not running passes a route barrier");
                    true
                }
                Err(status) => {
                    tracing::debug!(node, group = %group, %status, "a node did not confirm a route");
                    false
                }
            }
        });
        let answers = futures_util::future::join_all(waits).await;
        answers.into_iter().all(|ok| ok)
    }

    /// Asks `node` to close its connection of `client_id` (claimed here with `epoch`);
    /// waits for it at most the failure timeout.
    async fn kick_remote(&self, node: RaftNodeId, client_id: &str, epoch: u64) {
        let Some(mut client) = self.client_of(node) else {
            return;
        };
        let mut request = tonic::Request::new(KickRequest {
            client_id: client_id.to_owned(),
            epoch,
        });
        request.set_timeout(self.config.failure_timeout);
        if let Err(status) = client.kick(request).await {
            tracing::info!(node, client_id, %status, "the previous owner of a client id did not confirm its takeover");
        }
    }

    /// Records that `client_id` was claimed elsewhere with `epoch`, and closes its local
    /// connection of an older claim.
    pub(crate) async fn kick_local(&self, client_id: String, epoch: u64) -> bool {
        {
            let mut kicked = self.kicked.lock().unwrap_or_else(|e| e.into_inner());
            let newest = kicked.entry(client_id.clone()).or_insert(epoch);
            *newest = (*newest).max(epoch);
        }
        self.host.kick(client_id, epoch).await
    }

    /// Makes `node` a member of `group` (learner; voter too if it is a full node and there
    /// is room), through the group's leader.
    pub(crate) async fn add_member(
        &self,
        group: GroupId,
        node: RaftNodeId,
        address: &str,
        frontend: bool,
    ) -> Result<(), String> {
        let g = self.group(group).ok_or("no such group")?;
        let deadline = Instant::now() + PROPOSE_TIMEOUT * 4;
        loop {
            let (leader, voters, learner, known) = {
                let metrics = g.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
                let learner = membership.learner_ids().any(|id| id == node);
                let known = membership.get_node(&node).map(|n| n.addr.clone());
                (metrics.current_leader, voters, learner, known)
            };
            match leader {
                Some(leader) if leader == self.id => {
                    // A member that comes back at another address (it asks itself, with the
                    // data folder that holds its id): the group reaches it there from now on.
                    if known.as_deref().is_some_and(|known| known != address) {
                        tracing::info!(node, group = %group, address, "a member's address changed");
                        g.raft
                            .change_membership(
                                ChangeMembers::SetNodes(BTreeMap::from([(
                                    node,
                                    BasicNode::new(address),
                                )])),
                                false,
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    if !voters.contains(&node) && !learner {
                        g.raft
                            .add_learner(node, BasicNode::new(address), true)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    let most = match group {
                        GroupId::Sessions(_) => self.config.session_replicas.min(MAX_VOTERS),
                        _ => MAX_VOTERS,
                    };
                    if !frontend && !voters.contains(&node) && voters.len() < most {
                        g.raft
                            .change_membership(
                                ChangeMembers::AddVoterIds(BTreeSet::from([node])),
                                false,
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    return Ok(());
                }
                Some(leader) => {
                    if let Some(mut client) = self.client_of(leader) {
                        let mut request = tonic::Request::new(JoinRequest {
                            node_id: node,
                            address: address.to_owned(),
                            frontend,
                            group: group.to_string(),
                        });
                        request.set_timeout(PROPOSE_TIMEOUT * 2);
                        if let Ok(reply) = client.join(request).await
                            && reply.get_ref().error.is_empty()
                        {
                            return Ok(());
                        }
                    }
                }
                None => {}
            }
            if Instant::now() > deadline {
                return Err(format!("no leader of {group} added the node in time"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes `node` from `group`'s membership (voter and learner), through the group's
    /// leader. A voter that goes is replaced by a learner of the group, if one is a full
    /// node that is up (the lowest id), so that a group of capped voters (the session
    /// shards' `session_replicas`) keeps its replication factor.
    pub(crate) async fn remove_member(
        &self,
        group: GroupId,
        node: RaftNodeId,
    ) -> Result<(), String> {
        let g = self.group(group).ok_or("no such group")?;
        let deadline = Instant::now() + PROPOSE_TIMEOUT * 4;
        loop {
            let (leader, voter, learner) = {
                let metrics = g.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                let voter = membership.voter_ids().any(|id| id == node);
                let learner = membership.learner_ids().any(|id| id == node);
                (metrics.current_leader, voter, learner)
            };
            match leader {
                Some(leader) if leader == self.id => {
                    let nodes = BTreeSet::from([node]);
                    // A voter is removed with its node (`retain` false); a learner as a node.
                    let change = if voter {
                        Some(ChangeMembers::RemoveVoters(nodes))
                    } else if learner {
                        Some(ChangeMembers::RemoveNodes(nodes))
                    } else {
                        None
                    };
                    if let Some(change) = change {
                        g.raft
                            .change_membership(change, false)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    if voter && let Some(next) = self.replacement(group, node) {
                        tracing::info!(%group, gone = node, voter = next, "a learner replaces the voter that left");
                        g.raft
                            .change_membership(
                                ChangeMembers::AddVoterIds(BTreeSet::from([next])),
                                false,
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    break;
                }
                Some(leader) => {
                    if let Some(mut client) = self.client_of(leader) {
                        let mut request = tonic::Request::new(crate::proto::LeaveRequest {
                            node_id: node,
                            group: group.to_string(),
                        });
                        request.set_timeout(PROPOSE_TIMEOUT * 2);
                        if let Ok(reply) = client.leave(request).await
                            && reply.get_ref().error.is_empty()
                        {
                            return Ok(());
                        }
                    }
                }
                None => {}
            }
            if Instant::now() > deadline {
                return Err(format!("no leader of {group} removed the node in time"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The learner of `group` that should become a voter now that `gone` left it: a full
    /// node, up, the lowest id; none if the group has as many voters as it may.
    fn replacement(&self, group: GroupId, gone: RaftNodeId) -> Option<RaftNodeId> {
        let g = self.group(group)?;
        let (voters, learners): (usize, Vec<RaftNodeId>) = {
            let metrics = g.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().filter(|id| *id != gone).count(),
                membership.learner_ids().filter(|id| *id != gone).collect(),
            )
        };
        let most = match group {
            GroupId::Sessions(_) => self.config.session_replicas.min(MAX_VOTERS),
            _ => MAX_VOTERS,
        };
        if voters >= most {
            return None;
        }
        let meta = self.meta();
        learners.into_iter().find(|id| {
            meta.nodes()
                .get(id)
                .is_some_and(|member| !member.frontend && !member.down)
        })
    }

    pub(crate) fn status(&self) -> ClusterStatus {
        let nodes = {
            let meta = self.meta();
            meta.nodes()
                .iter()
                .map(|(id, m)| NodeStatus {
                    id: *id,
                    address: m.address.clone(),
                    frontend: m.frontend,
                    down: m.down,
                    mqtt: m.mqtt.clone(),
                })
                .collect()
        };
        let groups = self
            .groups
            .iter()
            .map(|(group, g)| {
                let metrics = g.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                GroupStatus {
                    group: group.to_string(),
                    leader: metrics.current_leader.unwrap_or(0),
                    role: match metrics.state {
                        ServerState::Leader => "leader",
                        ServerState::Follower => "follower",
                        ServerState::Candidate => "candidate",
                        ServerState::Learner => "learner",
                        ServerState::Shutdown => "shutdown",
                    }
                    .to_owned(),
                    term: metrics.current_term,
                    last_log: metrics.last_log_index.unwrap_or(0),
                    applied: metrics.last_applied.map_or(0, |l| l.index),
                    snapshot: metrics.snapshot.map_or(0, |l| l.index),
                    purged: metrics.purged.map_or(0, |l| l.index),
                    snapshots_installed: g.installed.load(Ordering::Relaxed),
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            nodes,
            groups,
            routes: self.routes.len(),
            lease: self.lease_holds(),
        }
    }
}

/// The route writer: takes the queued route changes, writes one entry per shard, waits
/// until every live node applied it, then answers the SUBACKs waiting.
async fn write_routes(inner: Weak<Inner>) {
    loop {
        let Some(node) = inner.upgrade() else { return };
        let changes = node.writer.take(ROUTE_BATCH);
        if changes.is_empty() {
            let writer = Arc::clone(&node.writer);
            drop(node);
            writer.wake.notified().await;
            continue;
        }
        let shards = node.config.route_shards;
        let mut by_shard: BTreeMap<u16, Vec<crate::state::RouteChange>> = BTreeMap::new();
        for change in changes {
            by_shard
                .entry(shard_of(&change.filter, shards))
                .or_default()
                .push(change);
        }
        let writes = by_shard.into_iter().map(|(shard, changes)| {
            let node = Arc::clone(&node);
            async move {
                let group = GroupId::Routes(shard);
                let command = Command::Routes {
                    node: node.id,
                    changes: changes.clone(),
                };
                // Written: whether every live node confirmed. A barrier that timed out on an
                // unreachable node still wrote the route: the failure detector declares that
                // node down, and the SUBACKs are answered.
                let written = match node.propose(group, command).await {
                    Ok((index, _)) => Some(node.barrier(group, index).await),
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "routes could not be written; retrying");
                        None
                    }
                };
                (changes, written)
            }
        });
        let results = futures_util::future::join_all(writes).await;
        let mut failed = false;
        for (changes, written) in results {
            failed |= written != Some(true);
            node.writer.finish(changes, written.is_some());
        }
        drop(node);
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Failure detection, run by the leader of meta: asks each member for its status every
/// heartbeat period; one that has not answered for the failure timeout is declared down
/// (meta) and its routes and client ids are removed (every route shard). One that answers
/// again is declared up; it writes its routes again itself.
async fn watch_nodes(inner: Weak<Inner>) {
    let mut last_seen: HashMap<RaftNodeId, Instant> = HashMap::new();
    loop {
        let Some(node) = inner.upgrade() else { return };
        let period = node.config.failure_timeout / 4;
        let meta = &node.groups[&GroupId::Meta];
        let leading = meta.raft.metrics().borrow().current_leader == Some(node.id);
        if !leading {
            last_seen.clear();
            drop(node);
            tokio::time::sleep(period).await;
            continue;
        }
        // The leader of meta is up: one that was declared down while away (and leads now,
        // before anyone declared it up) declares itself up, or it would never serve again.
        let own_down = {
            let state = meta.state.read().unwrap_or_else(|e| e.into_inner());
            state.nodes().get(&node.id).is_some_and(|m| m.down)
        };
        if own_down {
            let up = Command::SetDown {
                node: node.id,
                down: false,
            };
            let _ = node.propose(GroupId::Meta, up).await;
        }
        let members: Vec<(RaftNodeId, String, bool)> = {
            let state = meta.state.read().unwrap_or_else(|e| e.into_inner());
            state
                .nodes()
                .iter()
                .filter(|(id, _)| **id != node.id)
                .map(|(id, m)| (*id, m.address.clone(), m.down))
                .collect()
        };
        let now = Instant::now();
        for (id, address, down) in members {
            let seen = last_seen.entry(id).or_insert(now);
            let answered = match node.peers.client(id, &address) {
                Some(mut client) => {
                    let mut request = tonic::Request::new(crate::proto::StatusRequest {});
                    request.set_timeout(period);
                    client.status(request).await.is_ok()
                }
                None => false,
            };
            if answered {
                *seen = Instant::now();
                if down {
                    tracing::info!(node = id, "a node that was down answers again");
                    let _ = node
                        .propose(
                            GroupId::Meta,
                            Command::SetDown {
                                node: id,
                                down: false,
                            },
                        )
                        .await;
                }
            } else if !down && seen.elapsed() >= node.config.failure_timeout {
                tracing::warn!(
                    node = id,
                    timeout_ms = node.config.failure_timeout.as_millis() as u64,
                    "a node did not answer within the failure timeout: declaring it down and removing its routes"
                );
                if node
                    .propose(
                        GroupId::Meta,
                        Command::SetDown {
                            node: id,
                            down: true,
                        },
                    )
                    .await
                    .is_ok()
                {
                    // Its persistent sessions are taken up here first, so that their routes
                    // never go missing (bounded: the rest wait for their clients).
                    let adopting = node.host.adopt_sessions(id);
                    if tokio::time::timeout(ADOPT_TIMEOUT, adopting).await.is_err() {
                        tracing::warn!(
                            node = id,
                            "taking up the sessions of a dead node took too long; its routes go now"
                        );
                    }
                    for shard in 0..node.config.route_shards {
                        let _ = node
                            .propose(GroupId::Routes(shard), Command::RemoveNode { node: id })
                            .await;
                    }
                }
            }
        }
        drop(node);
        tokio::time::sleep(period).await;
    }
}

/// How long the leader of meta waits for the sessions of a node declared down to be taken
/// up before it removes that node's routes.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The tree that holds the node's identity: key `id`, the node id (u64, big-endian).
const IDENTITY_TREE: &str = "raft/node";

/// Checks that the data folder belongs to node `id` (Raft state names its node: started
/// as another id, it would vote and lead as a node that does not exist), and records `id`
/// in a folder that names none yet (flushed before the node takes part in any group).
async fn check_identity(store: &Store, id: RaftNodeId) -> Result<(), ClusterError> {
    let failed = |e: &dyn std::fmt::Display| ClusterError::Identity {
        message: e.to_string(),
    };
    let tree = store.open_tree(IDENTITY_TREE).map_err(|e| failed(&e))?;
    match tree.get("id").map_err(|e| failed(&e))? {
        Some(bytes) => {
            let stored = <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| failed(&format!("{} bytes, not 8", bytes.len())))?;
            if stored != id {
                return Err(ClusterError::WrongNode {
                    stored,
                    configured: id,
                });
            }
        }
        None => {
            tree.insert("id", &id.to_be_bytes())
                .map_err(|e| failed(&e))?;
            store.flush().await.map_err(|e| failed(&e))?;
        }
    }
    Ok(())
}

/// Whether a call failed because nothing listens at the peer's address (the connection
/// was refused): its process is not running. A peer cut off or slow times out instead.
pub(crate) fn nobody_listens(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = error.source();
    }
    status.code() == tonic::Code::Unavailable && status.message().contains("Connection refused")
}
