//! The ACL applied to sessions: judging their subscriptions, reloads.

use shoal_session::Session;

use super::Broker;
use crate::metrics as m;
use crate::slot::SessionSlot;
use shoal_access::acl::{ClientAcl, SubscribeDecision};

impl Broker {
    /// Judges a session's subscriptions under `acl`: when one reaches topics the ACL keeps
    /// from the client, deliveries to the session are checked from now on. Every message
    /// the session holds, queued or in flight, that the client may not receive is dropped
    /// (and the drop persisted): a session resumed by another user, or under new rules,
    /// sends nothing its client may not read. Called before `Session::attach` queues the
    /// resends.
    pub(crate) fn judge_subscriptions(
        &self,
        slot: &SessionSlot,
        session: &mut Session,
        acl: &ClientAcl,
    ) {
        let restricted = session.subscriptions().iter().any(|sub| {
            let inner = match shoal_topic::FilterKind::parse(&sub.filter) {
                Ok(shoal_topic::FilterKind::Plain(f)) => f,
                Ok(shoal_topic::FilterKind::Shared { filter, .. }) => filter,
                Err(_) => return true,
            };
            acl.subscribe(inner) != SubscribeDecision::Allow
        });
        slot.filter_with(restricted.then(|| acl.clone()));
        // Judged whatever the subscriptions are now: a message may have come through one
        // the previous client held and removed.
        let dropped = session.retain_queued(|m| acl.may_receive(&m.topic));
        if dropped > 0 {
            metrics::counter!(m::ACL_DENIED, "action" => "deliver").increment(dropped as u64);
            let _ = self.persist(slot, session);
        }
    }

    /// The ACL changed: every session whose client's identity is known is judged again
    /// under the new rules (the others are at their next connection).
    pub(crate) fn reapply_acl(&self) {
        for slot in self.slots() {
            let Some(username) = slot.acl_username() else {
                continue;
            };
            let (_, acl) = self.access.client_acl(username.as_deref(), &slot.client_id);
            let mut session = slot.lock();
            self.judge_subscriptions(&slot, &mut session, &acl);
        }
    }
}
