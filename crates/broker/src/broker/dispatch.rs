//! Dispatch: a message to every session that subscribed to its topic.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_codec::QoS;
use std::num::NonZeroU32;

use shoal_session::{Delivery, Message, Session, Timestamp};
use shoal_store::WriteBatch;
use shoal_topic::Recipients;

use super::{Broker, Receipts, read};
use crate::metrics as m;
use crate::slot::SessionSlot;

/// What a dispatch did, for its publisher's acknowledgement.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Dispatched {
    /// What the acknowledgement must wait for (the writes of the queued copies).
    pub(crate) receipts: Receipts,
    /// How many sessions (and other nodes) the message went to.
    pub(crate) recipients: usize,
    /// What else it waits for: peers' acceptance of the forwarded copies, the replicated
    /// retained message.
    pub(crate) pending: Vec<super::Pending>,
    /// The publisher's QoS 2 receipt, when the message went to other nodes too: the caller
    /// writes it once they have accepted their copies (`wait_receipts`), not before.
    pub(crate) deferred: Option<WriteBatch>,
}

/// Which shared subscription groups a dispatch delivers to.
#[derive(Debug, Clone, Copy)]
enum Shared<'a> {
    /// Every group but these, whose delivery fell to other nodes.
    Except(&'a [String]),
    /// Only these (a publication forwarded from another node).
    Only(&'a [String]),
}

impl Shared<'_> {
    fn includes(self, group: &str) -> bool {
        match self {
            Self::Except(groups) => !groups.iter().any(|g| g == group),
            Self::Only(groups) => groups.iter().any(|g| g == group),
        }
    }
}

/// One session a message goes to, and how.
struct Target {
    slot: Arc<SessionSlot>,
    qos: QoS,
    retain: bool,
    ids: Vec<NonZeroU32>,
    /// The shared group it is the chosen member of, if it is.
    group: Option<String>,
}

impl Target {
    /// The name of its marks under `tag` (`dedup.rs`).
    fn mark(&self, tag: Option<u64>) -> Option<(u64, Box<[u8]>)> {
        tag.map(|tag| {
            (
                tag,
                super::dedup::mark_name(&self.slot.client_id, self.group.as_deref()),
            )
        })
    }
}

impl Broker {
    /// Sends a message to every session that subscribed to its topic, and keeps it if it
    /// is retained. `publisher` is the publishing session (for No Local).
    ///
    /// With `atomic`, the copies queued for persistent sessions are written together with
    /// what `atomic` already holds (the publisher's QoS 2 receipt), as one atomic step
    /// (`Store::apply_atomic`), while every receiving session is locked: after a crash the
    /// receipt and the copies are either all there or none is, so a resent QoS 2 message is
    /// never delivered twice, and each session's own writes stay in order.
    ///
    /// `tag`: the dedup tag of a QoS 2 message that goes to other nodes (`dedup.rs`): a
    /// session that took a copy under it already does not take another.
    pub(crate) fn dispatch(
        &self,
        message: &Arc<Message>,
        publisher: Option<u64>,
        recipients: &mut Recipients<u64>,
        atomic: Option<WriteBatch>,
        tag: Option<u64>,
    ) -> Dispatched {
        let now = self.now();
        let mut out = Dispatched::default();
        if message.retain {
            match self.cluster() {
                Some(cluster) => out.pending.push(self.retain_replicated(cluster, message)),
                // A node serves only once it has entered its cluster (a node alone too):
                // not reached, and never acknowledged if it were.
                None => out.pending.push(super::cluster::failed()),
            }
        }
        let (nodes, elsewhere) = self.forward(message, tag, &mut out.pending);
        // A QoS 2 receipt replicated before the other nodes have their copies would make a
        // resend after this node dies look like a duplicate, and reach none of them: it is
        // written after their acceptance. A resend before then goes out again under the
        // message's tag, which the copies taken already are marked with (`dedup.rs`). With
        // session shards, the receipt and this node's copies may be in different shards,
        // whose writes are not one atomic step: the same order holds for them.
        let atomic = match atomic {
            Some(receipt) if nodes > 0 || self.sharded() => {
                out.deferred = Some(receipt);
                None
            }
            other => other,
        };
        let (targets, moving) =
            self.targets(message, publisher, recipients, Shared::Except(&elsewhere));
        if moving && message.qos != QoS::AtMostOnce {
            // A subscriber's session is on its way to this node: not acknowledged yet.
            out.receipts.failed = true;
        }
        out.recipients = targets.len() + nodes;
        if out.recipients == 0 {
            metrics::counter!(m::MESSAGES_DROPPED, "cause" => "no_subscribers").increment(1);
        }
        let receipts = match atomic {
            Some(batch) => self.deliver_atomic(now, message, targets, batch, tag),
            None => targets
                .into_iter()
                .fold(Receipts::default(), |receipts, t| {
                    let mark = t.mark(tag);
                    receipts.and(self.deliver(&t.slot, now, message, t.qos, t.retain, t.ids, mark))
                }),
        };
        out.receipts = out.receipts.and(receipts);
        out
    }

