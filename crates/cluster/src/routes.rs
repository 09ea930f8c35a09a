//! Routes: the node's copy of the whole route index for lookups ([`RemoteRoutes`], fed by
//! the route groups' applies), and the writer of this node's own routes ([`RouteWriter`]),
//! which batches route changes per shard and tells SUBACKs when their route is usable
//! everywhere.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use shoal_codec::{QoS, SubscriptionOptions};
use shoal_topic::{Recipients, SubscriptionIndex};
use tokio::sync::{Notify, oneshot};

use crate::state::RouteChange;
use crate::type_config::RaftNodeId;

/// The shard of `key` among `shards`: FNV-1a, fixed, so that every node and every build
/// agrees.
pub fn shard_of(key: &str, shards: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u16
}

/// Where a message published on this node goes beyond it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RemoteTargets {
    /// The other nodes to forward it to, each once, ascending, with the shared groups whose
    /// delivery falls to it.
    pub nodes: Vec<(RaftNodeId, Vec<String>)>,
    /// The shared groups whose delivery falls to this node (`$share/name/filter`). Groups
    /// with no route at all (a single node, or a route still pending) are not listed:
    /// local dispatch delivers to every local group but those picked elsewhere.
    pub elsewhere: Vec<String>,
}

/// Every route of the cluster, as this node has applied them: a trie of filters whose
/// subscribers are node ids.
pub(crate) struct RemoteRoutes {
    own: RaftNodeId,
    index: RwLock<SubscriptionIndex<RaftNodeId>>,
    known: Mutex<HashMap<String, BTreeSet<RaftNodeId>>>,
    count: std::sync::atomic::AtomicUsize,
}

