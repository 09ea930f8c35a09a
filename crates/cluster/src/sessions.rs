//! The session group: persistent sessions, replicated.
//!
//! The node that holds a client's connection serves its session from memory and writes
//! what changes (the store's writes, a `WriteBatch`) through the session group; every
//! replica applies the accepted writes to its own store (`state_machine.rs`). What a
//! session confirms (PUBACK, PUBREC, SUBACK, CONNACK, ...) waits until its writes are
//! committed: on a quorum's disks.
//!
//! Writes leave the node in order, through one writer task that proposes everything
//! queued so far as one entry (group commit across clients and messages) and numbers
//! them: a caller keeps the numbers of its writes and waits with
//! [`Cluster::sessions_written`]. Each write carries the owner epochs of the sessions it
//! touches; a session taken over by another node ([`Cluster::fence_session`]) refuses
//! the old owner's late writes, which then count as failed.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shoal_store::WriteBatch;
use tokio::sync::{mpsc, watch};

use crate::group_id::GroupId;
use crate::node::{Cluster, ClusterError, Inner};
use crate::state::{Command, Owner, Response};

/// Most writes proposed in one entry.
const BATCH_WRITES: usize = 1024;
/// About the most bytes proposed in one entry.
const BATCH_BYTES: usize = 1 << 20;
/// How many failed write numbers are remembered (failures are rare: a replaced owner's
/// late writes, a group without a leader for the proposal timeout).
const FAILED_KEPT: usize = 65_536;

/// The node's queues of session writes, one per session shard, numbered together.
pub(crate) struct SessionWriter {
    /// The next write's number, and each shard's queue (numbered, marked unanswered and
    /// sent under one lock, so that numbers and each queue's order agree).
    queue: Mutex<Queues>,
    /// The receivers of the queues, taken by the shards' writer tasks.
    receivers: Mutex<Vec<Option<Receiver>>>,
    /// The numbers of writes not answered yet.
    unanswered: Mutex<BTreeSet<u64>>,
    /// Every write numbered up to this one is answered.
    done: watch::Sender<u64>,
    /// The numbers of writes that failed.
    failed: Mutex<BTreeSet<u64>>,
    /// Writes proposed and refused as stale, for the status.
    refused: AtomicU64,
    /// Queued messages whose first write was left out of a proposal: removed again by a
    /// later write of the same proposal (`shoal_store::skip_delivered`).
    skipped: AtomicU64,
    /// Every write numbered from this one on fails: a writer task is gone (the node
    /// stops; `u64::MAX` while they run). Writes it had taken and not answered may or may
    /// not be committed: they fail, never confirmed.
    gone_from: AtomicU64,
}

/// A shard's queue of numbered writes, as its writer task takes it.
type Receiver = mpsc::UnboundedReceiver<(u64, WriteBatch)>;

struct Queues {
    next: u64,
    senders: Vec<mpsc::UnboundedSender<(u64, WriteBatch)>>,
}

