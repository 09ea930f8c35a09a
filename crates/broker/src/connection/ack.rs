//! The acknowledgement path: what a read's events do (dispatch, subscriptions,
//! persistence), what they wait for, and the acknowledgements sent once they are durable.

use std::sync::Arc;

use shoal_codec::{Packet, PacketId, ProtocolVersion, PubAckReasonCode, QoS};
use shoal_session::{CloseReason, Event};
use shoal_store::{ReceiptTag, WriteBatch};
use shoal_topic::Recipients;

use super::subscribe::Subscribed;
use super::{Conn, Transport};
use crate::broker::{Broker, Pending, Receipts};
use crate::metrics as m;
use crate::slot::SessionSlot;
use crate::stats::Stats;

/// How much encoded output a connection buffers before it stops taking packets from its
/// session (the session's own queue, bounded, holds the rest).
const WRITE_HIGH_WATER: usize = 64 * 1024;

impl<T: Transport> Conn<T> {
    /// Acts on what the session asked for: dispatches, subscribes, persists. Returns what
    /// is left to do once its receipts hold (`complete_events`) and the receipts; `None`
    /// when there was nothing to do.
    pub(super) fn take_events(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
        recipients: &mut Option<Box<Recipients<u64>>>,
    ) -> Option<(Done, Receipts)> {
        let broker = Arc::clone(&self.broker);
        let held = self.extras.as_mut().map(|e| std::mem::take(&mut e.held));
        let (events, stored): (Vec<Event>, bool) = {
            let mut session = slot.lock();
            let mut events = held.unwrap_or_default();
            events.extend(std::iter::from_fn(|| session.poll_event()));
            (events, session.is_stored())
        };
        if events.is_empty() {
            return None;
        }
        if stored && let Some(tagging) = self.tag_qos2(slot, &events) {
            self.extras().held = events;
            return Some(tagging);
        }
        let untagged = self
            .extras
            .as_mut()
            .map(|e| std::mem::take(&mut e.untagged))
            .unwrap_or_default();
        let mut woken = 0;
        let mut receipts = Receipts::default();
        let mut acks: Vec<(PacketId, PubAckReasonCode)> = Vec::new();
        let mut subacks = Vec::new();
        let mut pending = Vec::new();
        let mut deferred = Vec::new();
        let mut close = None;
        for event in events {
            match event {
                Event::Publish { message, packet_id } => {
                    if let Some(id) = packet_id
                        && untagged.contains(&id)
                    {
                        // Its pending receipt was not written: not sent anywhere.
                        acks.push((id, PubAckReasonCode::UnspecifiedError));
                        continue;
                    }
                    let refused = self
                        .refuse_publish(&message.topic)
                        .or_else(|| broker.refuse_retained(&message));
                    if let Some(denied) = refused {
                        if let Some(id) = packet_id {
                            // MQTT 3.1.1 has no reason codes: the message is dropped and
                            // acknowledged, and the connection stays (Mosquitto's way).
                            let reason = if version.is_v5() {
                                denied
                            } else {
                                PubAckReasonCode::Success
                            };
                            acks.push((id, reason));
                        }
                        continue;
                    }
                    let recipients = recipients.get_or_insert_with(|| Box::new(Recipients::new()));
                    // A QoS 2 receipt of a stored session is written in one atomic step with
                    // the copies its message queues (exactly once across a crash); one that
                    // goes to other nodes too carries its tag (`tag_qos2`).
                    let mut tag = None;
                    let atomic = match packet_id {
                        Some(id) if stored && message.qos == QoS::ExactlyOnce => {
                            let mut batch = WriteBatch::new();
                            tag = slot.lock().qos2_tag(id);
                            match tag {
                                Some(tag) => batch.put_tagged_receipt(
                                    &slot.client_id,
                                    id,
                                    ReceiptTag { tag, done: true },
                                ),
                                None => batch.put_receipt(&slot.client_id, id),
                            };
                            Some(batch)
                        }
                        _ => None,
                    };
                    let mut dispatched =
                        broker.dispatch(&message, Some(slot.id), recipients, atomic, tag);
                    receipts = receipts.and(dispatched.receipts);
                    if let Some(receipt) = dispatched.deferred.take() {
                        deferred.push((acks.len(), receipt));
                    }
                    woken += dispatched.recipients;
                    if packet_id.is_some() {
                        // Its acknowledgement (pushed below) waits for these too.
                        let ack = acks.len();
                        pending.extend(
                            dispatched
                                .pending
                                .into_iter()
                                .map(|p| (Waiter::Ack(ack), p)),
                        );
                    }
                    if let Some(id) = packet_id {
                        let reason = if dispatched.receipts.failed {
                            PubAckReasonCode::UnspecifiedError
                        } else if dispatched.recipients == 0 && version.is_v5() {
                            PubAckReasonCode::NoMatchingSubscribers
                        } else {
                            PubAckReasonCode::Success
                        };
                        acks.push((id, reason));
                    }
                }
                Event::Subscribe {
                    packet_id,
                    requests,
                } => {
                    let (subscribed, routes) = self.subscribe(slot, &requests);
                    let suback = subacks.len();
                    pending.extend(
                        routes
                            .into_iter()
                            .map(|(entry, route)| (Waiter::Sub(suback, entry), route)),
                    );
                    subacks.push((packet_id, subscribed));
                }
                Event::Unsubscribed { filters } => {
                    broker.unsubscribe(slot.id, filters.iter().map(|f| f.as_str()));
                }
                Event::Auth(auth) => self.reauthenticate(slot, auth),
                Event::Close(reason) => close = Some(reason),
            }
        }
        {
            let mut session = slot.lock();
            receipts = receipts.and(broker.persist(slot, &mut session));
        }
        let done = Done {
            acks,
            subacks,
            close,
            woken,
            pending,
            deferred,
            tagged: Vec::new(),
        };
        Some((done, receipts))
    }

