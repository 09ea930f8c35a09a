//! The collector: the run's totals, fed by connections' flushes (or by worker processes'
//! deltas) and read once a second by the monitor.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::stats::counters::{ClientStats, StreamCounters};
use crate::stats::histogram::Latency;
use crate::stats::ledger::{FlowSent, Ledger, Receipt};
use crate::stats::sequence::SeqTracker;

/// Connection events, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectCounters {
    /// Connection attempts (first connections and reconnections).
    pub attempts: u64,
    /// Attempts that got a successful CONNACK.
    pub succeeded: u64,
    /// Attempts that failed (refused, timed out, transport error).
    pub failed: u64,
    /// Established connections that ended before the run asked them to.
    pub lost: u64,
    /// Established connections closed at the end of the run.
    pub closed: u64,
}

impl ConnectCounters {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.succeeded.saturating_sub(self.lost + self.closed)
    }

    fn add(&mut self, o: &Self) {
        self.attempts += o.attempts;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.lost += o.lost;
        self.closed += o.closed;
    }

    /// The difference from an earlier reading.
    pub fn since(&self, e: &Self) -> Self {
        Self {
            attempts: self.attempts.saturating_sub(e.attempts),
            succeeded: self.succeeded.saturating_sub(e.succeeded),
            failed: self.failed.saturating_sub(e.failed),
            lost: self.lost.saturating_sub(e.lost),
            closed: self.closed.saturating_sub(e.closed),
        }
    }
}

/// The totals of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamTotals {
    /// Cumulative counters.
    pub counters: StreamCounters,
    /// End-to-end latency over the whole run.
    pub latency: Latency,
    /// End-to-end latency since the last snapshot.
    pub interval: Latency,
}

/// Everything the run has counted.
#[derive(Debug, Default)]
pub struct Totals {
    /// Per stream.
    pub streams: Vec<StreamTotals>,
    /// Received messages without a load-test header.
    pub unmeasured: u64,
    /// Connection events.
    pub connects: ConnectCounters,
    /// Time from the start of the transport connection to CONNACK, whole run.
    pub connect_latency: Latency,
    /// The same since the last snapshot.
    pub connect_interval: Latency,
    /// Errors by kind and reason code.
    pub errors: BTreeMap<String, u64>,
    /// Flow accounting.
    pub ledger: Ledger,
}

/// A once-a-second reading: cumulative counters, and the latencies of the interval.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Cumulative counters per stream.
    pub streams: Vec<StreamCounters>,
    /// End-to-end latency per stream since the previous snapshot.
    pub latency: Vec<Latency>,
    /// Cumulative unmeasured messages.
    pub unmeasured: u64,
    /// Cumulative connection events.
    pub connects: ConnectCounters,
    /// Connect latency since the previous snapshot.
    pub connect_latency: Latency,
    /// Cumulative errors.
    pub errors: BTreeMap<String, u64>,
}

/// What a worker process reports once a second: the change since its last report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Counter changes per stream.
    pub streams: Vec<StreamCounters>,
    /// End-to-end latency per stream, as histogram buckets.
    pub latency: Vec<Vec<(u64, u64)>>,
    /// Unmeasured messages.
    pub unmeasured: u64,
    /// Connection events.
    pub connects: ConnectCounters,
    /// Connect latency buckets.
    pub connect_latency: Vec<(u64, u64)>,
    /// New errors.
    pub errors: BTreeMap<String, u64>,
}

