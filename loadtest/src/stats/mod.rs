//! Measurements: counters, HDR latency histograms, per-flow sequence tracking, and the
//! collector that gathers them from every connection.

pub mod collector;
pub mod counters;
pub mod histogram;
pub mod ledger;
pub mod sequence;

pub use collector::{Collector, ConnectCounters, Delta, Snapshot, Totals};
pub use counters::{ClientStats, StreamCounters, StreamStats};
pub use histogram::{Latency, LatencySummary};
pub use ledger::{FlowOutcome, FlowSent, Ledger, Receipt};
pub use sequence::{Arrival, SeqTracker};
