//! Writing what sessions changed to the store, and the receipts that a read's
//! acknowledgements wait for.

use std::sync::atomic::Ordering;

use shoal_session::{Change, Session};
use shoal_store::WriteBatch;

use super::Broker;
use crate::metrics as m;
use crate::slot::SessionSlot;

/// What the acknowledgements of a read (PUBACK, PUBREC, SUBACK, CONNACK, PUBREL, PUBCOMP)
/// wait for before they leave: its receipts. In a cluster (a node alone is one) that is
/// the commit of the session writes it made, in the session group; a node not in its
/// cluster yet writes to the store and waits for its flush. A write that failed already
/// makes them failures. Peers' acceptance of forwarded messages and route barriers are
/// waited for beside these (`Pending`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Receipts {
    /// Something was written to the store: it must flush before acknowledging.
    pub(crate) flush: bool,
    /// A write failed: what it carried is not durable, the acknowledgements are failures.
    pub(crate) failed: bool,
    /// The numbers of the session group writes made, first and last
    /// (`Cluster::sessions_written`).
    pub(crate) writes: Option<(u64, u64)>,
}

impl Receipts {
    /// Both sets of receipts.
    pub(crate) fn and(self, other: Self) -> Self {
        let writes = match (self.writes, other.writes) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
        Self {
            flush: self.flush || other.flush,
            failed: self.failed || other.failed,
            writes,
        }
    }

    /// Whether nothing needs waiting for.
    pub(crate) fn is_empty(self) -> bool {
        !self.flush && !self.failed && self.writes.is_none()
    }
}

impl Broker {
    /// Writes the changes a session logged to the store; returns what its acknowledgements
    /// must wait for. A retired session (replaced under its client id) writes nothing: the
    /// caller holds its lock, and `SessionSlot::retire` sets the flag under that lock.
    pub(crate) fn persist(&self, slot: &SessionSlot, session: &mut Session) -> Receipts {
        let mut batch = WriteBatch::new();
        self.collect_changes(slot, session, &mut batch);
        self.apply(&batch, false)
    }

    /// Adds the changes a session logged to `batch` (nothing for a retired session).
    pub(crate) fn collect_changes(
        &self,
        slot: &SessionSlot,
        session: &mut Session,
        batch: &mut WriteBatch,
    ) {
        let retired = slot.is_retired();
        let client_id = &slot.client_id;
        while let Some(change) = session.poll_change() {
            if retired {
                continue;
            }
            batch.fence(client_id, slot.epoch());
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
                Change::Received { packet_id } => {
                    batch.put_receipt(client_id, packet_id);
                    Ok(())
                }
                Change::Released { packet_id } => {
                    batch.remove_receipt(client_id, packet_id);
                    // No resend of it can come now: its marks go (`dedup.rs`).
                    if let Some(tag) = session.take_qos2_tag(packet_id) {
                        batch.release_tag(tag);
                    }
                    Ok(())
                }
                Change::Subscribed(subscription) => {
                    batch.put_subscription(client_id, &subscription);
                    Ok(())
                }
                Change::Unsubscribed { filter } => {
                    batch.remove_subscription(client_id, &filter);
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
    }

    /// Applies `batch` (its queue writes as one atomic step with `atomic`); returns what
    /// acknowledgements of its contents must wait for.
    pub(crate) fn apply(&self, batch: &WriteBatch, atomic: bool) -> Receipts {
        if batch.is_empty() {
            return Receipts::default();
        }
        // One command of each session shard it touches: each atomic on every replica.
        if let Some(cluster) = self.cluster() {
            return Receipts {
                writes: Some(cluster.write_sessions(batch)),
                ..Receipts::default()
            };
        }
        let result = match atomic {
            true => self.store.apply_atomic(batch),
            false => self.store.apply(batch),
        };
        match result {
            Ok(()) => Receipts {
                flush: true,
                ..Receipts::default()
            },
            Err(e) => {
                self.store_failed(&e);
                Receipts {
                    flush: true,
                    failed: true,
                    writes: None,
                }
            }
        }
    }

    /// Waits until what `receipts` name is durable (the store flushed, the session writes
    /// committed); returns whether all of it is.
    pub(crate) async fn durable(&self, receipts: Receipts) -> bool {
        let flushed = !receipts.flush || crate::connection::flush_store(self).await;
        let written = match (receipts.writes, self.cluster()) {
            (Some((from, to)), Some(cluster)) => {
                let written = cluster.sessions_written(from, to).await;
                if !written {
                    metrics::counter!(m::ACKS_FAILED, "kind" => "session_write").increment(1);
                    // A full or failing disk fails the Raft log's flush, or stops a group
                    // whose apply could not write: the node says so (`/readyz` 503). A
                    // node that stops stops its groups itself: no failure of its store.
                    if self.store.is_broken() {
                        self.store_failed(&shoal_store::StoreError::Broken);
                    } else if !*self.shutdown.borrow()
                        && let Some((group, error)) = cluster.stopped_group()
                    {
                        self.group_failed(&group.to_string(), &error);
                    }
                }
                written
            }
            (Some(_), None) => false,
            (None, _) => true,
        };
        flushed && written && !receipts.failed
    }

    /// The store failed (a write or a flush): nothing acknowledged from now on is durable.
    /// The node says it is not ready (`/readyz`), and the failure is counted and logged.
    pub(crate) fn store_failed(&self, error: &shoal_store::StoreError) {
        metrics::counter!(m::STORE_FAILURES).increment(1);
        if !self.store_broken.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "the store failed: acknowledgements now answer with failure codes, and the node reports not ready; restart it once the disk is fixed");
        } else {
            tracing::debug!(%error, "store failure");
        }
    }

    /// A Raft group of this node stopped on a storage error: as a store failure, nothing
    /// acknowledged from now on is durable.
    pub(crate) fn group_failed(&self, group: &str, error: &str) {
        metrics::counter!(m::STORE_FAILURES).increment(1);
        if !self.store_broken.swap(true, Ordering::AcqRel) {
            tracing::error!(
                group,
                error,
                "a Raft group stopped on a storage error: acknowledgements now answer with failure codes, and the node reports not ready; restart it once the disk is fixed"
            );
        }
    }

    /// Whether the store has failed since the node started.
    pub(crate) fn is_store_broken(&self) -> bool {
        self.store_broken.load(Ordering::Acquire) || self.store.is_broken()
    }
}
