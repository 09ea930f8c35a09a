//! What a session asks of the broker: `Event`s to act on, and `Change`s to persist.

use std::num::NonZeroU32;
use std::sync::Arc;

use shoal_codec::{DisconnectReasonCode, MqttString, PacketId, SubscriptionOptions};

use crate::message::Message;
use crate::record::{OutboundState, SessionRecord};

/// Something the broker must act on, from `Session::poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client published a message: authorize it, dispatch it, make it durable, then call
    /// `Session::handle_publish_done` with `packet_id` (QoS 1/2) to acknowledge it.
    Publish {
        /// The message, ready to share with subscribers.
        message: Arc<Message>,
        /// The packet identifier to acknowledge, for QoS 1 and 2.
        packet_id: Option<PacketId>,
    },
    /// The client asks for subscriptions, already checked against the protocol rules:
    /// authorize each, register the granted ones, then call
    /// `Session::handle_subscribe_done` with one result per request, in order.
    Subscribe {
        /// The packet identifier of the SUBSCRIBE.
        packet_id: PacketId,
        /// The requests, in the order of the packet; `None` where the session already
        /// refused the filter (its SUBACK code is decided), so results stay aligned.
        requests: Vec<Option<SubscribeRequest>>,
    },
    /// The client removed these subscriptions (those that existed): drop them from the index.
    Unsubscribed {
        /// The topic filters removed.
        filters: Vec<MqttString>,
    },
    /// The client sent AUTH after CONNECT (re-authentication, §4.12.1): the broker's
    /// authenticator answers it.
    Auth(shoal_codec::Auth),
    /// The connection must end. The session has queued the DISCONNECT to send, if any.
    Close(CloseReason),
}

/// One filter of a SUBSCRIBE, valid by the protocol's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The topic filter, `$share/` prefix included.
    pub filter: MqttString,
    /// The options, QoS already capped at the server's maximum.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier of the SUBSCRIBE (MQTT 5).
    pub identifier: Option<NonZeroU32>,
}

/// Why a connection ends, and whether its Will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The reason, as MQTT 5 names it (sent to the client where it can be).
    pub reason: DisconnectReasonCode,
    /// Whether the Will Message is published (after its delay).
    pub publish_will: bool,
    /// Who ended it.
    pub by: ClosedBy,
}

/// Which side ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The client sent DISCONNECT.
    Client,
    /// The server: a protocol error, a keep-alive timeout, a takeover, a shutdown.
    Server,
    /// The network: the connection broke without DISCONNECT.
    Network,
}

/// A change to the persistent state of a session, from `Session::poll_change`. Only
/// sessions that outlive their connection (Session Expiry Interval above 0) produce them.
/// The broker writes them to the store, in order, and flushes before it acknowledges the
/// messages that caused them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The record's fields (Will, expiry, disconnection) are now these. Its `subscriptions`
    /// and `incoming_qos2` are left empty: they are entries of their own
    /// (`Subscribed`, `Received`), so a change writes what changed.
    Record(Box<SessionRecord>),
    /// A message entered the queue at this sequence number.
    Enqueued {
        /// The position in the session's queue.
        seq: u64,
        /// The message and how it is delivered.
        message: Box<crate::record::OutboundMessage>,
    },
    /// The message at `seq` moved on in its flow.
    State {
        /// The position in the session's queue.
        seq: u64,
        /// Its new state.
        state: OutboundState,
    },
    /// The message at `seq` is done (acknowledged, expired or dropped).
    Removed {
        /// The position in the session's queue.
        seq: u64,
    },
    /// A QoS 2 message with this packet identifier was received and is acknowledged with
    /// PUBREC: a resend of it must not be delivered again until its PUBREL [MQTT-4.3.3-10].
    /// Written atomically with the copies the message queued for subscribers.
    Received {
        /// The packet identifier.
        packet_id: PacketId,
    },
    /// The QoS 2 receipt of this packet identifier ends (PUBREL came, or PUBREC refused it).
    Released {
        /// The packet identifier.
        packet_id: PacketId,
    },
    /// A subscription was added, or replaced one with the same filter [MQTT-3.8.4-3].
    Subscribed(crate::record::SubscriptionRecord),
    /// The subscription with this filter was removed.
    Unsubscribed {
        /// The topic filter.
        filter: MqttString,
    },
    /// The session no longer outlives its connection: remove it and its queue from the store.
    Discarded,
}
