//! Group commit of proposals: the commands that reach a group's leader while its previous
//! write is being made durable go into the next log entry together.
//!
//! openraft 0.9 writes each client write as its own append and waits for that append's
//! flush before it takes the next one, so without this every claim (each CONNECT), route
//! change and retained message would cost a flush of its own, one after the other: a
//! node would take about one write per flush time. Here one task per group takes every
//! command queued so far, proposes them as one [`Command::Batch`] (one entry, one flush,
//! one replication round), and answers each with its own response. While that write runs
//! the next batch gathers.

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::state::{Command, Response};
use crate::type_config::{GroupConfig, RaftNodeId};

/// The most commands one entry carries.
const MAX_COMMANDS: usize = 1_024;
/// About the most bytes one entry carries (retained messages can be large; a single
/// command larger than this still goes, alone).
const MAX_BYTES: usize = 1 << 20;

/// What became of a proposed command.
pub(crate) enum Written {
    /// Applied at this log index, with this response.
    Applied(u64, Response),
    /// This node does not lead the group (any more): ask the leader, if known.
    NotLeader(Option<RaftNodeId>),
    /// The group refused it.
    Failed(String),
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Written>,
}

/// The queue of one group's proposals at this node.
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Proposal>,
}

impl Batcher {
    /// Starts the group's batching task.
    pub(crate) fn start(raft: Raft<GroupConfig>) -> Self {
        let (queue, proposals) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, proposals));
        Self { queue }
    }

    /// Proposes `command` through this node's Raft instance of the group (which must lead
    /// it) and waits until it is applied.
    pub(crate) async fn write(&self, command: Command) -> Written {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Proposal { command, reply }).is_err() {
            return Written::Failed("the group has stopped".to_owned());
        }
        answer
            .await
            .unwrap_or_else(|_| Written::Failed("the group has stopped".to_owned()))
    }
}

async fn run(raft: Raft<GroupConfig>, mut proposals: mpsc::UnboundedReceiver<Proposal>) {
    while let Some(first) = proposals.recv().await {
        let mut bytes = first.command.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS && bytes < MAX_BYTES {
            match proposals.try_recv() {
                Ok(next) => {
                    bytes += next.command.weight();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (mut commands, replies): (Vec<Command>, Vec<oneshot::Sender<Written>>) = batch
            .into_iter()
            .map(|proposal| (proposal.command, proposal.reply))
            .unzip();
        // One command alone goes as it is, unless it is a batch itself: its response
        // (a batch too) must not be taken for the responses of several proposals.
        let command = match commands.as_slice() {
            [one] if !matches!(one, Command::Batch(_)) => commands.pop().expect("one command"),
            _ => Command::Batch(commands),
        };
        match raft.client_write(command).await {
            Ok(written) => {
                let index = written.log_id.index;
                match written.data {
                    Response::Batch(responses) if responses.len() == replies.len() => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(Written::Applied(index, response));
                        }
                    }
                    response if replies.len() == 1 => {
                        for reply in replies {
                            let _ = reply.send(Written::Applied(index, response.clone()));
                        }
                    }
                    other => {
                        let why = format!("a batch of {} was answered {other:?}", replies.len());
                        for reply in replies {
                            let _ = reply.send(Written::Failed(why.clone()));
                        }
                    }
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                for reply in replies {
                    let _ = reply.send(Written::NotLeader(forward.leader_id));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for reply in replies {
                    let _ = reply.send(Written::Failed(why.clone()));
                }
            }
        }
    }
}
