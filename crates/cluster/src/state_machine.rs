//! `SledStateMachine`: a route group's [`RouteTable`] applied from the log, kept in
//! memory for lookups and written through to the tree `raft/<group>/sm`, with its
//! snapshot.
//!
//! Keys of the tree:
//! - `r:` + filter: the nodes with subscribers of the filter (JSON list);
//! - `a:applied`, `a:membership`: the last applied log id and membership;
//! - `s:meta`, `s:data`: the current snapshot, its metadata and its bytes.
//!
//! Each `apply` call writes its routes and the applied log id in one batch, so the tree
//! never holds routes of entries it does not count as applied. Those writes are not
//! flushed: after a crash the applied log id may be older, and openraft re-applies the
//! entries after it from the (flushed) log. Installing or building a snapshot does
//! flush, since the log before it may then be purged.

use std::collections::BTreeSet;
use std::io::{self, Cursor};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, StoredMembership,
};
use serde::{Deserialize, Serialize};
use shoal_store::Store;

use crate::encoding::{Result, decode, encode, io_error};
use crate::group_id::GroupId;
use crate::route_table::{RouteCommand, RouteResponse, RouteTable};
use crate::type_config::{RaftNodeId, RouteGroupConfig};

type Entry = openraft::Entry<RouteGroupConfig>;
type Membership = StoredMembership<RaftNodeId, openraft::BasicNode>;
type Meta = SnapshotMeta<RaftNodeId, openraft::BasicNode>;

const ROUTE_PREFIX: &[u8] = b"r:";
const APPLIED: &[u8] = b"a:applied";
const MEMBERSHIP: &[u8] = b"a:membership";
const SNAPSHOT_META: &[u8] = b"s:meta";
const SNAPSHOT_DATA: &[u8] = b"s:data";

fn route_key(filter: &str) -> Vec<u8> {
    [ROUTE_PREFIX, filter.as_bytes()].concat()
}

/// What a snapshot holds: the whole state at one log id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<RaftNodeId>>,
    membership: Membership,
    routes: RouteTable,
}

/// The state machine of one route group.
pub struct SledStateMachine {
    tree: sled::Tree,
    store: Store,
    state: Applied,
}

impl SledStateMachine {
    /// Opens (or creates) the state machine of `group` in `store`'s database and reads
    /// its routes back into memory.
    pub fn open(store: &Store, group: GroupId) -> Result<Self> {
        let tree = store
            .open_tree(&group.tree_name("sm"))
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
        let read = |key: &[u8]| -> Result<Option<sled::IVec>> {
            tree.get(key)
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
        };
        let mut state = Applied::default();
        if let Some(bytes) = read(APPLIED)? {
            state.last_applied = decode(&bytes, &tree, APPLIED, ErrorSubject::StateMachine)?;
        }
        if let Some(bytes) = read(MEMBERSHIP)? {
            state.membership = decode(&bytes, &tree, MEMBERSHIP, ErrorSubject::StateMachine)?;
        }
        for item in tree.scan_prefix(ROUTE_PREFIX) {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            let filter = String::from_utf8(key[ROUTE_PREFIX.len()..].to_vec())
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
            let nodes: BTreeSet<RaftNodeId> =
                decode(&value, &tree, &key, ErrorSubject::StateMachine)?;
            state.routes.set(filter, nodes);
        }
        Ok(Self {
            tree,
            store: store.clone(),
            state,
        })
    }