impl Delta {
    /// The change from `prev` to `now`.
    pub fn between(prev: &Snapshot, now: &Snapshot) -> Self {
        let zero = StreamCounters::default();
        Self {
            streams: now
                .streams
                .iter()
                .enumerate()
                .map(|(i, c)| c.since(prev.streams.get(i).unwrap_or(&zero)))
                .collect(),
            latency: now.latency.iter().map(Latency::dump).collect(),
            unmeasured: now.unmeasured.saturating_sub(prev.unmeasured),
            connects: now.connects.since(&prev.connects),
            connect_latency: now.connect_latency.dump(),
            errors: now
                .errors
                .iter()
                .filter_map(|(k, &v)| {
                    let d = v.saturating_sub(prev.errors.get(k).copied().unwrap_or(0));
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect(),
        }
    }
}

/// The shared totals of a run.
#[derive(Debug)]
pub struct Collector {
    totals: Mutex<Totals>,
}

impl Collector {
    /// A collector for `streams` streams.
    pub fn new(streams: usize) -> Self {
        Self {
            totals: Mutex::new(Totals {
                streams: vec![StreamTotals::default(); streams],
                ..Totals::default()
            }),
        }
    }

    /// The totals, locked. A panic while holding the lock is a bug; the data is plain
    /// counters, so a poisoned lock is still read.
    pub fn lock(&self) -> MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what a connection accumulated.
    pub fn flush(&self, stats: &mut ClientStats, now: std::time::Instant) {
        let mut t = self.lock();
        let t = &mut *t;
        let mut unmeasured = 0;
        stats.drain_into(
            now,
            |id, s| {
                if let Some(total) = t.streams.get_mut(id) {
                    total.counters.add(&s.counters);
                    for &us in &s.latency {
                        total.latency.record(u64::from(us));
                        total.interval.record(u64::from(us));
                    }
                }
            },
            &mut unmeasured,
        );
        t.unmeasured += unmeasured;
    }

    /// A connection attempt starts.
    pub fn attempt(&self) {
        self.lock().connects.attempts += 1;
    }

    /// A connection got its CONNACK after `micros`.
    pub fn connected(&self, micros: u64) {
        let mut t = self.lock();
        t.connects.succeeded += 1;
        t.connect_latency.record(micros);
        t.connect_interval.record(micros);
    }

    /// A connection attempt failed.
    pub fn connect_failed(&self, error: &str) {
        let mut t = self.lock();
        t.connects.failed += 1;
        *t.errors.entry(error.to_owned()).or_default() += 1;
    }

    /// An established connection ended early.
    pub fn lost(&self, error: &str) {
        let mut t = self.lock();
        t.connects.lost += 1;
        *t.errors.entry(error.to_owned()).or_default() += 1;
    }

    /// An established connection was closed at the end of the run.
    pub fn closed(&self) {
        self.lock().connects.closed += 1;
    }

    /// An error that does not end the connection (a refused subscription or publication).
    pub fn error(&self, error: &str) {
        *self.lock().errors.entry(error.to_owned()).or_default() += 1;
    }

    /// A publisher's final count on one flow.
    pub fn sent(&self, flow: u32, sent: FlowSent) {
        self.lock().ledger.add_sent(flow, sent);
    }

    /// A receiver's final record of one flow.
    pub fn received(&self, sink: u32, flow: u32, stream: u8, tracker: SeqTracker) {
        self.lock().ledger.add_tracker(sink, flow, stream, tracker);
    }

    /// A worker's final record of one flow at one sink.
    pub fn receipt(&self, sink: u32, flow: u32, receipt: Receipt) {
        self.lock().ledger.add_receipt(sink, flow, receipt);
    }

    /// Reads the cumulative counters and takes the interval histograms.
    pub fn snapshot(&self) -> Snapshot {
        let mut t = self.lock();
        let t = &mut *t;
        Snapshot {
            streams: t.streams.iter().map(|s| s.counters).collect(),
            latency: t.streams.iter_mut().map(|s| s.interval.take()).collect(),
            unmeasured: t.unmeasured,
            connects: t.connects,
            connect_latency: t.connect_interval.take(),
            errors: t.errors.clone(),
        }
    }

    /// Adds a worker's delta.
    pub fn apply(&self, delta: &Delta) {
        let mut t = self.lock();
        let t = &mut *t;
        for (i, c) in delta.streams.iter().enumerate() {
            if let Some(s) = t.streams.get_mut(i) {
                s.counters.add(c);
            }
        }
        for (i, buckets) in delta.latency.iter().enumerate() {
            if let Some(s) = t.streams.get_mut(i) {
                let h = Latency::from_dump(buckets);
                s.latency.add(&h);
                s.interval.add(&h);
            }
        }
        t.unmeasured += delta.unmeasured;
        t.connects.add(&delta.connects);
        let h = Latency::from_dump(&delta.connect_latency);
        t.connect_latency.add(&h);
        t.connect_interval.add(&h);
        for (k, v) in &delta.errors {
            *t.errors.entry(k.clone()).or_default() += v;
        }
    }
}
