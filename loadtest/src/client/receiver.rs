//! The receiving side of a client: reads the measurement header of each message, tracks its
//! flow's sequence numbers and records its end-to-end latency.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::payload::Header;
use crate::stats::{Arrival, ClientStats, Collector, SeqTracker};

/// A hasher for flow ids (small integers chosen by this tool, not by peers): one multiply.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlowHasher(u64);

impl Hasher for FlowHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The flows one client receives.
#[derive(Debug, Default)]
pub struct Receiver {
    flows: HashMap<u32, (u8, SeqTracker), BuildHasherDefault<FlowHasher>>,
}

impl Receiver {
    /// An empty receiver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for one received payload at `now_ns` (monotonic nanoseconds).
    pub fn on_message(&mut self, payload: &[u8], now_ns: u64, stats: &mut ClientStats) {
        let Some(h) = Header::read(payload) else {
            stats.unmeasured += 1;
            stats.touch();
            return;
        };
        let Some(stream) = stats.stream(h.stream) else {
            stats.unmeasured += 1;
            return;
        };
        let (_, tracker) = self
            .flows
            .entry(h.flow)
            .or_insert_with(|| (h.stream, SeqTracker::new()));
        match tracker.record(h.seq) {
            Arrival::New { reordered } => {
                stream.counters.received += 1;
                stream.counters.reordered += u64::from(reordered);
                stream.record_latency(now_ns.saturating_sub(h.sent_ns) / 1_000);
            }
            Arrival::Duplicate => {
                stream.counters.received += 1;
                stream.counters.duplicates += 1;
            }
            Arrival::OutOfRange => stats.unmeasured += 1,
        }
    }

    /// Hands every flow's record to the collector's ledger under `sink`.
    pub fn finish(self, sink: Option<u32>, collector: &Collector) {
        let Some(sink) = sink else { return };
        for (flow, (stream, tracker)) in self.flows {
            collector.received(sink, flow, stream, tracker);
        }
    }
}
