//! A run: start the clients (here or in worker processes), step through the phases
//! (connect, run, drain, stop), sample once a second, and assemble the result.

pub mod config;
pub(crate) mod local;
mod monitor;
mod outcome;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

pub use config::{RunConfig, WorkerSlot};
pub use outcome::{Expectations, LossLimit};

use crate::client::Phase;
use crate::procstat::Meter;
use crate::progress::{ProgressMode, ProgressView};
use crate::report::result::RunResult;
use crate::run::local::LocalEngine;
use crate::run::monitor::Monitor;
use crate::scenario::Scenario;
use crate::stats::Collector;
use crate::worker::WorkerSet;

/// Client counters the controller steps the phases on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Clients in this process (or in all workers).
    pub total: u64,
    /// Clients whose first connection attempt is over.
    pub settled: u64,
    /// Clients whose first connection attempt succeeded.
    pub ready: u64,
    /// Publishers still publishing.
    pub publishing: u64,
    /// Client tasks still running.
    pub alive: u64,
}

/// What a run reports, beside its configuration.
#[derive(Debug, Clone, Default)]
pub struct Reporting {
    /// The broker processes (several brokers, or cluster nodes on this machine), whose CPU
    /// and memory are measured and summed.
    pub broker_pids: Vec<u32>,
    /// Live display.
    pub progress: ProgressMode,
    /// The command line, recorded in the result.
    pub command: String,
    /// A label for comparisons.
    pub label: Option<String>,
    /// Expectations to check.
    pub expect: Expectations,
    /// Ask each broker its version before the run ([`crate::probe`]).
    pub probe_version: bool,
}

/// Where the clients run.
enum Engine {
    Local(LocalEngine),
    Workers(WorkerSet),
}

impl Engine {
    fn collector(&self) -> &Collector {
        match self {
            Self::Local(e) => e.collector(),
            Self::Workers(w) => w.collector(),
        }
    }

    fn status(&self) -> Status {
        match self {
            Self::Local(e) => e.status(),
            Self::Workers(w) => w.status(),
        }
    }

    async fn set_phase(&mut self, phase: Phase) {
        match self {
            Self::Local(e) => e.set_phase(phase),
            Self::Workers(w) => w.set_phase(phase).await,
        }
    }
}

/// How long the drain waits once nothing arrives any more.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// How long clients get to disconnect.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Publishing time when neither a duration nor message counts bound it.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Runs the scenario and returns its result.
pub async fn execute(config: RunConfig, reporting: &Reporting) -> anyhow::Result<RunResult> {
    let scenario = Scenario::build(&config.scenario, &config.session)?;
    // Before the clients connect, so that the probe's connections are not part of the run.
    let broker_versions = if reporting.probe_version {
        crate::probe::broker_versions(&config).await
    } else {
        Vec::new()
    };
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut engine = if config.workers > 1 {
        Engine::Workers(WorkerSet::start(&config, &scenario).await?)
    } else {
        Engine::Local(LocalEngine::start(&config, &scenario).await?)
    };
    let mut tool = Meter::new(vec![std::process::id()]);
    if let Engine::Workers(w) = &engine {
        for &pid in &w.pids {
            tool.add_pid(pid);
        }
    }
    for &pid in &reporting.broker_pids {
        if let Err(e) = crate::procstat::read(pid) {
            warn!(pid, error = %e, "broker process unreadable: its CPU and memory not counted");
        }
    }
    let broker =
        (!reporting.broker_pids.is_empty()).then(|| Meter::new(reporting.broker_pids.clone()));
    let mut monitor = Monitor::new(broker, tool, ProgressView::new(reporting.progress));

    let duration = config
        .duration
        .or(config.scenario.duration)
        .map(|s| s.0)
        .or_else(|| {
            (!scenario.publishing_is_counted() || !scenario.has_publishers())
                .then_some(DEFAULT_DURATION)
        });
    let acked_streams = outcome::acked_streams(&config.scenario, &scenario);
    let start = Instant::now();
    let hard_deadline = start + config.timeout.0;
    let mut phase = Phase::Connecting;
    let mut marks = outcome::Marks::new(start);
    let mut next_sample = start + Duration::from_secs(1);
    let mut last_progress = (0u64, 0u64, Instant::now());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = &mut ctrl_c, if !interrupted => interrupted = true,
        }
        let now = Instant::now();
        let status = engine.status();
        let open = engine.collector().lock().connects.open();
        monitor.peak_open = monitor.peak_open.max(open);
        if now >= next_sample {
            monitor.sample(
                engine.collector(),
                status,
                phase,
                now.duration_since(start).as_secs_f64(),
            );
            next_sample += Duration::from_secs(1);
        }
        let over = interrupted || now >= hard_deadline;
        let next = match phase {
            Phase::Connecting => (over || status.settled >= status.total).then_some(Phase::Running),
            Phase::Running => {
                let elapsed = now.duration_since(marks.run_start.unwrap_or(now));
                let time_up = duration.is_some_and(|d| elapsed >= d);
                let counted_done = scenario.has_publishers()
                    && scenario.publishing_is_counted()
                    && status.publishing == 0;
                if over || time_up || counted_done || status.alive == 0 {
                    Some(if scenario.has_publishers() && status.alive > 0 {
                        Phase::Draining
                    } else {
                        Phase::Stopping
                    })
                } else {
                    None
                }
            }
            Phase::Draining => {
                let totals = engine.collector().lock();
                let mut complete = true;
                let (mut received, mut acked) = (0, 0);
                for (i, s) in totals.streams.iter().enumerate() {
                    let c = &s.counters;
                    received += c.received;
                    acked += c.acked;
                    if c.received.saturating_sub(c.duplicates) < c.expected
                        || (acked_streams.get(i).copied().unwrap_or(false) && c.acked < c.sent)
                    {
                        complete = false;
                    }
                }
                drop(totals);
                if (received, acked) != (last_progress.0, last_progress.1) {
                    last_progress = (received, acked, now);
                }
                let idle = now.duration_since(last_progress.2) >= DRAIN_IDLE;
                let limit = now.duration_since(marks.drain_start.unwrap_or(now)) >= config.drain.0;
                (over || complete || idle || limit || status.alive == 0).then_some(Phase::Stopping)
            }
            Phase::Stopping => {
                let limit = now.duration_since(marks.stop_start.unwrap_or(now)) >= STOP_LIMIT;
                if status.alive == 0 || limit {
                    break;
                }
                None
            }
        };
        if let Some(next) = next {
            phase = next;
            marks.enter(phase, now, &mut monitor);
            if phase == Phase::Draining {
                last_progress.2 = now;
            }
            engine.set_phase(phase).await;
        }
    }
    marks.end = Some(Instant::now());
    let t = start.elapsed().as_secs_f64();
    let mut result = match engine {
        Engine::Workers(w) => {
            let collector = w.shared_collector();
            w.finish().await;
            monitor.sample(&collector, Status::default(), Phase::Stopping, t);
            outcome::assemble(
                &config,
                reporting,
                &scenario,
                &collector,
                &mut monitor,
                &marks,
                started_unix_ms,
            )
        }
        Engine::Local(local) => {
            if let (Some(path), Some(records)) = (&config.record, &local.shared.records) {
                let records = records
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                crate::record::write(path, &scenario, &records)?;
            }
            monitor.sample(local.collector(), local.status(), Phase::Stopping, t);
            outcome::assemble(
                &config,
                reporting,
                &scenario,
                local.collector(),
                &mut monitor,
                &marks,
                started_unix_ms,
            )
        }
    }?;
    result.broker_versions = broker_versions;
    Ok(result)
}
