//! Retained messages: write, remove, load.

use shoal_codec::MqttString;
use shoal_session::{Message, Timestamp};

use crate::error::{CorruptRecord, RecordKey, StoreError};
use crate::keys::Kind;
use crate::loaded::Loaded;
use crate::record::{decode_retained_at, encode_retained, peek_retained_expiry};
use crate::store::{RETAINED, Store};

impl Store {
    /// Writes the retained message of its topic, replacing the previous one. (A PUBLISH
    /// with RETAIN and an empty payload clears the topic: the broker calls
    /// [`remove_retained`](Self::remove_retained) for it.)
    pub fn put_retained(&self, message: &Message) -> Result<(), StoreError> {
        let value = encode_retained(message).map_err(|source| StoreError::Encode {
            what: "retained message",
            source,
        })?;
        self.write_retained(&message.topic, &value, message.expires_at)
    }

    pub(crate) fn write_retained(
        &self,
        topic: &MqttString,
        value: &[u8],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let key = topic.as_bytes().as_ref();
        let _guard = self.lock(key);
        self.index_add(Kind::Retained, key, expires_at)?;
        let old = self.inner.retained.insert(key, value)?;
        let old_expiry = old.and_then(|old| peek_retained_expiry(&old).ok().flatten());
        self.index_drop(Kind::Retained, key, old_expiry, expires_at)
    }

    /// Removes the retained message of `topic`. Returns whether there was one.
    pub fn remove_retained(&self, topic: &MqttString) -> Result<bool, StoreError> {
        let key = topic.as_bytes().as_ref();
        let _guard = self.lock(key);
        self.remove_retained_locked(key)
    }

    /// `remove_retained`, the topic's lock held.
    pub(crate) fn remove_retained_locked(&self, key: &[u8]) -> Result<bool, StoreError> {
        let old = self.inner.retained.remove(key)?;
        let existed = old.is_some();
        let old_expiry = old.and_then(|old| peek_retained_expiry(&old).ok().flatten());
        self.index_drop(Kind::Retained, key, old_expiry, None)?;
        Ok(existed)
    }

    /// Every retained message, by topic. For the start of the node.
    pub fn load_retained(&self) -> Result<Loaded<Message>, StoreError> {
        let mut loaded = Loaded::default();
        for item in self.inner.retained.iter() {
            let (key, value) = item?;
            match decode_retained_at(&key, &value) {
                Ok(message) => loaded.records.push(message),
                Err(source) => loaded.corrupt.push(CorruptRecord {
                    tree: RETAINED,
                    key: RecordKey(key.to_vec()),
                    source,
                }),
            }
        }
        Ok(loaded)
    }
}
