//! Wills: scheduling after the Will Delay, publishing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_session::WillRecord;
use shoal_topic::Recipients;

use super::Broker;
use crate::metrics as m;
use crate::slot::SessionSlot;

impl Broker {
    /// Publishes a Will now, or after its delay unless the session is resumed before.
    pub(crate) fn schedule_will(self: &Arc<Self>, slot: &Arc<SessionSlot>, will: WillRecord) {
        let generation = slot.cancel_will();
        if will.delay == 0 {
            self.publish_will(will);
            return;
        }
        let broker = Arc::clone(self);
        let slot = Arc::clone(slot);
        let delay = std::time::Duration::from_secs(u64::from(will.delay));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if slot.will_generation.load(Ordering::SeqCst) == generation {
                broker.publish_will(will);
            }
        });
    }

    pub(super) fn publish_will(&self, will: WillRecord) {
        let mut message = will.message;
        let now = self.now();
        message.expires_at = message
            .properties
            .message_expiry_interval
            .take()
            .map(|s| now.plus_secs(s));
        message.received_at = now;
        metrics::counter!(m::WILLS_PUBLISHED).increment(1);
        let mut recipients = Recipients::new();
        let _ = self.dispatch(&Arc::new(message), None, &mut recipients, None);
        // A Will is best effort at the moment it is published; flush in the background.
        let store = self.store.clone();
        tokio::spawn(async move {
            let _ = store.flush().await;
        });
    }
}
