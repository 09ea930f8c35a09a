//! Expiry: the index of what expires when, kept in step by every write, and
//! `remove_expired`, which reads only the expired part of it.
//!
//! An index entry is written before its record and removed after it, so a crash can leave
//! an entry without a record, never the reverse. `remove_expired` therefore checks each
//! entry against the record before it removes anything: an entry whose record is gone or
//! expires at another time is stale and only the entry is dropped.

use bytes::Bytes;
use shoal_codec::MqttString;
use shoal_session::Timestamp;

use crate::error::{CorruptRecord, DecodeRecordError, RecordKey, StoreError};
use crate::keys::{Kind, QueueEntry, index_end, index_key, parse_index_key, parse_queue_key};
use crate::record::{peek_outbound_expiry, peek_retained_expiry, peek_session_expiry};
use crate::replica::SessionTree;
use crate::shards::entry_shard;
use crate::store::{EXPIRY, QUEUES, RETAINED, SESSIONS, Store};

/// What [`Store::remove_expired`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiredReport {
    /// Sessions whose expiry passed, removed with their queues.
    pub sessions: Vec<MqttString>,
    /// Messages removed with the queues of those sessions.
    pub session_messages: usize,
    /// Queued messages whose Message Expiry Interval passed: client id, sequence number.
    pub messages: Vec<(MqttString, u64)>,
    /// Retained messages whose Message Expiry Interval passed, by topic.
    pub retained: Vec<MqttString>,
    /// Index entries dropped because their record was gone or had changed (left by a
    /// crash between two writes).
    pub stale_entries: usize,
    /// Records (or index entries) that do not decode. The record is left in place; its
    /// index entry is dropped, so each is reported once.
    pub corrupt: Vec<CorruptRecord>,
    /// The limit stopped the pass before the last expired entry: call again.
    pub more: bool,
}

impl ExpiredReport {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.messages.is_empty()
            && self.retained.is_empty()
            && self.stale_entries == 0
            && self.corrupt.is_empty()
    }
}

impl Store {
    /// Removes what has expired at `now`: sessions (with their queues), queued messages
    /// and retained messages. Looks at no more than `limit` index entries, all of them
    /// expired ones; if more remain, the report says so (`more`).
    ///
    /// Time is an input: the store reads no clock, so replicas given the same `now` remove
    /// the same records.
    pub fn remove_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<ExpiredReport, StoreError> {
        self.remove_expired_of(now, limit, None)
    }

    /// [`remove_expired`](Self::remove_expired) for the entries of session shard `shard`
    /// of `shards` only (`shards.rs`): what that shard's apply removes when its leader
    /// says the time has come, the same on every replica.
    pub fn remove_expired_in_shard(
        &self,
        now: Timestamp,
        limit: usize,
        shard: u16,
        shards: u16,
    ) -> Result<ExpiredReport, StoreError> {
        self.remove_expired_of(now, limit, Some((shard, shards)))
    }

