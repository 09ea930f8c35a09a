//! `SledStateMachine`: a group's [`GroupState`] applied from the log, kept in memory for
//! lookups and written through to the tree `raft/<group>/sm`, with its snapshot. What an
//! entry changed is reported to the group's [`Observer`] (the node's route index, the
//! broker's retained messages), so that the memory of the node and the store change
//! together in the apply and never disagree.
//!
//! Keys of the tree:
//! - `r:` + filter: the nodes with subscribers of the filter (JSON list);
//! - `o:` + client id: its owner (JSON); `a:epoch`: the last epoch handed out;
//! - `t:` + topic: its retained message (the store's message format, raw);
//! - `n:` + node id (decimal): a member (JSON);
//! - `f:` + client id: the owner epoch its session's writes must have (session group);
//! - `a:applied`, `a:membership`: the last applied log id and membership;
//! - `s:meta`, `s:data`: the current snapshot, its metadata and its bytes.
//!
//! The session group's state is mostly not here: its accepted commands are writes of the
//! store's own trees (sessions, queues, expiry), applied to them before the applied log
//! id moves (re-applying a suffix of puts and removes after a crash gives the same
//! trees), and its snapshots carry those trees whole.
//!
//! Each `apply` call writes what it changed and the applied log id in one batch, so the
//! tree never holds state of entries it does not count as applied. Those writes are not
//! flushed: after a crash the applied log id may be older, and openraft re-applies the
//! entries after it from the (flushed) log. Installing or building a snapshot does
//! flush, since the log before it may then be purged.
use std::collections::BTreeSet;
use std::io::{self, Cursor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, StoredMembership,
};
use serde::{Deserialize, Serialize};
use shoal_store::Store;

use crate::encoding::{Result, decode, encode, io_error};
use crate::group_id::GroupId;
use crate::state::{Command, GroupState, Response, Touched};
use crate::type_config::{GroupConfig, RaftNodeId};

type Entry = openraft::Entry<GroupConfig>;
type Membership = StoredMembership<RaftNodeId, openraft::BasicNode>;
type Meta = SnapshotMeta<RaftNodeId, openraft::BasicNode>;

const ROUTE_PREFIX: &[u8] = b"r:";
const OWNER_PREFIX: &[u8] = b"o:";
const RETAINED_PREFIX: &[u8] = b"t:";
const NODE_PREFIX: &[u8] = b"n:";
const FENCE_PREFIX: &[u8] = b"f:";
const BAN_PREFIX: &[u8] = b"b:";
const EPOCH: &[u8] = b"a:epoch";
const PREFIXES: [&[u8]; 6] = [
    ROUTE_PREFIX,
    OWNER_PREFIX,
    RETAINED_PREFIX,
    NODE_PREFIX,
    FENCE_PREFIX,
    BAN_PREFIX,
];
const APPLIED: &[u8] = b"a:applied";
const MEMBERSHIP: &[u8] = b"a:membership";
const SNAPSHOT_META: &[u8] = b"s:meta";
const SNAPSHOT_DATA: &[u8] = b"s:data";

fn key_of(touched: &Touched) -> Vec<u8> {
    match touched {
        Touched::Route(filter) => [ROUTE_PREFIX, filter.as_bytes()].concat(),
        Touched::Owner(client) => [OWNER_PREFIX, client.as_bytes()].concat(),
        Touched::Retained(topic) => [RETAINED_PREFIX, topic.as_bytes()].concat(),
        Touched::Node(node) => [NODE_PREFIX, node.to_string().as_bytes()].concat(),
        Touched::Epoch => EPOCH.to_vec(),
        Touched::Fence(client) => [FENCE_PREFIX, client.as_bytes()].concat(),
        Touched::Ban(target) => [BAN_PREFIX, target.as_bytes()].concat(),
    }
}

