//! Packets from the client: each checked against the protocol rules that belong to a
//! session, then answered, or turned into events for the broker.

use std::sync::Arc;

use shoal_codec::{
    AckProperties, DisconnectReasonCode, Packet, PacketId, PayloadFormat, PubAck, PubAckReasonCode,
    PubComp, PubRelReasonCode, Publish, QoS, SubAck, SubAckReasonCode, Subscribe, UnsubAck,
    UnsubAckReasonCode, Unsubscribe,
};
use shoal_topic::{FilterKind, validate_topic_name};

use crate::event::{Change, CloseReason, ClosedBy, Event, SubscribeRequest};
use crate::message::Message;
use crate::record::SubscriptionRecord;
use crate::session::Session;
use crate::time::Timestamp;

/// A protocol violation found by the session: the reason it closes the connection with,
/// and the Reason String that explains it.
type Violation = (DisconnectReasonCode, &'static str);

impl Session {
    /// Handles a packet from the attached client. Protocol violations close the connection
    /// (an `Event::Close`, with DISCONNECT queued for MQTT 5 clients).
    pub fn handle_packet(&mut self, now: Timestamp, packet: Packet) {
        if self.closing.is_some() {
            return;
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.last_received = now;
        let result = match packet {
            Packet::Publish(publish) => self.handle_publish(now, publish),
            Packet::PubAck(ack) => {
                self.handle_puback(&ack);
                Ok(())
            }
            Packet::PubRec(rec) => {
                self.handle_pubrec(&rec);
                Ok(())
            }
            Packet::PubRel(rel) => {
                self.handle_pubrel(rel.packet_id);
                Ok(())
            }
            Packet::PubComp(comp) => {
                self.handle_pubcomp(&comp);
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                self.handle_unsubscribe(unsubscribe);
                Ok(())
            }
            Packet::PingReq => {
                crate::session::push(&mut self.control, Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => self.handle_disconnect(&disconnect),
            Packet::Auth(auth) => {
                if self
                    .link
                    .as_ref()
                    .is_some_and(|l| l.authentication_method.is_some())
                {
                    crate::session::push(&mut self.events, Event::Auth(auth));
                    Ok(())
                } else {
                    Err((
                        DisconnectReasonCode::ProtocolError,
                        "AUTH without an Authentication Method in CONNECT (§4.12)",
                    ))
                }
            }
            // A second CONNECT [MQTT-3.1.0-2], or packets only a server sends.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err((
                DisconnectReasonCode::ProtocolError,
                "a second CONNECT, or a packet only a server sends [MQTT-3.1.0-2]",
            )),
        };
        if let Err((reason, explanation)) = result {
            self.close_explained(reason, true, Some(explanation));
        }
    }

    fn handle_publish(&mut self, now: Timestamp, mut publish: Publish) -> Result<(), Violation> {
        let config = Arc::clone(&self.config);
        let link = self.link.as_mut().expect("handle_packet checked the link");
        let qos = publish.qos();
        if qos > config.maximum_qos {
            return Err((
                DisconnectReasonCode::QosNotSupported,
                "PUBLISH above the Maximum QoS of CONNACK (§3.2.2.3.4)",
            ));
        }
        if publish.retain && !config.retain_available {
            return Err((
                DisconnectReasonCode::RetainNotSupported,
                "RETAIN set but Retain Available is 0 (§3.2.2.3.5)",
            ));
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err((
                DisconnectReasonCode::ProtocolError,
                "a PUBLISH from a client carries a Subscription Identifier [MQTT-3.3.4-6]",
            ));
        }
        if let Some(alias) = publish.properties.topic_alias.take() {
            if alias.get() > config.topic_alias_maximum {
                return Err((
                    DisconnectReasonCode::TopicAliasInvalid,
                    "Topic Alias above the Topic Alias Maximum of CONNACK (§3.3.2.3.4)",
                ));
            }
            if publish.topic.is_empty() {
                let known = link
                    .aliases
                    .as_ref()
                    .and_then(|a| a.inbound.get(&alias.get()));
                publish.topic = known.cloned().ok_or((
                    DisconnectReasonCode::ProtocolError,
                    "empty topic name with a Topic Alias that was never set (§3.3.2.3.4)",
                ))?;
            } else {
                link.aliases
                    .get_or_insert_with(Default::default)
                    .inbound
                    .insert(alias.get(), publish.topic.clone());
            }
        }
        validate_topic_name(&publish.topic).map_err(|_| {
            (
                DisconnectReasonCode::TopicNameInvalid,
                "invalid topic name (§4.7)",
            )
        })?;
        let packet_id = publish.qos_pid.packet_id();
        if let Some(id) = packet_id {
            if link.unacked.contains_key(&id) {
                // A resend of a message we are still dispatching: it is acknowledged once.
                return Ok(());
            }
            if qos == QoS::ExactlyOnce && self.incoming_qos2.contains(&id) {
                // Received before and acknowledged with PUBREC: not delivered again
                // [MQTT-4.3.3-10]; the PUBREC may have been lost.
                crate::session::push(&mut self.control, Packet::PubRec(PubAck::new(id)));
                return Ok(());
            }
            // The quota counts a QoS 1 message until its PUBACK and a QoS 2 one until its
            // PUBCOMP (§4.9): what awaits acknowledgement, and the receipts awaiting PUBREL
            // (QoS 2 messages not yet acknowledged are in both). MQTT 3.1.1 clients, who
            // cannot be told the Receive Maximum, are held to it too: they are closed.
            let in_use =
                link.unacked.len() + self.incoming_qos2.len() - usize::from(link.unacked_qos2);
            if in_use >= usize::from(config.receive_maximum.get()) {
                return Err((
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    "more QoS 1/2 PUBLISH in flight than the Receive Maximum (§3.3.4, §4.9)",
                ));
            }
        }
        let payload_ok = publish.properties.payload_format_indicator != Some(PayloadFormat::Utf8)
            || std::str::from_utf8(&publish.payload).is_ok();
        if !payload_ok {
            if let Some(id) = packet_id {
                let mut ack = PubAck::new(id);
                ack.reason_code = PubAckReasonCode::PayloadFormatInvalid;
                crate::session::push(
                    &mut self.control,
                    match qos {
                        QoS::ExactlyOnce => Packet::PubRec(ack),
                        _ => Packet::PubAck(ack),
                    },
                );
            }
            return Ok(());
        }
        if let Some(id) = packet_id {
            link.unacked.insert(id, qos);
            if qos == QoS::ExactlyOnce {
                link.unacked_qos2 += 1;
                // The broker writes the receipt itself, in one atomic step with the copies
                // the message queues (`Event::Publish`): it is not a change logged here.
                self.incoming_qos2.insert(id);
            }
        }
        let mut properties = publish.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| now.plus_secs(s));
        let message = Message {
            topic: publish.topic,
            payload: publish.payload,
            qos,
            retain: publish.retain,
            properties,
            expires_at,
            received_at: now,
        };
        crate::session::push(
            &mut self.events,
            Event::Publish {
                message: Arc::new(message),
                packet_id,
            },
        );
        Ok(())
    }

    /// PUBREL: the client releases a QoS 2 message; complete with PUBCOMP.
    fn handle_pubrel(&mut self, id: PacketId) {
        let mut comp = PubComp::new(id);
        let awaiting_pubrec = self
            .link
            .as_ref()
            .is_some_and(|link| link.unacked.contains_key(&id));
        if awaiting_pubrec {
            // PUBREL before our PUBREC: the message is still being made durable. Ignored;
            // the client sends PUBREL again once it has the PUBREC.
            return;
        }
        if self.incoming_qos2.remove(&id) {
            self.receipt_changed(Change::Released { packet_id: id });
        } else {
            comp.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
        }
        crate::session::push(&mut self.control, Packet::PubComp(comp));
    }

    fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Violation> {
        let config = Arc::clone(&self.config);
        let identifier = subscribe.properties.subscription_identifier;
        if identifier.is_some() && !config.subscription_identifiers_available {
            return Err((
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
                "Subscription Identifier sent, but they are not available (§3.8.2.1.2)",
            ));
        }
        let requests = subscribe
            .filters
            .into_iter()
            .map(|(filter, mut options)| {
                let kind =
                    FilterKind::parse(&filter).map_err(|_| SubAckReasonCode::TopicFilterInvalid)?;
                if matches!(kind, FilterKind::Shared { .. })
                    && !config.shared_subscription_available
                {
                    return Err(SubAckReasonCode::SharedSubscriptionsNotSupported);
                }
                let wildcard = kind.topic_filter().contains(['+', '#']);
                if wildcard && !config.wildcard_subscription_available {
                    return Err(SubAckReasonCode::WildcardSubscriptionsNotSupported);
                }
                options.qos = options.qos.min(config.maximum_qos);
                Ok(SubscribeRequest {
                    filter,
                    options,
                    identifier,
                })
            })
            .collect::<Vec<_>>();
        if requests.iter().all(Result::is_err) {
            let codes = requests.into_iter().filter_map(Result::err).collect();
            self.send_suback(subscribe.packet_id, codes);
            return Ok(());
        }
        let asked = requests.iter().map(|r| r.as_ref().ok().cloned()).collect();
        self.pending_subscribes
            .insert(subscribe.packet_id, requests);
        crate::session::push(
            &mut self.events,
            Event::Subscribe {
                packet_id: subscribe.packet_id,
                requests: asked,
            },
        );
        Ok(())
    }

    /// The broker's answer to an `Event::Subscribe`: one result per request, in order
    /// (entries for requests the session already refused are ignored). Granted
    /// subscriptions are recorded, replacing one with the same filter [MQTT-3.8.4-3], and
    /// SUBACK is queued.
    pub fn handle_subscribe_done(
        &mut self,
        packet_id: PacketId,
        results: Vec<Result<QoS, SubAckReasonCode>>,
    ) {
        let Some(requests) = self.pending_subscribes.remove(&packet_id) else {
            return;
        };
        let mut codes = Vec::with_capacity(requests.len());
        let mut results = results.into_iter();
        for request in requests {
            let result = results
                .next()
                .unwrap_or(Err(SubAckReasonCode::UnspecifiedError));
            let request = match request {
                Ok(request) => request,
                Err(code) => {
                    codes.push(code);
                    continue;
                }
            };
            match result {
                Ok(granted) => {
                    let record = SubscriptionRecord {
                        filter: request.filter.detached(),
                        options: shoal_codec::SubscriptionOptions {
                            qos: granted,
                            ..request.options
                        },
                        identifier: request.identifier,
                    };
                    if self.stored {
                        // Each subscription is an entry of its own in the store: a
                        // SUBSCRIBE writes what it adds, never the whole list.
                        crate::session::push(&mut self.changes, Change::Subscribed(record.clone()));
                    }
                    self.filters.upsert(&mut self.record.subscriptions, record);
                    codes.push(SubAckReasonCode::granted(granted));
                }
                Err(code) => codes.push(code),
            }
        }
        self.send_suback(packet_id, codes);
    }

    fn send_suback(&mut self, packet_id: PacketId, reason_codes: Vec<SubAckReasonCode>) {
        crate::session::push(
            &mut self.control,
            Packet::SubAck(SubAck {
                packet_id,
                properties: AckProperties::default(),
                reason_codes,
            }),
        );
    }

    fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut removed = Vec::new();
        let reason_codes = unsubscribe
            .filters
            .into_iter()
            .map(|filter| {
                if FilterKind::parse(&filter).is_err() {
                    return UnsubAckReasonCode::TopicFilterInvalid;
                }
                if self.filters.remove(&mut self.record.subscriptions, &filter) {
                    if self.stored {
                        crate::session::push(
                            &mut self.changes,
                            Change::Unsubscribed {
                                filter: filter.clone(),
                            },
                        );
                    }
                    removed.push(filter);
                    UnsubAckReasonCode::Success
                } else {
                    UnsubAckReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        if !removed.is_empty() {
            self.events
                .push_back(Event::Unsubscribed { filters: removed });
        }
        crate::session::push(
            &mut self.control,
            Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                properties: AckProperties::default(),
                reason_codes,
            }),
        );
    }

    fn handle_disconnect(&mut self, disconnect: &shoal_codec::Disconnect) -> Result<(), Violation> {
        let link = self.link.as_ref().expect("handle_packet checked the link");
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            // A session that began with expiry 0 cannot be made to last at the end
            // [MQTT-3.14.2-2].
            if link.connected_with_zero_expiry && expiry != 0 {
                return Err((
                    DisconnectReasonCode::ProtocolError,
                    "Session Expiry Interval in DISCONNECT after 0 in CONNECT [MQTT-3.14.2-2]",
                ));
            }
            self.record.expiry_interval = expiry.min(self.config.max_session_expiry);
            self.record_changed();
        }
        let publish_will =
            disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
        let close = CloseReason {
            reason: disconnect.reason_code,
            publish_will,
            by: ClosedBy::Client,
        };
        self.closing = Some(close);
        crate::session::push(&mut self.events, Event::Close(close));
        Ok(())
    }

    /// The subscriptions of the session.
    pub fn subscriptions(&self) -> &[SubscriptionRecord] {
        &self.record.subscriptions
    }

    /// Whether the session holds a subscription to `filter` (as subscribed, `$share/`
    /// prefix included). Constant time, whatever the number it holds.
    pub fn has_subscription(&self, filter: &str) -> bool {
        self.filters
            .position(&self.record.subscriptions, filter)
            .is_some()
    }
}
