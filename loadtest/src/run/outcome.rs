//! The end of a run: phase timestamps, expectations, and the assembly of the [`RunResult`].

use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Phase;
use crate::report::result::{
    ConnectionsResult, ExpectationResult, FlowDetail, FlowsResult, GroupInfo, RunResult,
    StreamResult, UsageResult,
};
use crate::run::Reporting;
use crate::run::config::RunConfig;
use crate::run::monitor::Monitor;
use crate::scenario::{Scenario, ScenarioSpec};
use crate::stats::{Collector, Latency};
use crate::transport::Brokers;
use crate::units::{Span, fmt_micros};

/// When each phase began, and the CPU used by then.
#[derive(Debug)]
pub(crate) struct Marks {
    start: Instant,
    pub(crate) run_start: Option<Instant>,
    pub(crate) drain_start: Option<Instant>,
    pub(crate) stop_start: Option<Instant>,
    pub(crate) end: Option<Instant>,
    /// Broker and tool CPU when publishing started and when the run began to stop.
    cpu_at_run: (Option<Duration>, Duration),
    cpu_at_stop: (Option<Duration>, Duration),
}

impl Marks {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            run_start: None,
            drain_start: None,
            stop_start: None,
            end: None,
            cpu_at_run: (None, Duration::ZERO),
            cpu_at_stop: (None, Duration::ZERO),
        }
    }

    /// Notes that `phase` begins at `now`.
    pub(crate) fn enter(&mut self, phase: Phase, now: Instant, monitor: &mut Monitor) {
        let cpu = (
            monitor.broker.as_ref().map(|m| m.cpu_total()),
            monitor.tool.cpu_total(),
        );
        match phase {
            Phase::Connecting => {}
            Phase::Running => {
                self.run_start = Some(now);
                self.cpu_at_run = cpu;
            }
            Phase::Draining => self.drain_start = Some(now),
            Phase::Stopping => {
                self.stop_start = Some(now);
                self.cpu_at_stop = cpu;
                if self.drain_start.is_none() {
                    self.drain_start = Some(now);
                }
            }
        }
    }

    fn secs(a: Option<Instant>, b: Option<Instant>) -> f64 {
        match (a, b) {
            (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// The most loss a run accepts: a count, or a percentage of expected deliveries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossLimit {
    /// At most this many messages.
    Count(u64),
    /// At most this percentage.
    Percent(f64),
}

impl FromStr for LossLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(Self::Percent)
                .ok_or_else(|| format!("{s:?} is not a percentage"));
        }
        s.parse()
            .map(Self::Count)
            .map_err(|_| format!("{s:?} is not a message count or a percentage"))
    }
}

/// What the run must achieve for a zero exit status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expectations {
    /// Most messages lost (all streams).
    pub loss: Option<LossLimit>,
    /// Highest 99th percentile of end-to-end latency (all streams).
    pub p99: Option<Span>,
    /// Least messages received per second.
    pub rate: Option<f64>,
    /// Most errors.
    pub errors: Option<u64>,
    /// Least connections established at once.
    pub connections: Option<u64>,
}

impl Expectations {
    fn check(&self, r: &RunResult) -> Vec<ExpectationResult> {
        let mut out = Vec::new();
        if let Some(limit) = self.loss {
            let (what, ok) = match limit {
                LossLimit::Count(n) => (format!("loss <= {n}"), r.total.lost <= n),
                LossLimit::Percent(p) => (format!("loss <= {p}%"), r.total.loss_percent <= p),
            };
            out.push(ExpectationResult {
                what,
                actual: format!("{} ({:.4}%)", r.total.lost, r.total.loss_percent),
                ok,
            });
        }
        if let Some(p99) = self.p99 {
            let limit = p99.0.as_micros() as u64;
            out.push(ExpectationResult {
                what: format!("p99 <= {}", fmt_micros(limit)),
                actual: fmt_micros(r.total.latency.p99_us),
                ok: r.total.latency.count > 0 && r.total.latency.p99_us <= limit,
            });
        }
        if let Some(rate) = self.rate {
            out.push(ExpectationResult {
                what: format!("received >= {rate}/s"),
                actual: format!("{:.1}/s", r.total.received_per_s),
                ok: r.total.received_per_s >= rate,
            });
        }
        if let Some(max) = self.errors {
            let errors: u64 = r.errors.values().sum();
            out.push(ExpectationResult {
                what: format!("errors <= {max}"),
                actual: errors.to_string(),
                ok: errors <= max,
            });
        }
        if let Some(min) = self.connections {
            out.push(ExpectationResult {
                what: format!("connections >= {min}"),
                actual: r.connections.peak_open.to_string(),
                ok: r.connections.peak_open >= min,
            });
        }
        out
    }
}

