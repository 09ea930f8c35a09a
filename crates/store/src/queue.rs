//! Outbound queues: a session's messages by sequence number, and their delivery states.
//!
//! A state change is a small separate entry (four bytes, next to its message in key order)
//! that overrides the state written with the message: the message itself, payload and
//! all, is written once, at `enqueue`.

use bytes::BytesMut;
use shoal_codec::MqttString;
use shoal_session::{OutboundMessage, OutboundState, Timestamp};

use crate::error::{CorruptRecord, DecodeRecordError, RecordKey, StoreError};
use crate::keys::{Kind, QueueEntry, parse_queue_key, queue_key, queue_prefix, state_key};
use crate::loaded::Loaded;
use crate::record::{
    decode_outbound, decode_state, encode_outbound, encode_state, peek_outbound_expiry,
};
use crate::store::{QUEUES, Store};

impl Store {
    /// Queues `message` for `client_id` at sequence number `seq`, replacing whatever was
    /// there (message and state). The broker numbers each session's messages in the order
    /// of its queue.
    pub fn enqueue(
        &self,
        client_id: &MqttString,
        seq: u64,
        message: &OutboundMessage,
    ) -> Result<(), StoreError> {
        let value = encode_outbound(message).map_err(|source| StoreError::Encode {
            what: "outbound message",
            source,
        })?;
        self.write_outbound(client_id, seq, &value, message.message.expires_at)
    }

    pub(crate) fn write_outbound(
        &self,
        client_id: &MqttString,
        seq: u64,
        value: &[u8],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let key = queue_key(client_id, seq);
        let _guard = self.lock(client_id.as_bytes());
        self.index_add(Kind::Queued, &key, expires_at)?;
        let old = self.inner.queues.insert(&key, value)?;
        // A state under this sequence number belonged to an earlier message (removing an
        // absent key writes nothing to sled's log).
        self.inner.queues.remove(state_key(&key))?;
        let old_expiry = old.and_then(|old| peek_outbound_expiry(&old).ok().flatten());
        self.index_drop(Kind::Queued, &key, old_expiry, expires_at)
    }

    /// Records where a queued message stands, without rewriting the message. Returns
    /// `false`, writing nothing, if no message is queued at `seq`.
    pub fn set_outbound_state(
        &self,
        client_id: &MqttString,
        seq: u64,
        state: OutboundState,
    ) -> Result<bool, StoreError> {
        let key = queue_key(client_id, seq);
        let _guard = self.lock(client_id.as_bytes());
        if !self.inner.queues.contains_key(&key)? {
            return Ok(false);
        }
        self.inner
            .queues
            .insert(state_key(&key), &encode_state(state)[..])?;
        Ok(true)
    }

    /// Removes a queued message and its state. Returns whether it was there.
    pub fn remove_outbound(&self, client_id: &MqttString, seq: u64) -> Result<bool, StoreError> {
        let key = queue_key(client_id, seq);
        let _guard = self.lock(client_id.as_bytes());
        self.remove_outbound_locked(&key)
    }

    /// `remove_outbound`, the client's lock held.
    pub(crate) fn remove_outbound_locked(&self, key: &[u8]) -> Result<bool, StoreError> {
        // The message goes first: a crash in between leaves a state without a message,
        // which `load_queue` skips and `enqueue` overwrites, never a message whose state
        // went back to an earlier one.
        let old = self.inner.queues.remove(key)?;
        self.inner.queues.remove(state_key(key))?;
        let existed = old.is_some();
        let old_expiry = old.and_then(|old| peek_outbound_expiry(&old).ok().flatten());
        self.index_drop(Kind::Queued, key, old_expiry, None)?;
        Ok(existed)
    }

    /// Removes a client's whole queue, its lock held. Returns how many messages went.
    pub(crate) fn clear_queue_locked(&self, client_id: &MqttString) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in self.inner.queues.scan_prefix(queue_prefix(client_id)) {
            let (key, value) = item?;
            self.inner.queues.remove(&key)?;
            if let Some((_, _, QueueEntry::Message)) = parse_queue_key(&key) {
                removed += 1;
                let expiry = peek_outbound_expiry(&value).ok().flatten();
                self.index_drop(Kind::Queued, &key, expiry, None)?;
            }
        }
        Ok(removed)
    }

    /// A client's queue in order of sequence number, each message with its latest state.
    /// Each message gets its own `Arc`.
    pub fn load_queue(
        &self,
        client_id: &MqttString,
    ) -> Result<Loaded<(u64, OutboundMessage)>, StoreError> {
        let mut loaded: Loaded<(u64, OutboundMessage)> = Loaded::default();
        for item in self.inner.queues.scan_prefix(queue_prefix(client_id)) {
            let (key, value) = item?;
            let result = match parse_queue_key(&key) {
                None => Err(DecodeRecordError::MalformedKey),
                Some((_, seq, QueueEntry::Message)) => decode_outbound(BytesMut::from(&value[..]))
                    .map(|message| {
                        loaded.records.push((seq, message));
                    }),
                // Receipts belong to the session's record (`load_sessions`).
                Some((_, _, QueueEntry::Receipt(_) | QueueEntry::Subscription)) => Ok(()),
                Some((_, seq, QueueEntry::State)) => decode_state(&value).map(|state| {
                    // A state follows its message in key order. One without a message is
                    // what a crash inside `remove_outbound` leaves: nothing to apply it to.
                    if let Some((last, message)) = loaded.records.last_mut()
                        && *last == seq
                    {
                        message.state = state;
                    }
                }),
            };
            if let Err(source) = result {
                loaded.corrupt.push(CorruptRecord {
                    tree: QUEUES,
                    key: RecordKey(key.to_vec()),
                    source,
                });
            }
        }
        Ok(loaded)
    }
}
