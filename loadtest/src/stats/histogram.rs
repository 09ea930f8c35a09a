//! Latency histograms: HDR histograms of microseconds, their summaries, and a compact form
//! that travels between worker processes and into JSON results.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant figures kept: 0.1% precision at any magnitude.
const SIGFIG: u8 = 3;
/// Values are clamped to an hour: anything longer is not a latency but a stuck message.
const MAX_MICROS: u64 = 3_600_000_000;

/// An HDR histogram of latencies in microseconds. It grows with the largest value recorded,
/// so a fresh one is small (a few KiB) and cheap to merge.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // `new(sigfig)` auto-resizes; it only fails for sigfig > 5.
        Self(Histogram::new(SIGFIG).expect("3 significant figures is a valid configuration"))
    }

    /// Records one latency (values of 0 count as 1 µs).
    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1);
    }

    /// Records `count` values of `micros`. (`record_n` grows the histogram; the
    /// `saturating_*` variants would clamp to its current top instead.)
    pub fn record_n(&mut self, micros: u64, count: u64) {
        let v = micros.clamp(1, MAX_MICROS);
        if self.0.record_n(v, count).is_err() {
            self.0.saturating_record_n(v, count);
        }
    }

    /// How many values are recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &Self) {
        if other.is_empty() {
            return;
        }
        // Both auto-resize with the same precision, so addition cannot fail; fall back to
        // re-recording should the library ever refuse.
        if self.0.add(&other.0).is_err() {
            for v in other.0.iter_recorded() {
                self.0
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Empties the histogram, keeping its memory.
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// Takes the content, leaving an empty histogram.
    pub fn take(&mut self) -> Self {
        let out = self.clone();
        self.reset();
        out
    }

    /// The value at quantile `q` (0.0 to 1.0), in microseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// The summary a report shows.
    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            min_us: self.0.min(),
            mean_us: self.0.mean(),
            p50_us: self.0.value_at_quantile(0.50),
            p90_us: self.0.value_at_quantile(0.90),
            p99_us: self.0.value_at_quantile(0.99),
            p999_us: self.0.value_at_quantile(0.999),
            max_us: self.0.max(),
        }
    }

    /// The recorded buckets as (highest equivalent value, count) pairs, in order.
    pub fn dump(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A histogram from the pairs of [`Latency::dump`].
    pub fn from_dump(buckets: &[(u64, u64)]) -> Self {
        let mut h = Self::new();
        for &(value, count) in buckets {
            h.record_n(value, count);
        }
        h
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many values.
    pub count: u64,
    /// The smallest.
    pub min_us: u64,
    /// The mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: u64,
    /// The 90th percentile.
    pub p90_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The 99.9th percentile.
    pub p999_us: u64,
    /// The largest.
    pub max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_dump_round_trip() {
        let mut h = Latency::new();
        for us in 1..=1000 {
            h.record(us);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50_us), "{s:?}");
        assert!((989..=991).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 1000);
        h.record(5_000_000);
        let s = h.summary();
        let max = s.max_us;
        assert!(
            (5_000_000..=5_005_000).contains(&max),
            "values beyond the first bucket grow the histogram: {max}"
        );
        let copy = Latency::from_dump(&h.dump());
        assert_eq!(copy.summary(), s);
        let mut sum = Latency::new();
        sum.add(&h);
        sum.add(&copy);
        assert_eq!(sum.len(), 2002);
        assert_eq!(h.take().len(), 1001);
        assert!(h.is_empty());
    }
}
