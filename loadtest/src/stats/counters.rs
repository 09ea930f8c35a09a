//! Message counters per stream, and the statistics one connection keeps locally and hands to
//! the collector every few hundred milliseconds, so that the hot path touches no shared
//! memory.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Message counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounters {
    /// PUBLISH packets written.
    pub sent: u64,
    /// Publications acknowledged: PUBACK (QoS 1) or PUBCOMP (QoS 2).
    pub acked: u64,
    /// Deliveries the sent messages should make: each message times the number of
    /// subscribers (or shared groups) whose filters match its topic.
    pub expected: u64,
    /// Measured messages received, duplicates included.
    pub received: u64,
    /// Messages received again on the same flow by the same receiver.
    pub duplicates: u64,
    /// Messages received after a later one of their flow.
    pub reordered: u64,
}

impl StreamCounters {
    /// Adds `other` field by field.
    pub fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.expected += other.expected;
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
    }

    /// The difference from an earlier reading.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            sent: self.sent.saturating_sub(earlier.sent),
            acked: self.acked.saturating_sub(earlier.acked),
            expected: self.expected.saturating_sub(earlier.expected),
            received: self.received.saturating_sub(earlier.received),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            reordered: self.reordered.saturating_sub(earlier.reordered),
        }
    }
}

/// Counters and end-to-end latencies of one stream, as one connection accumulates them.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    /// The counters.
    pub counters: StreamCounters,
    /// End-to-end latencies of received messages since the last flush, microseconds. Raw
    /// values, recorded into the collector's histograms at the flush: a histogram per
    /// connection would cost kilobytes for each of 100,000 mostly idle clients, this costs
    /// nothing until messages arrive and then a few hundred values at most.
    pub latency: Vec<u32>,
}

impl StreamStats {
    /// Notes one end-to-end latency.
    pub fn record_latency(&mut self, micros: u64) {
        self.latency.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }
}

/// What one connection accumulated since its last flush.
#[derive(Debug)]
pub struct ClientStats {
    /// Per stream, indexed by stream id.
    pub streams: Vec<StreamStats>,
    /// Messages received without a load-test header (retained status, Wills, foreign
    /// publishers).
    pub unmeasured: u64,
    last_flush: Instant,
    dirty: bool,
}

impl ClientStats {
    /// Empty statistics for `streams` streams.
    pub fn new(streams: usize) -> Self {
        Self {
            streams: (0..streams).map(|_| StreamStats::default()).collect(),
            unmeasured: 0,
            last_flush: Instant::now(),
            dirty: false,
        }
    }

    /// The statistics of stream `id`, if the scenario has it.
    pub fn stream(&mut self, id: u8) -> Option<&mut StreamStats> {
        self.dirty = true;
        self.streams.get_mut(usize::from(id))
    }

    /// Marks that something was counted outside [`ClientStats::stream`].
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Whether there is something to flush and `every` has passed since the last flush.
    pub fn flush_due(&self, now: Instant, every: Duration) -> bool {
        self.dirty && now.duration_since(self.last_flush) >= every
    }

    /// When the next flush is due, if there is something to flush.
    pub fn flush_at(&self, every: Duration) -> Option<Instant> {
        self.dirty.then(|| self.last_flush + every)
    }

    /// Hands the accumulated values to `sink` and starts over.
    pub fn drain_into(
        &mut self,
        now: Instant,
        mut sink: impl FnMut(usize, &StreamStats),
        unmeasured: &mut u64,
    ) {
        for (id, stream) in self.streams.iter_mut().enumerate() {
            if stream.counters != StreamCounters::default() || !stream.latency.is_empty() {
                sink(id, stream);
                stream.counters = StreamCounters::default();
                stream.latency.clear();
            }
        }
        *unmeasured += std::mem::take(&mut self.unmeasured);
        self.last_flush = now;
        self.dirty = false;
    }
}
