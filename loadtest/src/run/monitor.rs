//! Once a second: read the collector, the processes' CPU and memory, make a sample, show it.

use crate::client::Phase;
use crate::procstat::Meter;
use crate::progress::ProgressView;
use crate::report::result::Sample;
use crate::run::Status;
use crate::stats::{Collector, Latency, Snapshot};

/// The per-second sampler of a run.
pub(crate) struct Monitor {
    prev: Snapshot,
    pub(crate) broker: Option<Meter>,
    pub(crate) tool: Meter,
    pub(crate) samples: Vec<Sample>,
    pub(crate) peak_open: u64,
    view: ProgressView,
}

/// The name of a phase in samples and progress lines.
pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Connecting => "connecting",
        Phase::Running => "running",
        Phase::Draining => "draining",
        Phase::Stopping => "stopping",
    }
}

impl Monitor {
    pub(crate) fn new(broker: Option<Meter>, tool: Meter, view: ProgressView) -> Self {
        let mut m = Self {
            prev: Snapshot::default(),
            broker,
            tool,
            samples: Vec::new(),
            peak_open: 0,
            view,
        };
        // Prime the CPU meters so that the first sample has a rate.
        m.tool.sample();
        if let Some(b) = &mut m.broker {
            b.sample();
        }
        m
    }

    /// Takes a sample at `t` seconds.
    pub(crate) fn sample(&mut self, collector: &Collector, status: Status, phase: Phase, t: f64) {
        let snap = collector.snapshot();
        let mut sent = 0;
        let mut acked = 0;
        let mut received = 0;
        for (i, c) in snap.streams.iter().enumerate() {
            let d = match self.prev.streams.get(i) {
                Some(p) => c.since(p),
                None => *c,
            };
            sent += d.sent;
            acked += d.acked;
            received += d.received;
        }
        let mut latency = Latency::new();
        for h in &snap.latency {
            latency.add(h);
        }
        let open = snap.connects.open();
        self.peak_open = self.peak_open.max(open);
        let (tool_cpu, tool_rss) = self.tool.sample();
        let broker = self.broker.as_mut().map(Meter::sample);
        let sample = Sample {
            t,
            phase: phase_name(phase).to_owned(),
            open,
            connects: snap.connects.since(&self.prev.connects).succeeded,
            sent,
            acked,
            received,
            p50_us: latency.quantile(0.5),
            p99_us: latency.quantile(0.99),
            max_us: latency.quantile(1.0),
            errors: snap.errors.values().sum(),
            broker_cpu: broker.map(|b| b.0),
            broker_rss: broker.map(|b| b.1),
            tool_cpu,
            tool_rss,
        };
        self.view.show(&sample, status.total);
        self.samples.push(sample);
        self.prev = snap;
    }

    /// Clears the live display.
    pub(crate) fn finish(&self) {
        self.view.finish();
    }
}
