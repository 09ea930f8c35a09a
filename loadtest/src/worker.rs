//! `--workers N`: the run spread over child processes of this binary, as one process may
//! open only so many files. The parent sends each worker the run's configuration and its
//! share; workers report their counters every 100 ms and their flow records at the end; the
//! parent merges everything into one collector, so that reports read the same either way.
//!
//! Protocol, one JSON value or word per line: parent → worker: the [`RunConfig`], then
//! `running`, `draining`, `stopping`; worker → parent: [`ToParent`] messages.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::client::Phase;
use crate::run::Status;
use crate::run::config::{RunConfig, WorkerSlot};
use crate::run::local::LocalEngine;
use crate::scenario::Scenario;
use crate::stats::{Collector, Delta, FlowSent, Receipt, Snapshot};

/// What a worker tells its parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToParent {
    /// Every 100 ms: client counters and the change in measurements.
    Report {
        /// Client counters.
        status: Status,
        /// Measurements since the previous report.
        delta: Delta,
    },
    /// At the end: the last measurements and the flow records.
    Final {
        /// Measurements since the previous report.
        delta: Delta,
        /// Sent per flow.
        sent: Vec<(u32, FlowSent)>,
        /// Received per (sink, flow).
        receipts: Vec<(u32, u32, Receipt)>,
    },
}

struct WorkerState {
    status: Status,
    done: bool,
}

/// The parent's side: the worker processes.
pub(crate) struct WorkerSet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// Worker process ids (for CPU and memory).
    pub(crate) pids: Vec<u32>,
    collector: Arc<Collector>,
    states: Arc<Mutex<Vec<WorkerState>>>,
    readers: Vec<JoinHandle<()>>,
    target: u64,
}

impl WorkerSet {
    /// Starts `config.workers` worker processes.
    pub(crate) async fn start(config: &RunConfig, scenario: &Scenario) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program to start workers")?;
        let collector = Arc::new(Collector::new(scenario.streams.len()));
        let n = config.workers;
        let states = Arc::new(Mutex::new(
            (0..n)
                .map(|_| WorkerState {
                    status: Status::default(),
                    done: false,
                })
                .collect::<Vec<_>>(),
        ));
        let mut set = Self {
            children: Vec::new(),
            stdins: Vec::new(),
            pids: Vec::new(),
            collector,
            states,
            readers: Vec::new(),
            target: scenario.total_clients(),
        };
        for index in 0..n {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            let mut stdin = child.stdin.take().context("worker without stdin")?;
            let stdout = child.stdout.take().context("worker without stdout")?;
            let mut share = config.clone();
            share.workers = 1;
            share.slot = Some(WorkerSlot { index, count: n });
            let mut line = serde_json::to_string(&share)?;
            line.push('\n');
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            if let Some(pid) = child.id() {
                set.pids.push(pid);
            }
            let collector = set.collector.clone();
            let states = set.states.clone();
            set.readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<ToParent>(&line) {
                        Ok(ToParent::Report { status, delta }) => {
                            collector.apply(&delta);
                            if let Ok(mut s) = states.lock() {
                                s[index].status = status;
                            }
                        }
                        Ok(ToParent::Final {
                            delta,
                            sent,
                            receipts,
                        }) => {
                            collector.apply(&delta);
                            for (flow, s) in sent {
                                collector.sent(flow, s);
                            }
                            for (sink, flow, r) in receipts {
                                collector.receipt(sink, flow, r);
                            }
                        }
                        Err(e) => warn!(worker = index, error = %e, "unreadable worker report"),
                    }
                }
                if let Ok(mut s) = states.lock() {
                    s[index].done = true;
                    s[index].status.alive = 0;
                }
            }));
            set.children.push(child);
            set.stdins.push(stdin);
        }
        Ok(set)
    }

    /// The merged collector.
    pub(crate) fn collector(&self) -> &Collector {
        &self.collector
    }

    /// The merged collector, to read after [`WorkerSet::finish`].
    pub(crate) fn shared_collector(&self) -> Arc<Collector> {
        self.collector.clone()
    }

    /// The workers' counters summed; clients of a worker that died count as settled.
    pub(crate) fn status(&self) -> Status {
        let mut sum = Status {
            total: self.target,
            ..Status::default()
        };
        if let Ok(states) = self.states.lock() {
            for s in states.iter() {
                sum.settled += s
                    .status
                    .settled
                    .max(if s.done { s.status.total } else { 0 });
                sum.ready += s.status.ready;
                sum.publishing += if s.done { 0 } else { s.status.publishing };
                sum.alive += if s.done { 0 } else { s.status.alive.max(1) };
            }
            let reported: u64 = states.iter().map(|s| s.status.total).sum();
            let dead = states.iter().filter(|s| s.done).count();
            if dead == states.len() {
                sum.settled = sum.total;
            } else if reported < self.target && dead > 0 {
                sum.total = reported;
            }
        }
        sum
    }

    /// Tells every worker the new phase.
    pub(crate) async fn set_phase(&mut self, phase: Phase) {
        let word = match phase {
            Phase::Connecting => return,
            Phase::Running => "running\n",
            Phase::Draining => "draining\n",
            Phase::Stopping => "stopping\n",
        };
        for stdin in &mut self.stdins {
            // A worker that has exited has closed its stdin; the others still get the word.
            let _ = stdin.write_all(word.as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    /// Waits for the workers' final reports and their exit.
    pub(crate) async fn finish(mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }
}

/// The worker's side: runs its share and reports to the parent over stdout.
pub async fn worker_main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .context("the parent sent no configuration")?;
    let config: RunConfig = serde_json::from_str(&first).context("bad worker configuration")?;
    let scenario = Scenario::build(&config.scenario, &config.session)?;
    let engine = LocalEngine::start(&config, &scenario).await?;
    let mut out = tokio::io::stdout();
    let mut prev = Snapshot::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let snap = engine.collector().snapshot();
                let delta = Delta::between(&prev, &snap);
                prev = snap;
                send(&mut out, &ToParent::Report { status: engine.status(), delta }).await?;
            }
            line = lines.next_line() => {
                match line.ok().flatten().as_deref().map(str::trim) {
                    Some("running") => engine.set_phase(Phase::Running),
                    Some("draining") => engine.set_phase(Phase::Draining),
                    Some("stopping") | None => break,
                    Some(other) => warn!(command = other, "unknown command from the parent"),
                }
            }
        }
    }
    engine.set_phase(Phase::Stopping);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.status().alive > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap = engine.collector().snapshot();
    let delta = Delta::between(&prev, &snap);
    let (sent, receipts) = {
        let totals = engine.collector().lock();
        (
            totals.ledger.sent().collect(),
            totals
                .ledger
                .receipts()
                .map(|((sink, flow), r)| (sink, flow, r))
                .collect(),
        )
    };
    send(
        &mut out,
        &ToParent::Final {
            delta,
            sent,
            receipts,
        },
    )
    .await?;
    Ok(())
}

async fn send(out: &mut tokio::io::Stdout, message: &ToParent) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}
