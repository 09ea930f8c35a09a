//! Expiry: sessions and retained messages whose time is up.

use std::sync::Arc;

use super::{Broker, lock, write};
use crate::metrics as m;
use crate::slot::SessionSlot;

/// Most store expiry-index entries looked at per sweep.
const EXPIRY_BATCH: usize = 10_000;

impl Broker {
    /// Removes sessions whose expiry passed, and expired messages from the store.
    pub(crate) fn expire(self: &Arc<Self>) {
        let now = self.now();
        let expired: Vec<Arc<SessionSlot>> = lock(&self.sessions)
            .values()
            .filter(|slot| {
                let session = slot.lock();
                !session.is_connected() && session.record().expires_at().is_some_and(|at| at <= now)
            })
            .cloned()
            .collect();
        for slot in expired {
            // The Will is due at the latest when the session ends (§3.1.3.2.2).
            let mut will = None;
            let ended = self.remove_if_unclaimed(&slot, |session| {
                let ended = !session.is_connected()
                    && session.record().expires_at().is_some_and(|at| at <= now);
                if ended {
                    will = session.record().will.as_deref().cloned();
                }
                ended
            });
            if !ended {
                continue;
            }
            if let Some(will) = will {
                slot.cancel_will();
                self.publish_will(will);
            }
            metrics::counter!(m::SESSIONS_EXPIRED).increment(1);
            tracing::debug!(client_id = %slot.client_id, "session expired");
        }
        let mut gone = Vec::new();
        write(&self.retained).retain(|_, message| {
            let expired = message.is_expired(now);
            if expired {
                gone.push(message.topic.clone());
            }
            !expired
        });
        for topic in gone {
            let _ = self.store.remove_retained(&topic);
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
}
