//! Errors of decoding and encoding. Each decode error names the statement of the
//! specification it enforces (`rule()`) and maps to the wire in one place
//! (`reason_code()`, `connect_reason_code()`).

use crate::property::PropertyId;
use crate::reason::{ConnectReasonCode, DisconnectReasonCode};
use crate::string::StringError;
use crate::{PacketType, ProtocolVersion};

/// Why bytes received are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet is larger than the Maximum Packet Size this side accepts; seen from the
    /// fixed header, before the body is read (§3.1.2.11.4, §3.2.2.3.6).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes (§3.2.2.3.6)")]
    PacketTooLarge {
        /// The size of the whole packet that the fixed header announces.
        size: u64,
        /// The configured limit.
        max: u32,
    },
    /// A Variable Byte Integer longer than four bytes (§1.5.5).
    #[error("variable byte integer longer than 4 bytes (§1.5.5)")]
    VarIntTooLong,
    /// A Variable Byte Integer that does not use the fewest bytes [MQTT-1.5.5-1].
    #[error("variable byte integer not encoded in the fewest bytes [MQTT-1.5.5-1]")]
    VarIntNotMinimal,
    /// Packet type 0, or 15 (AUTH) before MQTT 5 (§2.1.2).
    #[error("reserved packet type {packet_type} in {version} (§2.1.2)")]
    ReservedPacketType {
        /// The four high bits of the first byte.
        packet_type: u8,
        /// The protocol version of the connection.
        version: ProtocolVersion,
    },
    /// The four low bits of the first byte are not the ones the packet type requires
    /// [MQTT-2.1.3-1].
    #[error("invalid fixed header flags {flags:#06b} for {packet} [MQTT-2.1.3-1]")]
    InvalidFlags {
        /// The packet type.
        packet: PacketType,
        /// The flag bits received.
        flags: u8,
    },
    /// The first packet of a connection is not CONNECT [MQTT-3.1.0-1].
    #[error("first packet is {packet}, not CONNECT [MQTT-3.1.0-1]")]
    ExpectedConnect {
        /// The packet type received.
        packet: PacketType,
    },
    /// The packet ends before its content does: the remaining length is too short (§2.1.4).
    #[error("{packet} ends before its content does: remaining length too short (§2.1.4)")]
    UnexpectedEnd {
        /// The packet type.
        packet: PacketType,
    },
    /// Bytes left after the content of the packet: the remaining length is too long (§2.1.4).
    #[error("{count} bytes after the content of {packet}: remaining length too long (§2.1.4)")]
    TrailingBytes {
        /// The packet type.
        packet: PacketType,
        /// How many bytes are left over.
        count: usize,
    },
    /// A string field is not an MQTT UTF-8 string (§1.5.4).
    #[error("invalid string in {packet}: {source}")]
    InvalidString {
        /// The packet type.
        packet: PacketType,
        /// Which rule the string breaks.
        source: StringError,
    },
    /// The protocol name of CONNECT is neither `MQTT` nor `MQIsdp` [MQTT-3.1.2-1].
    #[error("protocol name {0:?} is not MQTT [MQTT-3.1.2-1]")]
    InvalidProtocolName(String),
    /// The protocol level of CONNECT is not 3, 4 or 5, or does not match its name
    /// [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0} [MQTT-3.1.2-2]")]
    UnsupportedProtocolVersion(u8),
    /// The reserved bit of the CONNECT flags is set [MQTT-3.1.2-3].
    #[error("reserved CONNECT flag is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// Will QoS is 3 [MQTT-3.1.2-12].
    #[error("will QoS 3 [MQTT-3.1.2-12]")]
    InvalidWillQos,
    /// Will QoS or Will Retain is set without the Will Flag [MQTT-3.1.2-11], [MQTT-3.1.2-13].
    #[error("will QoS or retain set without the will flag [MQTT-3.1.2-11]")]
    WillFlagsWithoutWill,
    /// MQTT 3.1.1: the password flag is set without the user name flag [MQTT-3.1.2-22].
    #[error("password flag without user name flag [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// Both QoS bits of a PUBLISH are set [MQTT-3.3.1-4].
    #[error("PUBLISH with QoS 3 [MQTT-3.3.1-4]")]
    InvalidQos,
    /// DUP is set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")]
    DupWithQos0,
    /// A packet identifier is 0 [MQTT-2.2.1-3].
    #[error("packet identifier 0 [MQTT-2.2.1-3]")]
    PacketIdZero,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2].
    #[error("wildcard in topic name {0:?} [MQTT-3.3.2-2]")]
    TopicNameWildcard(String),
    /// An empty topic name or filter [MQTT-4.7.3-1] (allowed for a PUBLISH topic name only
    /// with a Topic Alias, §3.3.2.3.4).
    #[error("empty topic in {packet} [MQTT-4.7.3-1]")]
    EmptyTopic {
        /// The packet type.
        packet: PacketType,
    },
    /// A property identifier that MQTT 5 does not define (§2.2.2.2).
    #[error("unknown property identifier {0:#04x} (§2.2.2.2)")]
    UnknownProperty(u32),
    /// A property in a packet that may not carry it (§2.2.2.2).
    #[error("property {id:?} is not allowed in {packet} (§2.2.2.2)")]
    PropertyNotAllowed {
        /// The property.
        id: PropertyId,
        /// The packet (or "Will" properties of CONNECT).
        packet: PacketType,
    },
    /// A property that may appear once appears twice (§2.2.2.2).
    #[error("property {id:?} appears more than once in {packet} (§2.2.2.2)")]
    DuplicateProperty {
        /// The property.
        id: PropertyId,
        /// The packet.
        packet: PacketType,
    },
    /// A property value the specification forbids: Receive Maximum 0, Topic Alias 0
    /// [MQTT-3.3.2-8], Subscription Identifier 0, a flag byte other than 0 or 1.
    #[error("invalid value {value} for property {id:?} (§3)")]
    InvalidPropertyValue {
        /// The property.
        id: PropertyId,
        /// The value received.
        value: u32,
    },
    /// A reason code that the packet may not carry [MQTT-3.4.2-1].
    #[error("reason code {code:#04x} is not allowed in {packet} [MQTT-3.4.2-1]")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
    /// Reserved bits of the CONNACK acknowledge flags are set [MQTT-3.2.2-1].
    #[error("reserved CONNACK flags set: {0:#010b} [MQTT-3.2.2-1]")]
    InvalidConnAckFlags(u8),
    /// CONNACK with Session Present and a failure code [MQTT-3.2.2-6].
    #[error("session present set with failure reason {0:#04x} [MQTT-3.2.2-6]")]
    SessionPresentWithError(u8),
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter [MQTT-3.8.3-2], [MQTT-3.10.3-2].
    #[error("{packet} without any topic filter [MQTT-3.8.3-2]")]
    NoTopicFilters {
        /// The packet type.
        packet: PacketType,
    },
    /// Subscription options with reserved bits, QoS 3 or Retain Handling 3 [MQTT-3.8.3-5].
    #[error("invalid subscription options {0:#010b} [MQTT-3.8.3-5]")]
    InvalidSubscriptionOptions(u8),
    /// No Local on a shared subscription [MQTT-3.8.3-4].
    #[error("No Local set on shared subscription {0:?} [MQTT-3.8.3-4]")]
    NoLocalOnShared(String),
    /// Authentication Data without an Authentication Method (§3.1.2.11.10).
    #[error("Authentication Data without an Authentication Method in {packet} (§3.1.2.11.10)")]
    AuthenticationDataWithoutMethod {
        /// The packet type.
        packet: PacketType,
    },
}

