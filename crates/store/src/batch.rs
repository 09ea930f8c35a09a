//! `WriteBatch`: many writes built without touching sled, applied by one call.
//!
//! The records are encoded when they are added, so `Store::apply` does no encoding and
//! cannot fail on a bad record half way. A batch is not a transaction: each write is
//! applied in order, as the single-record methods would, and if sled fails part way the
//! writes before stay. Durability comes from the flush that follows, as always. (sled's
//! own `Batch` would make one tree's writes atomic, but it takes a process-wide write lock
//! that stalls every other writer meanwhile; sequential writes are in memory and cost the
//! same per write.)
//!
//! A batch is also the shape of a replicated command: encoded records in order, applied the
//! same way on every replica.

use bytes::Bytes;
use shoal_codec::{MqttString, PacketId};
use shoal_session::{
    Message, OutboundMessage, OutboundState, SessionRecord, SubscriptionRecord, Timestamp,
};

use crate::error::StoreError;
use crate::keys::{Kind, queue_key, receipt_key, state_key, subscription_key};
use crate::record::{encode_outbound, encode_retained, encode_session, encode_subscription};
use crate::store::Store;

/// Writes to apply together with [`Store::apply`].
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    /// The owner epochs of the sessions it writes (`fence`): a replicated apply refuses
    /// the batch if a newer owner has written since. The store itself ignores them.
    fences: Vec<(MqttString, u64)>,
}

/// One encoded write.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    PutSession {
        client_id: MqttString,
        value: Bytes,
        expires_at: Option<Timestamp>,
    },
    RemoveSession {
        client_id: MqttString,
    },
    Enqueue {
        client_id: MqttString,
        seq: u64,
        value: Bytes,
        expires_at: Option<Timestamp>,
    },
    SetOutboundState {
        client_id: MqttString,
        seq: u64,
        state: OutboundState,
    },
    RemoveOutbound {
        client_id: MqttString,
        seq: u64,
    },
    PutRetained {
        topic: MqttString,
        value: Bytes,
        expires_at: Option<Timestamp>,
    },
    RemoveRetained {
        topic: MqttString,
    },
    PutReceipt {
        client_id: MqttString,
        packet_id: PacketId,
        tag: Option<ReceiptTag>,
    },
    PutMark {
        tag: u64,
        name: Vec<u8>,
        /// The session shard it is written through (`shards.rs`), kept in its value.
        shard: u16,
    },
    ReleaseTag {
        tag: u64,
    },
    RemoveReceipt {
        client_id: MqttString,
        packet_id: PacketId,
    },
    PutSubscription {
        client_id: MqttString,
        filter: MqttString,
        value: [u8; 6],
    },
    RemoveSubscription {
        client_id: MqttString,
        filter: MqttString,
    },
}

/// The dedup tag of a QoS 2 message that went to other nodes, kept with its receipt: a
/// resend carries the same tag, and a recipient that holds a mark of it does not take it
/// again (docs/ARCHITECTURE.md, "QoS 2 across nodes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptTag {
    /// The tag: random, never reused.
    pub tag: u64,
    /// Whether every recipient has its copy (the receipt proper); `false` while they are
    /// being given it (a resend is dispatched again, under the same tag).
    pub done: bool,
}

impl ReceiptTag {
    /// The stored value of a tagged receipt.
    pub(crate) fn encode(self) -> [u8; 9] {
        let mut value = [0; 9];
        value[0] = u8::from(self.done);
        value[1..].copy_from_slice(&self.tag.to_be_bytes());
        value
    }

    /// Reads a receipt's stored value: `None` for an untagged receipt (empty value) or a
    /// value that is not a tag.
    pub(crate) fn decode(value: &[u8]) -> Option<Self> {
        let (&done, tag) = value.split_first()?;
        Some(Self {
            tag: u64::from_be_bytes(tag.try_into().ok()?),
            done: done != 0,
        })
    }
}

