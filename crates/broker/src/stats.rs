//! Counters of the node's traffic: the hot path adds to plain atomics, and both $SYS and
//! `/metrics` read them (`export`), so a message costs no lookup in the metrics registry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the node started.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// PUBLISH received, by QoS.
    pub(crate) messages_received: [AtomicU64; 3],
    /// PUBLISH sent, by QoS.
    pub(crate) messages_sent: [AtomicU64; 3],
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) connected: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The sum over QoS levels.
    pub(crate) fn total(counters: &[AtomicU64; 3]) -> u64 {
        counters.iter().map(Self::get).sum()
    }

    /// Sets the Prometheus counters to these totals.
    pub(crate) fn export(&self) {
        use crate::metrics as m;
        for (qos, label) in ["0", "1", "2"].into_iter().enumerate() {
            metrics::counter!(m::MESSAGES_RECEIVED, "qos" => label)
                .absolute(Self::get(&self.messages_received[qos]));
            metrics::counter!(m::MESSAGES_SENT, "qos" => label)
                .absolute(Self::get(&self.messages_sent[qos]));
        }
        metrics::counter!(m::BYTES_RECEIVED).absolute(Self::get(&self.bytes_received));
        metrics::counter!(m::BYTES_SENT).absolute(Self::get(&self.bytes_sent));
    }
}
