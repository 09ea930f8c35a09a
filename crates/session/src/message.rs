//! `Message`: an application message as the broker holds it between a publisher and its
//! subscribers, independent of any connection's packet identifiers and topic aliases.

use bytes::Bytes;
use shoal_codec::{MqttString, PublishProperties, QoS};

use crate::time::Timestamp;

/// An application message. Shared (`Arc<Message>`) by every subscriber it goes to; the
/// payload is never copied per subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name (never an alias).
    pub topic: MqttString,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// The properties passed through unchanged (Payload Format Indicator, Content Type,
    /// Response Topic, Correlation Data, User Properties). Per-hop ones are not kept here:
    /// `topic_alias` is always `None`, `subscription_identifiers` always empty, and
    /// `message_expiry_interval` is replaced by `expires_at`.
    pub properties: PublishProperties,
    /// When the message expires (Message Expiry Interval, §3.3.2.3.3), if it does.
    pub expires_at: Option<Timestamp>,
    /// When the broker received it.
    pub received_at: Timestamp,
}

impl Message {
    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to send at `now`: the time that remains (§3.3.2.3.3).
    pub fn remaining_expiry(&self, now: Timestamp) -> Option<u32> {
        self.expires_at.map(|at| now.secs_until(at))
    }

    /// A copy whose topic, payload and properties live in their own allocations, not in
    /// the read buffer of the packet it came in (which a kept slice would keep whole).
    pub fn detached(&self) -> Self {
        let p = &self.properties;
        let properties = PublishProperties {
            content_type: p.content_type.as_ref().map(MqttString::detached),
            response_topic: p.response_topic.as_ref().map(MqttString::detached),
            correlation_data: p
                .correlation_data
                .as_ref()
                .map(|d| Bytes::copy_from_slice(d)),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (k.detached(), v.detached()))
                .collect(),
            ..p.clone()
        };
        Self {
            topic: self.topic.detached(),
            payload: Bytes::copy_from_slice(&self.payload),
            properties,
            ..self.clone()
        }
    }

    /// The size that counts against queue byte limits: topic, payload and a fixed overhead.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}
