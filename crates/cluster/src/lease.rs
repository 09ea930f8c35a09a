//! `Lease`: whether this node may serve clients. A node serves only while it knows it is
//! in touch with a majority of the `meta` group: as a follower or learner, it heard the
//! leader's append (a heartbeat at least) within the lease; as the leader, a majority of
//! the voters acknowledged an append within the lease. The majority declares a node down
//! only after the failure timeout, twice the lease: by then a cut-off node has stopped
//! serving, however its messages were delayed, provided the nodes' clocks run at about
//! the same rate (the usual lease assumption: no wall clock, monotonic time only).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::type_config::RaftNodeId;

/// Contact with the rest of the cluster, as the lease sees it.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    state: Mutex<Contact>,
}

#[derive(Debug, Default)]
struct Contact {
    /// When this node last accepted an append of meta's leader.
    leader: Option<Instant>,
    /// When each peer was last heard from in meta: its append or vote request, or its
    /// answer to ours.
    heard: HashMap<RaftNodeId, Instant>,
}

impl Lease {
    fn lock(&self) -> std::sync::MutexGuard<'_, Contact> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node accepted an append of meta's current leader.
    pub(crate) fn heard_leader(&self, leader: RaftNodeId) {
        let now = Instant::now();
        let mut contact = self.lock();
        contact.leader = Some(now);
        contact.heard.insert(leader, now);
    }

    /// `node` was heard from in meta (a request of its own, or an answer to ours).
    pub(crate) fn heard(&self, node: RaftNodeId) {
        self.lock().heard.insert(node, Instant::now());
    }

    /// Whether the lease holds for this node `own` among meta's `voters`: a majority of
    /// the voters (this one included, if it is one) was heard within `lease`; or, for a
    /// node that is not leading, the leader was (a follower hears only the leader, which
    /// itself holds the majority).
    pub(crate) fn holds(
        &self,
        own: RaftNodeId,
        leading: bool,
        voters: &[RaftNodeId],
        lease: Duration,
    ) -> bool {
        let contact = self.lock();
        let fresh = |at: &Instant| at.elapsed() < lease;
        if !leading && contact.leader.as_ref().is_some_and(fresh) {
            return true;
        }
        let heard = voters
            .iter()
            .filter(|v| **v == own || contact.heard.get(v).is_some_and(fresh))
            .count();
        heard * 2 > voters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_holds_the_lease_with_a_majority_of_acks_only() {
        let lease = Lease::default();
        let window = Duration::from_secs(60);
        assert!(
            lease.holds(1, true, &[1], window),
            "a single voter is a majority"
        );
        assert!(!lease.holds(1, true, &[1, 2, 3], window));
        lease.heard(2);
        assert!(lease.holds(1, true, &[1, 2, 3], window));
        assert!(!lease.holds(1, true, &[1, 2, 3, 4, 5], window));
        assert!(
            !lease.holds(1, true, &[1, 2, 3], Duration::ZERO),
            "acks expire"
        );
    }

    #[test]
    fn a_follower_holds_the_lease_while_it_hears_the_leader() {
        let lease = Lease::default();
        let window = Duration::from_secs(60);
        assert!(
            !lease.holds(2, false, &[1, 2, 3, 4, 5], window),
            "nothing heard yet"
        );
        lease.heard_leader(1);
        assert!(
            lease.holds(2, false, &[1, 2, 3, 4, 5], window),
            "the leader suffices"
        );
        assert!(!lease.holds(2, false, &[1, 2, 3, 4, 5], Duration::ZERO));
    }

    #[test]
    fn during_an_election_a_majority_heard_keeps_the_lease() {
        let lease = Lease::default();
        let window = Duration::from_secs(60);
        // No leader, but vote requests from two peers: with this node, three of five.
        lease.heard(3);
        assert!(!lease.holds(2, false, &[1, 2, 3, 4, 5], window));
        lease.heard(4);
        assert!(lease.holds(2, false, &[1, 2, 3, 4, 5], window));
    }
}
