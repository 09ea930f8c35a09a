//! Expiry: what falls due (`Deadlines`): delayed Wills, sessions whose time is up, retained
//! messages past their Message Expiry Interval; and expired records in the store.

use std::sync::Arc;

use super::deadlines::Due;
use super::{Broker, read, write};
use crate::metrics as m;
use crate::slot::SessionSlot;

/// Most store expiry-index entries looked at per sweep.
const EXPIRY_BATCH: usize = 10_000;
/// Most deadlines acted on per sweep (the rest wait for the next second).
const DEADLINE_BATCH: usize = 10_000;

impl Broker {
    /// Acts on what is due now: Wills, session expiry, retained expiry; removes expired
    /// records from the store.
    pub(crate) fn expire(&self) {
        let now = self.now();
        for (at, due) in self.deadlines.take_due(now, DEADLINE_BATCH) {
            match due {
                Due::Session(id) => {
                    if let Some(slot) = self.slot_by_id(id) {
                        slot.deadline_taken(at);
                        self.session_due(&slot);
                    }
                }
                Due::Retained(topic) => {
                    let expires_at = read(&self.retained)
                        .get(&topic)
                        .and_then(|message| message.expires_at);
                    match expires_at {
                        Some(at) if at <= now => {
                            let expired = write(&self.retained).remove(&topic);
                            // The group forgets it too (its leader says so), or it would
                            // come back at the next start and weigh on every snapshot.
                            if let (Some(message), Some(cluster)) = (expired, self.cluster()) {
                                let cluster = cluster.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = cluster.expire_retained(&message).await {
                                        tracing::debug!(topic = %message.topic, error = %e, "an expired retained message stays in its group until the next start");
                                    }
                                });
                            }
                        }
                        // Replaced by a message that expires later: its turn then.
                        Some(at) => self.deadlines.file(at, Due::Retained(topic)),
                        None => {}
                    }
                }
            }
        }
        // In a cluster, what expired in the store goes as the leader of its session shard
        // says, with the leader's time: every replica removes the same (a replica's own
        // clock may be off). The leader checks every second.
        if let Some(cluster) = self.cluster() {
            if !self
                .expiring
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let (cluster, expiring) = (cluster.clone(), Arc::clone(&self.expiring));
                tokio::spawn(async move {
                    cluster.expire_sessions(now.as_millis()).await;
                    expiring.store(false, std::sync::atomic::Ordering::Release);
                });
            }
            return;
        }
        match self.store.remove_expired(now, EXPIRY_BATCH) {
            Ok(report) if !report.corrupt.is_empty() => {
                tracing::error!(
                    corrupt = report.corrupt.len(),
                    "corrupt records met while expiring"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "removing expired state from the store failed"),
        }
    }

    /// Files the next deadline of a disconnected session: its Will or its end, whichever
    /// comes first.
    pub(crate) fn file_session_deadline(
        &self,
        slot: &SessionSlot,
        session: &shoal_session::Session,
    ) {
        let record = session.record();
        let next = [record.will_due_at(), record.expires_at()]
            .into_iter()
            .flatten()
            .min();
        // One entry per session is enough: an earlier one filed already comes first, and
        // the sweep files the next from the session as it is then. So a client that
        // reconnects often does not pile up entries until its expiry.
        if let Some(at) = next
            && slot.file_deadline(at)
        {
            self.deadlines.file(at, Due::Session(slot.id));
        }
    }

    /// A session's deadline came: its Will is published if due, and the session ends if
    /// its time is up (publishing a Will it still holds: the Will is due at the latest
    /// when the session ends, §3.1.3.2.2). A session a client resumed meanwhile is left.
    fn session_due(&self, slot: &Arc<SessionSlot>) {
        let now = self.now();
        let will = {
            let mut session = slot.lock();
            let will = session.take_due_will(now);
            let _ = self.persist(slot, &mut session);
            will
        };
        if let Some(will) = will {
            self.publish_will(will);
        }
        let mut last_will = None;
        let ended = self.remove_if_unclaimed(slot, |session| {
            let ended = !session.is_connected()
                && session.record().expires_at().is_some_and(|at| at <= now);
            if ended {
                last_will = session.record().will.as_deref().cloned();
            }
            ended
        });
        if ended {
            if let Some(will) = last_will {
                self.publish_will(will);
            }
            metrics::counter!(m::SESSIONS_EXPIRED).increment(1);
            tracing::debug!(client_id = %slot.client_id, "session expired");
            return;
        }
        let session = slot.lock();
        if !session.is_connected() {
            self.file_session_deadline(slot, &session);
        }
    }
}