    /// Sends a message forwarded from another node to this node's sessions: every plain
    /// subscriber, and the shared groups `shared` whose delivery fell to this node. It is
    /// not forwarded again, and not retained again (its retained copy, if any, is applied
    /// through its Raft group).
    pub(crate) fn dispatch_forwarded(
        &self,
        message: &Arc<Message>,
        shared: &[String],
        tag: Option<u64>,
        recipients: &mut Recipients<u64>,
    ) -> Receipts {
        let now = self.now();
        let (targets, moving) = self.targets(message, None, recipients, Shared::Only(shared));
        let start = Receipts {
            // A subscriber's session is on its way to this node: not accepted yet.
            failed: moving && message.qos != QoS::AtMostOnce,
            ..Receipts::default()
        };
        targets.into_iter().fold(start, |receipts, t| {
            let mark = t.mark(tag);
            receipts.and(self.deliver(&t.slot, now, message, t.qos, t.retain, t.ids, mark))
        })
    }

    /// Keeps (or clears) a retained message through its Raft group; the wait holds once
    /// every live node has it.
    fn retain_replicated(
        &self,
        cluster: &shoal_cluster::Cluster,
        message: &Arc<Message>,
    ) -> super::Pending {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cluster = cluster.clone();
        let message = Arc::clone(message);
        tokio::spawn(async move {
            let kept = (!message.payload.is_empty()).then_some(&*message);
            let result = cluster.retain(&message.topic, kept).await;
            if let Err(e) = &result {
                tracing::warn!(topic = %message.topic, error = %e, "a retained message was not replicated");
            }
            let _ = tx.send(result.is_ok());
        });
        rx
    }

    /// The sessions a message goes to: every plain subscriber the ACL lets receive it, and
    /// one member of each shared group `shared` includes (a connected one if there is
    /// one). The tables are read-locked only while this runs: nothing is written meanwhile.
    /// Also says whether a placeholder of a session on its way here matched (`moves.rs`).
    fn targets(
        &self,
        message: &Message,
        publisher: Option<u64>,
        recipients: &mut Recipients<u64>,
        shared: Shared<'_>,
    ) -> (Vec<Target>, bool) {
        read(&self.index).match_topic(&message.topic, publisher, recipients);
        let by_id = read(&self.by_id);
        let mut targets = Vec::new();
        let mut moving = false;
        for recipient in recipients.subscribers() {
            let Some(slot) = by_id.get(&recipient.subscriber) else {
                moving |= self.is_moving(recipient.subscriber);
                continue;
            };
            if !slot.may_receive(&message.topic) {
                continue;
            }
            targets.push(Target {
                slot: Arc::clone(slot),
                qos: recipient.qos,
                retain: message.retain && recipient.retain_as_published,
                ids: recipient.identifiers.to_vec(),
                group: None,
            });
        }
        for group in recipients.shared_groups() {
            let members = group.members;
            if members.is_empty() || !shared.includes(group.group.as_str()) {
                continue;
            }
            let start = self.shared_cursor.fetch_add(1, Ordering::Relaxed);
            // Prefer a connected member; an offline one queues it (persistent sessions).
            // Members the ACL keeps from this topic are passed over.
            let allowed = |m: &&shoal_topic::Subscription<u64>| {
                by_id
                    .get(&m.subscriber)
                    .is_some_and(|s| s.may_receive(&message.topic))
            };
            let mut candidates = (0..members.len())
                .map(|i| &members[(start + i) % members.len()])
                .filter(allowed);
            let Some(first) = candidates.next() else {
                continue;
            };
            let pick = std::iter::once(first)
                .chain(candidates)
                .find(|m| {
                    by_id
                        .get(&m.subscriber)
                        .is_some_and(|s| s.lock().is_connected())
                })
                .unwrap_or(first);
            let Some(slot) = by_id.get(&pick.subscriber) else {
                continue;
            };
            targets.push(Target {
                slot: Arc::clone(slot),
                qos: pick.options.qos,
                retain: message.retain && pick.options.retain_as_published,
                ids: pick.identifier.into_iter().collect(),
                group: Some(group.group.to_string()),
            });
        }
        (targets, moving)
    }

