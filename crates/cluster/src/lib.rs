//! shoal-cluster: what makes several shoal nodes one broker.
//!
//! - Raft groups ([openraft] 0.9): `meta` (members), `routes/0..R` (which nodes have
//!   subscribers of which filters, and which node holds each connected client id) and
//!   `retained/0..T` (retained messages). Every node runs every group, as a voter (up to
//!   five per group) or a learner, so every node holds the whole route index and every
//!   retained message in memory for local lookups.
//! - Storage: one sled database per node (shoal-store's [`Store`](shoal_store::Store)),
//!   trees per group (`raft/routes/0/log`, `raft/routes/0/sm`). A log append is reported
//!   flushed, and a vote saved, only after the store's flush that covers it.
//! - Between nodes: one gRPC service (tonic, proto/cluster.proto) carries the Raft
//!   messages of every group, forwarded proposals, route barriers, joins, takeovers and
//!   the forwarding stream of publications.
//! - The state machine ([`GroupState`]) is deterministic: `apply` reads no clock and no
//!   randomness.
//!
//! The broker holds a [`Cluster`] and implements [`Host`] for it.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers that build
// those results return the same type rather than box it only to unbox it again.
#![allow(clippy::result_large_err)]

mod batch;
mod drain;
mod encoding;
mod entry;
mod forward;
mod group_id;
mod handoff;
mod lease;
mod log_store;
mod network;
mod node;
mod peers;
mod routes;
mod service;
mod sessions;
mod state;
mod state_machine;
mod type_config;

/// The generated gRPC code of proto/cluster.proto.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("shoal.cluster.v1");
}

pub use entry::{EntryStatus, JoinRefused};
pub use forward::ForwardWait;
pub use group_id::GroupId;
pub use log_store::SledLogStore;
pub use node::{
    BoxFuture, Cluster, ClusterConfig, ClusterError, ClusterStatus, Forwarded, GroupStatus, Host,
    NodeStatus,
};
pub use routes::{RemoteTargets, RouteWait, shard_of};
pub use state::{BanRecord, Command, GroupState, Member, Owner, Response, RouteChange, Touched};
pub use state_machine::{NoObserver, Observer, SledStateMachine, SnapshotBuilder};
pub use type_config::{GroupConfig, RaftNodeId};
