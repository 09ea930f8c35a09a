//! `--record FILE`: what the broker acknowledged and what each subscriber received, written
//! at the end of a run for the checker (`shoal-loadtest check`, [`check`]).
//!
//! The file is JSON lines, one object per line, tagged by `type`:
//!
//! - `run`: the format version and the scenario's name.
//! - `flow`: one per published flow: its publisher, topic, QoS, the sinks whose filters match
//!   its topic, how many messages were sent, and the sequence numbers the broker
//!   acknowledged (QoS 1: a PUBACK below 0x80; QoS 2: a PUBREC below 0x80) and refused (a
//!   reason code of 0x80 or above), as half-open ranges `[start, end]`.
//! - `sink`: one per receiving client (a shared group's members each write one with the
//!   group's sink id): its subscription QoS, how many times it connected and how many of
//!   those found no session, and per flow the deliveries in arrival order as runs
//!   `[first seq, count, first arrival µs, last arrival µs]` of consecutive sequence numbers
//!   (times are `CLOCK_MONOTONIC`, as `payload::now_ns`). A run breaks where the sequence is
//!   not the next one or where nothing arrived for [`PAUSE`], so that a stall shows.
//!
//! Memory stays bounded: in-order traffic keeps one range and one run per flow; past
//! [`MAX_RUNS`] runs per client the record is cut and marked `truncated` (the checker then
//! refuses to pass it).
//!
//! Deliveries with RETAIN set (retained messages sent on subscribing, not the live copy) and
//! the legal retransmission of a QoS 2 message not yet released are not deliveries.

pub mod check;
pub mod ranges;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use ranges::RangeSet;

use crate::payload::Header;
use crate::scenario::Scenario;

/// The version of the file format.
pub const VERSION: u32 = 1;
/// A delivery this long after the previous one of its flow starts a new run.
pub const PAUSE_US: u64 = 100_000;
/// Most runs one client keeps.
pub const MAX_RUNS: usize = 1_000_000;

/// One line of a record file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The run.
    Run(RunLine),
    /// A published flow.
    Flow(FlowLine),
    /// A receiving client.
    Sink(SinkLine),
}

/// The run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLine {
    /// [`VERSION`].
    pub version: u32,
    /// The scenario's name.
    pub scenario: String,
}

/// A published flow: what was sent and acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLine {
    /// The flow id.
    pub flow: u32,
    /// The publisher's client id.
    pub client: String,
    /// The topic.
    pub topic: String,
    /// The QoS of its publications.
    pub qos: u8,
    /// The sinks whose filters match the topic.
    pub sinks: Vec<u32>,
    /// Messages sent (sequence numbers `0..sent`).
    pub sent: u64,
    /// Acknowledged sequence numbers, `[start, end)` ranges.
    pub acked: Vec<(u64, u64)>,
    /// Sequence numbers the broker refused (reason code 0x80 or above).
    pub failed: Vec<(u64, u64)>,
}

/// A receiving client: what it got, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkLine {
    /// The sink id (a shared group's members share one).
    pub sink: u32,
    /// The client id.
    pub client: String,
    /// Its subscription QoS.
    pub qos: u8,
    /// Whether it is a member of a shared group.
    pub shared: bool,
    /// Successful CONNACKs.
    pub connects: u64,
    /// Reconnections (clean start 0) that found no session.
    pub sessions_lost: u64,
    /// Deliveries with RETAIN set, not counted.
    pub retained_skipped: u64,
    /// Whether runs were dropped past [`MAX_RUNS`].
    pub truncated: bool,
    /// Per flow, its deliveries.
    pub flows: Vec<FlowArrivals>,
}

/// One flow's deliveries at one client, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowArrivals {
    /// The flow id.
    pub flow: u32,
    /// `[first seq, count, first arrival µs, last arrival µs]`.
    pub runs: Vec<[u64; 4]>,
}

/// What one client records during a run (kept across its reconnections).
#[derive(Debug, Default)]
pub struct ClientRecorder {
    /// Per flow index of the publisher: acknowledged sequence numbers.
    acked: Vec<RangeSet>,
    /// Per flow index: refused sequence numbers.
    failed: Vec<RangeSet>,
    /// Per flow id received: runs in arrival order.
    arrivals: HashMap<u32, Vec<[u64; 4]>>,
    runs: usize,
    truncated: bool,
    connects: u64,
    sessions_lost: u64,
    retained_skipped: u64,
}

impl ClientRecorder {
    /// A recorder for a client publishing on `flows` flows.
    pub fn new(flows: usize) -> Self {
        Self {
            acked: vec![RangeSet::new(); flows],
            failed: vec![RangeSet::new(); flows],
            ..Self::default()
        }
    }

    /// The broker acknowledged message `seq` of flow index `flow`.
    pub fn acked(&mut self, flow: u32, seq: u64) {
        if let Some(set) = self.acked.get_mut(flow as usize) {
            set.insert(seq);
        }
    }

