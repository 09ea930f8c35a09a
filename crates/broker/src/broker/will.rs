//! Wills: publishing. When a Will is due is the session's decision
//! (`SessionRecord::will_due_at`); a delayed one waits in the session's record (persisted
//! with it) and in the node's deadlines (`expiry.rs`).

use std::sync::Arc;

use shoal_session::WillRecord;
use shoal_topic::Recipients;

use super::Broker;
use crate::metrics as m;

impl Broker {
    /// Publishes a Will now.
    pub(crate) fn publish_will(&self, will: WillRecord) {
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
        let _ = self.dispatch(&Arc::new(message), None, &mut recipients, None, None);
        // A Will is best effort at the moment it is published; flush in the background.
        let store = self.store.clone();
        tokio::spawn(async move {
            let _ = store.flush().await;
        });
    }
}