impl RemoteRoutes {
    pub(crate) fn new(own: RaftNodeId) -> Self {
        Self {
            own,
            index: RwLock::new(SubscriptionIndex::new()),
            known: Mutex::new(HashMap::new()),
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// `filter` now has subscribers on `nodes` (empty: on none).
    pub(crate) fn set(&self, filter: &str, nodes: &BTreeSet<RaftNodeId>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let old = known.get(filter).cloned().unwrap_or_default();
        if &old == nodes {
            return;
        }
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        for node in old.difference(nodes) {
            index.remove(*node, filter);
        }
        for node in nodes.difference(&old) {
            if let Err(e) = index.insert(
                *node,
                filter,
                SubscriptionOptions::with_qos(QoS::ExactlyOnce),
                None,
            ) {
                tracing::warn!(filter, error = %e, "a route's filter is not valid; ignored");
            }
        }
        if nodes.is_empty() {
            known.remove(filter);
        } else {
            known.insert(filter.to_owned(), nodes.clone());
        }
        self.count
            .store(known.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Where a message on `topic` goes beyond this node. `cursor` turns the pick of each
    /// shared group's node.
    pub(crate) fn targets(&self, topic: &str, cursor: usize) -> RemoteTargets {
        thread_local! {
            // Reused by every lookup on this thread: no allocation once grown.
            static RECIPIENTS: std::cell::RefCell<Recipients<RaftNodeId>> =
                std::cell::RefCell::new(Recipients::new());
        }
        RECIPIENTS.with_borrow_mut(|recipients| self.targets_into(topic, cursor, recipients))
    }

    fn targets_into(
        &self,
        topic: &str,
        cursor: usize,
        recipients: &mut Recipients<RaftNodeId>,
    ) -> RemoteTargets {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .match_topic(topic, None, recipients);
        let mut out = RemoteTargets::default();
        let mut nodes: Vec<(RaftNodeId, Vec<String>)> = recipients
            .subscribers()
            .map(|r| r.subscriber)
            .filter(|n| *n != self.own)
            .map(|n| (n, Vec::new()))
            .collect();
        for group in recipients.shared_groups() {
            let members = group.members;
            let pick = members[cursor % members.len()].subscriber;
            let name = group.group.as_str().to_owned();
            if pick == self.own {
                continue;
            }
            out.elsewhere.push(name.clone());
            match nodes.iter_mut().find(|(n, _)| *n == pick) {
                Some((_, shared)) => shared.push(name),
                None => nodes.push((pick, vec![name])),
            }
        }
        nodes.sort_by_key(|(n, _)| *n);
        out.nodes = nodes;
        out
    }

    /// How many filters have a route (no lock: read on every publication).
    pub(crate) fn len(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What waits for a route: resolved with `true` once the route is usable everywhere.
pub type RouteWait = oneshot::Receiver<bool>;

/// The writer of this node's routes. Subscriptions and unsubscriptions only queue the
/// latest wish per filter; the writer task takes them all, one Raft entry per shard, then
/// waits until every member has applied them, then answers the SUBACKs waiting.
#[derive(Default)]
pub(crate) struct RouteWriter {
    state: Mutex<WriterState>,
    pub(crate) wake: Notify,
}

#[derive(Default)]
struct WriterState {
    /// The latest wish per filter not yet written: present or not.
    queued: HashMap<String, bool>,
    /// Filters being written now.
    in_flight: HashSet<String>,
    /// SUBACKs waiting for a filter's route.
    waiting: HashMap<String, Vec<oneshot::Sender<bool>>>,
    /// Filters this node has written as present (and not removed since).
    live: HashSet<String>,
    /// The node is leaving: nothing is written any more.
    stopped: bool,
}

impl RouteWriter {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node has its first local subscriber of `filter`: the route must be written;
    /// the answer comes once it is usable everywhere.
    pub(crate) fn add(&self, filter: &str) -> RouteWait {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            state.queued.insert(filter.to_owned(), true);
            state.waiting.entry(filter.to_owned()).or_default().push(tx);
        }
        self.wake.notify_one();
        rx
    }

    /// Another local subscriber of `filter`: if its route is still pending, it waits for
    /// it too (`None`: the route is usable already).
    pub(crate) fn pending(&self, filter: &str) -> Option<RouteWait> {
        let mut state = self.lock();
        let pending = state.queued.get(filter) == Some(&true) || state.in_flight.contains(filter);
        if !pending {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        state.waiting.entry(filter.to_owned()).or_default().push(tx);
        Some(rx)
    }

    /// This node lost its last local subscriber of `filter`.
    pub(crate) fn remove(&self, filter: &str) {
        self.lock().queued.insert(filter.to_owned(), false);
        self.wake.notify_one();
    }

    /// Whether nothing is queued or being written (every change so far is applied on
    /// every live node, or given up).
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.lock();
        state.queued.is_empty() && state.in_flight.is_empty()
    }

    /// The route of `filter` to this node disappeared (the node was declared dead and came
    /// back): write it again if this node still wants it.
    pub(crate) fn restore(&self, filter: &str) {
        let restored = {
            let mut state = self.lock();
            let wanted = !state.stopped
                && state.live.contains(filter)
                && !state.queued.contains_key(filter)
                && !state.in_flight.contains(filter);
            if wanted {
                state.queued.insert(filter.to_owned(), true);
            }
            wanted
        };
        if restored {
            tracing::info!(
                filter,
                "a route of this node was removed while it still has subscribers; writing it again"
            );
            self.wake.notify_one();
        }
    }

    /// Stops writing: the node is leaving, its routes are removed for it.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        state.queued.clear();
        state.live.clear();
    }

    /// Takes every queued change (at most `max`), marking them in flight.
    pub(crate) fn take(&self, max: usize) -> Vec<RouteChange> {
        let mut state = self.lock();
        if state.stopped {
            state.queued.clear();
            return Vec::new();
        }
        let filters: Vec<String> = state.queued.keys().take(max).cloned().collect();
        let mut changes = Vec::with_capacity(filters.len());
        for filter in filters {
            let present = state.queued.remove(&filter).unwrap_or(false);
            state.in_flight.insert(filter.clone());
            changes.push(RouteChange { filter, present });
        }
        changes
    }

    /// The changes were written and applied everywhere (`ok`), or could not be: then they
    /// are queued again unless a newer wish replaced them, and their SUBACKs keep waiting.
    pub(crate) fn finish(&self, changes: Vec<RouteChange>, ok: bool) {
        let mut state = self.lock();
        for change in changes {
            state.in_flight.remove(&change.filter);
            if ok {
                if change.present {
                    state.live.insert(change.filter.clone());
                } else {
                    state.live.remove(&change.filter);
                }
                if !state.queued.contains_key(&change.filter)
                    && let Some(waiters) = state.waiting.remove(&change.filter)
                {
                    for waiter in waiters {
                        let _ = waiter.send(true);
                    }
                }
            } else {
                state.queued.entry(change.filter).or_insert(change.present);
            }
        }
        let again = !state.queued.is_empty();
        drop(state);
        if again {
            self.wake.notify_one();
        }
    }

    /// Filters this node has routes for, as written.
    pub(crate) fn live(&self) -> Vec<String> {
        self.lock().live.iter().cloned().collect()
    }

    /// Forgets that `filter` was written (at start: a route found in the table that this
    /// node is about to remove or keep).
    pub(crate) fn mark_live(&self, filter: &str) {
        self.lock().live.insert(filter.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("a/b", 4), shard_of("a/b", 4));
        for key in ["", "a", "sensors/+/temp", "$share/g/x"] {
            assert!(shard_of(key, 3) < 3);
        }
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; fixed forever, since nodes must agree.
        assert_eq!(
            shard_of("a", 1000),
            (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u16
        );
    }

    #[test]
    fn a_second_subscriber_waits_for_a_pending_route_and_both_are_answered() {
        let writer = RouteWriter::default();
        let mut first = writer.add("a/+");
        let mut second = writer.pending("a/+").expect("pending");
        let changes = writer.take(100);
        assert_eq!(changes.len(), 1);
        assert!(writer.pending("a/+").is_some(), "in flight is pending too");
        writer.finish(changes, true);
        assert_eq!(first.try_recv(), Ok(true));
        assert_eq!(second.try_recv(), Ok(true));
        assert!(writer.pending("a/+").is_none());
    }

    #[test]
    fn a_failed_write_is_queued_again_and_its_subscribers_keep_waiting() {
        let writer = RouteWriter::default();
        let mut wait = writer.add("x");
        let changes = writer.take(100);
        writer.finish(changes, false);
        assert!(wait.try_recv().is_err());
        let again = writer.take(100);
        assert_eq!(again[0].filter, "x");
        writer.finish(again, true);
        assert_eq!(wait.try_recv(), Ok(true));
    }

    #[test]
    fn shared_groups_go_to_one_node_each() {
        let routes = RemoteRoutes::new(1);
        routes.set("$share/g/t", &BTreeSet::from([1, 2, 3]));
        routes.set("t", &BTreeSet::from([2]));
        let mut picked = Vec::new();
        for cursor in 0..3 {
            let targets = routes.targets("t", cursor);
            let to_2 = targets
                .nodes
                .iter()
                .find(|(n, _)| *n == 2)
                .expect("plain route");
            let shared_here = targets.elsewhere.is_empty();
            picked.push((shared_here, to_2.1.clone(), targets.nodes.len()));
        }
        // Cursor 0 picks node 1 (this one): nothing is sent for the group.
        assert_eq!(picked[0], (true, vec![], 1));
        assert_eq!(picked[1], (false, vec!["$share/g/t".to_owned()], 1));
        assert!(!picked[2].0);
        assert_eq!(picked[2].2, 2);
    }
}