/// The key of a mark: tag, then the recipient's name.
pub(crate) fn mark_key(tag: u64, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len());
    key.extend_from_slice(&tag.to_be_bytes());
    key.extend_from_slice(name);
    key
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// About how many bytes the batch takes encoded ([`encode`](Self::encode)) with its
    /// fences: what a proposal's size limit counts.
    pub fn weight(&self) -> usize {
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::PutSession {
                    client_id, value, ..
                }
                | Op::Enqueue {
                    client_id, value, ..
                } => client_id.len() + value.len() + 24,
                Op::PutRetained { topic, value, .. } => topic.len() + value.len() + 24,
                Op::PutMark { name, .. } => name.len() + 24,
                Op::RemoveSession { client_id }
                | Op::SetOutboundState { client_id, .. }
                | Op::RemoveOutbound { client_id, .. }
                | Op::PutReceipt { client_id, .. }
                | Op::RemoveReceipt { client_id, .. } => client_id.len() + 24,
                Op::PutSubscription {
                    client_id, filter, ..
                }
                | Op::RemoveSubscription { client_id, filter } => {
                    client_id.len() + filter.len() + 24
                }
                Op::RemoveRetained { topic } => topic.len() + 16,
                Op::ReleaseTag { .. } => 16,
            })
            .sum();
        let fences: usize = self.fences.iter().map(|(c, _)| c.len() + 16).sum();
        ops + fences
    }

    /// Removes every write, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.fences.clear();
    }

    /// Notes that the writes for `client_id` come from its owner of `epoch` (once per
    /// client id).
    pub fn fence(&mut self, client_id: &MqttString, epoch: u64) {
        if !self.fences.iter().any(|(c, _)| c == client_id) {
            self.fences.push((client_id.clone(), epoch));
        }
    }

    /// The owner epochs noted with [`fence`](Self::fence).
    pub fn fences(&self) -> &[(MqttString, u64)] {
        &self.fences
    }

    /// [`Store::put_session`], encoded now.
    pub fn put_session(&mut self, session: &SessionRecord) -> Result<&mut Self, StoreError> {
        let value = encode_session(session).map_err(|source| StoreError::Encode {
            what: "session",
            source,
        })?;
        self.ops.push(Op::PutSession {
            client_id: session.client_id.clone(),
            value: value.freeze(),
            expires_at: session.expires_at(),
        });
        Ok(self)
    }

    /// [`Store::remove_session`].
    pub fn remove_session(&mut self, client_id: &MqttString) -> &mut Self {
        self.ops.push(Op::RemoveSession {
            client_id: client_id.clone(),
        });
        self
    }

    /// [`Store::enqueue`], encoded now.
    pub fn enqueue(
        &mut self,
        client_id: &MqttString,
        seq: u64,
        message: &OutboundMessage,
    ) -> Result<&mut Self, StoreError> {
        let value = encode_outbound(message).map_err(|source| StoreError::Encode {
            what: "outbound message",
            source,
        })?;
        self.ops.push(Op::Enqueue {
            client_id: client_id.clone(),
            seq,
            value: value.freeze(),
            expires_at: message.message.expires_at,
        });
        Ok(self)
    }

    /// [`Store::set_outbound_state`].
    pub fn set_outbound_state(
        &mut self,
        client_id: &MqttString,
        seq: u64,
        state: OutboundState,
    ) -> &mut Self {
        self.ops.push(Op::SetOutboundState {
            client_id: client_id.clone(),
            seq,
            state,
        });
        self
    }

    /// [`Store::remove_outbound`].
    pub fn remove_outbound(&mut self, client_id: &MqttString, seq: u64) -> &mut Self {
        self.ops.push(Op::RemoveOutbound {
            client_id: client_id.clone(),
            seq,
        });
        self
    }

    /// [`Store::put_retained`], encoded now.
    pub fn put_retained(&mut self, message: &Message) -> Result<&mut Self, StoreError> {
        let value = encode_retained(message).map_err(|source| StoreError::Encode {
            what: "retained message",
            source,
        })?;
        self.ops.push(Op::PutRetained {
            topic: message.topic.clone(),
            value: value.freeze(),
            expires_at: message.expires_at,
        });
        Ok(self)
    }

    /// Records a QoS 2 receipt of `client_id`: packet identifier `packet_id` was received
    /// and its PUBREL has not come yet. Loaded back into the session's `incoming_qos2`.
    pub fn put_receipt(&mut self, client_id: &MqttString, packet_id: PacketId) -> &mut Self {
        self.ops.push(Op::PutReceipt {
            client_id: client_id.clone(),
            packet_id,
            tag: None,
        });
        self
    }

    /// A QoS 2 receipt with the dedup tag of its message ([`ReceiptTag`]). A receipt not
    /// `done` is not loaded into `incoming_qos2`: a resend is dispatched again (under the
    /// tag); [`Store::load_tags`] reads the tags back.
    pub fn put_tagged_receipt(
        &mut self,
        client_id: &MqttString,
        packet_id: PacketId,
        tag: ReceiptTag,
    ) -> &mut Self {
        self.ops.push(Op::PutReceipt {
            client_id: client_id.clone(),
            packet_id,
            tag: Some(tag),
        });
        self
    }

    /// Notes that the recipient `name` (a session's client id, or a shared group's name
    /// behind a NUL, which no client id holds) took its copy of the message tagged `tag`.
    pub fn put_mark(&mut self, tag: u64, name: &[u8]) -> &mut Self {
        self.ops.push(Op::PutMark {
            tag,
            name: name.to_vec(),
            shard: 0,
        });
        self
    }

    /// Removes every mark of `tag`: its publisher released the message (PUBREL), so no
    /// resend of it can come.
    pub fn release_tag(&mut self, tag: u64) -> &mut Self {
        self.ops.push(Op::ReleaseTag { tag });
        self
    }

    /// Records a subscription of `client_id` (replacing one with the same filter); loaded
    /// back into the session record's `subscriptions`.
    pub fn put_subscription(
        &mut self,
        client_id: &MqttString,
        subscription: &SubscriptionRecord,
    ) -> &mut Self {
        self.ops.push(Op::PutSubscription {
            client_id: client_id.clone(),
            filter: subscription.filter.clone(),
            value: encode_subscription(subscription),
        });
        self
    }

    /// Removes the subscription of `client_id` to `filter`.
    pub fn remove_subscription(
        &mut self,
        client_id: &MqttString,
        filter: &MqttString,
    ) -> &mut Self {
        self.ops.push(Op::RemoveSubscription {
            client_id: client_id.clone(),
            filter: filter.clone(),
        });
        self
    }

    /// Removes a QoS 2 receipt (its PUBREL came).
    pub fn remove_receipt(&mut self, client_id: &MqttString, packet_id: PacketId) -> &mut Self {
        self.ops.push(Op::RemoveReceipt {
            client_id: client_id.clone(),
            packet_id,
        });
        self
    }

    /// [`Store::remove_retained`].
    pub fn remove_retained(&mut self, topic: &MqttString) -> &mut Self {
        self.ops.push(Op::RemoveRetained {
            topic: topic.clone(),
        });
        self
    }
}

