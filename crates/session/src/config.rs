//! `SessionConfig`: the server's limits and features that a session enforces and announces.

use std::num::NonZeroU16;

use shoal_codec::QoS;

/// The limits and features of the server, as one session sees them. The broker builds it
/// from its configuration; each field says its default and its trade-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// QoS 1/2 publications a client may have unacknowledged towards us (our Receive
    /// Maximum, sent in CONNACK). Default 1024: more lets a fast publisher pipeline further
    /// while acknowledgements wait for the durable flush; each costs a little memory.
    pub receive_maximum: NonZeroU16,
    /// Largest packet we accept, whole (our Maximum Packet Size). Default 1 MiB.
    pub maximum_packet_size: u32,
    /// Topic aliases a client may use towards us (Topic Alias Maximum). Default 64.
    pub topic_alias_maximum: u16,
    /// Topic aliases we use towards a client, at most (capped by the client's own maximum).
    /// Default 64: saves bytes per message for long topics; costs a map entry per topic.
    pub outbound_topic_aliases: u16,
    /// Highest QoS we accept and grant. Default 2.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported. Default true.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are supported. Default true.
    pub wildcard_subscription_available: bool,
    /// Whether shared subscriptions are supported. Default true.
    pub shared_subscription_available: bool,
    /// Whether subscription identifiers are supported. Default true.
    pub subscription_identifiers_available: bool,
    /// Keep alive we impose instead of an MQTT 5 client's (Server Keep Alive), if any.
    /// MQTT 3.1.1 clients cannot be told, so they keep theirs. Default none.
    pub server_keep_alive: Option<u16>,
    /// Longest keep alive an MQTT 5 client may use: one asking for more, or for none (0),
    /// is told this one (Server Keep Alive). Default none. (The broker refuses MQTT 3.1.1
    /// clients past it, who cannot be told.)
    pub max_keep_alive: Option<u16>,
    /// Messages to send that a session may hold (queued while offline, or waiting for the
    /// client's Receive Maximum or a slow socket). Default 1000: beyond it new messages are
    /// dropped and counted, so a client that stops reading costs bounded memory.
    pub max_queued_messages: usize,
    /// Bytes of messages a session may hold (topic + payload + overhead). Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for an offline persistent session (Mosquitto's
    /// `queue_qos0_messages`). Default false: QoS 0 is best effort.
    pub queue_qos0_offline: bool,
    /// Highest Session Expiry Interval granted, seconds. Default 7 days; a client asking for
    /// more gets this, and is told in CONNACK.
    pub max_session_expiry: u32,
    /// QoS 1/2 messages sent and not yet acknowledged, at most, whatever the client's
    /// Receive Maximum. Default 65535 (the client's Receive Maximum decides).
    pub max_inflight: NonZeroU16,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            receive_maximum: NonZeroU16::new(1024).expect("1024 is not zero"),
            maximum_packet_size: 1 << 20,
            topic_alias_maximum: 64,
            outbound_topic_aliases: 64,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            server_keep_alive: None,
            max_keep_alive: None,
            max_queued_messages: 1000,
            max_queued_bytes: 16 << 20,
            queue_qos0_offline: false,
            max_session_expiry: 7 * 24 * 3600,
            max_inflight: NonZeroU16::MAX,
        }
    }
}

impl SessionConfig {
    /// The keep alive an MQTT 5 client asking for `requested` seconds (0: none) gets: the
    /// Server Keep Alive if one is imposed, else the request capped by `max_keep_alive`
    /// (a request for none gets the cap).
    pub fn keep_alive_for(&self, requested: u16) -> u16 {
        if let Some(imposed) = self.server_keep_alive {
            return imposed;
        }
        match self.max_keep_alive {
            Some(cap) if requested == 0 || requested > cap => cap,
            _ => requested,
        }
    }
}