    /// Gives one session a message and writes what it queued; wakes its connection. With
    /// `mark` (a tag and the name of its marks), a session that took the message under
    /// the tag already does not take it again, and one that takes it notes the mark.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deliver(
        &self,
        slot: &SessionSlot,
        now: Timestamp,
        message: &Arc<Message>,
        qos: QoS,
        retain: bool,
        ids: Vec<NonZeroU32>,
        mark: Option<(u64, Box<[u8]>)>,
    ) -> Receipts {
        let mut session = slot.lock();
        if let Some((tag, name)) = &mark
            && let Some(receipts) = self.marked(*tag, name)
        {
            return receipts;
        }
        let delivery = session.deliver(now, Arc::clone(message), qos, retain, ids);
        let mut batch = WriteBatch::new();
        self.collect_changes(slot, &mut session, &mut batch);
        if let Some((tag, name)) = &mark {
            self.add_mark(slot, &session, &mut batch, *tag, name);
        }
        let receipts = self.apply(&batch, false);
        if let Some((tag, name)) = mark {
            self.remember_mark(tag, name, receipts.writes.map(|(_, last)| last));
        }
        let connected = session.is_connected();
        if delivery != Delivery::Queued {
            self.count_drops(slot, &mut session);
        }
        drop(session);
        if connected {
            slot.notify();
        }
        receipts
    }

    /// Gives every target the message with all their sessions locked (in subscriber id
    /// order, each once), and writes what they queued together with `batch` as one atomic
    /// step before any of them can move on.
    fn deliver_atomic(
        &self,
        now: Timestamp,
        message: &Arc<Message>,
        mut targets: Vec<Target>,
        mut batch: WriteBatch,
        tag: Option<u64>,
    ) -> Receipts {
        targets.sort_by_key(|t| t.slot.id);
        let mut marks = Vec::new();
        let mut receipts = Receipts::default();
        let mut locked: Vec<(&SessionSlot, std::sync::MutexGuard<'_, Session>)> = Vec::new();
        for target in &targets {
            if locked
                .last()
                .is_none_or(|(slot, _)| slot.id != target.slot.id)
            {
                locked.push((&target.slot, target.slot.lock()));
            }
            let (slot, session) = locked.last_mut().expect("just pushed");
            if let Some((tag, name)) = target.mark(tag) {
                if let Some(taken) = self.marked(tag, &name) {
                    receipts = receipts.and(taken);
                    continue;
                }
                self.add_mark(slot, session, &mut batch, tag, &name);
                marks.push((tag, name));
            }
            let delivery = session.deliver(
                now,
                Arc::clone(message),
                target.qos,
                target.retain,
                target.ids.clone(),
            );
            if delivery != Delivery::Queued {
                self.count_drops(slot, session);
            }
        }
        for (slot, session) in &mut locked {
            self.collect_changes(slot, session, &mut batch);
        }
        let written = self.apply(&batch, true);
        for (tag, name) in marks {
            self.remember_mark(tag, name, written.writes.map(|(_, last)| last));
        }
        let receipts = receipts.and(written);
        let connected: Vec<&SessionSlot> = locked
            .into_iter()
            .filter(|(_, session)| session.is_connected())
            .map(|(slot, _)| slot)
            .collect();
        for slot in connected {
            slot.notify();
        }
        receipts
    }

    pub(crate) fn count_drops(&self, slot: &SessionSlot, session: &mut Session) {
        let drops = session.take_drops();
        for (cause, n) in [
            ("queue_full", drops.queue_full),
            ("expired", drops.expired),
            ("too_large", drops.too_large),
            ("qos0_offline", drops.qos0_offline),
        ] {
            if n > 0 {
                metrics::counter!(m::MESSAGES_DROPPED, "cause" => cause).increment(u64::from(n));
            }
        }
        if drops.queue_full > 0 && !slot.queue_full_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(client_id = %session.client_id(), "session queue full: dropping new messages (logged once per session)");
        }
    }
}
