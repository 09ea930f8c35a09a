//! Messages to the client: delivery into the bounded queue, sending within the client's
//! Receive Maximum, and the acknowledgements that complete QoS 1 and 2 flows (§4.3).

use std::collections::VecDeque;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;

use shoal_codec::{
    Packet, PacketId, PubAck, PubAckReasonCode, PubComp, PubRec, PubRel, PubRelReasonCode, Publish,
    QoS, QosPid, ReasonCode,
};

use crate::event::Change;
use crate::message::Message;
use crate::record::{OutboundMessage, OutboundState};
use crate::session::{Delivery, Session};
use crate::time::Timestamp;

impl Session {
    /// Gives the session a message that matched one of its subscriptions: `granted` is the
    /// subscription's QoS (the message goes at the lower of the two), `retain` the RETAIN
    /// flag to deliver with, `subscription_ids` the identifiers of the matching
    /// subscriptions. The message waits in the session's queue until `poll_transmit` sends
    /// it; over the queue's limits it is dropped and counted.
    pub fn deliver(
        &mut self,
        now: Timestamp,
        message: Arc<Message>,
        granted: QoS,
        retain: bool,
        subscription_ids: Vec<NonZeroU32>,
    ) -> Delivery {
        if message.is_expired(now) {
            self.drops.expired = self.drops.expired.saturating_add(1);
            return Delivery::Expired;
        }
        let qos = message.qos.min(granted);
        if qos == QoS::AtMostOnce && self.link.is_none() && !self.config.queue_qos0_offline {
            self.drops.qos0_offline = self.drops.qos0_offline.saturating_add(1);
            return Delivery::Offline;
        }
        let weight = message.weight();
        if self.queued() >= self.config.max_queued_messages
            || self.queued_bytes + weight > self.config.max_queued_bytes
        {
            self.drops.queue_full = self.drops.queue_full.saturating_add(1);
            return Delivery::QueueFull;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queued_bytes += weight;
        let outbound = OutboundMessage {
            message,
            qos,
            retain,
            subscription_ids,
            state: OutboundState::Queued,
        };
        self.queue_changed(
            qos,
            Change::Enqueued {
                seq,
                message: Box::new(outbound.clone()),
            },
        );
        self.pending.push_back((seq, outbound));
        Delivery::Queued
    }

    /// The next packet to send to the client: acknowledgements and other control packets
    /// first, then queued messages in order, QoS 1/2 ones only while fewer than the
    /// client's Receive Maximum are unacknowledged [MQTT-3.3.4-7]. Expired messages and
    /// messages larger than the client's Maximum Packet Size are dropped here and counted.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Packet> {
        if let Some(packet) = self.control.pop_front() {
            if self.control.is_empty() && self.control.capacity() == 1 {
                // A quiet session's queue held one packet at a time: give its slot back
                // (a packet is some 230 bytes), a busy one keeps its larger queue.
                self.control = VecDeque::new();
            }
            return Some(packet);
        }
        if self.closing.is_some() {
            return None;
        }
        let link = self.link.as_ref()?;
        let (version, max_size, window) = (
            link.version,
            link.maximum_packet_size,
            usize::from(link.receive_maximum),
        );
        loop {
            let (_, front) = self.pending.front()?;
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= window {
                return None;
            }
            let (seq, mut outbound) = self.pending.pop_front()?;
            if outbound.message.is_expired(now) {
                self.drops.expired = self.drops.expired.saturating_add(1);
                self.forget(seq, &outbound);
                continue;
            }
            // The size does not depend on the identifier: check it before taking one.
            let placeholder = PacketId::new(1).expect("1 is not zero");
            let mut publish = self.publish_packet(&outbound, placeholder, now);
            let too_large = publish
                .encoded_len(version)
                .map_or(true, |len| len as u64 > u64::from(max_size));
            if too_large {
                // Dropped for this client as if delivered [MQTT-3.1.2-25].
                self.drops.too_large = self.drops.too_large.saturating_add(1);
                self.forget(seq, &outbound);
                continue;
            }
            let packet_id = match outbound.qos {
                QoS::AtMostOnce => None,
                qos => {
                    let id = self.allocate_packet_id();
                    publish.qos_pid = QosPid::from_parts(qos, id);
                    Some(id)
                }
            };
            self.assign_alias(&mut publish);
            if let Some(id) = packet_id {
                outbound.state = OutboundState::Sent(id);
                self.queue_changed(
                    outbound.qos,
                    Change::State {
                        seq,
                        state: outbound.state,
                    },
                );
                self.inflight_ids.insert(id, seq);
                self.inflight.insert(seq, outbound);
            } else {
                self.queued_bytes -= outbound.message.weight();
            }
            return Some(Packet::Publish(publish));
        }
    }

