//! Who owns a client identifier on this node: a CONNECT claims the session of its client id,
//! and a connection that ends lets go of it.
//!
//! Every change of owner is decided under the sessions table's lock, in one step: finding
//! the session, creating or replacing it, and handing it to the claiming connection. Two
//! CONNECTs with one client id therefore never both win: the later claim takes the session
//! over (or replaces it, with a clean start) and the earlier connection ends with 0x8E. The
//! same step is where the cluster's owner epoch (a fencing number) goes.

use std::sync::Arc;

use shoal_codec::MqttString;
use shoal_session::Session;

use super::{Broker, lock, write};
use crate::slot::SessionSlot;

/// What a CONNECT claimed.
#[derive(Debug)]
pub(crate) struct Claim {
    /// The session, handed to the claiming connection.
    pub(crate) slot: Arc<SessionSlot>,
    /// Whether an existing session is resumed (Session Present).
    pub(crate) resumed: bool,
    /// The session a clean start replaced: retired and discarded already; its connection,
    /// if one is attached, is ending.
    pub(crate) replaced: Option<Arc<SessionSlot>>,
}

impl Broker {
    /// Claims the session of `client_id` for the connection numbered `attachment`: resumes
    /// the existing one (`clean_start` false), or creates a new one, replacing (retiring
    /// and discarding) any that existed. The connection serving a resumed session is told to
    /// end; `SessionSlot::try_attach` then waits for it to let go.
    pub(crate) fn claim(&self, client_id: MqttString, clean_start: bool, attachment: u32) -> Claim {
        let mut sessions = lock(&self.sessions);
        let existing = sessions.get(&client_id).cloned();
        if !clean_start && let Some(slot) = existing {
            slot.hand_over(attachment);
            return Claim {
                slot,
                resumed: true,
                replaced: None,
            };
        }
        let slot = self.new_slot(Session::new(client_id, Arc::clone(&self.session_config)));
        slot.hand_over(attachment);
        sessions.insert(Arc::clone(&slot));
        write(&self.by_id).insert(Arc::clone(&slot));
        if let Some(old) = &existing {
            // Retired first: the old session writes nothing more, so removing its state
            // from the store here (under the table's lock, before the new session's first
            // write) cannot be undone by a late write of the old one.
            old.retire();
            self.discard_unlisted(old);
        }
        Claim {
            slot,
            resumed: false,
            replaced: existing,
        }
    }

    /// The connection numbered `attachment` lets go of the session; a session that does not
    /// outlive its connection (`persistent` false) ends here, unless another connection
    /// claimed it meanwhile. Returns whether the connection still served the session.
    pub(crate) fn release(
        &self,
        slot: &Arc<SessionSlot>,
        attachment: u32,
        persistent: bool,
    ) -> bool {
        let mut sessions = lock(&self.sessions);
        let ours = slot.detach(attachment);
        if ours && !persistent && !slot.is_retired() {
            sessions.remove(slot);
            self.discard_unlisted(slot);
        }
        ours
    }

    /// Ends the session of a client id that another node claimed (its connection here has
    /// let go): it is retired and discarded, unless a connection here attached to it again.
    /// Its Will is not published: the client is connected elsewhere.
    pub(crate) fn end_claimed(&self, slot: &Arc<SessionSlot>) {
        let mut sessions = lock(&self.sessions);
        let listed = sessions
            .get(&slot.client_id)
            .is_some_and(|listed| Arc::ptr_eq(listed, slot));
        if !listed || slot.is_attached() {
            return;
        }
        slot.retire();
        sessions.remove(slot);
        self.discard_unlisted(slot);
    }

    /// Ends `slot` if nobody claimed it and `ended` says its time is up, deciding and
    /// discarding under the table's lock (a CONNECT cannot claim it meanwhile). Returns
    /// whether it ended.
    pub(crate) fn remove_if_unclaimed(
        &self,
        slot: &Arc<SessionSlot>,
        ended: impl FnOnce(&mut Session) -> bool,
    ) -> bool {
        let mut sessions = lock(&self.sessions);
        let listed = sessions
            .get(&slot.client_id)
            .is_some_and(|listed| Arc::ptr_eq(listed, slot));
        if !listed || !slot.is_free() || !ended(&mut slot.lock()) {
            return false;
        }
        sessions.remove(slot);
        self.discard_unlisted(slot);
        if let Some(cluster) = self.cluster() {
            cluster.release(&slot.client_id, slot.epoch());
        }
        true
    }
}
