//! shoal-codec: the packets of MQTT 3.1, 3.1.1 and 5.0, decoded from and encoded into bytes.
//!
//! Sans-IO: this crate never touches a socket, a clock or a task. A connection driver feeds
//! the bytes it read into a [`Decoder`] and gets whole [`Packet`]s back; it encodes packets
//! with [`Packet::encode`] into its own write buffer.
//!
//! - Decoding is incremental and zero-copy: a partial frame returns `Ok(None)`; payloads and
//!   strings are slices (`bytes::Bytes`) of the read buffer. The maximum packet size is
//!   enforced from the fixed header, before the body is buffered.
//! - Every malformed input gives a typed [`DecodeError`] that names the statement of the
//!   specification it breaks ([`DecodeError::rule`]) and the reason code to answer with
//!   ([`DecodeError::reason_code`]). No input panics or allocates beyond its frame.
//! - The protocol version is fixed by CONNECT and kept by the [`Decoder`] for the rest of
//!   the connection; encoding takes the version and leaves out what it does not have
//!   (properties and reason codes before MQTT 5).
//!
//! Main types: [`Decoder`], [`Packet`] and one struct per packet ([`Connect`], [`Publish`],
//! ...), one property set per packet ([`PublishProperties`], ...), one reason-code enum per
//! packet family ([`ConnectReasonCode`], ...).

mod decoder;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod packet;
mod property;
mod reason;
mod string;
mod types;
mod wire;

use std::fmt;

pub use decoder::{Decoder, FixedHeader};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PubAck, PubComp, PubRec, PubRel,
    Publish, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
pub use property::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty,
    WillProperties,
};
pub use reason::{
    AuthReasonCode, ConnectReasonCode, DisconnectReasonCode, PubAckReasonCode, PubRelReasonCode,
    ReasonCode, SubAckReasonCode, UnsubAckReasonCode,
};
pub use string::{MAX_STRING_LEN, MqttString, StringError};
pub use types::{
    PacketId, PayloadFormat, ProtocolVersion, QoS, QosPid, RetainHandling, SubscriptionOptions,
};
pub use wire::MAX_VARINT as MAX_REMAINING_LENGTH;

/// The largest packet MQTT can carry: a five-byte fixed header and the largest remaining
/// length.
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + MAX_REMAINING_LENGTH;

/// The type of a control packet: the four high bits of its first byte (§2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 1: client to server, connection request.
    Connect = 1,
    /// 2: server to client, connect acknowledgement.
    ConnAck = 2,
    /// 3: both ways, publish message.
    Publish = 3,
    /// 4: both ways, QoS 1 acknowledgement.
    PubAck = 4,
    /// 5: both ways, QoS 2 delivery part 1.
    PubRec = 5,
    /// 6: both ways, QoS 2 delivery part 2.
    PubRel = 6,
    /// 7: both ways, QoS 2 delivery part 3.
    PubComp = 7,
    /// 8: client to server, subscribe request.
    Subscribe = 8,
    /// 9: server to client, subscribe acknowledgement.
    SubAck = 9,
    /// 10: client to server, unsubscribe request.
    Unsubscribe = 10,
    /// 11: server to client, unsubscribe acknowledgement.
    UnsubAck = 11,
    /// 12: client to server, ping request.
    PingReq = 12,
    /// 13: server to client, ping response.
    PingResp = 13,
    /// 14: both ways, disconnect notification.
    Disconnect = 14,
    /// 15: both ways, authentication exchange (MQTT 5 only).
    Auth = 15,
}

impl PacketType {
    /// The packet type of the four high bits `value`, if it is not reserved in `version`.
    pub const fn from_bits(value: u8, version: ProtocolVersion) -> Option<Self> {
        Some(match value {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 if version.is_v5() => Self::Auth,
            _ => return None,
        })
    }

    /// The flag bits that every packet but PUBLISH must carry [MQTT-2.1.3-1].
    pub const fn required_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        })
    }
}
