//! Retained messages: keeping, clearing, finding them for a subscription.

use std::sync::Arc;

use super::{Broker, Receipts, read, write};
use shoal_session::{Message, Timestamp};

impl Broker {
    /// Keeps (or with an empty payload, clears) the retained message of a topic. Returns
    /// what an acknowledgement of it waits for.
    pub(crate) fn retain(&self, message: &Arc<Message>, persist: bool) -> Receipts {
        let topic = message.topic.as_str();
        let result = if message.payload.is_empty() {
            let removed = write(&self.retained).remove(topic).is_some();
            if removed && persist {
                Some(self.store.remove_retained(&message.topic).map(|_| ()))
            } else {
                None
            }
        } else {
            // Kept for long: its own allocation, not its packet's read buffer.
            let kept = Arc::new(message.detached());
            if let Some(at) = kept.expires_at {
                self.deadlines
                    .file(at, super::deadlines::Due::Retained(kept.topic.clone()));
            }
            let stored = persist.then(|| self.store.put_retained(&kept));
            write(&self.retained).insert(topic, kept);
            stored
        };
        match result {
            Some(Ok(())) => Receipts {
                flush: true,
                failed: false,
            },
            Some(Err(e)) => {
                self.store_failed(&e);
                Receipts {
                    flush: true,
                    failed: true,
                }
            }
            None => Receipts::default(),
        }
    }

    /// Retained messages whose topics match `filter` (a plain filter), unexpired at `now`.
    pub(crate) fn retained_for(&self, filter: &str, now: Timestamp) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        read(&self.retained).for_each_match_value(filter, |message| {
            if !message.is_expired(now) {
                found.push(Arc::clone(message));
            }
        });
        found
    }
}