/// The store writes of the session commands `command` carried that were accepted
/// (`response` says which), in order.
fn accepted_ops<'a>(command: &'a Command, response: &Response, into: &mut Vec<StoreWrite<'a>>) {
    match (command, response) {
        (Command::Batch(commands), Response::Batch(responses)) => {
            for (command, response) in commands.iter().zip(responses) {
                accepted_ops(command, response, into);
            }
        }
        (Command::Session { ops, .. }, Response::Done) => into.push(StoreWrite::Ops(ops)),
        (Command::ExpireSessions { at }, Response::Done) => into.push(StoreWrite::Expire(*at)),
        _ => {}
    }
}

/// What an applied command writes to the node's store (session shards), in log order.
enum StoreWrite<'a> {
    /// Session writes (`WriteBatch::encode`).
    Ops(&'a [u8]),
    /// What expired by this time (ms) goes.
    Expire(u64),
}

/// Most expiry index entries one `ExpireSessions` looks at (the same on every replica; the
/// leader says it again while more is due).
const EXPIRY_LIMIT: usize = 10_000;

/// Who is told what the group's applies changed: called with the group's state after the
/// change, for each key changed, while the state machine applies (so before the entry
/// counts as applied for `WaitApplied`). Called for every key at start and after a
/// snapshot is installed. Must not block.
pub trait Observer: Send + Sync + 'static {
    /// `key` changed; `state` is the group's state now.
    fn changed(&self, group: GroupId, state: &GroupState, key: &Touched);
}

/// An observer that is told nothing (storage tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn changed(&self, _: GroupId, _: &GroupState, _: &Touched) {}
}

/// What a snapshot holds: the whole state at one log id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<RaftNodeId>>,
    membership: Membership,
    state: GroupState,
    /// The session group's store trees (`encode_entries`), base64 in the JSON.
    #[serde(default, with = "crate::state::base64_bytes")]
    store: Vec<u8>,
}

/// [`Applied`] by reference: a snapshot is written from the shared state in place, not
/// from a copy (the same JSON).
#[derive(Serialize)]
struct AppliedRef<'a> {
    last_applied: &'a Option<LogId<RaftNodeId>>,
    membership: &'a Membership,
    state: &'a GroupState,
    #[serde(
        skip_serializing_if = "<[_]>::is_empty",
        serialize_with = "crate::state::base64_bytes::serialize"
    )]
    store: &'a [u8],
}

