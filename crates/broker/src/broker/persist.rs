//! Writing what sessions changed to the store.

use super::Broker;
use shoal_codec::MqttString;
use shoal_session::{Change, Session};
use shoal_store::WriteBatch;

impl Broker {
    /// Writes the changes a session logged to the store. Returns whether anything was
    /// written (so a flush is due before what caused it is acknowledged).
    pub(crate) fn persist(&self, client_id: &MqttString, session: &mut Session) -> bool {
        let mut batch = WriteBatch::new();
        while let Some(change) = session.poll_change() {
            let encoded = match change {
                Change::Record(record) => batch.put_session(&record).map(|_| ()),
                Change::Enqueued { seq, message } => {
                    batch.enqueue(client_id, seq, &message).map(|_| ())
                }
                Change::State { seq, state } => {
                    batch.set_outbound_state(client_id, seq, state);
                    Ok(())
                }
                Change::Removed { seq } => {
                    batch.remove_outbound(client_id, seq);
                    Ok(())
                }
                Change::Discarded => {
                    batch.remove_session(client_id);
                    Ok(())
                }
            };
            if let Err(e) = encoded {
                tracing::error!(%client_id, error = %e, "session state cannot be encoded for the store");
            }
        }
        if batch.is_empty() {
            return false;
        }
        if let Err(e) = self.store.apply(&batch) {
            // The store is failing: acknowledged messages would not be durable.
            tracing::error!(%client_id, error = %e, "writing session state to the store failed");
        }
        true
    }
}