impl Store {
    /// Applies the writes of `batch` in order. Not atomic: if sled fails, the writes
    /// before the failing one stay applied. Follow with [`flush`](Self::flush) to make
    /// them durable.
    pub fn apply(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.writable()?;
        let applied = self.apply_ops(batch);
        if applied.is_err() {
            self.fail();
        }
        applied
    }

    fn apply_ops(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        for op in &batch.ops {
            match op {
                Op::PutSession {
                    client_id,
                    value,
                    expires_at,
                } => self.write_session(client_id, value, *expires_at)?,
                Op::RemoveSession { client_id } => {
                    self.remove_session(client_id)?;
                }
                Op::Enqueue {
                    client_id,
                    seq,
                    value,
                    expires_at,
                } => self.write_outbound(client_id, *seq, value, *expires_at)?,
                Op::SetOutboundState {
                    client_id,
                    seq,
                    state,
                } => {
                    self.set_outbound_state(client_id, *seq, *state)?;
                }
                Op::RemoveOutbound { client_id, seq } => {
                    self.remove_outbound(client_id, *seq)?;
                }
                Op::PutRetained {
                    topic,
                    value,
                    expires_at,
                } => self.write_retained(topic, value, *expires_at)?,
                Op::RemoveRetained { topic } => {
                    self.remove_retained(topic)?;
                }
                Op::PutReceipt {
                    client_id,
                    packet_id,
                    tag,
                } => {
                    let key = receipt_key(client_id, packet_id.get());
                    match tag {
                        None => self.inner.queues.insert(key, &[][..])?,
                        Some(tag) => self.inner.queues.insert(key, &tag.encode()[..])?,
                    };
                }
                Op::PutMark { tag, name, shard } => {
                    self.inner
                        .marks
                        .insert(mark_key(*tag, name), &shard.to_be_bytes()[..])?;
                }
                Op::ReleaseTag { tag } => {
                    for item in self.inner.marks.scan_prefix(tag.to_be_bytes()) {
                        let (key, _) = item?;
                        self.inner.marks.remove(key)?;
                    }
                }
                Op::RemoveReceipt {
                    client_id,
                    packet_id,
                } => {
                    self.inner
                        .queues
                        .remove(receipt_key(client_id, packet_id.get()))?;
                }
                Op::PutSubscription {
                    client_id,
                    filter,
                    value,
                } => {
                    let key = subscription_key(client_id, filter);
                    self.inner.queues.insert(key, &value[..])?;
                }
                Op::RemoveSubscription { client_id, filter } => {
                    self.inner
                        .queues
                        .remove(subscription_key(client_id, filter))?;
                }
            }
        }
        Ok(())
    }

