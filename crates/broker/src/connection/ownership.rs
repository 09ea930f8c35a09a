//! Who serves a session: finding or creating it, taking it over from another connection.

use std::sync::Arc;

use shoal_codec::{Connect, MqttString};

use super::{Conn, Transport};
use crate::broker::Broker;
use crate::slot::{Attach, SessionSlot};

/// How long a taken-over connection has to let go of its session.
const TAKEOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl<T: Transport> Conn<T> {
    /// Claims the session of `client_id` (see `Broker::claim`) and attaches this connection
    /// once the connection that held it has let go. Returns the slot and Session Present;
    /// `None` when a later CONNECT with the same client id claimed it first (this one is
    /// then taken over before it began).
    pub(super) async fn take_session(
        &mut self,
        connect: &Connect,
        client_id: MqttString,
    ) -> Option<(Arc<SessionSlot>, bool)> {
        self.attachment = next_attachment();
        let claim = self
            .broker
            .claim(client_id, connect.clean_start, self.attachment);
        if let Some(old) = &claim.replaced {
            // The connection of the replaced session closes before this CONNACK.
            wait_until(&self.broker, || !old.is_attached()).await;
        }
        // A Will still waiting for its delay is cancelled by this connection (§3.1.3.2.2):
        // a resumed session's record takes the new CONNECT's Will at attach, and a replaced
        // session was discarded with its Will.
        let mut attach = Attach::Wait;
        let attached = wait_until(&self.broker, || {
            attach = claim.slot.try_attach(self.attachment, false);
            attach != Attach::Wait
        })
        .await;
        if !attached {
            tracing::warn!("a taken-over connection did not let go of its session in time");
            attach = claim.slot.try_attach(self.attachment, true);
        }
        (attach == Attach::Attached).then_some((claim.slot, claim.resumed))
    }
}

/// Waits until `done` holds, checking it again whenever a connection lets go of its session
/// (`Broker::detached`, one notification for the whole node: takeovers are rare, and a
/// session then holds no signal of its own); `TAKEOVER_TIMEOUT` at most. Returns whether it
/// held.
async fn wait_until(broker: &Broker, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
    loop {
        let detached = broker.detached.notified();
        tokio::pin!(detached);
        detached.as_mut().enable();
        if done() {
            return true;
        }
        if tokio::time::timeout_at(deadline, detached).await.is_err() {
            return done();
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
