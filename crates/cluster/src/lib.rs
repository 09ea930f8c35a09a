//! shoal-cluster: what makes several shoal nodes one broker. Today, the storage of a
//! Raft group ([openraft] 0.9) in the node's sled database: the log store and the state
//! machine of a route group, which passes openraft's storage conformance suite.
//!
//! - One sled database per node (shoal-store's [`Store`](shoal_store::Store)), trees per
//!   group named after it (`raft/routes/0/log`, `raft/routes/0/sm`), so many groups share
//!   one database and one group commit.
//! - Durability: a log append is reported flushed, and a vote saved, only after the
//!   store's flush that covers it; nothing relies on sled's background flush.
//! - The state machine ([`RouteTable`]) is deterministic: `apply` reads no clock and no
//!   randomness, so every replica that applies the same log holds the same routes.
//!
//! What it never does (yet): talk to other nodes, change membership, or route messages.
//! It never reads files or the environment of its own: the caller opens the store.
//!
//! Main types: [`SledLogStore`], [`SledStateMachine`], [`RouteTable`] with
//! [`RouteCommand`], [`GroupId`], [`RouteGroupConfig`].

// openraft's storage traits return its `StorageError` (224 bytes); the helpers that build
// those results return the same type rather than box it only to unbox it again.
#![allow(clippy::result_large_err)]

mod encoding;
mod group_id;
mod log_store;
mod route_table;
mod state_machine;
mod type_config;

pub use group_id::GroupId;
pub use log_store::SledLogStore;
pub use route_table::{RouteCommand, RouteResponse, RouteTable};
pub use state_machine::{RouteSnapshotBuilder, SledStateMachine};
pub use type_config::{RaftNodeId, RouteGroupConfig};
