//! What the session group replicates: a [`WriteBatch`] encoded as bytes (a Raft command
//! carries it), and the store's session trees exported and imported whole (a snapshot of
//! the group carries them).
//!
//! The encoding of a batch: a version byte, then each write as a tag byte and its fields,
//! strings and values with a u32 length before them, integers big-endian. Decoding checks
//! every length and never panics.

use bytes::Bytes;
use shoal_codec::{MqttString, PacketId};
use shoal_session::Timestamp;

use crate::batch::{Op, ReceiptTag, WriteBatch};
use crate::error::{DecodeRecordError, StoreError};
use crate::record::{decode_state, encode_state};
use crate::shards::entry_shard;
use crate::store::Store;

const VERSION: u8 = 1;

/// Which store tree an exported entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionTree {
    /// Session records.
    Sessions = 0,
    /// Queues, subscriptions, receipts.
    Queues = 1,
    /// The expiry index.
    Expiry = 2,
    /// The dedup marks of tagged QoS 2 messages.
    Marks = 3,
}

/// One entry of the session trees: tree, key, value.
pub type TreeEntry = (SessionTree, Vec<u8>, Vec<u8>);

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
    }
    fn expiry(&mut self, at: Option<Timestamp>) {
        match at {
            Some(at) => {
                self.u8(1);
                self.u64(at.as_millis());
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeRecordError> {
        if self.0.len() < n {
            return Err(DecodeRecordError::Truncated {
                needed: n,
                remaining: self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeRecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeRecordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeRecordError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeRecordError> {
        let b = self.take(4)?;
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<MqttString, DecodeRecordError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| MqttString::try_from(s.to_owned()).ok())
            .ok_or(DecodeRecordError::Invalid {
                field: "string",
                value: b.len() as u64,
            })
    }
    fn expiry(&mut self) -> Result<Option<Timestamp>, DecodeRecordError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(Timestamp(self.u64()?))),
            v => Err(DecodeRecordError::Invalid {
                field: "expiry",
                value: u64::from(v),
            }),
        }
    }
    fn packet_id(&mut self) -> Result<PacketId, DecodeRecordError> {
        PacketId::new(self.u16()?).ok_or(DecodeRecordError::Invalid {
            field: "packet identifier",
            value: 0,
        })
    }
}

impl WriteBatch {
    /// The batch as bytes, for a replicated command ([`WriteBatch::decode`] reads it back).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u8(VERSION);
        for op in &self.ops {
            match op {
                Op::PutSession {
                    client_id,
                    value,
                    expires_at,
                } => {
                    w.u8(1);
                    w.bytes(client_id.as_bytes());
                    w.bytes(value);
                    w.expiry(*expires_at);
                }
                Op::RemoveSession { client_id } => {
                    w.u8(2);
                    w.bytes(client_id.as_bytes());
                }
                Op::Enqueue {
                    client_id,
                    seq,
                    value,
                    expires_at,
                } => {
                    w.u8(3);
                    w.bytes(client_id.as_bytes());
                    w.u64(*seq);
                    w.bytes(value);
                    w.expiry(*expires_at);
                }
                Op::SetOutboundState {
                    client_id,
                    seq,
                    state,
                } => {
                    w.u8(4);
                    w.bytes(client_id.as_bytes());
                    w.u64(*seq);
                    w.bytes(&encode_state(*state));
                }
                Op::RemoveOutbound { client_id, seq } => {
                    w.u8(5);
                    w.bytes(client_id.as_bytes());
                    w.u64(*seq);
                }
                Op::PutRetained {
                    topic,
                    value,
                    expires_at,
                } => {
                    w.u8(6);
                    w.bytes(topic.as_bytes());
                    w.bytes(value);
                    w.expiry(*expires_at);
                }
                Op::RemoveRetained { topic } => {
                    w.u8(7);
                    w.bytes(topic.as_bytes());
                }
                Op::PutReceipt {
                    client_id,
                    packet_id,
                    tag: None,
                } => {
                    w.u8(8);
                    w.bytes(client_id.as_bytes());
                    w.0.extend_from_slice(&packet_id.get().to_be_bytes());
                }
                Op::PutReceipt {
                    client_id,
                    packet_id,
                    tag: Some(tag),
                } => {
                    w.u8(12);
                    w.bytes(client_id.as_bytes());
                    w.0.extend_from_slice(&packet_id.get().to_be_bytes());
                    w.u64(tag.tag);
                    w.u8(u8::from(tag.done));
                }
                // Shard 0 as before shards were (an older node reads it).
                Op::PutMark {
                    tag,
                    name,
                    shard: 0,
                } => {
                    w.u8(13);
                    w.u64(*tag);
                    w.bytes(name);
                }
                Op::PutMark { tag, name, shard } => {
                    w.u8(15);
                    w.u64(*tag);
                    w.bytes(name);
                    w.u16(*shard);
                }
                Op::ReleaseTag { tag } => {
                    w.u8(14);
                    w.u64(*tag);
                }
                Op::RemoveReceipt {
                    client_id,
                    packet_id,
                } => {
                    w.u8(9);
                    w.bytes(client_id.as_bytes());
                    w.0.extend_from_slice(&packet_id.get().to_be_bytes());
                }
                Op::PutSubscription {
                    client_id,
                    filter,
                    value,
                } => {
                    w.u8(10);
                    w.bytes(client_id.as_bytes());
                    w.bytes(filter.as_bytes());
                    w.bytes(value);
                }
                Op::RemoveSubscription { client_id, filter } => {
                    w.u8(11);
                    w.bytes(client_id.as_bytes());
                    w.bytes(filter.as_bytes());
                }
            }
        }
        w.0
    }

    /// Reads a batch written by [`WriteBatch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeRecordError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeRecordError::UnsupportedVersion(version));
        }
        let mut batch = Self::new();
        while !r.0.is_empty() {
            let op = match r.u8()? {
                1 => Op::PutSession {
                    client_id: r.string()?,
                    value: Bytes::copy_from_slice(r.bytes()?),
                    expires_at: r.expiry()?,
                },
                2 => Op::RemoveSession {
                    client_id: r.string()?,
                },
                3 => Op::Enqueue {
                    client_id: r.string()?,
                    seq: r.u64()?,
                    value: Bytes::copy_from_slice(r.bytes()?),
                    expires_at: r.expiry()?,
                },
                4 => Op::SetOutboundState {
                    client_id: r.string()?,
                    seq: r.u64()?,
                    state: decode_state(r.bytes()?)?,
                },
                5 => Op::RemoveOutbound {
                    client_id: r.string()?,
                    seq: r.u64()?,
                },
                6 => Op::PutRetained {
                    topic: r.string()?,
                    value: Bytes::copy_from_slice(r.bytes()?),
                    expires_at: r.expiry()?,
                },
                7 => Op::RemoveRetained { topic: r.string()? },
                8 => Op::PutReceipt {
                    client_id: r.string()?,
                    packet_id: r.packet_id()?,
                    tag: None,
                },
                12 => Op::PutReceipt {
                    client_id: r.string()?,
                    packet_id: r.packet_id()?,
                    tag: Some(ReceiptTag {
                        tag: r.u64()?,
                        done: match r.u8()? {
                            0 => false,
                            1 => true,
                            v => {
                                return Err(DecodeRecordError::Invalid {
                                    field: "receipt state",
                                    value: u64::from(v),
                                });
                            }
                        },
                    }),
                },
                13 => Op::PutMark {
                    tag: r.u64()?,
                    name: r.bytes()?.to_vec(),
                    shard: 0,
                },
                15 => Op::PutMark {
                    tag: r.u64()?,
                    name: r.bytes()?.to_vec(),
                    shard: r.u16()?,
                },
                14 => Op::ReleaseTag { tag: r.u64()? },
                9 => Op::RemoveReceipt {
                    client_id: r.string()?,
                    packet_id: r.packet_id()?,
                },
                10 => {
                    let client_id = r.string()?;
                    let filter = r.string()?;
                    let value = r.bytes()?;
                    let value: [u8; 6] =
                        value.try_into().map_err(|_| DecodeRecordError::Invalid {
                            field: "subscription",
                            value: value.len() as u64,
                        })?;
                    Op::PutSubscription {
                        client_id,
                        filter,
                        value,
                    }
                }
                11 => Op::RemoveSubscription {
                    client_id: r.string()?,
                    filter: r.string()?,
                },
                tag => {
                    return Err(DecodeRecordError::Invalid {
                        field: "write",
                        value: u64::from(tag),
                    });
                }
            };
            batch.ops.push(op);
        }
        Ok(batch)
    }
}