    /// Tags the QoS 2 messages among `events` that go to other nodes and have no tag yet
    /// (`broker/dedup.rs`). With any to tag, their pending receipts are written first:
    /// returns what that waits for, and the caller holds the events back until it holds
    /// (`serve_session`). Fences by the session's owner epoch, as any write.
    fn tag_qos2(&self, slot: &SessionSlot, events: &[Event]) -> Option<(Done, Receipts)> {
        // Most reads carry no QoS 2 PUBLISH: they do not take the session's lock here.
        let qos2 = |event: &Event| {
            matches!(event, Event::Publish { message, packet_id: Some(_) }
                if message.qos == QoS::ExactlyOnce)
        };
        if !events.iter().any(qos2) {
            return None;
        }
        let mut batch = WriteBatch::new();
        let mut tagged = Vec::new();
        {
            let mut session = slot.lock();
            for event in events {
                let Event::Publish {
                    message,
                    packet_id: Some(id),
                } = event
                else {
                    continue;
                };
                if session.qos2_tag(*id).is_some() || !self.broker.wants_tag(message) {
                    continue;
                }
                let tag = self.broker.new_tag();
                session.set_qos2_tag(*id, tag);
                batch.fence(&slot.client_id, slot.epoch());
                batch.put_tagged_receipt(&slot.client_id, *id, ReceiptTag { tag, done: false });
                tagged.push(*id);
            }
        }
        if tagged.is_empty() {
            return None;
        }
        let receipts = self.broker.apply(&batch, false);
        let done = Done {
            acks: Vec::new(),
            subacks: Vec::new(),
            close: None,
            woken: 0,
            pending: Vec::new(),
            deferred: Vec::new(),
            tagged,
        };
        Some((done, receipts))
    }