    /// The route table as applied so far.
    pub fn routes(&self) -> &RouteTable {
        &self.state.routes
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<RaftNodeId>> {
        self.state.last_applied
    }

    fn applied_batch(&self, batch: &mut sled::Batch) -> Result<()> {
        batch.insert(
            APPLIED,
            encode(&self.state.last_applied, ErrorSubject::StateMachine)?,
        );
        batch.insert(
            MEMBERSHIP,
            encode(&self.state.membership, ErrorSubject::StateMachine)?,
        );
        Ok(())
    }

    fn route_write(&self, batch: &mut sled::Batch, filter: &str) -> Result<()> {
        match self.state.routes.nodes(filter) {
            Some(nodes) => batch.insert(
                route_key(filter),
                encode(nodes, ErrorSubject::StateMachine)?,
            ),
            None => batch.remove(route_key(filter)),
        }
        Ok(())
    }
}

/// Encodes `state` as a snapshot's bytes.
fn snapshot_bytes(state: &Applied) -> Result<Vec<u8>> {
    encode(state, ErrorSubject::Snapshot(None))
}

/// Stores `meta` and `data` as the current snapshot in `batch`.
fn snapshot_batch(batch: &mut sled::Batch, meta: &Meta, data: &[u8]) -> Result<()> {
    let subject = ErrorSubject::Snapshot(Some(meta.signature()));
    batch.insert(SNAPSHOT_META, encode(meta, subject)?);
    batch.insert(SNAPSHOT_DATA, data);
    Ok(())
}

fn read_snapshot_meta(tree: &sled::Tree) -> Result<Option<Meta>> {
    match tree.get(SNAPSHOT_META) {
        Ok(Some(bytes)) => {
            decode(&bytes, tree, SNAPSHOT_META, ErrorSubject::Snapshot(None)).map(Some)
        }
        Ok(None) => Ok(None),
        Err(e) => Err(io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e)),
    }
}

/// Builds a snapshot of the state as it was when openraft asked for the builder.
pub struct RouteSnapshotBuilder {
    tree: sled::Tree,
    store: Store,
    state: Applied,
}

impl RaftSnapshotBuilder<RouteGroupConfig> for RouteSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<RouteGroupConfig>> {
        let data = snapshot_bytes(&self.state)?;
        let snapshot_id = match self.state.last_applied {
            Some(log_id) => log_id.to_string(),
            None => "empty".to_owned(),
        };
        let meta = Meta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
            snapshot_id,
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        // A snapshot built from an older state than the stored one (a builder that lost
        // the race with an install) does not replace it.
        let stored = read_snapshot_meta(&self.tree)?;
        if stored.is_none_or(|s| s.last_log_id <= meta.last_log_id) {
            let mut batch = sled::Batch::default();
            snapshot_batch(&mut batch, &meta, &data)?;
            self.tree
                .apply_batch(batch)
                .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
            self.store
                .flush()
                .await
                .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<RouteGroupConfig> for SledStateMachine {
    type SnapshotBuilder = RouteSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<RaftNodeId>>, Membership)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<RouteResponse>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut touched = BTreeSet::new();
        for entry in entries {
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => RouteResponse::default(),
                EntryPayload::Normal(command) => {
                    let response = self.state.routes.apply(&command);
                    if response.changed {
                        let (RouteCommand::AddRoute { filter, .. }
                        | RouteCommand::RemoveRoute { filter, .. }) = command;
                        touched.insert(filter);
                    }
                    response
                }
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    RouteResponse::default()
                }
            };
            responses.push(response);
        }
        let mut batch = sled::Batch::default();
        for filter in &touched {
            self.route_write(&mut batch, filter)?;
        }
        self.applied_batch(&mut batch)?;
        self.tree
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        RouteSnapshotBuilder {
            tree: self.tree.clone(),
            store: self.store.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let state: Applied = serde_json::from_slice(&data)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
        let mut batch = sled::Batch::default();
        for key in self.tree.scan_prefix(ROUTE_PREFIX).keys() {
            let key = key.map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
            batch.remove(key);
        }
        for (filter, nodes) in state.routes.iter() {
            batch.insert(route_key(filter), encode(nodes, subject.clone())?);
        }
        self.state = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            routes: state.routes,
        };
        self.applied_batch(&mut batch)?;
        snapshot_batch(&mut batch, meta, &data)?;
        self.tree
            .apply_batch(batch)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
        self.store
            .flush()
            .await
            .map(drop)
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RouteGroupConfig>>> {
        let Some(meta) = read_snapshot_meta(&self.tree)? else {
            return Ok(None);
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = self
            .tree
            .get(SNAPSHOT_DATA)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?
            .ok_or_else(|| {
                io_error(
                    subject,
                    ErrorVerb::Read,
                    &io::Error::other("snapshot metadata without data"),
                )
            })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}
