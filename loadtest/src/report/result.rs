//! The result of a run, as `--json` writes it and `report` reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::procstat::MeterSummary;
use crate::scenario::Placement;
use crate::stats::LatencySummary;

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// `shoal-loadtest`.
    pub tool: String,
    /// The tool's version.
    pub version: String,
    /// The scenario name (`pairs`, `fleet`, a file's name).
    pub scenario: String,
    /// A label for comparisons (`--label`, default the scenario and broker).
    pub label: String,
    /// The command line.
    pub command: String,
    /// The broker URL (`-b`; the first of `brokers`).
    pub broker: String,
    /// Every broker URL, `-b` first then `--more-brokers` (empty in results written before
    /// several brokers were possible: read `broker` then).
    #[serde(default)]
    pub brokers: Vec<String>,
    /// How the clients were placed on `brokers` (`--placement`; `spread` in results
    /// written before it was recorded). Each group's `brokers` says where exactly.
    #[serde(default)]
    pub placement: Placement,
    /// Each broker's version, in the order of `brokers`, from its retained
    /// `$SYS/broker/version` (`null`: it answered none; empty: not asked, with
    /// `--no-broker-version` or in results written before it was asked).
    #[serde(default)]
    pub broker_versions: Vec<Option<String>>,
    /// MQTT version: 3 (3.1), 4 (3.1.1) or 5.
    pub mqtt_version: u8,
    /// Start time, Unix milliseconds.
    pub started_unix_ms: u64,
    /// The host the tool ran on (empty in results written before it was recorded).
    #[serde(default)]
    pub host: String,
    /// Groups and their sizes.
    pub groups: Vec<GroupInfo>,
    /// Worker processes (1: this process alone).
    pub workers: usize,
    /// How long connecting took, seconds.
    pub connect_seconds: f64,
    /// How long publishing ran, seconds.
    pub run_seconds: f64,
    /// How long the drain lasted, seconds.
    pub drain_seconds: f64,
    /// Connection figures.
    pub connections: ConnectionsResult,
    /// Per measured stream.
    pub streams: Vec<StreamResult>,
    /// All streams together.
    pub total: StreamResult,
    /// Messages received without a measurement header (retained status, Wills, ...).
    pub unmeasured: u64,
    /// Errors and non-success reason codes, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Flow accounting.
    pub flows: FlowsResult,
    /// The broker's CPU and memory (`--broker-pid`), summed over every broker process.
    pub broker_usage: Option<UsageResult>,
    /// The tool's own CPU and memory (all its processes).
    pub tool_usage: UsageResult,
    /// One sample per second.
    pub samples: Vec<Sample>,
    /// The expectations checked.
    pub expectations: Vec<ExpectationResult>,
    /// Whether every expectation held.
    pub passed: bool,
}

impl RunResult {
    /// Every broker URL of the run (`broker` alone for results that predate `brokers`).
    pub fn broker_urls(&self) -> Vec<&str> {
        if self.brokers.is_empty() {
            vec![self.broker.as_str()]
        } else {
            self.brokers.iter().map(String::as_str).collect()
        }
    }
}

/// A group of clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Clients.
    pub count: u32,
    /// The positions in the run's `brokers` (`-b` = 0) its clients connect to in turn:
    /// client `i` to the `i mod len`-th (empty in results written before it was recorded).
    #[serde(default)]
    pub brokers: Vec<usize>,
}

/// Connection figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectionsResult {
    /// Clients in the scenario.
    pub target: u64,
    /// Connection attempts.
    pub attempts: u64,
    /// Successful CONNACKs.
    pub succeeded: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Connections lost during the run.
    pub lost: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Successful connections per second during the connect phase.
    pub rate_per_s: f64,
    /// Time from transport connect to CONNACK.
    pub latency: LatencySummary,
}

/// One measured stream (or all of them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamResult {
    /// Name.
    pub name: String,
    /// Messages published.
    pub sent: u64,
    /// Publications acknowledged (QoS 1/2).
    pub acked: u64,
    /// Deliveries expected (sent × matching receivers).
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub received: u64,
    /// Deliveries missing.
    pub lost: u64,
    /// Lost as a percentage of expected.
    pub loss_percent: f64,
    /// Repeated deliveries.
    pub duplicates: u64,
    /// Deliveries out of order.
    pub reordered: u64,
    /// Published per second over the run.
    pub sent_per_s: f64,
    /// Received per second over the run.
    pub received_per_s: f64,
    /// End-to-end latency.
    pub latency: LatencySummary,
    /// The latency histogram: (microseconds, count) buckets.
    pub latency_histogram: Vec<(u64, u64)>,
}

/// Flow accounting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowsResult {
    /// Flows (publisher × topic) seen.
    pub count: u64,
    /// Flows that lost messages.
    pub with_loss: u64,
    /// Flows with duplicates.
    pub with_duplicates: u64,
    /// The flows that lost most, up to 20.
    pub worst: Vec<FlowDetail>,
}

/// One flow's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowDetail {
    /// Flow id.
    pub flow: u32,
    /// Publisher client id.
    pub publisher: String,
    /// Topic.
    pub topic: String,
    /// Stream.
    pub stream: String,
    /// Sent (absent when the publisher was not part of the run).
    pub sent: Option<u64>,
    /// Deliveries expected.
    pub expected: u64,
    /// Distinct deliveries.
    pub received: u64,
    /// Deliveries missing.
    pub lost: u64,
    /// Repeated deliveries.
    pub duplicates: u64,
}

/// CPU and memory of a process (or the tool's processes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageResult {
    /// Process ids measured.
    pub pids: Vec<u32>,
    /// CPU and memory.
    #[serde(flatten)]
    pub meter: MeterSummary,
    /// CPU microseconds per delivered message.
    pub cpu_us_per_msg: Option<f64>,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// The phase: connecting, running, draining, stopping.
    pub phase: String,
    /// Connections open.
    pub open: u64,
    /// Successful connections in the second.
    pub connects: u64,
    /// Messages published in the second.
    pub sent: u64,
    /// Publications acknowledged in the second.
    pub acked: u64,
    /// Messages received in the second.
    pub received: u64,
    /// Median end-to-end latency of the second, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Errors so far.
    pub errors: u64,
    /// Broker CPU, percent of one core.
    pub broker_cpu: Option<f64>,
    /// Broker resident memory, bytes.
    pub broker_rss: Option<u64>,
    /// Tool CPU, percent of one core.
    pub tool_cpu: f64,
    /// Tool resident memory, bytes.
    pub tool_rss: u64,
}

/// One checked expectation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// What was checked, e.g. `loss <= 0`.
    pub what: String,
    /// The measured value.
    pub actual: String,
    /// Whether it held.
    pub ok: bool,
}
