//! `GroupConfig`: the openraft types of every group of the cluster.

use std::io::Cursor;

use crate::state::{Command, Response};

openraft::declare_raft_types!(
    /// openraft's type configuration of a group: commands are [`Command`]s, node ids
    /// `u64`, nodes their cluster address, snapshots whole byte buffers (a group's state
    /// is small next to the memory of the node that holds all of it).
    pub GroupConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<GroupConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id as openraft sees it.
pub type RaftNodeId = u64;
