//! `RouteGroupConfig`: the openraft types of a route group.

use std::io::Cursor;

use crate::route_table::{RouteCommand, RouteResponse};

openraft::declare_raft_types!(
    /// openraft's type configuration of a route group: commands are [`RouteCommand`]s,
    /// node ids `u64`, snapshots whole byte buffers (a route index is small).
    pub RouteGroupConfig:
        D = RouteCommand,
        R = RouteResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<RouteGroupConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id as openraft sees it.
pub type RaftNodeId = u64;