/// Which streams are published at QoS 1 or 2 (their acknowledgements are awaited).
pub(crate) fn acked_streams(spec: &ScenarioSpec, scenario: &Scenario) -> Vec<bool> {
    scenario
        .streams
        .iter()
        .map(|name| {
            spec.groups.iter().any(|g| {
                g.count > 0
                    && g.publish
                        .as_ref()
                        .is_some_and(|p| p.stream == *name && p.qos > 0)
            })
        })
        .collect()
}

/// `pairs @ mqtt://127.0.0.1:1883`, or `... +5 more` over several brokers.
fn default_label(scenario: &str, brokers: &Brokers) -> String {
    match brokers.count() {
        1 => format!("{scenario} @ {}", brokers.first()),
        n => format!("{scenario} @ {} +{} more", brokers.first(), n - 1),
    }
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Builds the result from the collector's totals.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    config: &RunConfig,
    reporting: &Reporting,
    scenario: &Scenario,
    collector: &Collector,
    monitor: &mut Monitor,
    marks: &Marks,
    started_unix_ms: u64,
) -> anyhow::Result<RunResult> {
    monitor.finish();
    let connect_seconds = Marks::secs(Some(marks.start), marks.run_start);
    let run_seconds = Marks::secs(marks.run_start, marks.drain_start);
    let drain_seconds = Marks::secs(marks.drain_start, marks.stop_start);
    let totals = collector.lock();
    let outcomes = totals.ledger.outcomes();
    let mut streams = Vec::new();
    let mut all = Latency::new();
    let mut total = StreamResult {
        name: "all".to_owned(),
        ..StreamResult::default()
    };
    for (i, s) in totals.streams.iter().enumerate() {
        let name = scenario.streams.get(i).cloned().unwrap_or_default();
        let mine = outcomes.iter().filter(|o| usize::from(o.stream) == i);
        let (mut lost, mut duplicates, mut reordered, mut expected) = (0, 0, 0, 0);
        for o in mine {
            lost += o.lost;
            duplicates += o.duplicates;
            reordered += o.reordered;
            expected += o.expected;
        }
        let c = &s.counters;
        let expected = expected.max(c.expected);
        let r = StreamResult {
            name,
            sent: c.sent,
            acked: c.acked,
            expected,
            received: c.received,
            lost,
            loss_percent: if expected > 0 {
                lost as f64 * 100.0 / expected as f64
            } else {
                0.0
            },
            duplicates: duplicates.max(c.duplicates),
            reordered: reordered.max(c.reordered),
            sent_per_s: per_second(c.sent, run_seconds),
            received_per_s: per_second(c.received, run_seconds),
            latency: s.latency.summary(),
            latency_histogram: s.latency.dump(),
        };
        total.sent += r.sent;
        total.acked += r.acked;
        total.expected += r.expected;
        total.received += r.received;
        total.lost += r.lost;
        total.duplicates += r.duplicates;
        total.reordered += r.reordered;
        all.add(&s.latency);
        streams.push(r);
    }
    total.loss_percent = if total.expected > 0 {
        total.lost as f64 * 100.0 / total.expected as f64
    } else {
        0.0
    };
    total.sent_per_s = per_second(total.sent, run_seconds);
    total.received_per_s = per_second(total.received, run_seconds);
    total.latency = all.summary();
    total.latency_histogram = all.dump();

    let mut worst: Vec<_> = outcomes
        .iter()
        .filter(|o| o.lost > 0 || o.duplicates > 0)
        .collect();
    worst.sort_by(|a, b| b.lost.cmp(&a.lost).then(b.duplicates.cmp(&a.duplicates)));
    let flows = FlowsResult {
        count: outcomes.len() as u64,
        with_loss: outcomes.iter().filter(|o| o.lost > 0).count() as u64,
        with_duplicates: outcomes.iter().filter(|o| o.duplicates > 0).count() as u64,
        worst: worst
            .into_iter()
            .take(20)
            .map(|o| {
                let (publisher, topic) = scenario.describe_flow(o.flow).unwrap_or_default();
                FlowDetail {
                    flow: o.flow,
                    publisher,
                    topic,
                    stream: scenario
                        .streams
                        .get(usize::from(o.stream))
                        .cloned()
                        .unwrap_or_default(),
                    sent: o.sent,
                    expected: o.expected,
                    received: o.received,
                    lost: o.lost,
                    duplicates: o.duplicates,
                }
            })
            .collect(),
    };
    let connections = ConnectionsResult {
        target: scenario.total_clients(),
        attempts: totals.connects.attempts,
        succeeded: totals.connects.succeeded,
        failed: totals.connects.failed,
        lost: totals.connects.lost,
        peak_open: monitor.peak_open.max(totals.connects.open()),
        rate_per_s: per_second(totals.connects.succeeded, connect_seconds),
        latency: totals.connect_latency.summary(),
    };
    let errors = totals.errors.clone();
    let unmeasured = totals.unmeasured;
    drop(totals);

    let delivered = total.received;
    let broker_usage = monitor.broker.as_ref().map(|m| {
        let cpu = match (marks.cpu_at_run.0, marks.cpu_at_stop.0) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        UsageResult {
            pids: reporting.broker_pids.clone(),
            meter: m.summary(),
            cpu_us_per_msg: cpu
                .filter(|_| delivered > 0)
                .map(|c| c.as_secs_f64() * 1e6 / delivered as f64),
        }
    });
    let tool_cpu = marks.cpu_at_stop.1.saturating_sub(marks.cpu_at_run.1);
    let handled = total.sent + total.received;
    let tool_usage = UsageResult {
        pids: Vec::new(),
        meter: monitor.tool.summary(),
        cpu_us_per_msg: (handled > 0).then(|| tool_cpu.as_secs_f64() * 1e6 / handled as f64),
    };
    let layout = scenario.layout(config.placement, config.brokers.count())?;
    let mut result = RunResult {
        tool: "shoal-loadtest".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        scenario: scenario.name.clone(),
        label: reporting
            .label
            .clone()
            .unwrap_or_else(|| default_label(&scenario.name, &config.brokers)),
        command: reporting.command.clone(),
        broker: config.brokers.first().to_string(),
        brokers: config
            .brokers
            .urls()
            .iter()
            .map(ToString::to_string)
            .collect(),
        placement: config.placement,
        // Filled in by the caller, which asked before the run.
        broker_versions: Vec::new(),
        mqtt_version: config.session.version,
        started_unix_ms,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        groups: scenario
            .groups()
            .enumerate()
            .map(|(g, (name, count))| GroupInfo {
                name: name.to_owned(),
                count,
                brokers: layout.cycle(g).to_vec(),
            })
            .collect(),
        workers: config.workers,
        connect_seconds,
        run_seconds,
        drain_seconds,
        connections,
        streams,
        total,
        unmeasured,
        errors,
        flows,
        broker_usage,
        tool_usage,
        samples: std::mem::take(&mut monitor.samples),
        expectations: Vec::new(),
        passed: true,
    };
    result.expectations = reporting.expect.check(&result);
    result.passed = result.expectations.iter().all(|e| e.ok);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loss_limits() {
        assert_eq!("0".parse(), Ok(LossLimit::Count(0)));
        assert_eq!("0.5%".parse(), Ok(LossLimit::Percent(0.5)));
        assert!("lots".parse::<LossLimit>().is_err());
        assert!("150%".parse::<LossLimit>().is_err());
    }
}
