//! The acknowledgement path: what a read's events do (dispatch, subscriptions,
//! persistence), what they wait for, and the acknowledgements sent once they are durable.

use std::sync::Arc;

use shoal_codec::{Packet, PacketId, ProtocolVersion, PubAckReasonCode, QoS};
use shoal_session::{CloseReason, Event};
use shoal_topic::Recipients;

use super::subscribe::Subscribed;
use super::{Conn, Transport};
use crate::broker::{Broker, write};
use crate::metrics as m;
use crate::slot::SessionSlot;
use crate::stats::Stats;

/// How much encoded output a connection buffers before it stops taking packets from its
/// session (the session's own queue, bounded, holds the rest).
const WRITE_HIGH_WATER: usize = 64 * 1024;

impl<T: Transport> Conn<T> {
    /// Acts on what the session asked for: dispatches, subscribes, persists. Returns what
    /// is left to do once the store has flushed (`complete_events`) and whether it must
    /// flush first; `None` when there was nothing to do.
    pub(super) fn take_events(
        &mut self,
        slot: &Arc<SessionSlot>,
        version: ProtocolVersion,
        recipients: &mut Option<Box<Recipients<u64>>>,
    ) -> Option<(Done, bool)> {
        let broker = Arc::clone(&self.broker);
        let events: Vec<Event> = {
            let mut session = slot.lock();
            std::iter::from_fn(|| session.poll_event()).collect()
        };
        if events.is_empty() {
            return None;
        }
        let mut woken = 0;
        let mut needs_flush = false;
        let mut acks: Vec<(PacketId, PubAckReasonCode)> = Vec::new();
        let mut subacks = Vec::new();
        let mut close = None;
        for event in events {
            match event {
                Event::Publish { message, packet_id } => {
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
                    let dispatched = broker.dispatch(&message, Some(slot.id), recipients);
                    needs_flush |= dispatched.needs_flush;
                    woken += dispatched.recipients;
                    if let Some(id) = packet_id {
                        let reason = if dispatched.recipients == 0 && version.is_v5() {
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
                    subacks.push((packet_id, self.subscribe(slot, &requests)));
                }
                Event::Unsubscribed { filters } => {
                    let mut index = write(&broker.index);
                    for filter in &filters {
                        index.remove(slot.id, filter);
                    }
                }
                Event::Auth(auth) => self.reauthenticate(slot, auth),
                Event::Close(reason) => close = Some(reason),
            }
        }
        {
            let mut session = slot.lock();
            needs_flush |= broker.persist(&slot.client_id, &mut session);
        }
        let done = Done {
            acks,
            subacks,
            close,
            woken,
        };
        Some((done, needs_flush))
    }

    /// Answers what `take_events` handled, now that it is durable; returns how many
    /// deliveries it made, or the close reason once the connection ends.
    pub(super) fn complete_events(
        &mut self,
        slot: &SessionSlot,
        done: Done,
    ) -> Result<usize, CloseReason> {
        let Done {
            acks,
            subacks,
            close,
            woken,
        } = done;
        let broker = &self.broker;
        let now = broker.now();
        let mut session = slot.lock();
        for (id, reason) in acks {
            session.handle_publish_done(id, reason);
        }
        for (packet_id, (results, retained)) in subacks {
            session.handle_subscribe_done(packet_id, results);
            for (message, qos, id) in retained {
                let _ = session.deliver(now, message, qos, true, id.into_iter().collect());
            }
        }
        broker.persist(&slot.client_id, &mut session);
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

    /// Encodes what the session has to send, up to the high-water mark; returns whether
    /// the store must flush before it leaves (a QoS 2 PUBLISH was recorded as sent).
    pub(super) fn fill_output(&mut self, slot: &SessionSlot, version: ProtocolVersion) -> bool {
        let broker = &self.broker;
        let mut qos2_sent = false;
        let wrote = {
            let now = broker.now();
            let mut session = slot.lock();
            while self.wbuf.len() < WRITE_HIGH_WATER {
                let Some(packet) = session.poll_transmit(now) else {
                    break;
                };
                if let Packet::Publish(p) = &packet {
                    qos2_sent |= p.qos() == QoS::ExactlyOnce;
                    Stats::add(&broker.stats.messages_sent[p.qos() as usize], 1);
                }
                if let Err(e) = packet.encode(version, &mut self.wbuf) {
                    tracing::warn!(error = %e, "a packet could not be encoded; dropped");
                }
            }
            broker.count_drops(slot, &mut session);
            broker.persist(&slot.client_id, &mut session)
        };
        wrote && qos2_sent
    }
}

/// What a batch of session events leaves to do once the store has flushed.
pub(super) struct Done {
    acks: Vec<(PacketId, PubAckReasonCode)>,
    subacks: Vec<(PacketId, Subscribed)>,
    close: Option<CloseReason>,
    woken: usize,
}

/// Waits for the store to flush, then hands `done` back.
pub(super) async fn flush_then(broker: &Broker, done: Done) -> Done {
    flush_store(broker).await;
    done
}

/// Waits for the store to make everything written so far durable.
pub(super) async fn flush_store(broker: &Broker) {
    match broker.store.flush().await {
        Ok(receipt) => {
            metrics::histogram!(m::STORE_FLUSH_SECONDS).record(receipt.duration.as_secs_f64());
        }
        Err(e) => {
            tracing::error!(error = %e, "store flush failed: acknowledgements are not durable")
        }
    }
}
