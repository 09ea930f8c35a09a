//! The end of a connection: the last packets, detaching, the Will.

use std::sync::Arc;

use shoal_codec::ProtocolVersion;
use shoal_session::{CloseReason, ClosedBy};

use super::{Conn, Transport};
use crate::metrics as m;
use crate::slot::SessionSlot;

impl<T: Transport> Conn<T> {
    /// Sends what is left (DISCONNECT), detaches the session, schedules the Will.
    pub(super) async fn finish(&mut self, slot: &Arc<SessionSlot>, reason: CloseReason) {
        let version = slot.lock().version().unwrap_or(ProtocolVersion::V3_1_1);
        {
            let mut session = slot.lock();
            while let Some(packet) = session.poll_transmit(self.broker.now()) {
                let _ = packet.encode(version, &mut self.wbuf);
            }
        }
        if reason.by != ClosedBy::Network {
            self.write_and_close().await;
        }
        slot.set_connected_as(None);
        let (will, persistent) = {
            let mut session = slot.lock();
            let mut will = session.detach(self.broker.now(), reason);
            if slot.is_retired() && will.is_none() && reason.publish_will {
                // A clean start replaced the session: it ended, so its Will is due now.
                will = session.record().will.as_deref().cloned();
            }
            let _ = self.broker.persist(slot, &mut session);
            if !slot.is_retired() {
                // A delayed Will, and the session's end, wait in the node's deadlines.
                self.broker.file_session_deadline(slot, &session);
            }
            (will, session.is_persistent())
        };
        metrics::counter!(m::DISCONNECTS, "reason" => format!("{:?}", reason.reason), "by" => format!("{:?}", reason.by)).increment(1);
        tracing::debug!(reason = %reason.reason, by = ?reason.by, "disconnected");
        if let Some(will) = will {
            self.broker.publish_will(will);
        }
        // Still ours (not taken over)? Then a session that does not outlive its connection
        // ends here.
        let ours = self.broker.release(slot, self.attachment, persistent);
        if let Some(cluster) = self.broker.cluster() {
            if cluster.overtaken(&slot.client_id, slot.epoch()) {
                // Taken over on another node: the session lives there now (a persistent
                // one is let go when the new owner fences it: `session_fenced`).
                if !persistent {
                    self.broker.end_claimed(slot);
                }
            } else if ours && !persistent {
                // The registry forgets the client id (a persistent session keeps it until
                // the session ends: a connect elsewhere must take it over).
                cluster.release(&slot.client_id, slot.epoch());
            }
        }
    }
}
