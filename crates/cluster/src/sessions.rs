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

/// The node's queue of session writes.
pub(crate) struct SessionWriter {
    /// The next write's number, and the queue (numbered and sent under one lock, so that
    /// numbers and queue order agree).
    queue: Mutex<(u64, mpsc::UnboundedSender<(u64, Command)>)>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<(u64, Command)>>>,
    /// Every write numbered up to this one is answered.
    done: watch::Sender<u64>,
    /// The numbers of writes that failed.
    failed: Mutex<BTreeSet<u64>>,
    /// Writes proposed and refused as stale, for the status.
    refused: AtomicU64,
    /// Every write numbered from this one on fails: the writer task is gone (the node
    /// stops; `u64::MAX` while it runs). Writes it had taken and not answered may or may
    /// not be committed: they fail, never confirmed.
    gone_from: AtomicU64,
}

impl Default for SessionWriter {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            queue: Mutex::new((1, tx)),
            receiver: Mutex::new(Some(rx)),
            done: watch::Sender::new(0),
            failed: Mutex::default(),
            refused: AtomicU64::new(0),
            gone_from: AtomicU64::new(u64::MAX),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionWriter {
    fn push(&self, command: Command) -> u64 {
        let mut queue = lock(&self.queue);
        let seq = queue.0;
        queue.0 += 1;
        if queue.1.send((seq, command)).is_err() {
            // The writer task is gone (the node stops): the write fails.
            self.stop();
        }
        seq
    }

    /// The writer task is gone: every write it did not answer fails, and so does every
    /// later one. (Raising `done` past writes it had taken, aborted in the middle of
    /// their proposal, would have confirmed them: acknowledged and maybe never committed.)
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
        let mut done = self.done.subscribe();
        if done.wait_for(|done| *done >= to).await.is_err() {
            return false;
        }
        to < self.gone_from.load(Ordering::SeqCst)
            && lock(&self.failed).range(from..=to).next().is_none()
    }
}

/// Proposes the queued session writes, everything queued at once, one entry at a time.
pub(crate) async fn write_sessions(inner: Weak<Inner>) {
    let receiver = match inner.upgrade() {
        Some(inner) => lock(&inner.sessions.receiver).take(),
        None => None,
    };
    let Some(mut receiver) = receiver else {
        return;
    };
    // However the task ends (the node stops: it is aborted, maybe in the middle of a
    // proposal), what it did not answer fails.
    let _stopped = WriterStopped(inner.clone());
    let group = GroupId::Sessions(0);
    while let Some(first) = receiver.recv().await {
        let mut seqs = vec![first.0];
        let mut weight = first.1.weight();
        let mut commands = vec![first.1];
        while commands.len() < BATCH_WRITES && weight < BATCH_BYTES {
            let Ok((seq, command)) = receiver.try_recv() else {
                break;
            };
            weight += command.weight();
            seqs.push(seq);
            commands.push(command);
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let last = *seqs.last().unwrap_or(&0);
        let writer = &inner.sessions;
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
                    ?response,
                    "the session group answered a batch of writes oddly"
                );
                seqs.iter().for_each(|seq| writer.fail(*seq));
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = seqs.len(), "session writes were not committed: what they confirm fails");
                seqs.iter().for_each(|seq| writer.fail(*seq));
            }
        }
        writer.done.send_modify(|done| *done = (*done).max(last));
    }
}

/// Fails the session writes left unanswered when the writer task ends.
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
    /// `WriteBatch::fence`) through the session group; returns its number, for
    /// [`sessions_written`](Self::sessions_written).
    pub fn write_sessions(&self, batch: &WriteBatch) -> u64 {
        let command = Command::Session {
            fences: batch
                .fences()
                .iter()
                .map(|(client, epoch)| (client.to_string(), *epoch))
                .collect(),
            ops: batch.encode(),
        };
        self.inner.sessions.push(command)
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
        let group = GroupId::Sessions(0);
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
    /// applied the session group (0: none).
    pub fn session_fence(&self, client_id: &str) -> u64 {
        let Some(g) = self.inner.group(GroupId::Sessions(0)) else {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write() -> Command {
        Command::Batch(Vec::new())
    }

    /// The writer task takes writes 1 to 3 and is aborted in the middle of their
    /// proposal: they must fail, and a write pushed afterwards (which finds the task gone)
    /// must not confirm them on its way.
    #[tokio::test]
    async fn writes_the_writer_took_and_never_answered_fail_when_it_stops() {
        let writer = SessionWriter::default();
        let mut receiver = lock(&writer.receiver).take().expect("receiver");
        for _ in 0..4 {
            writer.push(write());
        }
        // The task answers write 1, takes 2 to 4, and is aborted.
        for _ in 0..4 {
            receiver.try_recv().expect("queued");
        }
        writer.done.send_modify(|done| *done = 1);
        drop(receiver);
        writer.stop();
        let late = writer.push(write());
        assert!(writer.wait(1, 1).await, "answered before the stop");
        assert!(!writer.wait(2, 4).await, "taken, never answered");
        assert!(!writer.wait(late, late).await, "pushed after the stop");
    }
}
