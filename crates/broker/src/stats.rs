//! Counters of the node's traffic, for $SYS (Prometheus has its own, in `metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the node started.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
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
}
