//! The checker: reads record files ([`super`]) and says whether the broker kept its
//! promises for QoS 1 and 2:
//!
//! - every acknowledged message reached every sink whose filters match its topic (a message
//!   the broker refused, or never acknowledged, may be missing);
//! - no message reached a sink twice where both sides used QoS 2 (exactly once); QoS 1
//!   duplicates are counted, not failed;
//! - each subscriber got each publisher's messages in order: a message seen for the first
//!   time after a later one of its flow is an order violation (a repeat is a duplicate); in
//!   a shared group, order is each member's, and a message another member got too is a
//!   repeat, not a violation;
//! - no reconnection (clean start 0) of a persistent session found it gone;
//! - the record is whole (not truncated).
//!
//! With the time of a fault it also measures recovery: for each subscriber and flow whose
//! deliveries paused across the fault for longer than the stall threshold, the time from the
//! fault to its next delivery.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::record::{FlowLine, Line, RangeSet, SinkLine};

/// Most examples kept per kind of violation.
const EXAMPLES: usize = 10;

/// What the checker is told beside the records.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// When the fault happened, `CLOCK_MONOTONIC` nanoseconds.
    pub fault_at_ns: Option<u64>,
    /// A pause in a flow's deliveries across the fault longer than this means the flow was
    /// interrupted, microseconds.
    pub stall_us: u64,
}

/// How deliveries recovered after the fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Subscriber flows that had deliveries before and after the fault.
    pub flows: u64,
    /// Those whose deliveries paused across the fault for longer than the stall threshold.
    pub interrupted: u64,
    /// Flows with deliveries before the fault and none after.
    pub never_resumed: u64,
    /// Longest time from the fault to the next delivery of an interrupted flow, ms.
    pub max_ms: Option<f64>,
    /// The longest pause across the fault of any flow (interrupted or not), ms.
    pub max_pause_ms: f64,
}

/// The checker's verdict on a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Published flows.
    pub flows: u64,
    /// Receiving clients.
    pub receivers: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages acknowledged by the broker.
    pub acked: u64,
    /// Messages the broker refused (reason code 0x80 or above).
    pub failed: u64,
    /// Deliveries owed: each acknowledged message times its sinks.
    pub owed: u64,
    /// Acknowledged messages never delivered to a sink that should have received them.
    pub lost: u64,
    /// Repeated deliveries where publication and subscription are both QoS 2.
    pub qos2_duplicates: u64,
    /// Repeated deliveries at QoS 1 (allowed).
    pub qos1_duplicates: u64,
    /// Messages delivered for the first time after a later one of the same flow.
    pub order_violations: u64,
    /// Reconnections (clean start 0) that found no session: the broker dropped a
    /// persistent session.
    pub sessions_lost: u64,
    /// Whether a client's record was cut short.
    pub truncated: bool,
    /// Recovery after the fault, when its time is given.
    pub recovery: Option<Recovery>,
    /// Examples of each violation.
    pub examples: Vec<String>,
    /// No violation.
    pub passed: bool,
}