    /// Applies `batch` so that its queue writes (messages entering queues, QoS 2 receipts)
    /// happen as one atomic step, also across a crash: either all of them are in the store
    /// afterwards or none. That is what makes a QoS 2 message exactly once across a crash:
    /// the publisher's receipt and the copies it queued for subscribers go together, so a
    /// resend after a restart is either known (not delivered again) or delivered for the
    /// first time.
    ///
    /// The other writes are applied first, in order, as [`apply`](Self::apply) does, and
    /// so are the expiry index entries of the queued messages (an index entry without its
    /// record is dropped later, see `remove_expired`). Only enqueues of new sequence numbers
    /// may be in the atomic part (a message's first write): their keys hold nothing yet.
    /// sled's batch takes a lock that stalls other writers meanwhile: use it only where the
    /// atomicity is needed.
    pub fn apply_atomic(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut queues = sled::Batch::default();
        let mut rest = WriteBatch::new();
        for op in &batch.ops {
            match op {
                Op::Enqueue {
                    client_id,
                    seq,
                    value,
                    expires_at,
                } => {
                    let key = queue_key(client_id, *seq);
                    self.index_add(Kind::Queued, &key, *expires_at)?;
                    queues.remove(state_key(&key));
                    queues.insert(key, value.as_ref());
                }
                Op::PutReceipt {
                    client_id,
                    packet_id,
                    tag,
                } => {
                    let key = receipt_key(client_id, packet_id.get());
                    match tag {
                        None => queues.insert(key, &[][..]),
                        Some(tag) => queues.insert(key, &tag.encode()[..]),
                    }
                }
                Op::RemoveReceipt {
                    client_id,
                    packet_id,
                } => queues.remove(receipt_key(client_id, packet_id.get())),
                other => rest.ops.push(other.clone()),
            }
        }
        self.apply(&rest)?;
        if let Err(e) = self.inner.queues.apply_batch(queues) {
            self.fail();
            return Err(e.into());
        }
        Ok(())
    }
}
