//! Dispatch: a message to every session that subscribed to its topic.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_codec::QoS;
use shoal_session::{Delivery, Message, Session, Timestamp};
use shoal_topic::Recipients;

use super::{Broker, read};
use crate::metrics as m;
use crate::slot::SessionSlot;

/// What a dispatch needs before its publisher may be acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Dispatched {
    /// Something was written to the store: flush before acknowledging.
    pub(crate) needs_flush: bool,
    /// How many sessions the message went to.
    pub(crate) recipients: usize,
}

impl Broker {
    /// Sends a message to every session that subscribed to its topic, and keeps it if it
    /// is retained. `publisher` is the publishing session (for No Local).
    pub(crate) fn dispatch(
        &self,
        message: &Arc<Message>,
        publisher: Option<u64>,
        recipients: &mut Recipients<u64>,
    ) -> Dispatched {
        let now = self.now();
        let mut out = Dispatched::default();
        if message.retain {
            out.needs_flush |= self.retain(message, true);
        }
        read(&self.index).match_topic(&message.topic, publisher, recipients);
        let by_id = read(&self.by_id);
        for recipient in recipients.subscribers() {
            let Some(slot) = by_id.get(&recipient.subscriber) else {
                continue;
            };
            if !slot.may_receive(&message.topic) {
                continue;
            }
            let retain = message.retain && recipient.retain_as_published;
            out.needs_flush |= self.deliver(
                slot,
                now,
                message,
                recipient.qos,
                retain,
                recipient.identifiers.to_vec(),
            );
            out.recipients += 1;
        }
        for group in recipients.shared_groups() {
            let members = group.members;
            if members.is_empty() {
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
            let ids = pick.identifier.into_iter().collect();
            let retain = message.retain && pick.options.retain_as_published;
            out.needs_flush |= self.deliver(slot, now, message, pick.options.qos, retain, ids);
            out.recipients += 1;
        }
        if out.recipients == 0 {
            metrics::counter!(m::MESSAGES_DROPPED, "cause" => "no_subscribers").increment(1);
        }
        out
    }

    /// Gives one session a message; wakes its connection. Returns whether the store was
    /// written.
    pub(crate) fn deliver(
        &self,
        slot: &SessionSlot,
        now: Timestamp,
        message: &Arc<Message>,
        qos: QoS,
        retain: bool,
        ids: Vec<std::num::NonZeroU32>,
    ) -> bool {
        let mut session = slot.lock();
        let delivery = session.deliver(now, Arc::clone(message), qos, retain, ids);
        let wrote = self.persist(&slot.client_id, &mut session);
        let connected = session.is_connected();
        if delivery != Delivery::Queued {
            self.count_drops(slot, &mut session);
        }
        drop(session);
        if connected {
            slot.notify();
        }
        wrote
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