    /// Answers what `take_events` handled, now that it is durable; returns how many
    /// deliveries it made, or the close reason once the connection ends.
    ///
    /// `durable` false: a write or the flush failed, so nothing this read did is known to be
    /// durable. MQTT 5 clients get failure codes (PUBACK/PUBREC 0x80); MQTT 3.1.1, which has
    /// none for a publication, is disconnected without its acknowledgements.
    pub(super) fn complete_events(
        &mut self,
        slot: &SessionSlot,
        done: Done,
        durable: bool,
    ) -> Result<usize, CloseReason> {
        let Done {
            acks,
            subacks,
            close,
            woken,
            pending: _,
            deferred: _,
            tagged,
        } = done;
        if !durable && !tagged.is_empty() {
            // Their pending receipts were not written: they are refused when they come
            // again (their tags go with the failure's `Change::Released`).
            self.extras().untagged = tagged;
        }
        let broker = &self.broker;
        let now = broker.now();
        let mut session = slot.lock();
        let v5 = session.version().is_some_and(ProtocolVersion::is_v5);
        // A publication another node did not accept has no failure code in MQTT 3.1.1.
        let refused = acks
            .iter()
            .any(|(_, reason)| *reason == PubAckReasonCode::UnspecifiedError);
        let durable = durable && (v5 || !refused);
        if !durable && !acks.is_empty() {
            metrics::counter!(m::ACKS_FAILED, "kind" => "publish").increment(acks.len() as u64);
            if !v5 {
                // Not acknowledged: a QoS 2 resend must be taken anew, not answered as a
                // duplicate of what failed.
                for (id, _) in &acks {
                    session.handle_publish_failed(*id);
                }
                session.close(shoal_codec::DisconnectReasonCode::UnspecifiedError, true);
                return Err(CloseReason {
                    reason: shoal_codec::DisconnectReasonCode::UnspecifiedError,
                    publish_will: true,
                    by: shoal_session::ClosedBy::Server,
                });
            }
        }
        for (id, reason) in acks {
            let reason = if durable {
                reason
            } else {
                PubAckReasonCode::UnspecifiedError
            };
            session.handle_publish_done(id, reason);
        }
        for (packet_id, (results, retained)) in subacks {
            session.handle_subscribe_done(packet_id, results);
            for (message, qos, id) in retained {
                let _ = session.deliver(now, message, qos, true, id.into_iter().collect());
            }
        }
        // The subscriptions just recorded are confirmed by SUBACK: `fill_output` waits.
        self.unflushed = self.unflushed.and(broker.persist(slot, &mut session));
        broker.count_drops(slot, &mut session);
        match close {
            Some(reason) => Err(reason),
            None => Ok(woken),
        }
    }

    /// Why a PUBLISH on `topic` is refused (too many levels, or the ACL), if it is.
    pub(super) fn refuse_publish(&mut self, topic: &str) -> Option<PubAckReasonCode> {
        let max_levels = self.broker.config.limits.max_topic_levels;
        if topic.len() >= max_levels && topic.split('/').count() > max_levels {
            return Some(PubAckReasonCode::TopicNameInvalid);
        }
        let Some(acl) = self.acl() else {
            return crate::limits::refuse_reserved_topic(topic);
        };
        if acl.may_publish(topic) {
            return None;
        }
        metrics::counter!(m::ACL_DENIED, "action" => "publish").increment(1);
        tracing::debug!(topic, "publish denied by the ACL");
        Some(PubAckReasonCode::NotAuthorized)
    }

    /// Encodes what the session has to send, up to the high-water mark; returns what must
    /// be durable before it leaves (`Broker::durable`): what the output confirms was
    /// written and must be durable first. That is a CONNACK or SUBACK of a stored session (the session and
    /// its subscriptions), a QoS 2 PUBLISH (recorded as sent with its identifier: after a
    /// crash it is resent with it, and the client drops the copy), a PUBREL (recorded as
    /// released: after a crash it is not sent again as a new PUBLISH), and a PUBCOMP (the
    /// receipt gone: after a crash a new message with the identifier is not mistaken for a
    /// resend).
    pub(super) fn fill_output(
        &mut self,
        slot: &SessionSlot,
        version: ProtocolVersion,
    ) -> Option<Receipts> {
        let broker = &self.broker;
        let mut confirms = false;
        let receipts = {
            let now = broker.now();
            let mut session = slot.lock();
            while self.wbuf.len() < WRITE_HIGH_WATER {
                let Some(packet) = session.poll_transmit(now) else {
                    break;
                };
                confirms |= match &packet {
                    Packet::Publish(p) => {
                        Stats::add(&broker.stats.messages_sent[p.qos() as usize], 1);
                        p.qos() == QoS::ExactlyOnce
                    }
                    Packet::ConnAck(_)
                    | Packet::SubAck(_)
                    | Packet::UnsubAck(_)
                    | Packet::PubRel(_)
                    | Packet::PubComp(_) => true,
                    _ => false,
                };
                if let Err(e) = packet.encode(version, &mut self.wbuf) {
                    tracing::warn!(error = %e, "a packet could not be encoded; dropped");
                }
            }
            broker.count_drops(slot, &mut session);
            broker.persist(slot, &mut session)
        };
        self.unflushed = self.unflushed.and(receipts);
        if confirms && !self.unflushed.is_empty() {
            return Some(std::mem::take(&mut self.unflushed));
        }
        None
    }
}