/// The session trees as bytes: per entry its tree (u8), the key and the value, each with a
/// u32 length before it.
fn encode_entries(entries: &[shoal_store::TreeEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tree, key, value) in entries {
        out.push(*tree as u8);
        for part in [key, value] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Reads what `encode_entries` wrote; `None` if it does not decode.
fn decode_entries(mut bytes: &[u8]) -> Option<Vec<shoal_store::TreeEntry>> {
    let mut entries = Vec::new();
    let take = |bytes: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Some(head.to_vec())
    };
    while let Some((&tree, rest)) = bytes.split_first() {
        bytes = rest;
        let tree = shoal_store::SessionTree::try_from(tree).ok()?;
        let mut parts = Vec::with_capacity(2);
        for _ in 0..2 {
            let len = take(&mut bytes, 4)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            parts.push(take(&mut bytes, len)?);
        }
        let value = parts.pop()?;
        let key = parts.pop()?;
        entries.push((tree, key, value));
    }
    Some(entries)
}

/// The state machine of one group.
pub struct SledStateMachine {
    group: GroupId,
    /// How many session shards the cluster has (a session shard's snapshot carries the
    /// entries of its own clients only).
    session_shards: u16,
    tree: sled::Tree,
    store: Store,
    last_applied: Option<LogId<RaftNodeId>>,
    membership: Membership,
    /// The state as applied: the only copy in memory, shared with the node for lookups
    /// (read-locked briefly; write-locked while an `apply` call changes it).
    shared: Arc<RwLock<GroupState>>,
    observer: Arc<dyn Observer>,
    /// How many snapshots were installed since the state machine was opened.
    installed: Arc<AtomicU64>,
}

impl SledStateMachine {
    /// Opens (or creates) the state machine of `group` in `store`'s database, reads its
    /// state back into memory and reports every key of it to `observer`.
    pub fn open(
        store: &Store,
        group: GroupId,
        session_shards: u16,
        observer: Arc<dyn Observer>,
    ) -> Result<Self> {
        let tree = store
            .open_tree(&group.tree_name("sm"))
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
        let read = |key: &[u8]| -> Result<Option<sled::IVec>> {
            tree.get(key)
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))
        };
        let mut applied = Applied::default();
        if let Some(bytes) = read(APPLIED)? {
            applied.last_applied = decode(&bytes, &tree, APPLIED, ErrorSubject::StateMachine)?;
        }
        if let Some(bytes) = read(MEMBERSHIP)? {
            applied.membership = decode(&bytes, &tree, MEMBERSHIP, ErrorSubject::StateMachine)?;
        }
        if let Some(bytes) = read(EPOCH)? {
            applied.state.epoch = decode(&bytes, &tree, EPOCH, ErrorSubject::StateMachine)?;
        }
        let bad = |e: &dyn std::fmt::Display| {
            io_error(
                ErrorSubject::StateMachine,
                ErrorVerb::Read,
                &io::Error::other(e.to_string()),
            )
        };
        for prefix in PREFIXES {
            for item in tree.scan_prefix(prefix) {
                let (key, value) =
                    item.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &e))?;
                let name = String::from_utf8(key[prefix.len()..].to_vec()).map_err(|e| bad(&e))?;
                let state = &mut applied.state;
                match prefix {
                    ROUTE_PREFIX => {
                        let nodes: BTreeSet<RaftNodeId> =
                            decode(&value, &tree, &key, ErrorSubject::StateMachine)?;
                        state.routes.insert(name, nodes);
                    }
                    OWNER_PREFIX => {
                        let owner = decode(&value, &tree, &key, ErrorSubject::StateMachine)?;
                        state.owners.insert(name, owner);
                    }
                    RETAINED_PREFIX => {
                        state.retained.insert(name, value.to_vec());
                    }
                    FENCE_PREFIX => {
                        let epoch = decode(&value, &tree, &key, ErrorSubject::StateMachine)?;
                        state.fences.insert(name, epoch);
                    }
                    BAN_PREFIX => {
                        let ban = decode(&value, &tree, &key, ErrorSubject::StateMachine)?;
                        state.bans.insert(name, ban);
                    }
                    _ => {
                        let node = name.parse().map_err(|e| bad(&e))?;
                        let member = decode(&value, &tree, &key, ErrorSubject::StateMachine)?;
                        state.nodes.insert(node, member);
                    }
                }
            }
        }
        let mut keys = BTreeSet::new();
        applied.state.keys(&mut keys);
        for key in &keys {
            observer.changed(group, &applied.state, key);
        }
        let Applied {
            last_applied,
            membership,
            state,
            ..
        } = applied;
        Ok(Self {
            group,
            session_shards,
            tree,
            store: store.clone(),
            last_applied,
            membership,
            shared: Arc::new(RwLock::new(state)),
            observer,
            installed: Arc::default(),
        })
    }

    /// Applies `run`, session writes in log order with no expiry between them, to the
    /// store, leaving out the messages queued and removed again within it
    /// (`shoal_store::skip_delivered`: the removals stay, so a run applied again after a
    /// crash ends the same way); empties it.
    fn apply_run(&self, run: &mut Vec<shoal_store::WriteBatch>) -> Result<()> {
        shoal_store::skip_delivered(run);
        for writes in run.drain(..) {
            self.store
                .apply(&writes)
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        }
        Ok(())
    }

    /// Removes what expired by `at` (ms) of this session shard from the store, as its
    /// leader said (`Command::ExpireSessions`).
    fn expire(&self, at: u64) -> Result<()> {
        let GroupId::Sessions(shard) = self.group else {
            return Ok(());
        };
        let report = self
            .store
            .remove_expired_in_shard(
                shoal_session::Timestamp(at),
                EXPIRY_LIMIT,
                shard,
                self.session_shards,
            )
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        if !report.corrupt.is_empty() {
            tracing::error!(group = %self.group, corrupt = report.corrupt.len(), "corrupt records met while expiring");
        }
        if !report.is_empty() {
            tracing::debug!(group = %self.group, sessions = report.sessions.len(), messages = report.messages.len(), "expired");
        }
        Ok(())
    }

    /// How many snapshots were installed since the state machine was opened, shared.
    pub fn installed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.installed)
    }

    /// The state as applied, shared: the node reads it for lookups.
    pub fn shared(&self) -> Arc<RwLock<GroupState>> {
        Arc::clone(&self.shared)
    }

    /// The state as applied so far (read-locked).
    pub fn state(&self) -> std::sync::RwLockReadGuard<'_, GroupState> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<RaftNodeId>> {
        self.last_applied
    }

    fn applied_batch(&self, batch: &mut sled::Batch) -> Result<()> {
        batch.insert(
            APPLIED,
            encode(&self.last_applied, ErrorSubject::StateMachine)?,
        );
        batch.insert(
            MEMBERSHIP,
            encode(&self.membership, ErrorSubject::StateMachine)?,
        );
        Ok(())
    }

    /// Writes the current value of `touched` in `state` (or its removal) into `batch`.
    fn key_write(batch: &mut sled::Batch, state: &GroupState, touched: &Touched) -> Result<()> {
        let key = key_of(touched);
        let subject = || ErrorSubject::StateMachine;
        let value = match touched {
            Touched::Route(filter) => state.routes.get(filter).map(|n| encode(n, subject())),
            Touched::Owner(client) => state.owners.get(client).map(|o| encode(o, subject())),
            Touched::Retained(topic) => state.retained.get(topic).map(|m| Ok(m.clone())),
            Touched::Node(node) => state.nodes.get(node).map(|m| encode(m, subject())),
            Touched::Epoch => Some(encode(&state.epoch, subject())),
            Touched::Fence(client) => state.fences.get(client).map(|e| encode(e, subject())),
            Touched::Ban(target) => state.bans.get(target).map(|b| encode(b, subject())),
        };
        match value {
            Some(value) => batch.insert(key, value?),
            None => batch.remove(key),
        }
        Ok(())
    }

    /// Tells the observer what changed (the touched keys are every change: the store's
    /// write-through rests on them too).
    fn report(&self, state: &GroupState, touched: &BTreeSet<Touched>) {
        for key in touched {
            self.observer.changed(self.group, state, key);
        }
    }
}

