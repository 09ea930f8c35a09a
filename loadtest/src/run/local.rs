//! Runs this process's share of the clients: one task per client.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::client::{self, ClientOptions, Phase, Progress, Ramp, Shared};
use crate::run::Status;
use crate::run::config::RunConfig;
use crate::scenario::Scenario;
use crate::stats::Collector;
use crate::transport::Connector;

/// The clients of this process.
pub(crate) struct LocalEngine {
    pub(crate) shared: Arc<Shared>,
    phase_tx: watch::Sender<Phase>,
    total: u64,
}

impl LocalEngine {
    /// Spawns this process's clients; they start connecting through the ramp at once.
    pub(crate) async fn start(config: &RunConfig, scenario: &Scenario) -> anyhow::Result<Self> {
        let connector = Connector::new(&config.brokers, &config.tls).await?;
        let layout = scenario.layout(config.placement, config.brokers.count())?;
        let (phase_tx, phase) = watch::channel(Phase::Connecting);
        let (index, count) = config.slot.map_or((0, 1), |s| (s.index, s.count.max(1)));
        let shared = Arc::new(Shared {
            connector,
            collector: Collector::new(scenario.streams.len()),
            phase,
            ramp: Ramp::new(
                config.ramp.map(|r| r / count as f64),
                config.connect_concurrency,
            ),
            options: ClientOptions {
                connect_timeout: config.connect_timeout.0,
                inflight: config.inflight,
                reconnect: config.reconnect.map(|s| s.0),
                failover: config.failover,
                max_packet_size: config.max_packet_size,
                flush_every: Duration::from_millis(100),
            },
            progress: Progress::default(),
            records: config
                .record
                .is_some()
                .then(|| std::sync::Mutex::new(Vec::new())),
        });
        let mut plans = Vec::new();
        let mut ordinal = 0usize;
        for (g, (_, size)) in scenario.groups().enumerate() {
            for i in 0..size {
                let mine = i as usize % count == index;
                if mine {
                    let source = match config.source_ips.len() {
                        0 => None,
                        n => Some(config.source_ips[ordinal % n]),
                    };
                    let mut plan = scenario.plan(g, i, source)?;
                    plan.broker = layout.broker(g, i);
                    plans.push(plan);
                }
                ordinal += 1;
            }
        }
        let total = plans.len() as u64;
        let publishers = plans.iter().filter(|p| p.publisher.is_some()).count() as u64;
        shared
            .progress
            .publishing
            .store(publishers, Ordering::Release);
        shared.progress.alive.store(total, Ordering::Release);
        if let Ok(limit) = crate::limits::raise_nofile()
            && total + 64 > limit
        {
            warn!(
                clients = total,
                limit, "more clients than open files allowed per process: use --workers"
            );
        }
        for plan in plans {
            tokio::spawn(client::run_client(plan, shared.clone()));
        }
        Ok(Self {
            shared,
            phase_tx,
            total,
        })
    }

    /// The collector.
    pub(crate) fn collector(&self) -> &Collector {
        &self.shared.collector
    }

    /// Counters of the clients.
    pub(crate) fn status(&self) -> Status {
        let p = &self.shared.progress;
        Status {
            total: self.total,
            settled: p.settled.load(Ordering::Acquire),
            ready: p.ready.load(Ordering::Acquire),
            publishing: p.publishing.load(Ordering::Acquire),
            alive: p.alive.load(Ordering::Acquire),
        }
    }

    /// Moves every client to `phase`.
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase_tx.send_replace(phase);
    }
}