    /// Whether an entry of session shard `shard` of `shards` has expired at `now`.
    pub fn has_expired_in_shard(
        &self,
        now: Timestamp,
        shard: u16,
        shards: u16,
    ) -> Result<bool, StoreError> {
        for key in self.expired_range(now).keys() {
            if entry_shard(SessionTree::Expiry, &key?, &[], shards) == shard {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn expired_range(&self, now: Timestamp) -> sled::Iter {
        match index_end(now) {
            Some(end) => self.inner.expiry.range(..end),
            None => self.inner.expiry.iter(),
        }
    }

    fn remove_expired_of(
        &self,
        now: Timestamp,
        limit: usize,
        shard: Option<(u16, u16)>,
    ) -> Result<ExpiredReport, StoreError> {
        let mut report = ExpiredReport::default();
        let mut entries = self
            .expired_range(now)
            .keys()
            .filter(|key| match (key, shard) {
                (Ok(key), Some((shard, shards))) => {
                    entry_shard(SessionTree::Expiry, key, &[], shards) == shard
                }
                _ => true,
            })
            .take(limit.saturating_add(1))
            .collect::<Result<Vec<_>, _>>()?;
        if entries.len() > limit {
            entries.truncate(limit);
            report.more = true;
        }
        for index in entries {
            match parse_index_key(&index) {
                Some((at, kind, key)) => self.expire(&index, at, kind, key, &mut report)?,
                None => {
                    report
                        .corrupt
                        .push(corrupt(EXPIRY, &index, DecodeRecordError::MalformedKey));
                    self.inner.expiry.remove(&index)?;
                }
            }
        }
        Ok(report)
    }

    /// Handles one index entry: removes its record if it is the one the entry names.
    fn expire(
        &self,
        index: &[u8],
        at: Timestamp,
        kind: Kind,
        key: &[u8],
        report: &mut ExpiredReport,
    ) -> Result<(), StoreError> {
        match kind {
            Kind::Session => {
                let Some(client_id) = string(key) else {
                    return self.malformed(index, report);
                };
                let _guard = self.lock(key);
                let tree = &self.inner.sessions;
                if check(tree, SESSIONS, key, at, peek_session_expiry, report)? {
                    report.session_messages += self.remove_session_locked(&client_id)?;
                    report.sessions.push(client_id);
                }
                self.inner.expiry.remove(index)?;
            }
            Kind::Queued => {
                let Some((client, seq, QueueEntry::Message)) = parse_queue_key(key) else {
                    return self.malformed(index, report);
                };
                let Some(client_id) = string(client) else {
                    return self.malformed(index, report);
                };
                let _guard = self.lock(client);
                let tree = &self.inner.queues;
                if check(tree, QUEUES, key, at, peek_outbound_expiry, report)? {
                    self.remove_outbound_locked(key)?;
                    report.messages.push((client_id, seq));
                }
                self.inner.expiry.remove(index)?;
            }
            Kind::Retained => {
                let Some(topic) = string(key) else {
                    return self.malformed(index, report);
                };
                let _guard = self.lock(key);
                let tree = &self.inner.retained;
                if check(tree, RETAINED, key, at, peek_retained_expiry, report)? {
                    self.remove_retained_locked(key)?;
                    report.retained.push(topic);
                }
                self.inner.expiry.remove(index)?;
            }
        }
        Ok(())
    }

    fn malformed(&self, index: &[u8], report: &mut ExpiredReport) -> Result<(), StoreError> {
        report
            .corrupt
            .push(corrupt(EXPIRY, index, DecodeRecordError::MalformedKey));
        self.inner.expiry.remove(index)?;
        Ok(())
    }

    /// Before a record that expires at `at` is written: its index entry.
    pub(crate) fn index_add(
        &self,
        kind: Kind,
        key: &[u8],
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        if let Some(at) = at {
            self.inner.expiry.insert(index_key(at, kind, key), &[])?;
        }
        Ok(())
    }

    /// After a record that expired at `old` was replaced by one that expires at `new`, or
    /// removed (`new` is `None`): the old entry, unless it is also the new one.
    pub(crate) fn index_drop(
        &self,
        kind: Kind,
        key: &[u8],
        old: Option<Timestamp>,
        new: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        if let Some(old) = old
            && Some(old) != new
        {
            self.inner.expiry.remove(index_key(old, kind, key))?;
        }
        Ok(())
    }
}

/// Whether the record at `key` exists and expires at `at`; counts or reports it if not.
fn check(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
    at: Timestamp,
    peek: fn(&[u8]) -> Result<Option<Timestamp>, DecodeRecordError>,
    report: &mut ExpiredReport,
) -> Result<bool, StoreError> {
    let Some(value) = tree.get(key)? else {
        report.stale_entries += 1;
        return Ok(false);
    };
    match peek(&value) {
        Ok(Some(expires)) if expires == at => Ok(true),
        Ok(_) => {
            report.stale_entries += 1;
            Ok(false)
        }
        Err(source) => {
            report.corrupt.push(corrupt(name, key, source));
            Ok(false)
        }
    }
}

fn corrupt(tree: &'static str, key: &[u8], source: DecodeRecordError) -> CorruptRecord {
    CorruptRecord {
        tree,
        key: RecordKey(key.to_vec()),
        source,
    }
}

fn string(bytes: &[u8]) -> Option<MqttString> {
    MqttString::from_bytes(Bytes::copy_from_slice(bytes)).ok()
}