impl SessionWriter {
    /// The queues of `shards` session shards.
    pub(crate) fn new(shards: u16) -> Self {
        let (senders, receivers) = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Some(rx))
            })
            .unzip();
        Self {
            queue: Mutex::new(Queues { next: 1, senders }),
            receivers: Mutex::new(receivers),
            unanswered: Mutex::default(),
            done: watch::Sender::new(0),
            failed: Mutex::default(),
            refused: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            gone_from: AtomicU64::new(u64::MAX),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionWriter {
    /// Queues `writes` (each for its shard) with consecutive numbers; returns the first
    /// and the last.
    fn push(&self, writes: Vec<(u16, WriteBatch)>) -> (u64, u64) {
        let mut queue = lock(&self.queue);
        let first = queue.next;
        let mut gone = false;
        {
            let mut unanswered = lock(&self.unanswered);
            for (shard, write) in writes {
                let seq = queue.next;
                queue.next += 1;
                unanswered.insert(seq);
                let sender = &queue.senders[usize::from(shard) % queue.senders.len()];
                gone |= sender.send((seq, write)).is_err();
            }
        }
        let last = queue.next - 1;
        drop(queue);
        if gone {
            // A writer task is gone (the node stops): the write fails.
            self.stop();
        }
        (first, last)
    }

    /// A shard's writer task answered `seqs`: the mark of what is answered moves up to the
    /// first write still unanswered in any shard.
    fn answered(&self, seqs: &[u64]) {
        let queue = lock(&self.queue);
        let mut unanswered = lock(&self.unanswered);
        for seq in seqs {
            unanswered.remove(seq);
        }
        let done = unanswered.first().map_or(queue.next - 1, |first| first - 1);
        drop(unanswered);
        drop(queue);
        self.done.send_if_modified(|d| {
            let moved = done > *d;
            *d = (*d).max(done);
            moved
        });
    }

    /// A writer task is gone: every write not answered fails, and so does every later
    /// one. (Raising `done` past writes it had taken, aborted in the middle of their
    /// proposal, would have confirmed them: acknowledged and maybe never committed.)
    fn stop(&self) {
        let done = *self.done.borrow();
        self.gone_from
            .fetch_min(done.saturating_add(1), Ordering::SeqCst);
        self.done.send_modify(|done| *done = u64::MAX);
    }

    fn fail(&self, seq: u64) {
        let mut failed = lock(&self.failed);
        failed.insert(seq);
        while failed.len() > FAILED_KEPT {
            failed.pop_first();
        }
    }

    async fn wait(&self, from: u64, to: u64) -> bool {
        // No write at all (a batch of no writes split into no parts: `from` is past `to`).
        if from > to {
            return true;
        }
        let mut done = self.done.subscribe();
        if done.wait_for(|done| *done >= to).await.is_err() {
            return false;
        }
        to < self.gone_from.load(Ordering::SeqCst)
            && lock(&self.failed).range(from..=to).next().is_none()
    }
}

/// Proposes the queued writes of session shard `shard`, everything queued at once, one
/// entry at a time; a message queued and removed again within what it takes is left out
/// of the entry but for its removal (`shoal_store::skip_delivered`).
///
/// The writes are encoded here, not by their callers: only now is it known which of them
/// travel.
pub(crate) async fn write_sessions(inner: Weak<Inner>, shard: u16) {
    let receiver = match inner.upgrade() {
        Some(inner) => lock(&inner.sessions.receivers)
            .get_mut(usize::from(shard))
            .and_then(Option::take),
        None => None,
    };
    let Some(mut receiver) = receiver else {
        return;
    };
    // However the task ends (the node stops: it is aborted, maybe in the middle of a
    // proposal), what it did not answer fails.
    let _stopped = WriterStopped(inner.clone());
    let group = GroupId::Sessions(shard);
    while let Some(first) = receiver.recv().await {
        let mut seqs = vec![first.0];
        let mut weight = write_weight(&first.1);
        let mut writes = vec![first.1];
        while writes.len() < BATCH_WRITES && weight < BATCH_BYTES {
            let Ok((seq, write)) = receiver.try_recv() else {
                break;
            };
            weight += write_weight(&write);
            seqs.push(seq);
            writes.push(write);
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let writer = &inner.sessions;
        let skipped = shoal_store::skip_delivered(&mut writes);
        writer.skipped.fetch_add(skipped as u64, Ordering::Relaxed);
        let commands = writes.iter().map(session_command).collect();
        match inner.propose(group, Command::Batch(commands)).await {
            Ok((_, Response::Batch(responses))) if responses.len() == seqs.len() => {
                for (seq, response) in seqs.iter().zip(responses) {
                    if response == Response::Refused {
                        writer.refused.fetch_add(1, Ordering::Relaxed);
                        writer.fail(*seq);
                    }
                }
            }
            Ok((_, response)) => {
                tracing::error!(
                    %group,
                    ?response,
                    "the session group answered a batch of writes oddly"
                );
                seqs.iter().for_each(|seq| writer.fail(*seq));
            }
            Err(e) => {
                tracing::warn!(%group, error = %e, writes = seqs.len(), "session writes were not committed: what they confirm fails");
                seqs.iter().for_each(|seq| writer.fail(*seq));
            }
        }
        writer.answered(&seqs);
    }
}

/// About the bytes a write takes in the log's JSON (its writes in base64).
fn write_weight(batch: &WriteBatch) -> usize {
    4 * batch.weight() / 3 + 16
}

/// The command of one write: its owner epochs and its encoded writes.
fn session_command(batch: &WriteBatch) -> Command {
    Command::Session {
        fences: batch
            .fences()
            .iter()
            .map(|(client, epoch)| (client.to_string(), *epoch))
            .collect(),
        ops: batch.encode(),
    }
}

/// Fails the session writes left unanswered when a writer task ends.
struct WriterStopped(Weak<Inner>);

impl Drop for WriterStopped {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.sessions.stop();
        }
    }
}

impl Cluster {
    /// Writes `batch` (store writes of persistent sessions, with their owners' epochs:
    /// `WriteBatch::fence`) through the session shards of its clients (one write per
    /// shard: each is atomic, not the whole); returns their numbers, first and last, for
    /// [`sessions_written`](Self::sessions_written).
    pub fn write_sessions(&self, batch: &WriteBatch) -> (u64, u64) {
        let shards = self.inner.config.session_shards;
        let writes = if shards <= 1 {
            vec![(0, batch.clone())]
        } else {
            batch.split(shards)
        };
        self.inner.sessions.push(writes)
    }

