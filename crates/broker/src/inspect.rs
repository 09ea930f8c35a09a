//! Read-only views of the node's state for the admin API: clients with their sessions and
//! subscriptions, retained messages, routes. Each view is a snapshot taken under the
//! state's own locks, one session at a time; none is kept.

use std::sync::Arc;

use serde_json::{Value, json};
use shoal_codec::ProtocolVersion;
use shoal_session::Message;

use crate::broker::{Broker, read};
use crate::slot::SessionSlot;

/// One client (session) as the API shows it; `detail` adds the subscriptions.
pub(crate) fn client(slot: &SessionSlot, detail: bool) -> Value {
    let who = slot.connected_as();
    let session = slot.lock();
    let record = session.record();
    let mut view = json!({
        "client_id": slot.client_id.as_str(),
        "connected": session.is_connected(),
        "username": who.as_ref().and_then(|(user, _)| user.clone()),
        "address": who.as_ref().map(|(_, addr)| addr.to_string()),
        "protocol": session.version().map(protocol),
        "persistent": session.is_persistent(),
        "expiry_interval": record.expiry_interval,
        "expires_at_ms": record.expires_at().map(|at| at.as_millis()),
        "disconnected_at_ms": record.disconnected_at.map(|at| at.as_millis()),
        "queued": session.queued(),
        "subscriptions": record.subscriptions.len(),
    });
    if detail {
        view["subscriptions"] = Value::Array(
            record
                .subscriptions
                .iter()
                .map(|s| subscription(slot, s))
                .collect(),
        );
        view["will_topic"] = json!(record.will.as_ref().map(|w| w.message.topic.as_str()));
    }
    view
}

/// One subscription of a client.
pub(crate) fn subscription(slot: &SessionSlot, s: &shoal_session::SubscriptionRecord) -> Value {
    json!({
        "client_id": slot.client_id.as_str(),
        "filter": s.filter.as_str(),
        "qos": s.options.qos as u8,
        "no_local": s.options.no_local,
        "retain_as_published": s.options.retain_as_published,
        "identifier": s.identifier.map(|i| i.get()),
    })
}

fn protocol(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// Every session, ordered by client id (stable pages).
pub(crate) fn sorted_slots(broker: &Broker) -> Vec<Arc<SessionSlot>> {
    let mut slots = broker.slots();
    slots.sort_by(|a, b| a.client_id.as_str().cmp(b.client_id.as_str()));
    slots
}

/// Every retained message (not `$` topics), ordered by topic.
pub(crate) fn retained(broker: &Broker) -> Vec<Arc<Message>> {
    let mut all = broker.retained_for("#", broker.now());
    all.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
    all
}

/// The retained message of one topic, unexpired.
pub(crate) fn retained_one(broker: &Broker, topic: &str) -> Option<Arc<Message>> {
    let now = broker.now();
    read(&broker.retained)
        .get(topic)
        .filter(|m| !m.is_expired(now))
        .cloned()
}

/// A retained message; `payload` adds it (UTF-8 text, or hex when it is not text).
pub(crate) fn message(message: &Message, payload: bool) -> Value {
    let mut view = json!({
        "topic": message.topic.as_str(),
        "qos": message.qos as u8,
        "size": message.payload.len(),
        "received_at_ms": message.received_at.as_millis(),
        "expires_at_ms": message.expires_at.map(|at| at.as_millis()),
    });
    if payload {
        match std::str::from_utf8(&message.payload) {
            Ok(text) => {
                view["payload"] = json!(text);
                view["payload_encoding"] = json!("utf-8");
            }
            Err(_) => {
                let hex: String = message.payload.iter().map(|b| format!("{b:02x}")).collect();
                view["payload"] = json!(hex);
                view["payload_encoding"] = json!("hex");
            }
        }
    }
    view
}
