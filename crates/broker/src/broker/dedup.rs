//! QoS 2 across nodes: the dedup tags of messages that go to other nodes, and the marks
//! their recipients keep (docs/ARCHITECTURE.md, "QoS 2 across nodes").
//!
//! A QoS 2 message of a stored session that goes to another node (or, with session shards,
//! any QoS 2 message of a stored session: its copies may be in other shards than its
//! receipt, which are not written in one atomic step) gets a random tag. Its
//! receipt is written with the tag, as pending, before any copy leaves: should this node
//! die before the receipt is done, the node where the publisher resends it reads the
//! pending receipt and dispatches the resend under the same tag. Every recipient that
//! takes a copy under a tag notes a mark of it (with the copy, in the session group, for a
//! stored session; in memory, for a session of this connection only); a copy under a tag
//! the recipient holds a mark of is not taken again. The publisher's PUBREL releases the
//! tag, and every mark of it goes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_codec::QoS;
use shoal_session::{Message, Session};
use shoal_store::WriteBatch;

use super::{Broker, Receipts, lock};
use crate::slot::SessionSlot;

/// How long a mark is kept in memory: the marks of sessions that are not stored (only
/// here), and of stored ones until their write is applied (then the store has it).
const KEEP: Duration = Duration::from_secs(300);
/// The most marks kept in memory: the oldest go first.
const MOST: usize = 200_000;

/// The marks of recent deliveries under a tag, in memory.
#[derive(Debug, Default)]
pub(crate) struct RecentMarks {
    /// By tag and recipient: the session group write that carries the mark, if any.
    marks: HashMap<(u64, Box<[u8]>), Option<u64>>,
    /// The same, oldest first, with when they were made.
    order: VecDeque<(Instant, u64, Box<[u8]>)>,
}

impl RecentMarks {
    fn prune(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if self.order.len() <= MOST && now.duration_since(*at) < KEEP {
                break;
            }
            if let Some((_, tag, name)) = self.order.pop_front() {
                self.marks.remove(&(tag, name));
            }
        }
    }
}

/// Makes tags: random, and never the same twice in a process.
#[derive(Debug, Default)]
pub(crate) struct Tags {
    keys: RandomState,
    count: AtomicU64,
}

impl Tags {
    fn next(&self) -> u64 {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        self.keys.hash_one(n).max(1)
    }
}

/// The name a recipient's marks go under: a session's client id, or a shared group's name
/// behind a NUL (no client id holds one, [MQTT-1.5.4-2]), since a resend may fall to
/// another member of the group.
pub(crate) fn mark_name(client_id: &str, group: Option<&str>) -> Box<[u8]> {
    match group {
        None => client_id.as_bytes().into(),
        Some(group) => {
            let mut name = Vec::with_capacity(1 + group.len());
            name.push(0);
            name.extend_from_slice(group.as_bytes());
            name.into()
        }
    }
}

impl Broker {
    /// A new dedup tag.
    pub(crate) fn new_tag(&self) -> u64 {
        self.tags.next()
    }

    /// Whether a QoS 2 message of a stored session should be tagged: it goes to another
    /// node, or the sessions are sharded.
    pub(crate) fn wants_tag(&self, message: &Message) -> bool {
        if message.qos != QoS::ExactlyOnce || message.topic.starts_with('$') {
            return false;
        }
        let Some(cluster) = self.cluster() else {
            return false;
        };
        // With session shards, its copies on this node too may be in other shards than
        // its receipt: every QoS 2 message of a stored session is tagged.
        cluster.session_shards() > 1
            || (cluster.has_routes() && !cluster.targets(&message.topic).nodes.is_empty())
    }

    /// Whether the cluster's sessions are in more than one session shard.
    pub(crate) fn sharded(&self) -> bool {
        self.cluster().is_some_and(|c| c.session_shards() > 1)
    }

    /// Whether `name` took a copy under `tag` already; if so, what its acceptance waits for
    /// (the write of the copy, if it is not known to be done).
    pub(crate) fn marked(&self, tag: u64, name: &[u8]) -> Option<Receipts> {
        if let Some(write) = lock(&self.marks).marks.get(&(tag, Box::from(name))) {
            return Some(Receipts {
                writes: write.map(|w| (w, w)),
                ..Receipts::default()
            });
        }
        match self.store.has_mark(tag, name) {
            Ok(true) => Some(Receipts::default()),
            Ok(false) => None,
            Err(e) => {
                self.store_failed(&e);
                Some(Receipts {
                    failed: true,
                    ..Receipts::default()
                })
            }
        }
    }

    /// Adds the mark of `name`'s copy under `tag` to `batch`, the write of the session
    /// `slot` that takes the copy: a stored session's mark is replicated with its copy. A
    /// session that is not stored has its marks in memory only (it ends with this node).
    pub(crate) fn add_mark(
        &self,
        slot: &SessionSlot,
        session: &Session,
        batch: &mut WriteBatch,
        tag: u64,
        name: &[u8],
    ) {
        if session.is_stored() && !slot.is_retired() {
            batch.fence(&slot.client_id, slot.epoch());
            batch.put_mark(tag, name);
        }
    }

    /// Notes that `name` took its copy under `tag`, with the session group write `write`.
    pub(crate) fn remember_mark(&self, tag: u64, name: Box<[u8]>, write: Option<u64>) {
        let now = Instant::now();
        let mut marks = lock(&self.marks);
        marks.prune(now);
        if marks.marks.insert((tag, name.clone()), write).is_none() {
            marks.order.push_back((now, tag, name));
        }
    }
}
