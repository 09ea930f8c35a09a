//! `SledLogStore`: the Raft log, vote and committed index of one group, in one sled
//! tree of the node's database.
//!
//! Keys of the tree `raft/<group>/log`:
//! - `e` + index (8 bytes big-endian): the entry at that index, so a range of keys is a
//!   range of the log, in order;
//! - `m:vote`, `m:committed`, `m:purged`: the vote, the last committed and the last
//!   purged log id.
//!
//! A purge writes `m:purged` and removes the entries in one batch, so the two never
//! disagree on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, RaftLogReader, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_store::Store;

use crate::encoding::{Result, decode, encode, io_error};
use crate::group_id::GroupId;
use crate::type_config::{GroupConfig, RaftNodeId};

type Entry = openraft::Entry<GroupConfig>;

const ENTRY_PREFIX: u8 = b'e';
const VOTE: &[u8] = b"m:vote";
const COMMITTED: &[u8] = b"m:committed";
const PURGED: &[u8] = b"m:purged";

/// The key of the entry at `index`.
fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [ENTRY_PREFIX; 9];
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The log store of one Raft group. Cloning is cheap: clones share the tree (the log
/// reader openraft asks for is a clone).
///
/// Durability: [`append`](RaftLogStorage::append) reports the entries flushed, and
/// [`save_vote`](RaftLogStorage::save_vote) and
/// [`truncate`](RaftLogStorage::truncate) return, only after the store's flush (group
/// commit) that covers them has completed. The committed index and purges are written
/// without waiting: losing them in a crash only means re-applying or re-purging.
#[derive(Clone)]
pub struct SledLogStore {
    tree: sled::Tree,
    store: Store,
}

impl SledLogStore {
    /// Opens (or creates) the log of `group` in `store`'s database.
    pub fn open(store: &Store, group: GroupId) -> Result<Self> {
        let tree = store
            .open_tree(&group.tree_name("log"))
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        Ok(Self {
            tree,
            store: store.clone(),
        })
    }

    fn read_value<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<RaftNodeId>,
    ) -> Result<Option<T>> {
        match self.tree.get(key) {
            Ok(Some(bytes)) => decode(&bytes, &self.tree, key, subject).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(io_error(subject, ErrorVerb::Read, &e)),
        }
    }

    fn write_value<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<RaftNodeId>,
    ) -> Result<()> {
        let bytes = encode(value, subject.clone())?;
        self.writable(subject.clone())?;
        self.tree
            .insert(key, bytes)
            .map_err(|e| self.failed(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Fails at once if the store is broken (an earlier write failed: sled may hang).
    fn writable(&self, subject: ErrorSubject<RaftNodeId>) -> Result<()> {
        self.store
            .writable()
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))
    }

    /// A write failed: the store is broken from now on (see `Store::fail`).
    fn failed(
        &self,
        subject: ErrorSubject<RaftNodeId>,
        verb: ErrorVerb,
        e: &sled::Error,
    ) -> openraft::StorageError<RaftNodeId> {
        self.store.fail();
        io_error(subject, verb, e)
    }

    /// Waits for the store's flush that covers every write made so far.
    async fn flush(&self, subject: ErrorSubject<RaftNodeId>) -> Result<()> {
        self.store
            .flush()
            .await
            .map(drop)
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))
    }

    /// Removes the entries in `range` (keys) in `batch`.
    fn remove_entries(
        &self,
        batch: &mut sled::Batch,
        range: (Bound<[u8; 9]>, Bound<[u8; 9]>),
    ) -> Result<()> {
        for key in self.tree.range(range).keys() {
            let key = key.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            batch.remove(key);
        }
        Ok(())
    }

    fn last_entry(&self) -> Result<Option<Entry>> {
        match self.tree.scan_prefix([ENTRY_PREFIX]).next_back() {
            None => Ok(None),
            Some(Ok((key, value))) => {
                decode(&value, &self.tree, &key, ErrorSubject::Logs).map(Some)
            }
            Some(Err(e)) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Read, &e)),
        }
    }
}

impl RaftLogReader<GroupConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(entry_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(entry_key(i)),
            Bound::Unbounded => Bound::Included(entry_key(0)),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(entry_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(entry_key(i)),
            Bound::Unbounded => Bound::Included(entry_key(u64::MAX)),
        };
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&start, &end)
            && s > e
        {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for item in self.tree.range((start, end)) {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            entries.push(decode(&value, &self.tree, &key, ErrorSubject::Logs)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<GroupConfig> for SledLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<GroupConfig>> {
        let last_purged_log_id: Option<LogId<RaftNodeId>> =
            self.read_value(PURGED, ErrorSubject::Logs)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<()> {
        self.write_value(VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>> {
        self.read_value(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> Result<()> {
        match committed {
            Some(log_id) => self.write_value(COMMITTED, &log_id, ErrorSubject::Store),
            None => self
                .tree
                .remove(COMMITTED)
                .map(drop)
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Delete, &e)),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftNodeId>>> {
        self.read_value(COMMITTED, ErrorSubject::Store)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<GroupConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode(&entry, ErrorSubject::Log(entry.log_id))?;
            batch.insert(&entry_key(entry.log_id.index), bytes);
        }
        self.writable(ErrorSubject::Logs)?;
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.failed(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        // The entries are in sled's memory; only the flush puts them on disk, and only
        // then may openraft count them (a vote or an ack of a follower rests on them).
        let flushed = self.store.flush().await.map(drop).map_err(io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> Result<()> {
        let mut batch = sled::Batch::default();
        self.remove_entries(
            &mut batch,
            (
                Bound::Included(entry_key(log_id.index)),
                Bound::Included(entry_key(u64::MAX)),
            ),
        )?;
        self.writable(ErrorSubject::Logs)?;
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.failed(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(PURGED, encode(&log_id, ErrorSubject::Logs)?);
        self.remove_entries(
            &mut batch,
            (
                Bound::Included(entry_key(0)),
                Bound::Included(entry_key(log_id.index)),
            ),
        )?;
        self.writable(ErrorSubject::Logs)?;
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.failed(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
