//! Small value types shared by many packets: QoS, packet identifiers, protocol versions and
//! subscription options.

use std::fmt;
use std::num::NonZeroU16;

use crate::error::DecodeError;

/// The protocol version, fixed by CONNECT for the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            Self::V3_1_1 | Self::V5 => "MQTT",
        }
    }

    /// Whether this version carries properties and reason codes (MQTT 5).
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V3_1 => "MQTT 3.1",
            Self::V3_1_1 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once, no acknowledgement.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once, PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: exactly once, PUBREC / PUBREL / PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS of a two-bit field, or `None` for the forbidden value 3.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> Self {
        qos as Self
    }
}

/// A packet identifier: never zero [MQTT-2.2.1-3].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(pub NonZeroU16);

impl PacketId {
    /// The identifier `n`, or `None` for 0.
    pub const fn new(n: u16) -> Option<Self> {
        match NonZeroU16::new(n) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// The identifier as a number.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    pub(crate) fn decode(raw: u16) -> Result<Self, DecodeError> {
        Self::new(raw).ok_or(DecodeError::PacketIdZero)
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The QoS of a PUBLISH together with its packet identifier, which exists exactly when the
/// QoS is above 0 [MQTT-2.2.1-2].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosPid {
    /// QoS 0: no packet identifier.
    AtMostOnce,
    /// QoS 1 with its packet identifier.
    AtLeastOnce(PacketId),
    /// QoS 2 with its packet identifier.
    ExactlyOnce(PacketId),
}

impl QosPid {
    /// The QoS alone.
    pub const fn qos(self) -> QoS {
        match self {
            Self::AtMostOnce => QoS::AtMostOnce,
            Self::AtLeastOnce(_) => QoS::AtLeastOnce,
            Self::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet identifier, if the QoS has one.
    pub const fn packet_id(self) -> Option<PacketId> {
        match self {
            Self::AtMostOnce => None,
            Self::AtLeastOnce(id) | Self::ExactlyOnce(id) => Some(id),
        }
    }

    /// Combines a QoS with the packet identifier that it needs (ignored for QoS 0).
    pub const fn from_parts(qos: QoS, id: PacketId) -> Self {
        match qos {
            QoS::AtMostOnce => Self::AtMostOnce,
            QoS::AtLeastOnce => Self::AtLeastOnce(id),
            QoS::ExactlyOnce => Self::ExactlyOnce(id),
        }
    }
}

/// What the server does with retained messages when a subscription is made (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist before.
    SendIfNew = 1,
    /// 2: do not send retained messages at subscribe.
    DoNotSend = 2,
}

/// The options of one topic filter in SUBSCRIBE. For MQTT 3.x only `qos` is on the wire and
/// the other fields keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// The maximum QoS at which the server sends messages for this subscription.
    pub qos: QoS,
    /// Messages must not be forwarded to the connection that published them [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Forwarded messages keep the RETAIN flag they were published with.
    pub retain_as_published: bool,
    /// Whether retained messages are sent when the subscription is made.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this maximum QoS and every other field at its default.
    pub const fn with_qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendOnSubscribe,
        }
    }

    /// The options byte as MQTT 5 writes it (MQTT 3.x writes the QoS bits only).
    pub const fn to_byte(self, version: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        if !version.is_v5() {
            return qos;
        }
        qos | (self.no_local as u8) << 2
            | (self.retain_as_published as u8) << 3
            | (self.retain_handling as u8) << 4
    }

    /// Parses the options byte: reserved bits, QoS 3 and Retain Handling 3 are errors
    /// [MQTT-3.8.3-5].
    pub fn from_byte(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(byte));
        }
        let qos =
            QoS::from_bits(byte & 0b11).ok_or(DecodeError::InvalidSubscriptionOptions(byte))?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidSubscriptionOptions(byte)),
        };
        Ok(Self {
            qos,
            no_local: byte & 0b100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }
}

/// The Payload Format Indicator property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    #[default]
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}
