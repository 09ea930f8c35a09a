//! Retained messages: keeping, clearing, finding them for a subscription, and their
//! limits (`max_retained_messages`, `max_retained_bytes`).

use std::sync::Arc;

use shoal_codec::PubAckReasonCode;
use shoal_session::{Message, Timestamp};
use shoal_topic::RetainedIndex;

use super::{Broker, read, write};
use crate::metrics as m;

/// The retained messages of the node: the index by topic, and what they weigh
/// (`Message::weight`), for `max_retained_bytes`.
#[derive(Debug, Default)]
pub(crate) struct Retained {
    index: RetainedIndex<Arc<Message>>,
    bytes: usize,
}

impl Retained {
    /// Keeps `message` as the retained message of `topic`; returns the one it replaces.
    pub(crate) fn insert(&mut self, topic: &str, message: Arc<Message>) -> Option<Arc<Message>> {
        self.bytes += message.weight();
        let old = self.index.insert(topic, message);
        if let Some(old) = &old {
            self.bytes -= old.weight();
        }
        old
    }

    /// Clears the retained message of `topic`; returns it.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<Arc<Message>> {
        let old = self.index.remove(topic);
        if let Some(old) = &old {
            self.bytes -= old.weight();
        }
        old
    }

    /// The retained message of `topic`.
    pub(crate) fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.index.get(topic)
    }

    /// How many messages are retained.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Calls `f` for each message whose topic `filter` matches.
    pub(crate) fn for_each_match_value(&self, filter: &str, f: impl FnMut(&Arc<Message>)) {
        self.index.for_each_match_value(filter, f);
    }

    /// Whether keeping `message` stays within `max_messages` and `max_bytes`: a new topic
    /// needs room for one more message and its bytes; replacing a topic's message needs
    /// room only for what it adds, and clearing one (an empty payload) always fits.
    pub(crate) fn has_room_for(
        &self,
        message: &Message,
        max_messages: usize,
        max_bytes: usize,
    ) -> bool {
        if message.payload.is_empty() {
            return true;
        }
        let weight = message.weight();
        match self.index.get(&message.topic) {
            Some(old) => weight <= old.weight() || self.bytes - old.weight() + weight <= max_bytes,
            None => self.index.len() < max_messages && self.bytes + weight <= max_bytes,
        }
    }
}

/// Why moving the retained messages of an older data folder into the Raft groups failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// Reading or clearing the store's retained messages failed.
    #[error("{0}")]
    Store(#[from] shoal_store::StoreError),
    /// A retained group did not take a message.
    #[error("{0}")]
    Cluster(#[from] shoal_cluster::ClusterError),
    /// The task proposing a message ended without an answer.
    #[error("a proposal's task failed: {0}")]
    Task(String),
}

impl Broker {
    /// Moves the retained messages that the store's own tree still holds (a data folder
    /// written before retained messages lived in their Raft groups, even on a node alone)
    /// into the retained groups, each removed from the tree once its group committed it.
    /// Runs once the node has entered its cluster and before it serves: no client can have
    /// set a newer message meanwhile. A crash half-way leaves the rest in the tree, moved
    /// at the next start (setting a message twice is harmless). Messages go a few hundred
    /// at a time, so that their proposals share Raft entries (group commit) rather than
    /// wait for one commit each. Returns how many moved.
    pub(crate) async fn migrate_retained(
        &self,
        cluster: &shoal_cluster::Cluster,
    ) -> Result<usize, MigrateError> {
        const AT_ONCE: usize = 256;
        let now = self.now();
        let mut moved = 0;
        let (live, expired): (Vec<Message>, Vec<Message>) =
            super::loaded(self.store.load_retained()?, "retained message")
                .into_iter()
                .partition(|m| !m.is_expired(now));
        for message in &expired {
            self.store.remove_retained(&message.topic)?;
        }
        for chunk in live.chunks(AT_ONCE) {
            let mut writes = tokio::task::JoinSet::new();
            for message in chunk {
                let (cluster, message) = (cluster.clone(), message.clone());
                writes.spawn(async move { cluster.retain(&message.topic, Some(&message)).await });
            }
            while let Some(written) = writes.join_next().await {
                written.map_err(|e| MigrateError::Task(e.to_string()))??;
            }
            for message in chunk {
                self.store.remove_retained(&message.topic)?;
            }
            moved += chunk.len();
        }
        if moved > 0 {
            self.store.flush().await?;
            tracing::info!(
                moved,
                "retained messages moved from the store into their Raft groups"
            );
        }
        Ok(moved)
    }

    /// Why a retained PUBLISH is refused, if it is: the node holds `max_retained_messages`
    /// or `max_retained_bytes` already (PUBACK/PUBREC 0x97, Quota exceeded; counted in
    /// `shoal_retained_refused_total`). Replacing or clearing a topic's message still works.
    pub(crate) fn refuse_retained(&self, message: &Message) -> Option<PubAckReasonCode> {
        if !message.retain {
            return None;
        }
        let limits = &self.config.limits;
        let room = read(&self.retained).has_room_for(
            message,
            limits.max_retained_messages,
            limits.max_retained_bytes,
        );
        if room {
            return None;
        }
        metrics::counter!(m::RETAINED_REFUSED).increment(1);
        tracing::debug!(topic = %message.topic, "retained message refused: the node holds its maximum");
        Some(PubAckReasonCode::QuotaExceeded)
    }

    /// Keeps (or with an empty payload, clears) the retained message of a topic in memory:
    /// what a retained group applied (the group is its store), or a `$SYS` topic (kept in
    /// memory only).
    pub(crate) fn retain(&self, message: &Arc<Message>) {
        let topic = message.topic.as_str();
        if message.payload.is_empty() {
            write(&self.retained).remove(topic);
            return;
        }
        // Kept for long: its own allocation, not its packet's read buffer.
        let kept = Arc::new(message.detached());
        let expires_at = kept.expires_at;
        let replaced = write(&self.retained).insert(topic, kept);
        // One deadline per topic is enough: the one filed for the message replaced, if
        // earlier, comes first and files the next (`expire`).
        if let Some(at) = expires_at
            && replaced
                .and_then(|old| old.expires_at)
                .is_none_or(|earlier| earlier > at)
        {
            self.deadlines
                .file(at, super::deadlines::Due::Retained(message.topic.clone()));
        }
    }

    /// Retained messages whose topics match `filter` (a plain filter), unexpired at `now`.
    pub(crate) fn retained_for(&self, filter: &str, now: Timestamp) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        read(&self.retained).for_each_match_value(filter, |message| {
            if !message.is_expired(now) {
                found.push(Arc::clone(message));
            }
        });
        found
    }
}