impl Store {
    /// Every entry of the session trees (sessions, queues, the expiry index, the marks)
    /// that belongs to session shard `shard` of `shards` (`shards.rs`): a snapshot of that
    /// session group.
    pub fn export_sessions(&self, shard: u16, shards: u16) -> Result<Vec<TreeEntry>, StoreError> {
        let mut entries = Vec::new();
        for (tree, which) in self.session_trees() {
            for item in tree.iter() {
                let (key, value) = item?;
                if entry_shard(which, &key, &value, shards) == shard {
                    entries.push((which, key.to_vec(), value.to_vec()));
                }
            }
        }
        Ok(entries)
    }

    /// Replaces the entries of session shard `shard` of `shards` with `entries`
    /// (installing a snapshot of that session group); the other shards' stay. Follow with
    /// a flush.
    pub fn import_sessions(
        &self,
        entries: &[TreeEntry],
        shard: u16,
        shards: u16,
    ) -> Result<(), StoreError> {
        for (tree, which) in self.session_trees() {
            if shards <= 1 {
                tree.clear()?;
                continue;
            }
            for item in tree.iter() {
                let (key, value) = item?;
                if entry_shard(which, &key, &value, shards) == shard {
                    tree.remove(key)?;
                }
            }
        }
        for (which, key, value) in entries {
            let tree = match which {
                SessionTree::Sessions => &self.inner.sessions,
                SessionTree::Queues => &self.inner.queues,
                SessionTree::Expiry => &self.inner.expiry,
                SessionTree::Marks => &self.inner.marks,
            };
            tree.insert(key.as_slice(), value.as_slice())?;
        }
        Ok(())
    }

    fn session_trees(&self) -> [(&sled::Tree, SessionTree); 4] {
        [
            (&self.inner.sessions, SessionTree::Sessions),
            (&self.inner.queues, SessionTree::Queues),
            (&self.inner.expiry, SessionTree::Expiry),
            (&self.inner.marks, SessionTree::Marks),
        ]
    }
}

impl TryFrom<u8> for SessionTree {
    type Error = DecodeRecordError;

    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            0 => Ok(Self::Sessions),
            1 => Ok(Self::Queues),
            2 => Ok(Self::Expiry),
            3 => Ok(Self::Marks),
            v => Err(DecodeRecordError::Invalid {
                field: "tree",
                value: u64::from(v),
            }),
        }
    }
}