    /// Builds the PUBLISH for a queued message, with the full topic name (aliases are
    /// applied by `assign_alias` once the size is checked).
    pub(crate) fn publish_packet(
        &self,
        outbound: &OutboundMessage,
        id: PacketId,
        now: Timestamp,
    ) -> Publish {
        let message = &outbound.message;
        let mut properties = message.properties.clone();
        properties.message_expiry_interval = message.remaining_expiry(now);
        properties.subscription_identifiers = outbound.subscription_ids.clone();
        Publish {
            dup: false,
            qos_pid: QosPid::from_parts(outbound.qos, id),
            retain: outbound.retain,
            topic: message.topic.clone(),
            properties,
            payload: message.payload.clone(),
        }
    }

    /// Uses a topic alias towards the client where it allows them: the first message on a
    /// topic sets the alias, later ones send an empty topic name with it.
    fn assign_alias(&mut self, publish: &mut Publish) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.outbound_alias_max == 0 {
            return;
        }
        let aliases = &mut link.aliases.get_or_insert_with(Default::default).outbound;
        if let Some(&alias) = aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = shoal_codec::MqttString::empty();
        } else if let Some(alias) = u16::try_from(aliases.len() + 1)
            .ok()
            .filter(|&n| n <= link.outbound_alias_max)
            .and_then(NonZeroU16::new)
        {
            aliases.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }

    /// The next packet identifier not in use [MQTT-2.2.1-3].
    fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            let candidate = PacketId::new(self.next_packet_id);
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = candidate.filter(|id| !self.inflight_ids.contains_key(id)) {
                return id;
            }
        }
    }

    /// Drops the messages the session holds, queued or in flight, that `keep` refuses,
    /// e.g. those an access policy does not let the client now attached receive (a session
    /// taken over by another user, an ACL reloaded). Each is logged as removed, and a
    /// message in flight frees its packet identifier and is not resent. Returns how many
    /// were dropped. Call it before `attach`, which queues the resends of what is in
    /// flight.
    pub fn retain_queued(&mut self, mut keep: impl FnMut(&Message) -> bool) -> usize {
        let pending = std::mem::take(&mut self.pending);
        let mut dropped = 0;
        for (seq, outbound) in pending {
            if keep(&outbound.message) {
                self.pending.push_back((seq, outbound));
            } else {
                self.forget(seq, &outbound);
                dropped += 1;
            }
        }
        let refused: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, outbound)| !keep(&outbound.message))
            .map(|(&seq, _)| seq)
            .collect();
        for seq in refused {
            let Some(outbound) = self.inflight.remove(&seq) else {
                continue;
            };
            if let OutboundState::Sent(id) | OutboundState::Released(id) = outbound.state {
                self.inflight_ids.remove(&id);
            }
            self.forget(seq, &outbound);
            dropped += 1;
        }
        dropped
    }

    /// A message leaves the queue without completing (expired, too large).
    fn forget(&mut self, seq: u64, outbound: &OutboundMessage) {
        self.queued_bytes -= outbound.message.weight();
        self.queue_changed(outbound.qos, Change::Removed { seq });
    }

    /// A QoS 1/2 flow is complete: the message leaves the window.
    fn complete(&mut self, id: PacketId) -> bool {
        let Some(seq) = self.inflight_ids.remove(&id) else {
            return false;
        };
        if let Some(outbound) = self.inflight.remove(&seq) {
            self.queued_bytes -= outbound.message.weight();
            self.queue_changed(outbound.qos, Change::Removed { seq });
        }
        true
    }

    /// The state of the flow of packet identifier `id`.
    fn flow(&self, id: PacketId) -> Option<(u64, QoS, OutboundState)> {
        let &seq = self.inflight_ids.get(&id)?;
        let outbound = self.inflight.get(&seq)?;
        Some((seq, outbound.qos, outbound.state))
    }

    /// PUBACK from the client: a QoS 1 delivery is complete. An unknown identifier is
    /// ignored (it may complete a flow that the client saw twice).
    pub(crate) fn handle_puback(&mut self, ack: &PubAck) {
        if let Some((_, QoS::AtLeastOnce, OutboundState::Sent(_))) = self.flow(ack.packet_id) {
            self.complete(ack.packet_id);
        }
    }

    /// PUBREC from the client: answer PUBREL, or end the flow on a failure code.
    pub(crate) fn handle_pubrec(&mut self, rec: &PubRec) {
        let id = rec.packet_id;
        match self.flow(id) {
            Some((seq, QoS::ExactlyOnce, OutboundState::Sent(_))) => {
                if rec.reason_code.is_error() {
                    self.complete(id);
                    return;
                }
                let state = OutboundState::Released(id);
                if let Some(outbound) = self.inflight.get_mut(&seq) {
                    outbound.state = state;
                }
                self.queue_changed(QoS::ExactlyOnce, Change::State { seq, state });
                crate::session::push(&mut self.control, Packet::PubRel(PubRel::new(id)));
            }
            Some((_, QoS::ExactlyOnce, OutboundState::Released(_))) => {
                crate::session::push(&mut self.control, Packet::PubRel(PubRel::new(id)));
            }
            _ => {
                let mut rel = PubRel::new(id);
                rel.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
                crate::session::push(&mut self.control, Packet::PubRel(rel));
            }
        }
    }

    /// PUBCOMP from the client: a QoS 2 delivery is complete.
    pub(crate) fn handle_pubcomp(&mut self, comp: &PubComp) {
        if let Some((_, QoS::ExactlyOnce, OutboundState::Released(_))) = self.flow(comp.packet_id) {
            self.complete(comp.packet_id);
        }
    }

    /// The broker could not make a QoS 1/2 message from an MQTT 3.1.1 client durable and
    /// closes the connection instead of acknowledging it (3.1.1 has no failure code): the
    /// message is forgotten without an acknowledgement, so that its resend (DUP, on the
    /// next connection) is taken as new rather than answered PUBREC as a duplicate.
    pub fn handle_publish_failed(&mut self, packet_id: PacketId) {
        if self.take_unacked(packet_id) == Some(QoS::ExactlyOnce) {
            self.release_receipt(packet_id);
        }
    }

    /// The broker has dispatched (and made durable) a QoS 1/2 message from the client:
    /// acknowledge it with `reason` (PUBACK for QoS 1, PUBREC for QoS 2). A QoS 2 message
    /// acknowledged with a failure code ends its flow: a resend would be delivered anew.
    pub fn handle_publish_done(&mut self, packet_id: PacketId, reason: PubAckReasonCode) {
        let Some(qos) = self.take_unacked(packet_id) else {
            return;
        };
        let mut ack = PubAck::new(packet_id);
        ack.reason_code = reason;
        match qos {
            QoS::AtLeastOnce => crate::session::push(&mut self.control, Packet::PubAck(ack)),
            QoS::ExactlyOnce => {
                if reason.is_error() {
                    self.release_receipt(packet_id);
                }
                crate::session::push(&mut self.control, Packet::PubRec(ack));
            }
            QoS::AtMostOnce => {}
        }
    }

    /// Ends the wait for the broker of a QoS 1/2 message from the client; its QoS, if it
    /// was waiting.
    fn take_unacked(&mut self, packet_id: PacketId) -> Option<QoS> {
        let link = self.link.as_mut()?;
        let qos = link.unacked.remove(&packet_id)?;
        if qos == QoS::ExactlyOnce {
            link.unacked_qos2 -= 1;
        }
        Some(qos)
    }

    /// Forgets the QoS 2 receipt of `packet_id` (a resend is delivered anew).
    fn release_receipt(&mut self, packet_id: PacketId) {
        if self.incoming_qos2.remove(&packet_id) {
            self.receipt_changed(Change::Released { packet_id });
        }
    }
}
