//! Draining: a node that stops in order (SIGTERM) and stays a member, to come back with
//! its data (its persistent sessions are on its own disk until sessions are replicated).
//!
//! 1. [`Cluster::hand_off_all`]: the node marks itself draining (its `Campaign` answers
//!    `draining`, so no balancer hands a group back to it, and its own balancer stops),
//!    then hands every group it leads (route and retained shards, and meta) to another up
//!    voter, all at once, within a deadline. The successor of a shard is its preferred
//!    leader among the other up voters (where the balancers settle once this node is
//!    gone) if that one has the whole log, else the voter furthest along.
//! 2. The caller disconnects its clients: clean sessions end, and their routes go.
//! 3. [`Cluster::depart`]: the node waits until those route removals are written and
//!    applied by every live node (no publisher forwards to it for them afterwards), and
//!    until the forwarded publications already on their way have their answers.
//!
//! What it does not do: remove the routes of its persistent sessions or declare itself
//! down. Those sessions live on its disk and it comes back with them; a QoS 1/2 message
//! for one of them published while the node is away is refused to its publisher (PUBACK
//! or PUBREC 0x80: nothing accepts the copy), not acknowledged and dropped, which is what
//! removing the routes at once would do. If the node stays away longer than the failure
//! timeout, the failure detector declares it down and removes its routes, as after a
//! crash (and from then on such messages are acknowledged without reaching those
//! sessions, until sessions are replicated).
//!
//! Moving meta's leadership keeps every node's membership lease (`lease.rs`): the handoff
//! stops meta's heartbeats for about two election timeouts and a heartbeat, then the
//! successor's vote requests and appends reach every node, and the config keeps three
//! election timeouts under the lease (half the failure timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::group_id::GroupId;
use crate::handoff::HandoffError;
use crate::node::{Cluster, Inner};
use crate::type_config::RaftNodeId;

/// How long the forwarding streams must be idle before a draining node stops.
const QUIET: Duration = Duration::from_millis(100);
/// The longest it waits for them to be idle.
const QUIET_MAX: Duration = Duration::from_millis(500);
/// How long a draining node waits before it tries the handoffs that failed again.
const RETRY: Duration = Duration::from_millis(200);
/// How often it looks whether its route writer is done.
const POLL: Duration = Duration::from_millis(20);

/// Whether this node is draining, and the forwarded publications it is taking.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// Handing its leaderships over, or gone: it takes none.
    draining: AtomicBool,
    /// It left the cluster: nothing more to hand over or wait for.
    left: AtomicBool,
    /// Forwarded batches being delivered now.
    taking: AtomicUsize,
    /// Forwarded batches received since the node started.
    taken: AtomicU64,
}

impl Drain {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The node left the cluster: it is no member any more.
    pub(crate) fn left(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.left.store(true, Ordering::SeqCst);
    }

    fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    /// A forwarded batch arrived; it is being delivered (and answered) while the guard
    /// lives.
    pub(crate) fn taking(self: &Arc<Self>) -> Taking {
        self.taken.fetch_add(1, Ordering::SeqCst);
        self.taking.fetch_add(1, Ordering::SeqCst);
        Taking(Arc::clone(self))
    }

    /// Waits until no forwarded batch has been delivered or received for `QUIET`, at
    /// most `QUIET_MAX` (publishers elsewhere may go on forwarding to its persistent
    /// sessions).
    async fn quiet(&self) {
        let deadline = tokio::time::Instant::now() + QUIET_MAX;
        loop {
            let seen = self.taken.load(Ordering::SeqCst);
            tokio::time::sleep(QUIET).await;
            let idle = self.taking.load(Ordering::SeqCst) == 0
                && self.taken.load(Ordering::SeqCst) == seen;
            if idle || tokio::time::Instant::now() >= deadline {
                return;
            }
        }
    }
}

/// A forwarded batch being delivered.
pub(crate) struct Taking(Arc<Drain>);

impl Drop for Taking {
    fn drop(&mut self) {
        self.0.taking.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The successor of `group` among `candidates` (other up voters, sorted, with how far
/// each has the log), for a node that leads it up to `last`: the preferred leader (see
/// `handoff.rs`) if it has the whole log, else the one furthest along.
fn successor(
    ordinal: Option<usize>,
    candidates: &[(RaftNodeId, u64)],
    last: u64,
) -> Option<RaftNodeId> {
    let ids: Vec<RaftNodeId> = candidates.iter().map(|(id, _)| *id).collect();
    if let Some(wanted) = ordinal.and_then(|o| crate::handoff::preferred(o, &ids))
        && candidates
            .iter()
            .any(|(id, matched)| *id == wanted && *matched >= last)
    {
        return Some(wanted);
    }
    // The furthest along; the lowest id among equals.
    candidates
        .iter()
        .max_by_key(|(id, matched)| (*matched, std::cmp::Reverse(*id)))
        .map(|(id, _)| *id)
}

impl Inner {
    /// The groups this node leads and can hand over: not one that stopped here on a
    /// storage error (its last metrics still name this node; the other voters elect
    /// another leader once its heartbeats stop).
    fn led(&self) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, g)| {
                let metrics = g.raft.metrics();
                let metrics = metrics.borrow();
                metrics.current_leader == Some(self.id) && metrics.running_state.is_ok()
            })
            .map(|(group, _)| *group)
            .collect()
    }

