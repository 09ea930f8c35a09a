//! Who serves a session: finding or creating it, taking it over from another connection.

use std::sync::Arc;

use shoal_codec::{Connect, MqttString};

use super::{Conn, Transport};
use crate::broker::Broker;
use crate::slot::SessionSlot;

/// How long a taken-over connection has to let go of its session.
const TAKEOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl<T: Transport> Conn<T> {
    /// Finds or creates the session, taking it over from another connection if one holds
    /// it, and attaches this connection. Returns the slot and Session Present.
    pub(super) async fn take_session(
        &mut self,
        connect: &Connect,
        client_id: MqttString,
    ) -> (Arc<SessionSlot>, bool) {
        let existing = self.broker.session(&client_id);
        let resume = !connect.clean_start && existing.is_some();
        if let Some(old) = &existing
            && !resume
        {
            // Its connection lets go before the session is replaced.
            take_over(&self.broker, old, 0).await;
        }
        let slot = match existing {
            Some(slot) if resume => slot,
            _ => self.broker.new_session(client_id),
        };
        // A new connection cancels a Will still waiting for its delay (§3.1.3.2.2).
        slot.cancel_will();
        self.attachment = next_attachment();
        take_over(&self.broker, &slot, self.attachment).await;
        (slot, resume)
    }
}

/// Hands a session to the connection numbered `attachment` (0: to none): the connection
/// serving it sees that it was taken over and ends. Waits until it has let go
/// (`TAKEOVER_TIMEOUT` at most), then attaches `attachment`.
///
/// Connections that let go signal `Broker::detached`, one notification for the whole node:
/// takeovers are rare, and a session then holds no signal of its own.
pub(super) async fn take_over(broker: &Broker, slot: &SessionSlot, attachment: u32) {
    slot.hand_over(attachment);
    let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
    loop {
        let detached = broker.detached.notified();
        tokio::pin!(detached);
        detached.as_mut().enable();
        if slot.try_attach(attachment, false) {
            return;
        }
        if tokio::time::timeout_at(deadline, detached).await.is_err() {
            tracing::warn!("a taken-over connection did not let go of its session in time");
            slot.try_attach(attachment, true);
            return;
        }
    }
}

/// A number for a new attachment of a connection to a session: never 0, and unique among
/// the connections of one session (it wraps after 4 billion connections to the node).
pub(super) fn next_attachment() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n != 0 {
            return n;
        }
    }
}