    /// The broker refused message `seq` of flow index `flow`.
    pub fn failed(&mut self, flow: u32, seq: u64) {
        if let Some(set) = self.failed.get_mut(flow as usize) {
            set.insert(seq);
        }
    }

    /// A CONNACK arrived; `lost` if the session was expected and not found.
    pub fn connected(&mut self, lost: bool) {
        self.connects += 1;
        self.sessions_lost += u64::from(lost);
    }

    /// A PUBLISH was delivered to the application at `now_ns`.
    pub fn delivered(&mut self, payload: &[u8], retain: bool, now_ns: u64) {
        if retain {
            self.retained_skipped += 1;
            return;
        }
        let Some(h) = Header::read(payload) else {
            return;
        };
        let at = now_ns / 1_000;
        let runs = self.arrivals.entry(h.flow).or_default();
        if let Some(last) = runs.last_mut()
            && last[0] + last[1] == h.seq
            && at.saturating_sub(last[3]) < PAUSE_US
        {
            last[1] += 1;
            last[3] = at;
            return;
        }
        if self.runs >= MAX_RUNS {
            self.truncated = true;
            return;
        }
        self.runs += 1;
        runs.push([h.seq, 1, at, at]);
    }
}

/// A finished client's recorder and what the writer needs to name it.
#[derive(Debug)]
pub struct ClientRecord {
    /// The client's group.
    pub group: usize,
    /// Its client id.
    pub client: String,
    /// Its sink.
    pub sink: Option<u32>,
    /// Its published flows: id and messages sent.
    pub flows: Vec<(u32, u64)>,
    /// What it recorded.
    pub recorder: ClientRecorder,
}

/// Writes the record of a run: the flows of every publisher and the deliveries of every
/// receiver, from the clients' records.
pub fn write(path: &Path, scenario: &Scenario, clients: &[ClientRecord]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut line = |l: &Line| -> anyhow::Result<()> {
        serde_json::to_writer(&mut out, l)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    line(&Line::Run(RunLine {
        version: VERSION,
        scenario: scenario.name.clone(),
    }))?;
    let sinks: HashMap<u32, Vec<u32>> = scenario.flow_sinks().into_iter().collect();
    for c in clients {
        let qos = scenario.publish_qos(c.group).map_or(0, |q| q as u8);
        for (i, &(flow, sent)) in c.flows.iter().enumerate() {
            let topic = scenario
                .describe_flow(flow)
                .map(|(_, t)| t)
                .unwrap_or_default();
            line(&Line::Flow(FlowLine {
                flow,
                client: c.client.clone(),
                topic,
                qos,
                sinks: sinks.get(&flow).cloned().unwrap_or_default(),
                sent,
                acked: c
                    .recorder
                    .acked
                    .get(i)
                    .map(RangeSet::pairs)
                    .unwrap_or_default(),
                failed: c
                    .recorder
                    .failed
                    .get(i)
                    .map(RangeSet::pairs)
                    .unwrap_or_default(),
            }))?;
        }
        if let Some(sink) = c.sink {
            let (qos, shared) = scenario.sink_qos(c.group);
            let mut flows: Vec<FlowArrivals> = c
                .recorder
                .arrivals
                .iter()
                .map(|(&flow, runs)| FlowArrivals {
                    flow,
                    runs: runs.clone(),
                })
                .collect();
            flows.sort_by_key(|f| f.flow);
            line(&Line::Sink(SinkLine {
                sink,
                client: c.client.clone(),
                qos: qos as u8,
                shared,
                connects: c.recorder.connects,
                sessions_lost: c.recorder.sessions_lost,
                retained_skipped: c.recorder.retained_skipped,
                truncated: c.recorder.truncated,
                flows,
            }))?;
        }
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads record files (several: e.g. one per process) into their lines.
pub fn read(paths: &[impl AsRef<Path>]) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a record line", path.display(), n + 1))?;
            if let Line::Run(r) = &line {
                anyhow::ensure!(
                    r.version == VERSION,
                    "{}: record format {} (this tool reads {VERSION})",
                    path.display(),
                    r.version
                );
            }
            lines.push(line);
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(flow: u32, seq: u64) -> Vec<u8> {
        let mut p = vec![0; 32];
        Header {
            stream: 0,
            flow,
            seq,
            sent_ns: 0,
        }
        .write(&mut p);
        p
    }

    #[test]
    fn deliveries_become_runs_broken_by_gaps_and_pauses() {
        let mut r = ClientRecorder::new(0);
        for (seq, ms) in [
            (0, 0),
            (1, 10),
            (2, 20),
            (5, 30),
            (6, 40),
            (7, 400),
            (3, 410),
        ] {
            r.delivered(&payload(9, seq), false, ms * 1_000_000);
        }
        r.delivered(&payload(9, 8), true, 500_000_000);
        assert_eq!(
            r.arrivals[&9],
            vec![
                [0, 3, 0, 20_000],
                [5, 2, 30_000, 40_000],
                [7, 1, 400_000, 400_000],
                [3, 1, 410_000, 410_000]
            ]
        );
        assert_eq!(r.retained_skipped, 1);
    }
}
