//! Spreading leaderships over the nodes.
//!
//! The node that bootstraps a cluster leads every group at first, and a node that restarts
//! leads nothing: left alone, one node would take every route and retained write (client
//! id claims are route-shard writes, so every CONNECT too). Each group other than `meta`
//! therefore has a preferred leader, a function of its up voters that every node computes
//! the same way, and the leader of a group hands it to the preferred node when that node
//! is up and has the whole log.
//!
//! openraft 0.9 has no leader transfer, so the handoff is made of what it has:
//! 1. the leader stops taking new commands for the group (proposals wait and retry),
//! 2. it stops its heartbeats, so the voters' leader lease (openraft refuses votes while
//!    it runs: one `election_timeout_max`) runs out,
//! 3. it asks the successor (`Campaign`) to start an election right after that lease. The
//!    other voters campaign on their own only after the lease and a further election
//!    timeout, so the successor, with the whole log, is first and wins.
//! 4. The leader turns its heartbeats back on whatever happened: if the successor did not
//!    win, nothing changed, and the group is tried again later.
//!
//! A group's writes pause for about `2 × election timeout + heartbeat` during its
//! handoff. The balancer does not move meta (its leader runs failure detection, and it
//! carries few writes); a draining node hands it over too (`drain.rs`). A node that is
//! draining answers `Campaign` with `draining`: nothing is handed back to it while it goes.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::group_id::GroupId;
use crate::node::{Group, Inner};
use crate::proto::{CampaignRequest, StatusRequest};
use crate::type_config::RaftNodeId;

/// How long after start a node waits before moving leaderships (joins settle first).
const SETTLE: Duration = Duration::from_secs(3);
/// How often the leaderships are checked.
const PERIOD: Duration = Duration::from_secs(2);
/// How long a successor has to answer the probe before a handoff.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a group whose handoff failed is left alone.
const BACKOFF: Duration = Duration::from_secs(30);

/// The preferred leader of the group with `ordinal` among the up voters `voters` (sorted):
/// the groups go round the voters, starting at the second so that the first (often the
/// bootstrap node, which leads meta) takes fewer.
pub(crate) fn preferred(ordinal: usize, voters: &[RaftNodeId]) -> Option<RaftNodeId> {
    if voters.is_empty() {
        return None;
    }
    Some(voters[(ordinal + 1) % voters.len()])
}

impl Inner {
    /// The group's place in the round of preferred leaders. Meta has none, nor has a lone
    /// session group: the balancer leaves them where they are (it carries every
    /// persistent write, and each handoff pauses its writes for about two election
    /// timeouts; it moves when its leader drains or dies). Session shards go round like
    /// the others: their leaders do the work of the writes, spread over the nodes.
    pub(crate) fn ordinal(&self, group: GroupId) -> Option<usize> {
        match group {
            GroupId::Meta => None,
            GroupId::Sessions(_) if self.config.session_shards <= 1 => None,
            GroupId::Sessions(shard) => Some(
                usize::from(self.config.route_shards)
                    + usize::from(self.config.retained_shards)
                    + usize::from(shard),
            ),
            GroupId::Routes(shard) => Some(usize::from(shard)),
            GroupId::Retained(shard) => {
                Some(usize::from(self.config.route_shards) + usize::from(shard))
            }
        }
    }

    /// The node this node should hand `group` to now: `None` unless this node leads it,
    /// another up voter is preferred, and that voter has the whole log.
    fn successor(&self, group: GroupId) -> Option<RaftNodeId> {
        let ordinal = self.ordinal(group)?;
        let g = self.group(group)?;
        let metrics = g.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.current_leader != Some(self.id) {
            return None;
        }
        let mut voters: Vec<RaftNodeId> = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|node| !self.is_down(*node))
            .collect();
        voters.sort_unstable();
        let wanted = preferred(ordinal, &voters)?;
        if wanted == self.id {
            return None;
        }
        let last = metrics.last_log_index?;
        let matched = metrics
            .replication
            .as_ref()?
            .get(&wanted)?
            .as_ref()
            .map(|log_id| log_id.index)?;
        (matched >= last).then_some(wanted)
    }

    /// Hands the leadership of `group` to `target` (see the module's text); `Ok` once
    /// `target` leads it. Dropped midway (a caller's deadline), it turns the group's
    /// heartbeats and commands back on all the same.
    pub(crate) async fn hand_off(
        &self,
        group: GroupId,
        target: RaftNodeId,
    ) -> Result<(), HandoffError> {
        let failed = |why: &str| HandoffError::Failed(why.to_owned());
        let g = self
            .group(group)
            .ok_or_else(|| failed("this node does not run the group"))?;
        let mut client = self.client_of(target).ok_or_else(|| {
            HandoffError::Failed(format!("the address of node {target} is not known"))
        })?;
        // A successor that does not answer (stopped, restarting, cut off) is not worth
        // pausing the group for.
        let mut probe = tonic::Request::new(StatusRequest {});
        probe.set_timeout(PROBE_TIMEOUT);
        if client.status(probe).await.is_err() {
            return Err(HandoffError::Unreachable { node: target });
        }
        let lease = self.config.election_timeout * 2;
        let after = lease + self.config.heartbeat + Duration::from_millis(100);
        let paused = Paused::new(g);
        let me = self.id;
        let mut request = tonic::Request::new(CampaignRequest {
            group: group.to_string(),
            after_ms: after.as_millis() as u64,
        });
        request.set_timeout(Duration::from_secs(2));
        let reply = client
            .campaign(request)
            .await
            .map_err(|status| failed(status.message()))?
            .into_inner();
        if reply.draining {
            return Err(HandoffError::Draining { node: target });
        }
        if !reply.error.is_empty() {
            return Err(HandoffError::Failed(reply.error));
        }
        g.raft
            .wait(Some(after + self.config.election_timeout * 4))
            .metrics(
                |m| m.current_leader.is_some_and(|leader| leader != me),
                "leadership handed off",
            )
            .await
            .map_err(|_| failed("no other node took the leadership in time"))?;
        drop(paused);
        match g.raft.metrics().borrow().current_leader {
            Some(leader) if leader == target => Ok(()),
            other => Err(HandoffError::Elsewhere {
                leader: other.unwrap_or(0),
            }),
        }
    }
}