impl DecodeError {
    /// The statement of the specification that the input breaks: its id (`MQTT-3.3.1-4`)
    /// where it has one, else its section (`§2.1.4`).
    pub fn rule(&self) -> &'static str {
        match self {
            Self::PacketTooLarge { .. } => "§3.2.2.3.6",
            Self::VarIntTooLong => "§1.5.5",
            Self::VarIntNotMinimal => "MQTT-1.5.5-1",
            Self::ReservedPacketType { .. } => "§2.1.2",
            Self::InvalidFlags { .. } => "MQTT-2.1.3-1",
            Self::ExpectedConnect { .. } => "MQTT-3.1.0-1",
            Self::UnexpectedEnd { .. } | Self::TrailingBytes { .. } => "§2.1.4",
            Self::InvalidString { source, .. } => match source {
                StringError::InvalidUtf8 => "MQTT-1.5.4-1",
                StringError::NullCharacter => "MQTT-1.5.4-2",
                StringError::TooLong(_) => "§1.5.4",
            },
            Self::InvalidProtocolName(_) => "MQTT-3.1.2-1",
            Self::UnsupportedProtocolVersion(_) => "MQTT-3.1.2-2",
            Self::ConnectReservedFlag => "MQTT-3.1.2-3",
            Self::InvalidWillQos => "MQTT-3.1.2-12",
            Self::WillFlagsWithoutWill => "MQTT-3.1.2-11",
            Self::PasswordWithoutUsername => "MQTT-3.1.2-22",
            Self::InvalidQos => "MQTT-3.3.1-4",
            Self::DupWithQos0 => "MQTT-3.3.1-2",
            Self::PacketIdZero => "MQTT-2.2.1-3",
            Self::TopicNameWildcard(_) => "MQTT-3.3.2-2",
            Self::EmptyTopic { .. } => "MQTT-4.7.3-1",
            Self::UnknownProperty(_)
            | Self::PropertyNotAllowed { .. }
            | Self::DuplicateProperty { .. } => "§2.2.2.2",
            Self::InvalidPropertyValue { id, .. } => match id {
                PropertyId::TopicAlias => "MQTT-3.3.2-8",
                _ => "§3",
            },
            Self::InvalidReasonCode { .. } => "MQTT-3.4.2-1",
            Self::InvalidConnAckFlags(_) => "MQTT-3.2.2-1",
            Self::SessionPresentWithError(_) => "MQTT-3.2.2-6",
            Self::NoTopicFilters { packet } => match packet {
                PacketType::Unsubscribe => "MQTT-3.10.3-2",
                _ => "MQTT-3.8.3-2",
            },
            Self::InvalidSubscriptionOptions(_) => "MQTT-3.8.3-5",
            Self::NoLocalOnShared(_) => "MQTT-3.8.3-4",
            Self::AuthenticationDataWithoutMethod { .. } => "§3.1.2.11.10",
        }
    }

    /// Whether the specification calls this a Protocol Error (0x82) rather than a Malformed
    /// Packet (0x81) (§4.13).
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            Self::ExpectedConnect { .. }
                | Self::DuplicateProperty { .. }
                | Self::InvalidPropertyValue { .. }
                | Self::PacketIdZero
                | Self::EmptyTopic { .. }
                | Self::NoTopicFilters { .. }
                | Self::NoLocalOnShared(_)
                | Self::SessionPresentWithError(_)
                | Self::AuthenticationDataWithoutMethod { .. }
        )
    }

    /// The reason code of the DISCONNECT that MQTT 5 sends for this error (§4.13).
    pub fn reason_code(&self) -> DisconnectReasonCode {
        match self {
            Self::PacketTooLarge { .. } => DisconnectReasonCode::PacketTooLarge,
            Self::InvalidPropertyValue {
                id: PropertyId::TopicAlias,
                ..
            } => DisconnectReasonCode::TopicAliasInvalid,
            e if e.is_protocol_error() => DisconnectReasonCode::ProtocolError,
            _ => DisconnectReasonCode::MalformedPacket,
        }
    }

    /// The reason code of the CONNACK that refuses a CONNECT that failed to decode. MQTT 3.x
    /// servers send a CONNACK only for an unsupported level (return code 1) and otherwise
    /// close the connection [MQTT-3.1.4-1].
    pub fn connect_reason_code(&self) -> ConnectReasonCode {
        match self {
            Self::PacketTooLarge { .. } => ConnectReasonCode::PacketTooLarge,
            Self::UnsupportedProtocolVersion(_) | Self::InvalidProtocolName(_) => {
                ConnectReasonCode::UnsupportedProtocolVersion
            }
            e if e.is_protocol_error() => ConnectReasonCode::ProtocolError,
            _ => ConnectReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet is larger than a remaining length of 268,435,455 bytes allows (§2.1.4).
    #[error("packet body of {0} bytes exceeds the largest remaining length (§2.1.4)")]
    PacketTooLarge(usize),
    /// Binary data longer than its two-byte length prefix allows (§1.5.6).
    #[error("binary field of {0} bytes exceeds 65535 (§1.5.6)")]
    BinaryTooLong(usize),
    /// The packet does not exist in this protocol version (AUTH before MQTT 5).
    #[error("{packet} does not exist in {version}")]
    NotInVersion {
        /// The packet type.
        packet: PacketType,
        /// The version of the connection.
        version: ProtocolVersion,
    },
}
