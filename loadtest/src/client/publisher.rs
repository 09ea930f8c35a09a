//! The publishing side of a client: which flow is next, its sequence number, the pacing, and
//! the encoding of measured PUBLISH packets into the connection's write buffer.

use std::time::Duration;

use bytes::BytesMut;
use shoal_codec::{EncodeError, Packet, ProtocolVersion, QoS, QosPid};
use tokio::time::Instant;

use crate::payload::Header;
use crate::scenario::PublisherPlan;
use crate::stats::{ClientStats, Collector, FlowSent};
use crate::units::Rate;

/// A publisher's cursor over its flows.
#[derive(Debug)]
pub struct Publisher {
    plan: PublisherPlan,
    /// One `Packet::Publish` per flow: encoded by reference, only the packet id changes.
    packets: Vec<Packet>,
    /// Next sequence number per flow (= messages sent on it).
    seqs: Vec<u64>,
    next_flow: usize,
    sent: u64,
    /// Pacing origin: the time and sent count the schedule counts from.
    origin: Option<(Instant, u64)>,
}

impl Publisher {
    /// A publisher for `plan`.
    pub fn new(plan: PublisherPlan) -> Self {
        let packets = plan
            .flows
            .iter()
            .map(|f| Packet::Publish(f.publish.clone()))
            .collect();
        let seqs = vec![0; plan.flows.len()];
        Self {
            plan,
            packets,
            seqs,
            next_flow: 0,
            sent: 0,
            origin: None,
        }
    }

    /// The QoS of its messages.
    pub fn qos(&self) -> QoS {
        self.plan.qos
    }

    /// The stream id.
    pub fn stream(&self) -> u8 {
        self.plan.stream
    }

    /// Whether it has sent its whole count.
    pub fn done(&self) -> bool {
        self.plan.count.is_some_and(|c| self.sent >= c) || self.plan.flows.is_empty()
    }

    /// Restarts the schedule at `now` (publishing starts, or resumes after a reconnection:
    /// missed messages are not sent in a burst).
    pub fn resume(&mut self, now: Instant) {
        let start = match self.plan.rate {
            // The first start is spread over one interval; a resumption starts at once.
            Rate::PerSecond(r) if self.sent == 0 => {
                now + Duration::from_secs_f64(self.plan.offset / r)
            }
            _ => now,
        };
        self.origin = Some((start, self.sent));
    }

    /// How many messages the rate allows at `now`.
    pub fn allowance(&self, now: Instant) -> u64 {
        let left = self
            .plan
            .count
            .map_or(u64::MAX, |c| c.saturating_sub(self.sent));
        match (self.plan.rate, self.origin) {
            (_, None) => 0,
            (Rate::Max, Some(_)) => left,
            (Rate::PerSecond(_), Some((t0, _))) if now < t0 => 0,
            (Rate::PerSecond(r), Some((t0, sent0))) => {
                let due = (now.duration_since(t0).as_secs_f64() * r) as u64 + 1;
                due.saturating_sub(self.sent - sent0).min(left)
            }
        }
    }

    /// When the next message is due (`None`: as fast as possible, or done).
    pub fn next_due(&self) -> Option<Instant> {
        match (self.plan.rate, self.origin) {
            (Rate::PerSecond(r), Some((t0, sent0))) if !self.done() => {
                let n = (self.sent - sent0) as f64;
                Some(t0 + Duration::from_secs_f64(n / r))
            }
            _ => None,
        }
    }

    /// Encodes the next message into `buf`, stamped with `now_ns`; returns its flow index
    /// and sequence number.
    pub fn encode_next(
        &mut self,
        version: ProtocolVersion,
        qos_pid: QosPid,
        now_ns: u64,
        buf: &mut BytesMut,
        stats: &mut ClientStats,
    ) -> Result<(u32, u64), EncodeError> {
        let flow = self.next_flow;
        self.next_flow = (self.next_flow + 1) % self.packets.len();
        let seq = self.seqs[flow];
        self.encode(flow, seq, qos_pid, false, now_ns, version, buf)?;
        self.seqs[flow] += 1;
        self.sent += 1;
        if let Some(s) = stats.stream(self.plan.stream) {
            s.counters.sent += 1;
            s.counters.expected += u64::from(self.plan.flows[flow].copies);
        }
        Ok((flow as u32, seq))
    }

    /// Encodes message `seq` of flow `flow` again, with DUP set (after reconnecting to a
    /// session that had it in flight).
    pub fn encode_again(
        &mut self,
        flow: u32,
        seq: u64,
        qos_pid: QosPid,
        now_ns: u64,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        self.encode(flow as usize, seq, qos_pid, true, now_ns, version, buf)
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &mut self,
        flow: usize,
        seq: u64,
        qos_pid: QosPid,
        dup: bool,
        now_ns: u64,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let Some(packet) = self.packets.get_mut(flow) else {
            return Ok(());
        };
        if let Packet::Publish(p) = packet {
            p.qos_pid = qos_pid;
            p.dup = dup;
        }
        packet.encode(version, buf)?;
        let end = buf.len();
        let header = Header {
            stream: self.plan.stream,
            flow: self.plan.flows[flow].id,
            seq,
            sent_ns: now_ns,
        };
        header.write(&mut buf[end - self.plan.size..end]);
        Ok(())
    }

    /// Each flow's id and how many messages were sent on it.
    pub fn sent_per_flow(&self) -> Vec<(u32, u64)> {
        self.plan
            .flows
            .iter()
            .zip(&self.seqs)
            .map(|(f, &sent)| (f.id, sent))
            .collect()
    }

    /// Hands the sent count of every flow to the collector's ledger.
    pub fn finish(&self, collector: &Collector) {
        for (flow, &sent) in self.plan.flows.iter().zip(&self.seqs) {
            collector.sent(
                flow.id,
                FlowSent {
                    stream: self.plan.stream,
                    sent,
                    copies: flow.copies,
                },
            );
        }
    }
}
