//! Sessions: write, remove (with the session's queue), load.

use shoal_codec::MqttString;
use shoal_session::{SessionRecord, Timestamp};

use crate::batch::{ReceiptTag, mark_key};
use crate::error::{CorruptRecord, RecordKey, StoreError};
use crate::keys::{Kind, QueueEntry, parse_queue_key, receipt_prefix, subscription_prefix};
use crate::loaded::Loaded;
use crate::record::{decode_session_at, decode_subscription, encode_session, peek_session_expiry};
use crate::store::{SESSIONS, Store};

impl Store {
    /// Writes a session, replacing the one with the same client id.
    pub fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let value = encode_session(session).map_err(|source| StoreError::Encode {
            what: "session",
            source,
        })?;
        self.write_session(&session.client_id, &value, session.expires_at())
    }

    pub(crate) fn write_session(
        &self,
        client_id: &MqttString,
        value: &[u8],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let key = client_id.as_bytes().as_ref();
        let _guard = self.lock(key);
        self.index_add(Kind::Session, key, expires_at)?;
        let old = self.inner.sessions.insert(key, value)?;
        let old_expiry = old.and_then(|old| peek_session_expiry(&old).ok().flatten());
        self.index_drop(Kind::Session, key, old_expiry, expires_at)
    }

    /// Removes a session and every message queued for it. Returns how many queued
    /// messages went with it.
    pub fn remove_session(&self, client_id: &MqttString) -> Result<usize, StoreError> {
        let _guard = self.lock(client_id.as_bytes());
        self.remove_session_locked(client_id)
    }

    /// `remove_session`, the client's lock held.
    pub(crate) fn remove_session_locked(
        &self,
        client_id: &MqttString,
    ) -> Result<usize, StoreError> {
        // The queue goes first: a crash half way leaves a session with part of its queue,
        // never queue entries that no session owns.
        let removed = self.clear_queue_locked(client_id)?;
        let key = client_id.as_bytes().as_ref();
        let old = self.inner.sessions.remove(key)?;
        let old_expiry = old.and_then(|old| peek_session_expiry(&old).ok().flatten());
        self.index_drop(Kind::Session, key, old_expiry, None)?;
        Ok(removed)
    }

    /// Every session, by client id. For the start of the node.
    pub fn load_sessions(&self) -> Result<Loaded<SessionRecord>, StoreError> {
        let mut loaded = Loaded::default();
        for item in self.inner.sessions.iter() {
            let (key, value) = item?;
            self.load_one(&key, &value, &mut loaded)?;
        }
        Ok(loaded)
    }

    /// Whether the store holds a session record of `client_id` (one key lookup: nothing is
    /// decoded).
    pub fn has_session(&self, client_id: &MqttString) -> Result<bool, StoreError> {
        Ok(self.inner.sessions.contains_key(client_id.as_bytes())?)
    }

    /// The session of `client_id`, if the store holds one (`Ok(None)` also for a record
    /// that does not decode: it is in `Loaded::corrupt`).
    pub fn load_session(
        &self,
        client_id: &MqttString,
    ) -> Result<Loaded<SessionRecord>, StoreError> {
        let mut loaded = Loaded::default();
        let key = client_id.as_bytes();
        if let Some(value) = self.inner.sessions.get(key)? {
            self.load_one(key, &value, &mut loaded)?;
        }
        Ok(loaded)
    }

    /// Decodes the session record `value` stored at `key` with its receipts and
    /// subscriptions into `loaded` (or notes it as corrupt).
    fn load_one(
        &self,
        key: &[u8],
        value: &[u8],
        loaded: &mut Loaded<SessionRecord>,
    ) -> Result<(), StoreError> {
        match decode_session_at(key, value) {
            Ok(mut session) => {
                self.load_receipts(&mut session, loaded)?;
                self.load_subscriptions(&mut session, loaded)?;
                loaded.records.push(session);
            }
            Err(source) => loaded.corrupt.push(CorruptRecord {
                tree: SESSIONS,
                key: RecordKey(key.to_vec()),
                source,
            }),
        }
        Ok(())
    }

    /// Adds the subscriptions stored beside the session (`WriteBatch::put_subscription`)
    /// to its record, replacing any of the same filter that an older record held.
    fn load_subscriptions(
        &self,
        session: &mut SessionRecord,
        loaded: &mut Loaded<SessionRecord>,
    ) -> Result<(), StoreError> {
        let prefix = subscription_prefix(&session.client_id);
        let mut found = Vec::new();
        for item in self.inner.queues.scan_prefix(&prefix) {
            let (key, value) = item?;
            let decoded = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|filter| MqttString::try_from(filter.to_owned()).ok())
                .ok_or(crate::error::DecodeRecordError::MalformedKey)
                .and_then(|filter| decode_subscription(filter, &value));
            match decoded {
                Ok(sub) => found.push(sub),
                Err(source) => loaded.corrupt.push(CorruptRecord {
                    tree: crate::store::QUEUES,
                    key: RecordKey(key.to_vec()),
                    source,
                }),
            }
        }
        if !session.subscriptions.is_empty() {
            // An older record listed subscriptions itself: the entries win.
            let entries: std::collections::HashSet<&str> =
                found.iter().map(|s| s.filter.as_str()).collect();
            session
                .subscriptions
                .retain(|s| !entries.contains(s.filter.as_str()));
        }
        session.subscriptions.extend(found);
        Ok(())
    }

    /// Adds the QoS 2 receipts stored beside the session (`WriteBatch::put_receipt`) to its
    /// record's `incoming_qos2`.
    fn load_receipts(
        &self,
        session: &mut SessionRecord,
        loaded: &mut Loaded<SessionRecord>,
    ) -> Result<(), StoreError> {
        for item in self
            .inner
            .queues
            .scan_prefix(receipt_prefix(&session.client_id))
        {
            let (key, value) = item?;
            match parse_queue_key(&key) {
                // A message still being given to other nodes: a resend goes out again,
                // under its tag (`load_tags`).
                Some((_, _, QueueEntry::Receipt(_)))
                    if ReceiptTag::decode(&value).is_some_and(|tag| !tag.done) => {}
                Some((_, _, QueueEntry::Receipt(id))) => {
                    if let Some(id) = shoal_codec::PacketId::new(id)
                        && !session.incoming_qos2.contains(&id)
                    {
                        session.incoming_qos2.push(id);
                    }
                }
                _ => loaded.corrupt.push(CorruptRecord {
                    tree: crate::store::QUEUES,
                    key: RecordKey(key.to_vec()),
                    source: crate::error::DecodeRecordError::MalformedKey,
                }),
            }
        }
        Ok(())
    }

    /// The dedup tags of the QoS 2 receipts of `client_id` (`WriteBatch::put_tagged_receipt`),
    /// by packet identifier.
    pub fn load_tags(
        &self,
        client_id: &MqttString,
    ) -> Result<Vec<(shoal_codec::PacketId, ReceiptTag)>, StoreError> {
        let mut tags = Vec::new();
        for item in self.inner.queues.scan_prefix(receipt_prefix(client_id)) {
            let (key, value) = item?;
            if let Some((_, _, QueueEntry::Receipt(id))) = parse_queue_key(&key)
                && let Some(id) = shoal_codec::PacketId::new(id)
                && let Some(tag) = ReceiptTag::decode(&value)
            {
                tags.push((id, tag));
            }
        }
        Ok(tags)
    }

    /// Whether the recipient `name` took its copy of the message tagged `tag`
    /// (`WriteBatch::put_mark`).
    pub fn has_mark(&self, tag: u64, name: &[u8]) -> Result<bool, StoreError> {
        Ok(self.inner.marks.contains_key(mark_key(tag, name))?)
    }
}