/// Why a leadership handoff did not happen as asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoffError {
    /// The successor is draining (shutting down): it takes no leadership until it is back.
    #[error("node {node} is draining")]
    Draining {
        /// The successor asked.
        node: RaftNodeId,
    },
    /// The successor did not answer a status probe: nothing was paused.
    #[error("node {node} does not answer")]
    Unreachable {
        /// The successor asked.
        node: RaftNodeId,
    },
    /// Another node than the one asked won the election (the leadership moved all the same).
    #[error("node {leader} leads it instead")]
    Elsewhere {
        /// The new leader (0: none known).
        leader: RaftNodeId,
    },
    /// Nothing changed: the group is tried again later.
    #[error("{0}")]
    Failed(String),
}

/// A group's heartbeats and new commands, stopped for a handoff while this lives.
struct Paused<'a>(&'a Group);

impl<'a> Paused<'a> {
    fn new(group: &'a Group) -> Self {
        group.handing_off.store(true, Ordering::SeqCst);
        group.raft.runtime_config().heartbeat(false);
        Self(group)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.handing_off.store(false, Ordering::SeqCst);
    }
}

/// The balancing task: every few seconds, hands each group this node leads to its
/// preferred leader, if that is another node.
pub(crate) async fn spread_leaders(inner: Weak<Inner>) {
    tokio::time::sleep(SETTLE).await;
    let mut failed: HashMap<GroupId, Instant> = HashMap::new();
    loop {
        let Some(node) = inner.upgrade() else { return };
        if node.lease_holds() && !node.drain.is_draining() {
            let now = Instant::now();
            failed.retain(|_, until| *until > now);
            let moves: Vec<(GroupId, RaftNodeId)> = node
                .config
                .groups()
                .into_iter()
                .filter(|group| !failed.contains_key(group))
                .filter_map(|group| node.successor(group).map(|target| (group, target)))
                .collect();
            // Every group's handoff pauses that group's writes only: they run together.
            let outcomes = futures_util::future::join_all(
                moves
                    .iter()
                    .map(|(group, target)| node.hand_off(*group, *target)),
            )
            .await;
            for ((group, target), outcome) in moves.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => {
                        tracing::info!(group = %group, to = target, "handed a Raft leadership over, to spread leaders over the nodes");
                    }
                    // Paused for one round trip at most: a draining successor is going, one
                    // that does not answer may be restarting (or is declared down soon).
                    // The group is tried again at the next round.
                    Err(
                        why @ (HandoffError::Draining { .. } | HandoffError::Unreachable { .. }),
                    ) => {
                        tracing::debug!(group = %group, to = target, %why, "the preferred leader cannot take a leadership now");
                    }
                    Err(why) => {
                        tracing::info!(group = %group, to = target, %why, "a Raft leadership handoff did not succeed; trying again later");
                        failed.insert(group, Instant::now() + BACKOFF);
                    }
                }
            }
        }
        drop(node);
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_go_round_the_voters_starting_at_the_second() {
        let voters = [1, 2, 3];
        let picks: Vec<_> = (0..6).map(|i| preferred(i, &voters).unwrap()).collect();
        assert_eq!(picks, [2, 3, 1, 2, 3, 1]);
        assert_eq!(preferred(4, &[7]), Some(7));
        assert_eq!(preferred(0, &[]), None);
    }
}