/// Encodes `state` as a snapshot's bytes.
fn snapshot_bytes(state: &AppliedRef<'_>) -> Result<Vec<u8>> {
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

/// Builds a snapshot of the state as it was when openraft asked for the builder (written
/// out then, under the state's read lock: no copy of the state is kept meanwhile).
pub struct SnapshotBuilder {
    tree: sled::Tree,
    store: Store,
    last_applied: Option<LogId<RaftNodeId>>,
    membership: Membership,
    data: Result<Vec<u8>>,
}

impl RaftSnapshotBuilder<GroupConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<GroupConfig>> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new()))?;
        let snapshot_id = match self.last_applied {
            Some(log_id) => log_id.to_string(),
            None => "empty".to_owned(),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
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

impl RaftStateMachine<GroupConfig> for SledStateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<RaftNodeId>>, Membership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Nothing is applied once the store is broken (sled may hang on the next write).
        self.store
            .writable()
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))?;
        let mut responses = Vec::new();
        let mut touched = BTreeSet::new();
        let mut session_writes = Vec::new();
        let shared = Arc::clone(&self.shared);
        let mut state = shared.write().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(command) => {
                    let response = state.apply(&command, &mut touched);
                    let mut writes = Vec::new();
                    accepted_ops(&command, &response, &mut writes);
                    session_writes.extend(writes.into_iter().map(|w| match w {
                        StoreWrite::Ops(ops) => Ok(ops.to_vec()),
                        StoreWrite::Expire(at) => Err(at),
                    }));
                    response
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::Done
                }
            };
            responses.push(response);
        }
        let mut batch = sled::Batch::default();
        for key in &touched {
            Self::key_write(&mut batch, &state, key)?;
        }
        self.report(&state, &touched);
        // Readers wait for the lock only while the entries apply, not for sled's write. (A
        // failed write fails the group: openraft stops it, memory and tree no matter.)
        drop(state);
        // The sessions' writes (`Ok`) and expiries (`Err`: the leader's time) go to the
        // store, in log order, before the applied log id moves: a crash in between
        // re-applies them, which leaves the same trees.
        // Between two expiries, a message queued and removed again is not written at all
        // (`skip_delivered`; entries applied together, a follower's often, hold many such).
        let mut run: Vec<shoal_store::WriteBatch> = Vec::new();
        for write in &session_writes {
            match write {
                Ok(ops) => match shoal_store::WriteBatch::decode(ops) {
                    Ok(writes) => run.push(writes),
                    // Every replica decodes the same bytes the same way: all skip it.
                    Err(e) => {
                        tracing::error!(group = %self.group, error = %e, "a session write does not decode; skipped")
                    }
                },
                Err(at) => {
                    self.apply_run(&mut run)?;
                    self.expire(*at)?;
                }
            }
        }
        self.apply_run(&mut run)?;
        self.applied_batch(&mut batch)?;
        self.tree.apply_batch(batch).map_err(|e| {
            self.store.fail();
            io_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e)
        })?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // No apply runs meanwhile (openraft drives both from one task): the store's
        // session trees are those of `last_applied`.
        let store = match self.group {
            GroupId::Sessions(shard) => self
                .store
                .export_sessions(shard, self.session_shards)
                .map(|entries| encode_entries(&entries)),
            _ => Ok(Vec::new()),
        };
        let data = match store {
            Ok(store) => snapshot_bytes(&AppliedRef {
                last_applied: &self.last_applied,
                membership: &self.membership,
                state: &self.state(),
                store: &store,
            }),
            Err(e) => Err(io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e)),
        };
        SnapshotBuilder {
            tree: self.tree.clone(),
            store: self.store.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            data,
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
        let installed: Applied = serde_json::from_slice(&data)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
        // Every key of the old state and of the new one: the old ones are removed, the new
        // ones written, and each is reported with its new value.
        let mut touched = BTreeSet::new();
        {
            let shared = Arc::clone(&self.shared);
            let mut state = shared.write().unwrap_or_else(|e| e.into_inner());
            state.keys(&mut touched);
            installed.state.keys(&mut touched);
            let mut batch = sled::Batch::default();
            for prefix in PREFIXES {
                for key in self.tree.scan_prefix(prefix).keys() {
                    let key = key.map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?;
                    batch.remove(key);
                }
            }
            if let GroupId::Sessions(shard) = self.group {
                let entries = decode_entries(&installed.store).ok_or_else(|| {
                    io_error(
                        subject.clone(),
                        ErrorVerb::Read,
                        &io::Error::other("the session trees of a snapshot do not decode"),
                    )
                })?;
                self.store
                    .import_sessions(&entries, shard, self.session_shards)
                    .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
            }
            self.last_applied = meta.last_log_id;
            self.membership = meta.last_membership.clone();
            *state = installed.state;
            for key in &touched {
                Self::key_write(&mut batch, &state, key)?;
            }
            self.applied_batch(&mut batch)?;
            snapshot_batch(&mut batch, meta, &data)?;
            self.tree
                .apply_batch(batch)
                .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
            self.report(&state, &touched);
        }
        self.store
            .flush()
            .await
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        self.installed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            group = %self.group,
            last_log = ?meta.last_log_id,
            keys = touched.len(),
            "installed a snapshot from the leader (this node had fallen behind its log)"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<GroupConfig>>> {
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
