//! The flow ledger: what each flow sent and what each receiver got from it, merged at the
//! end of a run into exact loss and duplicate counts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::stats::sequence::SeqTracker;

/// What a publisher sent on one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSent {
    /// The stream of the flow.
    pub stream: u8,
    /// Messages written.
    pub sent: u64,
    /// Sinks (subscribers, or shared groups counted once) whose filters match the topic.
    pub copies: u32,
}

/// What one sink received from one flow, as numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The stream of the flow.
    pub stream: u8,
    /// Different sequence numbers received.
    pub distinct: u64,
    /// Repeated arrivals.
    pub duplicates: u64,
    /// Arrivals after a later message of the flow.
    pub reordered: u64,
    /// Numbers missing between the lowest and highest received.
    pub gaps: u64,
}

impl Receipt {
    fn of(stream: u8, t: &SeqTracker) -> Self {
        Self {
            stream,
            distinct: t.distinct(),
            duplicates: t.duplicates(),
            reordered: t.reordered(),
            gaps: t.gaps(),
        }
    }

    fn add(&mut self, other: &Self) {
        self.distinct += other.distinct;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.gaps += other.gaps;
    }
}

/// A receipt: exact trackers where this process saw the arrivals, numbers where a worker
/// reported them.
#[derive(Debug, Clone)]
enum Entry {
    Tracker(u8, SeqTracker),
    Counts(Receipt),
}

impl Entry {
    fn receipt(&self) -> Receipt {
        match self {
            Self::Tracker(stream, t) => Receipt::of(*stream, t),
            Self::Counts(r) => *r,
        }
    }
}

/// Every flow's sent count and every (sink, flow) receipt of a run.
#[derive(Debug, Default)]
pub struct Ledger {
    sent: HashMap<u32, FlowSent>,
    received: HashMap<(u32, u32), Entry>,
}

/// The outcome of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowOutcome {
    /// The flow id.
    pub flow: u32,
    /// The stream.
    pub stream: u8,
    /// Messages sent (`None`: the publisher is not part of this run).
    pub sent: Option<u64>,
    /// Deliveries expected.
    pub expected: u64,
    /// Distinct deliveries.
    pub received: u64,
    /// Deliveries missing: expected minus received, or the receivers' sequence gaps when
    /// the publisher is not part of this run.
    pub lost: u64,
    /// Repeated deliveries.
    pub duplicates: u64,
    /// Deliveries out of order.
    pub reordered: u64,
}

impl Ledger {
    /// Records what a publisher sent on `flow`.
    pub fn add_sent(&mut self, flow: u32, sent: FlowSent) {
        let entry = self.sent.entry(flow).or_insert(FlowSent {
            stream: sent.stream,
            sent: 0,
            copies: sent.copies,
        });
        entry.sent += sent.sent;
    }

    /// Records what a receiver of `sink` saw on `flow`; receivers of the same sink (a shared
    /// group) are merged, and a number both saw is a duplicate.
    pub fn add_tracker(&mut self, sink: u32, flow: u32, stream: u8, tracker: SeqTracker) {
        match self.received.entry((sink, flow)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry::Tracker(stream, tracker));
            }
            std::collections::hash_map::Entry::Occupied(mut o) => match o.get_mut() {
                Entry::Tracker(_, existing) => existing.union(&tracker),
                Entry::Counts(r) => r.add(&Receipt::of(stream, &tracker)),
            },
        }
    }

    /// Records numbers reported by a worker process.
    pub fn add_receipt(&mut self, sink: u32, flow: u32, receipt: Receipt) {
        let entry = self
            .received
            .entry((sink, flow))
            .or_insert(Entry::Counts(Receipt {
                stream: receipt.stream,
                ..Receipt::default()
            }));
        match entry {
            Entry::Tracker(stream, t) => {
                let mut r = Receipt::of(*stream, t);
                r.add(&receipt);
                *entry = Entry::Counts(r);
            }
            Entry::Counts(r) => r.add(&receipt),
        }
    }

    /// Every flow's sent record, for a worker's final report.
    pub fn sent(&self) -> impl Iterator<Item = (u32, FlowSent)> + '_ {
        self.sent.iter().map(|(&f, &s)| (f, s))
    }

    /// Every receipt as numbers, for a worker's final report.
    pub fn receipts(&self) -> impl Iterator<Item = ((u32, u32), Receipt)> + '_ {
        self.received.iter().map(|(&k, e)| (k, e.receipt()))
    }

    /// The outcome of every flow, sorted by flow id.
    pub fn outcomes(&self) -> Vec<FlowOutcome> {
        let mut by_flow: HashMap<u32, FlowOutcome> = HashMap::new();
        for (&flow, s) in &self.sent {
            by_flow.insert(
                flow,
                FlowOutcome {
                    flow,
                    stream: s.stream,
                    sent: Some(s.sent),
                    expected: s.sent * u64::from(s.copies),
                    received: 0,
                    lost: 0,
                    duplicates: 0,
                    reordered: 0,
                },
            );
        }
        let mut gaps: HashMap<u32, u64> = HashMap::new();
        for (&(_, flow), entry) in &self.received {
            let r = entry.receipt();
            let o = by_flow.entry(flow).or_insert(FlowOutcome {
                flow,
                stream: r.stream,
                sent: None,
                expected: 0,
                received: 0,
                lost: 0,
                duplicates: 0,
                reordered: 0,
            });
            o.received += r.distinct;
            o.duplicates += r.duplicates;
            o.reordered += r.reordered;
            *gaps.entry(flow).or_default() += r.gaps;
        }
        let mut out: Vec<FlowOutcome> = by_flow
            .into_values()
            .map(|mut o| {
                match o.sent {
                    Some(_) => o.lost = o.expected.saturating_sub(o.received),
                    None => {
                        o.lost = gaps.get(&o.flow).copied().unwrap_or(0);
                        o.expected = o.received + o.lost;
                    }
                }
                o
            })
            .collect();
        out.sort_by_key(|o| o.flow);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(seqs: impl IntoIterator<Item = u64>) -> SeqTracker {
        let mut t = SeqTracker::new();
        for s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn loss_is_expected_minus_distinct_deliveries() {
        let mut ledger = Ledger::default();
        let sent = FlowSent {
            stream: 0,
            sent: 100,
            copies: 2,
        };
        ledger.add_sent(7, sent);
        ledger.add_tracker(1, 7, 0, tracker(0..100));
        ledger.add_tracker(2, 7, 0, tracker((0..90).chain([5])));
        let o = ledger.outcomes();
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].expected, o[0].received), (200, 190));
        assert_eq!((o[0].lost, o[0].duplicates), (10, 1));
    }

    #[test]
    fn shared_group_members_are_one_sink() {
        let mut ledger = Ledger::default();
        ledger.add_sent(
            1,
            FlowSent {
                stream: 0,
                sent: 10,
                copies: 1,
            },
        );
        ledger.add_tracker(9, 1, 0, tracker([0, 2, 4, 6, 8]));
        ledger.add_tracker(9, 1, 0, tracker([1, 3, 5, 7, 9, 4]));
        let o = ledger.outcomes();
        assert_eq!((o[0].received, o[0].lost, o[0].duplicates), (10, 0, 1));
    }

    #[test]
    fn without_a_sent_record_loss_comes_from_gaps() {
        let mut ledger = Ledger::default();
        ledger.add_tracker(1, 3, 0, tracker([10, 11, 14]));
        let o = ledger.outcomes();
        assert_eq!((o[0].sent, o[0].lost), (None, 2));
    }
}