/// Checks the lines of one run's record files.
pub fn check(lines: &[Line], options: CheckOptions) -> Verdict {
    let mut v = Verdict::default();
    let mut flows: BTreeMap<u32, &FlowLine> = BTreeMap::new();
    let mut receivers: Vec<&SinkLine> = Vec::new();
    for line in lines {
        match line {
            Line::Run(_) => {}
            Line::Flow(f) => {
                flows.insert(f.flow, f);
            }
            Line::Sink(s) => receivers.push(s),
        }
    }
    v.flows = flows.len() as u64;
    v.receivers = receivers.len() as u64;
    let mut by_sink: HashMap<u32, Vec<&SinkLine>> = HashMap::new();
    for r in &receivers {
        by_sink.entry(r.sink).or_default().push(r);
        v.sessions_lost += r.sessions_lost;
        v.truncated |= r.truncated;
    }
    if v.truncated {
        v.examples
            .push("a record was truncated: too many delivery runs".to_owned());
    }
    let (mut lost_examples, mut dup_examples, mut order_examples) = (0, 0, 0);
    for f in flows.values() {
        let acked = RangeSet::from_pairs(&f.acked);
        let failed = RangeSet::from_pairs(&f.failed);
        v.sent += f.sent;
        v.acked += acked.len();
        v.failed += failed.len();
        if f.qos == 0 {
            continue;
        }
        for &sink in &f.sinks {
            v.owed += acked.len();
            let members = by_sink.get(&sink).map(Vec::as_slice).unwrap_or_default();
            let mut seen = RangeSet::new();
            let mut total = 0u64;
            let sink_qos = members.iter().map(|m| m.qos).max().unwrap_or(0);
            let got: Vec<(&SinkLine, &[[u64; 4]])> = members
                .iter()
                .filter_map(|m| {
                    let a = m.flows.iter().find(|a| a.flow == f.flow)?;
                    Some((*m, a.runs.as_slice()))
                })
                .collect();
            let sets: Vec<RangeSet> = got.iter().map(|(_, runs)| arrived(runs)).collect();
            for (i, (m, runs)) in got.iter().enumerate() {
                // Order, per member, in arrival order. In a shared group, a message first
                // seen by this member after a later one is no violation when another member
                // got it too: a publisher's resend of a message already delivered may go to
                // another member (MQTT 5, 4.8.2), and is a repeat for the group.
                let mut known = RangeSet::new();
                if m.shared {
                    for (_, other) in sets.iter().enumerate().filter(|(j, _)| *j != i) {
                        for (s, e) in other.pairs() {
                            known.insert_range(s, e);
                        }
                    }
                }
                let mut mine = RangeSet::new();
                for run in runs.iter() {
                    let (start, end) = (run[0], run[0] + run[1]);
                    total += run[1];
                    if let Some(max) = mine.max()
                        && start < max
                    {
                        let below = end.min(max);
                        let new = (below - start) - known.count_in(start, below);
                        if new > 0 {
                            v.order_violations += new;
                            if order_examples < EXAMPLES {
                                order_examples += 1;
                                v.examples.push(format!(
                                    "order: {} got flow {} ({} on {}) seq {start}..{below} \
                                     for the first time after seq {max}",
                                    m.client, f.flow, f.client, f.topic
                                ));
                            }
                        }
                    }
                    mine.insert_range(start, end);
                    known.insert_range(start, end);
                }
                for (s, e) in mine.pairs() {
                    seen.insert_range(s, e);
                }
            }
            let duplicates = total - seen.len();
            if duplicates > 0 {
                if f.qos >= 2 && sink_qos >= 2 {
                    v.qos2_duplicates += duplicates;
                    if dup_examples < EXAMPLES {
                        dup_examples += 1;
                        v.examples.push(format!(
                            "QoS 2 duplicate: sink {sink} got {duplicates} message(s) of flow \
                             {} ({} on {}) more than once",
                            f.flow, f.client, f.topic
                        ));
                    }
                } else {
                    v.qos1_duplicates += duplicates;
                }
            }
            let missing = acked.difference(&seen);
            if !missing.is_empty() {
                v.lost += missing.len();
                if lost_examples < EXAMPLES {
                    lost_examples += 1;
                    let who = members
                        .iter()
                        .map(|m| m.client.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut ranges = String::new();
                    for (i, (s, e)) in missing.pairs().iter().enumerate().take(5) {
                        let sep = if i > 0 { ", " } else { "" };
                        let _ = write!(ranges, "{sep}{s}..{e}");
                    }
                    if missing.range_count() > 5 {
                        ranges.push_str(", ...");
                    }
                    v.examples.push(format!(
                        "lost: {} acknowledged message(s) of flow {} ({} on {}, QoS {}) never \
                         reached sink {sink} ({}): seq {ranges}",
                        missing.len(),
                        f.flow,
                        f.client,
                        f.topic,
                        f.qos,
                        if who.is_empty() { "no record" } else { &who }
                    ));
                }
            }
        }
    }
    if let Some(fault) = options.fault_at_ns {
        v.recovery = Some(recovery(&receivers, fault / 1_000, options.stall_us));
    }
    for r in receivers.iter().filter(|r| r.sessions_lost > 0) {
        v.examples.push(format!(
            "session lost: {} reconnected {} time(s) without finding its session",
            r.client, r.sessions_lost
        ));
    }
    v.passed = v.lost == 0
        && v.qos2_duplicates == 0
        && v.order_violations == 0
        && v.sessions_lost == 0
        && !v.truncated;
    v
}

/// The sequence numbers in `runs`.
fn arrived(runs: &[[u64; 4]]) -> RangeSet {
    let mut set = RangeSet::new();
    for run in runs {
        set.insert_range(run[0], run[0] + run[1]);
    }
    set
}

/// Pauses in the receivers' flows across the fault at `fault_us`.
fn recovery(receivers: &[&SinkLine], fault_us: u64, stall_us: u64) -> Recovery {
    let mut r = Recovery::default();
    let mut max_us: Option<u64> = None;
    let mut max_pause = 0u64;
    for m in receivers {
        for a in &m.flows {
            let mut before: Option<u64> = None;
            let mut after: Option<u64> = None;
            for run in &a.runs {
                if run[3] <= fault_us {
                    before = Some(before.map_or(run[3], |b| b.max(run[3])));
                } else if run[2] <= fault_us {
                    // A run across the fault: no pause at all.
                    before = Some(fault_us);
                    after = Some(fault_us);
                    break;
                } else {
                    after = Some(after.map_or(run[2], |x| x.min(run[2])));
                }
            }
            match (before, after) {
                (Some(b), Some(x)) => {
                    r.flows += 1;
                    let pause = x.saturating_sub(b);
                    max_pause = max_pause.max(pause);
                    if pause > stall_us {
                        r.interrupted += 1;
                        let took = x.saturating_sub(fault_us);
                        max_us = Some(max_us.map_or(took, |m| m.max(took)));
                    }
                }
                (Some(_), None) => r.never_resumed += 1,
                _ => {}
            }
        }
    }
    r.max_ms = max_us.map(|us| us as f64 / 1_000.0);
    r.max_pause_ms = max_pause as f64 / 1_000.0;
    r
}

/// The verdict as text for a terminal.
pub fn render(v: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "checked {} flows, {} receivers: sent {}, acknowledged {}, refused {}; {} deliveries owed",
        v.flows, v.receivers, v.sent, v.acked, v.failed, v.owed
    );
    let _ = writeln!(
        out,
        "lost (acknowledged, never delivered): {}\nQoS 2 duplicates: {}\norder violations: {}\n\
         sessions lost on reconnection: {}\nQoS 1 duplicates (allowed): {}",
        v.lost, v.qos2_duplicates, v.order_violations, v.sessions_lost, v.qos1_duplicates
    );
    if let Some(r) = &v.recovery {
        let _ = writeln!(
            out,
            "recovery: {} of {} subscriber flows interrupted across the fault{}; longest pause \
             {:.0} ms; {} never resumed",
            r.interrupted,
            r.flows,
            r.max_ms
                .map(|ms| format!(", next delivery at most {ms:.0} ms after it"))
                .unwrap_or_default(),
            r.max_pause_ms,
            r.never_resumed
        );
    }
    for e in &v.examples {
        let _ = writeln!(out, "  {e}");
    }
    let _ = writeln!(out, "{}", if v.passed { "PASS" } else { "FAIL" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FlowArrivals, RunLine, VERSION};

    fn flow(id: u32, qos: u8, sinks: &[u32], acked: &[(u64, u64)]) -> Line {
        Line::Flow(FlowLine {
            flow: id,
            client: format!("pub-{id}"),
            topic: format!("t/{id}"),
            qos,
            sinks: sinks.to_vec(),
            sent: acked.last().map_or(0, |r| r.1),
            acked: acked.to_vec(),
            failed: Vec::new(),
        })
    }

    fn sink(id: u32, qos: u8, flows: &[(u32, &[[u64; 4]])]) -> Line {
        Line::Sink(SinkLine {
            sink: id,
            client: format!("sub-{id}"),
            qos,
            shared: false,
            connects: 1,
            sessions_lost: 0,
            retained_skipped: 0,
            truncated: false,
            flows: flows
                .iter()
                .map(|(f, runs)| FlowArrivals {
                    flow: *f,
                    runs: runs.to_vec(),
                })
                .collect(),
        })
    }

    fn run_line() -> Line {
        Line::Run(RunLine {
            version: VERSION,
            scenario: "t".into(),
        })
    }

    #[test]
    fn a_clean_record_passes() {
        let lines = vec![
            run_line(),
            flow(0, 2, &[0, 1], &[(0, 100)]),
            sink(0, 2, &[(0, &[[0, 100, 0, 1000]])]),
            // A QoS 1 subscriber may get a message twice (a redelivery after reconnecting
            // is no order violation either).
            sink(1, 1, &[(0, &[[0, 60, 0, 500], [55, 45, 600, 900]])]),
        ];
        let v = check(&lines, CheckOptions::default());
        assert!(v.passed, "{}", render(&v));
        assert_eq!((v.acked, v.owed, v.qos1_duplicates), (100, 200, 5));
    }

    #[test]
    fn an_acknowledged_message_never_delivered_fails() {
        let lines = vec![
            run_line(),
            flow(0, 1, &[0], &[(0, 50), (51, 100)]),
            sink(0, 1, &[(0, &[[0, 40, 0, 10], [41, 59, 20, 30]])]),
        ];
        let v = check(&lines, CheckOptions::default());
        assert!(!v.passed);
        // 50 was not acknowledged: only 40 is owed.
        assert_eq!(v.lost, 1, "{}", render(&v));
        assert!(v.examples[0].contains("seq 40..41"), "{:?}", v.examples);
    }

    #[test]
    fn a_sink_without_any_record_lost_everything() {
        let lines = vec![run_line(), flow(0, 1, &[3], &[(0, 10)])];
        let v = check(&lines, CheckOptions::default());
        assert_eq!(v.lost, 10);
        assert!(v.examples[0].contains("no record"));
    }

    #[test]
    fn a_qos2_duplicate_fails_and_a_late_first_delivery_is_out_of_order() {
        let lines = vec![
            run_line(),
            flow(0, 2, &[0], &[(0, 10)]),
            sink(
                0,
                2,
                &[(0, &[[0, 5, 0, 1], [7, 3, 2, 3], [4, 1, 4, 4], [5, 2, 5, 6]])],
            ),
        ];
        let v = check(&lines, CheckOptions::default());
        assert!(!v.passed);
        assert_eq!(v.qos2_duplicates, 1, "{}", render(&v));
        assert_eq!(v.order_violations, 2, "{}", render(&v));
    }

    #[test]
    fn a_shared_member_taking_a_resend_another_member_had_is_no_order_violation() {
        let member = |client: &str, runs: &[[u64; 4]]| {
            let mut line = sink(0, 1, &[(0, runs)]);
            if let Line::Sink(s) = &mut line {
                s.client = client.to_owned();
                s.shared = true;
            }
            line
        };
        let lines = vec![
            run_line(),
            flow(0, 1, &[0], &[(0, 10)]),
            // a misses 3; b gets 6..10, then 3 (new to the group: out of order) and 4 (a
            // resend a had: a repeat).
            member("a", &[[0, 3, 0, 2], [4, 2, 3, 4]]),
            member("b", &[[6, 4, 6, 9], [3, 2, 10, 11]]),
        ];
        let v = check(&lines, CheckOptions::default());
        assert_eq!(
            (v.lost, v.order_violations, v.qos1_duplicates),
            (0, 1, 1),
            "{}",
            render(&v)
        );
        assert!(v.examples[0].contains("b got flow 0"), "{:?}", v.examples);
    }

    #[test]
    fn a_persistent_session_found_gone_fails() {
        let mut lines = vec![run_line(), flow(0, 1, &[0], &[(0, 2)])];
        let mut s = sink(0, 1, &[(0, &[[0, 2, 0, 1]])]);
        if let Line::Sink(s) = &mut s {
            s.sessions_lost = 1;
        }
        lines.push(s);
        let v = check(&lines, CheckOptions::default());
        assert!(!v.passed);
        assert!(
            v.examples[0].starts_with("session lost: sub-0"),
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn recovery_is_the_time_from_the_fault_to_the_next_delivery_after_a_stall() {
        let lines = vec![
            run_line(),
            flow(0, 1, &[0, 1], &[(0, 20)]),
            // Sink 0 stalls from 1.0 s to 2.5 s; the fault is at 1.2 s.
            sink(
                0,
                1,
                &[(0, &[[0, 10, 0, 1_000_000], [10, 10, 2_500_000, 3_000_000]])],
            ),
            // Sink 1 does not notice.
            sink(1, 1, &[(0, &[[0, 20, 0, 3_000_000]])]),
        ];
        let v = check(
            &lines,
            CheckOptions {
                fault_at_ns: Some(1_200_000_000),
                stall_us: 500_000,
            },
        );
        let r = v.recovery.expect("recovery");
        assert_eq!((r.flows, r.interrupted), (2, 1));
        assert_eq!(r.max_ms, Some(1_300.0));
        assert_eq!(r.max_pause_ms, 1_500.0);
    }
}
