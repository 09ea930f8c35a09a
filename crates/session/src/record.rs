//! The persistent part of a session, as the store keeps it: what must survive a restart or
//! move to another node (ARCHITECTURE.md, "The cluster").

use std::num::NonZeroU32;
use std::sync::Arc;

use shoal_codec::{MqttString, PacketId, QoS, SubscriptionOptions};

use crate::message::Message;
use crate::time::Timestamp;

/// Session Expiry Interval that means "never expires" (§3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The topic filter as subscribed, `$share/{group}/` prefix included.
    pub filter: MqttString,
    /// The options of the subscription.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier given with it (MQTT 5).
    pub identifier: Option<NonZeroU32>,
}

/// The Will of a session: published when the connection ends abnormally, after `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    /// The message to publish (its `received_at` is the CONNECT time). Its Message Expiry
    /// Interval stays in `properties.message_expiry_interval` (and `expires_at` is `None`)
    /// until it is published, since it counts from then (§3.1.3.2.4).
    pub message: Message,
    /// Will Delay Interval in seconds (MQTT 5; 0 before).
    pub delay: u32,
}

/// The session state that lasts beyond a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The client identifier: the key of the session.
    pub client_id: MqttString,
    /// Session Expiry Interval in seconds after the connection closes; `NEVER_EXPIRES` for
    /// never. A session with 0 is never stored.
    pub expiry_interval: u32,
    /// The subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// The Will, while the client is connected or its delay runs.
    pub will: Option<Box<WillRecord>>,
    /// When the last connection closed; `None` while a client is connected.
    pub disconnected_at: Option<Timestamp>,
    /// QoS 2 messages received from the client and acknowledged with PUBREC, whose PUBREL
    /// has not come yet: a resend of one of them must not be delivered again
    /// [MQTT-4.3.3-10]. Filled by the store when it loads a session (the receipts are kept
    /// as entries of their own, `Change::Received`); `Session::restore` takes them into the
    /// session, and the records a session logs leave it empty.
    pub incoming_qos2: Vec<PacketId>,
}

impl SessionRecord {
    /// When the Will of a disconnected session is due: when its delay has passed or the
    /// session ends, whichever is first (§3.1.3.2.2). `None` while connected or without a
    /// Will.
    pub fn will_due_at(&self) -> Option<Timestamp> {
        let at = self.disconnected_at?;
        let will = self.will.as_ref()?;
        let delay = match self.expiry_interval {
            NEVER_EXPIRES => will.delay,
            expiry => will.delay.min(expiry),
        };
        Some(at.plus_secs(delay))
    }

    /// When the session expires, if it is disconnected and expires at all.
    pub fn expires_at(&self) -> Option<Timestamp> {
        if self.expiry_interval == NEVER_EXPIRES {
            return None;
        }
        self.disconnected_at
            .map(|at| at.plus_secs(self.expiry_interval))
    }
}

/// Where a message to the client stands in its delivery flow (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// Not sent yet: the client is offline, or its Receive Maximum is reached.
    Queued,
    /// Sent with this packet identifier; PUBACK (QoS 1) or PUBREC (QoS 2) not received.
    Sent(PacketId),
    /// QoS 2: PUBREC received and PUBREL sent with this identifier; PUBCOMP not received.
    Released(PacketId),
}

/// A message on its way to one client, in the order of the session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The message, shared with the other subscribers.
    pub message: Arc<Message>,
    /// The QoS it is delivered with: the lower of the published and the granted QoS.
    pub qos: QoS,
    /// The RETAIN flag as delivered (Retain As Published, or a retained message sent at
    /// subscribe time).
    pub retain: bool,
    /// The Subscription Identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<NonZeroU32>,
    /// Where it stands.
    pub state: OutboundState,
}