/// What a batch of session events leaves to do once the store has flushed.
pub(super) struct Done {
    acks: Vec<(PacketId, PubAckReasonCode)>,
    subacks: Vec<(PacketId, Subscribed)>,
    close: Option<CloseReason>,
    woken: usize,
    /// What the acknowledgements wait for beyond the flush (the cluster's receipts).
    pending: Vec<(Waiter, Pending)>,
    /// QoS 2 receipts to write once the other nodes accepted their copies, by the index of
    /// their PUBREC in `acks`.
    deferred: Vec<(usize, WriteBatch)>,
    /// The QoS 2 messages whose pending receipts this wait writes (`tag_qos2`).
    tagged: Vec<PacketId>,
}

impl Done {
    /// Whether there is nothing to wait for but the store.
    pub(super) fn waits_for_nobody(&self) -> bool {
        self.pending.is_empty() && self.deferred.is_empty()
    }
}

/// Whose acknowledgement a pending wait holds back.
#[derive(Debug, Clone, Copy)]
pub(super) enum Waiter {
    /// The PUBACK/PUBREC at this index of `acks`: a forwarded copy, a retained message.
    Ack(usize),
    /// This entry of the SUBACK at this index of `subacks`: its new route.
    Sub(usize, usize),
}

/// Waits until `receipts` and the pending waits hold, then hands `done` back with whether
/// the store's part did (everything the read did is durable). A pending wait that fails,
/// or does not hold within `route_timeout`, turns its acknowledgement into a failure
/// (PUBACK/PUBREC 0x80, SUBACK 0x80).
pub(super) async fn wait_receipts(
    broker: &Broker,
    mut done: Done,
    receipts: Receipts,
) -> (Done, bool) {
    let flushed = broker.durable(receipts).await;
    let timeout = broker.config.cluster.route_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    for (waiter, wait) in std::mem::take(&mut done.pending) {
        let held = matches!(tokio::time::timeout_at(deadline, wait).await, Ok(Ok(true)));
        if held {
            continue;
        }
        match waiter {
            Waiter::Ack(i) => {
                metrics::counter!(m::ACKS_FAILED, "kind" => "forward").increment(1);
                if let Some((_, reason)) = done.acks.get_mut(i) {
                    *reason = PubAckReasonCode::UnspecifiedError;
                }
            }
            Waiter::Sub(i, entry) => {
                metrics::counter!(m::ACKS_FAILED, "kind" => "route").increment(1);
                if let Some(result) = done
                    .subacks
                    .get_mut(i)
                    .and_then(|(_, s)| s.0.get_mut(entry))
                {
                    *result = Err(shoal_codec::SubAckReasonCode::UnspecifiedError);
                }
            }
        }
    }
    // The QoS 2 receipts of messages the other nodes have now: written, and their PUBREC
    // waits for it. A refused one is not written (its PUBREC says 0x80; a resend is new).
    for (i, receipt) in std::mem::take(&mut done.deferred) {
        let Some((_, reason)) = done.acks.get_mut(i) else {
            continue;
        };
        if shoal_codec::ReasonCode::is_error(*reason) {
            continue;
        }
        if !broker.durable(broker.apply(&receipt, false)).await {
            *reason = PubAckReasonCode::UnspecifiedError;
        }
    }
    (done, flushed)
}

/// Waits for the store to make everything written so far durable; returns whether it did.
pub(crate) async fn flush_store(broker: &Broker) -> bool {
    match broker.store.flush().await {
        Ok(receipt) => {
            metrics::histogram!(m::STORE_FLUSH_SECONDS).record(receipt.duration.as_secs_f64());
            true
        }
        Err(e) => {
            broker.store_failed(&e);
            false
        }
    }
}