    /// Expiry of the session shards this node leads: for each in which something expired
    /// by `now` (ms since the Unix epoch, this node's clock) as this node's store has it,
    /// proposes [`Command::ExpireSessions`] with `now`, and every replica removes the same
    /// sessions and queued messages. The other replicas remove nothing by their own
    /// clocks. Returns once the proposals are answered.
    pub async fn expire_sessions(&self, now: u64) {
        let inner = &self.inner;
        let shards = inner.config.session_shards.max(1);
        for shard in 0..shards {
            let group = GroupId::Sessions(shard);
            let leads = inner
                .group(group)
                .is_some_and(|g| g.raft.metrics().borrow().current_leader == Some(inner.id));
            if !leads {
                continue;
            }
            let due =
                inner
                    .store
                    .has_expired_in_shard(shoal_session::Timestamp(now), shard, shards);
            match due {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::debug!(%group, error = %e, "the expiry index could not be read");
                    continue;
                }
            }
            if let Err(e) = inner
                .propose(group, Command::ExpireSessions { at: now })
                .await
            {
                tracing::debug!(%group, error = %e, "expiry not committed; tried again later");
            }
        }
    }

    /// How many session shards (`sessions/0..S`) the cluster has.
    pub fn session_shards(&self) -> u16 {
        self.inner.config.session_shards
    }

    /// The session group of `client_id`.
    pub fn session_group(&self, client_id: &str) -> GroupId {
        GroupId::Sessions(shoal_store::session_shard(
            client_id.as_bytes(),
            self.inner.config.session_shards,
        ))
    }

    /// Waits until every session write this node numbered up to `to` is answered;
    /// returns whether all those numbered `from` to `to` were committed.
    pub fn sessions_written(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = bool> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move { inner.sessions.wait(from, to).await }
    }

    /// Takes the session of `client_id` over with `epoch` (a claim's): from now on the
    /// writes of its older owners are refused. Returns once this node's store holds
    /// everything written for it before, so that the session can be read from it.
    pub async fn fence_session(&self, client_id: &str, epoch: u64) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let group = self.session_group(client_id);
        let command = Command::Fence {
            client_id: client_id.to_owned(),
            epoch,
        };
        let (index, _) = inner.propose(group, command).await?;
        self.applied_here(group, index, inner.config.failure_timeout)
            .await
    }

    /// Returns once this node has applied, in every group it runs, everything committed
    /// before the call (an empty entry through each group's leader, applied here): its
    /// store holds every session write, and its route index every route, confirmed before.
    /// A node reads its sessions back and serves only after this at start: a route
    /// barrier may pass a node whose process is not running (nothing listens: it serves
    /// no client, `Inner::barrier`), so a node that comes back catches up before serving.
    /// A node that was away may have a long way to catch up (or a snapshot to install):
    /// it waits up to `join_timeout`.
    pub async fn sync_groups(&self) -> Result<(), ClusterError> {
        let groups: Vec<GroupId> = self.inner.groups.keys().copied().collect();
        let synced = futures_util::future::join_all(groups.into_iter().map(|group| async move {
            let deadline = tokio::time::Instant::now() + self.inner.config.join_timeout;
            let index = loop {
                match self.inner.propose(group, Command::Batch(Vec::new())).await {
                    Ok((index, _)) => break index,
                    Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                    Err(e) => {
                        tracing::info!(%group, error = %e, "waiting for a group to take a write");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            self.applied_here(group, index, self.inner.config.join_timeout)
                .await
        }))
        .await;
        synced.into_iter().collect()
    }

    /// Waits (at most `within`) until this node has applied `group`'s log up to `index`.
    async fn applied_here(
        &self,
        group: GroupId,
        index: u64,
        within: Duration,
    ) -> Result<(), ClusterError> {
        let Some(g) = self.inner.group(group) else {
            return Err(ClusterError::Refused {
                group,
                message: "this node does not run the group".to_owned(),
            });
        };
        g.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), "applied here")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Refused {
                group,
                message: format!("not applied here in time: {e}"),
            })
    }

    /// The owner of `client_id` as this node's copy of its route shard says (it may lag
    /// the leader's).
    pub fn owner(&self, client_id: &str) -> Option<Owner> {
        let group = GroupId::Routes(crate::routes::shard_of(
            client_id,
            self.inner.config.route_shards,
        ));
        let g = self.inner.group(group)?;
        let state = g.state.read().unwrap_or_else(|e| e.into_inner());
        state.owner(client_id)
    }

    /// Claims `client_id` for this node if nobody owns it (a session that lost its owner,
    /// found in this node's store): its new epoch, or `None` if another node owns it.
    pub async fn adopt(&self, client_id: &str) -> Result<Option<u64>, ClusterError> {
        self.adopt_from(client_id, None).await
    }

    /// [`adopt`](Self::adopt), also if `from` owns the client id (it died).
    pub async fn adopt_from(
        &self,
        client_id: &str,
        from: Option<crate::type_config::RaftNodeId>,
    ) -> Result<Option<u64>, ClusterError> {
        let inner = &self.inner;
        let group = GroupId::Routes(crate::routes::shard_of(
            client_id,
            inner.config.route_shards,
        ));
        let command = Command::Adopt {
            client_id: client_id.to_owned(),
            node: inner.id,
            from,
        };
        match inner.propose(group, command).await? {
            (_, Response::Claimed { epoch, .. }) => Ok(Some(epoch)),
            _ => Ok(None),
        }
    }

    /// The epoch the writes of `client_id`'s session must have at least, as this node
    /// applied its session group (0: none).
    pub fn session_fence(&self, client_id: &str) -> u64 {
        let Some(g) = self.inner.group(self.session_group(client_id)) else {
            return 0;
        };
        let state = g.state.read().unwrap_or_else(|e| e.into_inner());
        state.fences.get(client_id).copied().unwrap_or(0)
    }

    /// The client ids `node` owns, as this node's copies of the route shards say.
    pub fn owned_by(&self, node: crate::type_config::RaftNodeId) -> Vec<String> {
        let mut clients = Vec::new();
        for shard in 0..self.inner.config.route_shards {
            if let Some(g) = self.inner.group(GroupId::Routes(shard)) {
                let state = g.state.read().unwrap_or_else(|e| e.into_inner());
                clients.extend(
                    state
                        .owners
                        .iter()
                        .filter(|(_, owner)| owner.node == node)
                        .map(|(client, _)| client.clone()),
                );
            }
        }
        clients
    }

    /// A group of this node whose Raft core stopped on an error (a storage failure: the
    /// node cannot go on without a restart), and the error.
    pub fn stopped_group(&self) -> Option<(GroupId, String)> {
        self.inner.groups.iter().find_map(|(group, g)| {
            match &g.raft.metrics().borrow().running_state {
                Err(fatal) => Some((*group, fatal.to_string())),
                Ok(()) => None,
            }
        })
    }

    /// How many session writes of this node were refused because another node had taken
    /// their session over.
    pub fn session_writes_refused(&self) -> u64 {
        self.inner.sessions.refused.load(Ordering::Relaxed)
    }

    /// Messages queued and removed again before this node proposed them: left out of the
    /// proposal but for their removal (`shoal_store::skip_delivered`).
    pub fn session_writes_skipped(&self) -> u64 {
        self.inner.sessions.skipped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write() -> WriteBatch {
        WriteBatch::new()
    }

    /// The writer task takes writes 1 to 3 and is aborted in the middle of their
    /// proposal: they must fail, and a write pushed afterwards (which finds the task gone)
    /// must not confirm them on its way.
    #[tokio::test]
    async fn writes_the_writer_took_and_never_answered_fail_when_it_stops() {
        let writer = SessionWriter::new(1);
        let mut receiver = lock(&writer.receivers)[0].take().expect("receiver");
        for _ in 0..4 {
            writer.push(vec![(0, write())]);
        }
        // The task answers write 1, takes 2 to 4, and is aborted.
        for _ in 0..4 {
            receiver.try_recv().expect("queued");
        }
        writer.answered(&[1]);
        drop(receiver);
        writer.stop();
        let (late, _) = writer.push(vec![(0, write())]);
        assert!(writer.wait(1, 1).await, "answered before the stop");
        assert!(!writer.wait(2, 4).await, "taken, never answered");
        assert!(!writer.wait(late, late).await, "pushed after the stop");
    }

    /// Shards answer out of order: a write counts as answered once every write numbered
    /// before it is, in whichever shard.
    #[tokio::test]
    async fn a_write_is_answered_once_every_earlier_write_of_every_shard_is() {
        let writer = SessionWriter::new(2);
        let (first, last) = writer.push(vec![(0, write()), (1, write())]);
        assert_eq!((first, last), (1, 2));
        let (third, _) = writer.push(vec![(1, write())]);
        // Shard 1 answers 2 and 3 before shard 0 answers 1.
        writer.answered(&[2, 3]);
        assert_eq!(*writer.done.borrow(), 0, "write 1 is still out");
        writer.fail(1);
        writer.answered(&[1]);
        assert_eq!(*writer.done.borrow(), 3);
        assert!(!writer.wait(first, last).await, "its shard 0 part failed");
        assert!(writer.wait(third, third).await);
        // Nothing pushed: nothing to wait for, and no panic on the empty range.
        let (from, to) = writer.push(Vec::new());
        assert!(from > to);
        assert!(writer.wait(from, to).await);
    }
}