    /// Who should take `group` from this draining node (`None`: no other up voter).
    fn drain_target(&self, group: GroupId) -> Option<RaftNodeId> {
        let g = self.group(group)?;
        let (mut candidates, last) = {
            let metrics = g.raft.metrics();
            let metrics = metrics.borrow();
            let replication = metrics.replication.as_ref();
            let candidates: Vec<(RaftNodeId, u64)> = metrics
                .membership_config
                .membership()
                .voter_ids()
                .filter(|node| *node != self.id)
                .map(|node| {
                    let matched = replication
                        .and_then(|r| r.get(&node))
                        .and_then(|log_id| log_id.as_ref().map(|l| l.index))
                        .unwrap_or(0);
                    (node, matched)
                })
                .collect();
            (candidates, metrics.last_log_index.unwrap_or(0))
        };
        candidates.retain(|(node, _)| !self.is_down(*node));
        candidates.sort_unstable();
        successor(self.ordinal(group), &candidates, last)
    }
}

impl Cluster {
    /// Starts draining this node: from now on it takes no leadership (balancers on the
    /// other nodes leave it alone), and every group it leads (meta included) is handed to
    /// another up voter, all at once, for at most `within`. Returns the groups it still
    /// leads then that another voter could have taken (none when all went; a group with
    /// no other up voter, as in a cluster of one, is not counted).
    pub async fn hand_off_all(&self, within: Duration) -> Vec<GroupId> {
        let inner = &self.inner;
        inner.drain.draining.store(true, Ordering::SeqCst);
        if inner.drain.has_left() {
            return Vec::new();
        }
        // A node whose store failed (a full disk) cannot step down cleanly either: taking
        // a successor's higher term means saving a vote, which fails and stops the group
        // here, and the handoff would wait for a change its stopped group never sees. Its
        // leaderships move by election once it is gone, a moment later.
        if inner.store.is_broken() {
            tracing::warn!(
                "draining: the store failed; no Raft leadership is handed over, they move by election once the node is gone"
            );
            return Vec::new();
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let moves: Vec<(GroupId, RaftNodeId)> = inner
                .led()
                .into_iter()
                .filter_map(|group| inner.drain_target(group).map(|to| (group, to)))
                .collect();
            if moves.is_empty() || tokio::time::Instant::now() >= deadline {
                return moves.into_iter().map(|(group, _)| group).collect();
            }
            let handoffs = futures_util::future::join_all(
                moves.iter().map(|(group, to)| inner.hand_off(*group, *to)),
            );
            // A handoff cut short by the deadline turns its group's heartbeats back on.
            let Ok(outcomes) = tokio::time::timeout_at(deadline, handoffs).await else {
                return inner
                    .led()
                    .into_iter()
                    .filter(|group| inner.drain_target(*group).is_some())
                    .collect();
            };
            let mut again = false;
            for ((group, to), outcome) in moves.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) | Err(HandoffError::Elsewhere { .. }) => {
                        tracing::info!(group = %group, to, "draining: handed a Raft leadership over");
                    }
                    Err(why) => {
                        tracing::info!(group = %group, to, %why, "draining: a Raft leadership handoff did not succeed; trying again");
                        again = true;
                    }
                }
            }
            // A successor that refuses at once (draining too, silent) is not asked again
            // in a busy loop.
            if again {
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    /// Lets the other nodes route around this draining node once its clients are gone
    /// (see the module's text): waits until its route writer has written the removals of
    /// its ended clean sessions' routes and every live node applied them, then until the
    /// forwarded publications on their way are answered. Call it just before the node
    /// stops, with a deadline of the caller's; it stays a member.
    pub async fn depart(&self) {
        let inner = &self.inner;
        if inner.drain.has_left() {
            return;
        }
        inner.drain.draining.store(true, Ordering::SeqCst);
        // A group that stopped here on a storage error (a full disk) takes no write of
        // this node's any more: waiting for the removals would only hold the node up
        // until its caller's deadline. The failure detector removes its routes instead.
        if let Some((group, _)) = self.stopped_group() {
            tracing::warn!(%group, "draining: a Raft group stopped on this node; its routes are left to the failure detector");
            return;
        }
        while !inner.writer.is_idle() {
            tokio::time::sleep(POLL).await;
        }
        inner.drain.quiet().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_leader_takes_a_shard_when_it_has_the_whole_log() {
        // Node 1 drains; 2 and 3 remain. Ordinal 0 prefers the second of [2, 3]: 3.
        assert_eq!(successor(Some(0), &[(2, 10), (3, 10)], 10), Some(3));
        assert_eq!(successor(Some(1), &[(2, 10), (3, 10)], 10), Some(2));
    }

    #[test]
    fn otherwise_the_voter_furthest_along_takes_it() {
        assert_eq!(successor(Some(0), &[(2, 10), (3, 7)], 10), Some(2));
        assert_eq!(successor(None, &[(2, 9), (3, 9)], 10), Some(2), "meta");
        assert_eq!(successor(None, &[(2, 8), (3, 9)], 10), Some(3));
        assert_eq!(successor(Some(0), &[], 10), None, "no other up voter");
    }
}
