//! MQTT 5 properties (§2.2.2): identifiers, wire types, and one typed set per packet that
//! accepts exactly the properties the specification allows there.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::string::MqttString;
use crate::types::{PayloadFormat, QoS};
use crate::wire::{self, MAX_VARINT, Reader};

macro_rules! property_ids {
    ($( $(#[$meta:meta])* $name:ident = $value:literal, )+) => {
        /// A property identifier (§2.2.2.2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum PropertyId {
            $( $(#[$meta])* $name = $value, )+
        }

        impl PropertyId {
            /// The property of identifier `value`, if MQTT 5 defines one.
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$name), )+
                    _ => None,
                }
            }
        }
    };
}

property_ids! {
    /// 0x01, byte: PUBLISH, Will.
    PayloadFormatIndicator = 0x01,
    /// 0x02, four-byte integer: PUBLISH, Will.
    MessageExpiryInterval = 0x02,
    /// 0x03, string: PUBLISH, Will.
    ContentType = 0x03,
    /// 0x08, string: PUBLISH, Will.
    ResponseTopic = 0x08,
    /// 0x09, binary: PUBLISH, Will.
    CorrelationData = 0x09,
    /// 0x0B, variable byte integer: PUBLISH, SUBSCRIBE.
    SubscriptionIdentifier = 0x0B,
    /// 0x11, four-byte integer: CONNECT, CONNACK, DISCONNECT.
    SessionExpiryInterval = 0x11,
    /// 0x12, string: CONNACK.
    AssignedClientIdentifier = 0x12,
    /// 0x13, two-byte integer: CONNACK.
    ServerKeepAlive = 0x13,
    /// 0x15, string: CONNECT, CONNACK, AUTH.
    AuthenticationMethod = 0x15,
    /// 0x16, binary: CONNECT, CONNACK, AUTH.
    AuthenticationData = 0x16,
    /// 0x17, byte: CONNECT.
    RequestProblemInformation = 0x17,
    /// 0x18, four-byte integer: Will.
    WillDelayInterval = 0x18,
    /// 0x19, byte: CONNECT.
    RequestResponseInformation = 0x19,
    /// 0x1A, string: CONNACK.
    ResponseInformation = 0x1A,
    /// 0x1C, string: CONNACK, DISCONNECT.
    ServerReference = 0x1C,
    /// 0x1F, string: CONNACK, the acknowledgements, DISCONNECT, AUTH.
    ReasonString = 0x1F,
    /// 0x21, two-byte integer: CONNECT, CONNACK.
    ReceiveMaximum = 0x21,
    /// 0x22, two-byte integer: CONNECT, CONNACK.
    TopicAliasMaximum = 0x22,
    /// 0x23, two-byte integer: PUBLISH.
    TopicAlias = 0x23,
    /// 0x24, byte: CONNACK.
    MaximumQos = 0x24,
    /// 0x25, byte: CONNACK.
    RetainAvailable = 0x25,
    /// 0x26, string pair: every packet that has properties.
    UserProperty = 0x26,
    /// 0x27, four-byte integer: CONNECT, CONNACK.
    MaximumPacketSize = 0x27,
    /// 0x28, byte: CONNACK.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29, byte: CONNACK.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A, byte: CONNACK.
    SharedSubscriptionAvailable = 0x2A,
}

/// A user property: a name and a value, both strings (§1.5.7).
pub type UserProperty = (MqttString, MqttString);

/// How one property's value is on the wire (§2.2.2.2): read, size, write.
pub(crate) trait Wire {
    type Value;
    fn read(id: PropertyId, r: &mut Reader) -> Result<Self::Value, DecodeError>;
    fn len(value: &Self::Value) -> Result<usize, EncodeError>;
    fn write(value: &Self::Value, buf: &mut BytesMut);
}

fn invalid(id: PropertyId, value: u32) -> DecodeError {
    DecodeError::InvalidPropertyValue { id, value }
}

/// A byte that must be 0 or 1.
pub(crate) struct Flag;
impl Wire for Flag {
    type Value = bool;
    fn read(id: PropertyId, r: &mut Reader) -> Result<bool, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(id, other.into())),
        }
    }
    fn len(_: &bool) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(value: &bool, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*value));
    }
}

/// Maximum QoS: a byte of 0 or 1 (§3.2.2.3.4).
pub(crate) struct MaxQos;
impl Wire for MaxQos {
    type Value = QoS;
    fn read(id: PropertyId, r: &mut Reader) -> Result<QoS, DecodeError> {
        match r.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            other => Err(invalid(id, other.into())),
        }
    }
    fn len(_: &QoS) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(value: &QoS, buf: &mut BytesMut) {
        buf.put_u8(*value as u8);
    }
}

/// Payload Format Indicator: a byte of 0 or 1.
pub(crate) struct Format;
impl Wire for Format {
    type Value = PayloadFormat;
    fn read(id: PropertyId, r: &mut Reader) -> Result<PayloadFormat, DecodeError> {
        match r.u8()? {
            0 => Ok(PayloadFormat::Unspecified),
            1 => Ok(PayloadFormat::Utf8),
            other => Err(invalid(id, other.into())),
        }
    }
    fn len(_: &PayloadFormat) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(value: &PayloadFormat, buf: &mut BytesMut) {
        buf.put_u8(*value as u8);
    }
}

/// A two-byte integer.
pub(crate) struct U16;
impl Wire for U16 {
    type Value = u16;
    fn read(_: PropertyId, r: &mut Reader) -> Result<u16, DecodeError> {
        r.u16()
    }
    fn len(_: &u16) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write(value: &u16, buf: &mut BytesMut) {
        buf.put_u16(*value);
    }
}

/// A two-byte integer that must not be 0 (Receive Maximum, Topic Alias).
pub(crate) struct NzU16;
impl Wire for NzU16 {
    type Value = NonZeroU16;
    fn read(id: PropertyId, r: &mut Reader) -> Result<NonZeroU16, DecodeError> {
        NonZeroU16::new(r.u16()?).ok_or(invalid(id, 0))
    }
    fn len(_: &NonZeroU16) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write(value: &NonZeroU16, buf: &mut BytesMut) {
        buf.put_u16(value.get());
    }
}

/// A four-byte integer.
pub(crate) struct U32;
impl Wire for U32 {
    type Value = u32;
    fn read(_: PropertyId, r: &mut Reader) -> Result<u32, DecodeError> {
        r.u32()
    }
    fn len(_: &u32) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write(value: &u32, buf: &mut BytesMut) {
        buf.put_u32(*value);
    }
}

/// A four-byte integer that must not be 0 (Maximum Packet Size).
pub(crate) struct NzU32;
impl Wire for NzU32 {
    type Value = NonZeroU32;
    fn read(id: PropertyId, r: &mut Reader) -> Result<NonZeroU32, DecodeError> {
        NonZeroU32::new(r.u32()?).ok_or(invalid(id, 0))
    }
    fn len(_: &NonZeroU32) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write(value: &NonZeroU32, buf: &mut BytesMut) {
        buf.put_u32(value.get());
    }
}

/// A Variable Byte Integer from 1 to 268,435,455 (Subscription Identifier).
pub(crate) struct SubId;
impl Wire for SubId {
    type Value = NonZeroU32;
    fn read(id: PropertyId, r: &mut Reader) -> Result<NonZeroU32, DecodeError> {
        NonZeroU32::new(r.varint()?).ok_or(invalid(id, 0))
    }
    fn len(value: &NonZeroU32) -> Result<usize, EncodeError> {
        if value.get() > MAX_VARINT {
            return Err(EncodeError::PacketTooLarge(value.get() as usize));
        }
        Ok(wire::varint_len(value.get()))
    }
    fn write(value: &NonZeroU32, buf: &mut BytesMut) {
        wire::put_varint(buf, value.get());
    }
}

/// A UTF-8 encoded string.
pub(crate) struct Str;
impl Wire for Str {
    type Value = MqttString;
    fn read(_: PropertyId, r: &mut Reader) -> Result<MqttString, DecodeError> {
        r.string()
    }
    fn len(value: &MqttString) -> Result<usize, EncodeError> {
        Ok(wire::string_len(value))
    }
    fn write(value: &MqttString, buf: &mut BytesMut) {
        wire::put_string(buf, value);
    }
}

/// A topic name: a string without wildcards (Response Topic, [MQTT-3.3.2-14]).
pub(crate) struct Topic;
impl Wire for Topic {
    type Value = MqttString;
    fn read(_: PropertyId, r: &mut Reader) -> Result<MqttString, DecodeError> {
        r.topic_name()
    }
    fn len(value: &MqttString) -> Result<usize, EncodeError> {
        Ok(wire::string_len(value))
    }
    fn write(value: &MqttString, buf: &mut BytesMut) {
        wire::put_string(buf, value);
    }
}

/// Binary data.
pub(crate) struct Bin;
impl Wire for Bin {
    type Value = Bytes;
    fn read(_: PropertyId, r: &mut Reader) -> Result<Bytes, DecodeError> {
        r.binary()
    }
    fn len(value: &Bytes) -> Result<usize, EncodeError> {
        wire::binary_len(value)
    }
    fn write(value: &Bytes, buf: &mut BytesMut) {
        wire::put_binary(buf, value);
    }
}

/// Declares the property set of one packet: a struct with one field per allowed property
/// (`Option` for single ones, `Vec` for those that may repeat), `user_properties`, and its
/// decode / size / encode, which accept exactly the declared properties.
macro_rules! property_set {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty [$wire:ident] = $id:ident, )*
        }
        $( many { $( $(#[$mmeta:meta])* $mfield:ident: $mty:ty [$mwire:ident] = $mid:ident, )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            $( $( $(#[$mmeta])* pub $mfield: Vec<$mty>, )* )?
            /// User Property (0x26): name/value pairs, in order, repeats allowed.
            pub user_properties: Vec<UserProperty>,
        }

        impl $name {
            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )*
                    $( $( && self.$mfield.is_empty() )* )?
                    && self.user_properties.is_empty()
            }

            /// Reads the property length and the properties (§2.2.2).
            pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                let len = r.varint()?;
                let mut r = r.sub(len as usize)?;
                let mut this = Self::default();
                while !r.is_empty() {
                    let raw = r.varint()?;
                    let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(raw))?;
                    match id {
                        $( PropertyId::$id => {
                            if this.$field.is_some() {
                                return Err(DecodeError::DuplicateProperty {
                                    id,
                                    packet: r.packet(),
                                });
                            }
                            this.$field = Some(<$wire as Wire>::read(id, &mut r)?);
                        } )*
                        $( $( PropertyId::$mid => {
                            this.$mfield.push(<$mwire as Wire>::read(id, &mut r)?);
                        } )* )?
                        PropertyId::UserProperty => {
                            let name = r.string()?;
                            let value = r.string()?;
                            this.user_properties.push((name, value));
                        }
                        #[allow(unreachable_patterns)]
                        _ => {
                            return Err(DecodeError::PropertyNotAllowed {
                                id,
                                packet: r.packet(),
                            });
                        }
                    }
                }
                Ok(this)
            }

            /// The size of the properties, without the property length in front.
            pub(crate) fn len(&self) -> Result<usize, EncodeError> {
                let mut len = 0;
                $( if let Some(value) = &self.$field {
                    len += 1 + <$wire as Wire>::len(value)?;
                } )*
                $( $( for value in &self.$mfield {
                    len += 1 + <$mwire as Wire>::len(value)?;
                } )* )?
                for (name, value) in &self.user_properties {
                    len += 1 + wire::string_len(name) + wire::string_len(value);
                }
                Ok(len)
            }

            /// The size with the property length in front.
            pub(crate) fn encoded_len(&self) -> Result<usize, EncodeError> {
                let len = self.len()?;
                let len32 = u32::try_from(len).map_err(|_| EncodeError::PacketTooLarge(len))?;
                Ok(wire::varint_len(len32) + len)
            }

            /// Writes the property length (`len` as computed by `len()`) and the properties.
            pub(crate) fn encode(&self, len: usize, buf: &mut BytesMut) {
                wire::put_varint(buf, len as u32);
                $( if let Some(value) = &self.$field {
                    buf.put_u8(PropertyId::$id as u8);
                    <$wire as Wire>::write(value, buf);
                } )*
                $( $( for value in &self.$mfield {
                    buf.put_u8(PropertyId::$mid as u8);
                    <$mwire as Wire>::write(value, buf);
                } )* )?
                for (name, value) in &self.user_properties {
                    buf.put_u8(PropertyId::UserProperty as u8);
                    wire::put_string(buf, name);
                    wire::put_string(buf, value);
                }
            }
        }
    };
}

property_set! {
    /// Properties of CONNECT (§3.1.2.11).
    ConnectProperties {
        /// Session Expiry Interval (0x11), seconds; absent means 0.
        session_expiry_interval: u32 [U32] = SessionExpiryInterval,
        /// Receive Maximum (0x21): QoS 1/2 publications the client processes at once.
        receive_maximum: NonZeroU16 [NzU16] = ReceiveMaximum,
        /// Maximum Packet Size (0x27) the client accepts.
        maximum_packet_size: NonZeroU32 [NzU32] = MaximumPacketSize,
        /// Topic Alias Maximum (0x22) the client accepts; absent means 0.
        topic_alias_maximum: u16 [U16] = TopicAliasMaximum,
        /// Request Response Information (0x19).
        request_response_information: bool [Flag] = RequestResponseInformation,
        /// Request Problem Information (0x17); absent means true.
        request_problem_information: bool [Flag] = RequestProblemInformation,
        /// Authentication Method (0x15) of enhanced authentication.
        authentication_method: MqttString [Str] = AuthenticationMethod,
        /// Authentication Data (0x16).
        authentication_data: Bytes [Bin] = AuthenticationData,
    }
}

property_set! {
    /// Properties of the Will in CONNECT (§3.1.3.2).
    WillProperties {
        /// Will Delay Interval (0x18), seconds.
        will_delay_interval: u32 [U32] = WillDelayInterval,
        /// Payload Format Indicator (0x01).
        payload_format_indicator: PayloadFormat [Format] = PayloadFormatIndicator,
        /// Message Expiry Interval (0x02), seconds.
        message_expiry_interval: u32 [U32] = MessageExpiryInterval,
        /// Content Type (0x03).
        content_type: MqttString [Str] = ContentType,
        /// Response Topic (0x08): a topic name.
        response_topic: MqttString [Topic] = ResponseTopic,
        /// Correlation Data (0x09).
        correlation_data: Bytes [Bin] = CorrelationData,
    }
}

property_set! {
    /// Properties of CONNACK (§3.2.2.3).
    ConnAckProperties {
        /// Session Expiry Interval (0x11) the server uses instead of the client's.
        session_expiry_interval: u32 [U32] = SessionExpiryInterval,
        /// Receive Maximum (0x21) of the server.
        receive_maximum: NonZeroU16 [NzU16] = ReceiveMaximum,
        /// Maximum QoS (0x24) the server supports (0 or 1; absent means 2).
        maximum_qos: QoS [MaxQos] = MaximumQos,
        /// Retain Available (0x25); absent means true.
        retain_available: bool [Flag] = RetainAvailable,
        /// Maximum Packet Size (0x27) the server accepts.
        maximum_packet_size: NonZeroU32 [NzU32] = MaximumPacketSize,
        /// Assigned Client Identifier (0x12), for a CONNECT with an empty one.
        assigned_client_identifier: MqttString [Str] = AssignedClientIdentifier,
        /// Topic Alias Maximum (0x22) the server accepts.
        topic_alias_maximum: u16 [U16] = TopicAliasMaximum,
        /// Reason String (0x1F).
        reason_string: MqttString [Str] = ReasonString,
        /// Wildcard Subscription Available (0x28); absent means true.
        wildcard_subscription_available: bool [Flag] = WildcardSubscriptionAvailable,
        /// Subscription Identifiers Available (0x29); absent means true.
        subscription_identifiers_available: bool [Flag] = SubscriptionIdentifierAvailable,
        /// Shared Subscription Available (0x2A); absent means true.
        shared_subscription_available: bool [Flag] = SharedSubscriptionAvailable,
        /// Server Keep Alive (0x13), replacing the client's.
        server_keep_alive: u16 [U16] = ServerKeepAlive,
        /// Response Information (0x1A).
        response_information: MqttString [Str] = ResponseInformation,
        /// Server Reference (0x1C): another server to use.
        server_reference: MqttString [Str] = ServerReference,
        /// Authentication Method (0x15).
        authentication_method: MqttString [Str] = AuthenticationMethod,
        /// Authentication Data (0x16).
        authentication_data: Bytes [Bin] = AuthenticationData,
    }
}

property_set! {
    /// Properties of PUBLISH (§3.3.2.3).
    PublishProperties {
        /// Payload Format Indicator (0x01).
        payload_format_indicator: PayloadFormat [Format] = PayloadFormatIndicator,
        /// Message Expiry Interval (0x02), seconds.
        message_expiry_interval: u32 [U32] = MessageExpiryInterval,
        /// Topic Alias (0x23), never 0 [MQTT-3.3.2-8].
        topic_alias: NonZeroU16 [NzU16] = TopicAlias,
        /// Response Topic (0x08): a topic name [MQTT-3.3.2-14].
        response_topic: MqttString [Topic] = ResponseTopic,
        /// Correlation Data (0x09).
        correlation_data: Bytes [Bin] = CorrelationData,
        /// Content Type (0x03).
        content_type: MqttString [Str] = ContentType,
    }
    many {
        /// Subscription Identifiers (0x0B) of the matching subscriptions (server to client).
        subscription_identifiers: NonZeroU32 [SubId] = SubscriptionIdentifier,
    }
}

property_set! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties {
        /// Reason String (0x1F).
        reason_string: MqttString [Str] = ReasonString,
    }
}

property_set! {
    /// Properties of SUBSCRIBE (§3.8.2.1).
    SubscribeProperties {
        /// Subscription Identifier (0x0B), 1 to 268,435,455.
        subscription_identifier: NonZeroU32 [SubId] = SubscriptionIdentifier,
    }
}

property_set! {
    /// Properties of UNSUBSCRIBE (§3.10.2.1): user properties only.
    UnsubscribeProperties {}
}

property_set! {
    /// Properties of DISCONNECT (§3.14.2.2).
    DisconnectProperties {
        /// Session Expiry Interval (0x11), from the client only.
        session_expiry_interval: u32 [U32] = SessionExpiryInterval,
        /// Reason String (0x1F).
        reason_string: MqttString [Str] = ReasonString,
        /// Server Reference (0x1C), from the server only.
        server_reference: MqttString [Str] = ServerReference,
    }
}

property_set! {
    /// Properties of AUTH (§3.15.2.2).
    AuthProperties {
        /// Authentication Method (0x15).
        authentication_method: MqttString [Str] = AuthenticationMethod,
        /// Authentication Data (0x16).
        authentication_data: Bytes [Bin] = AuthenticationData,
        /// Reason String (0x1F).
        reason_string: MqttString [Str] = ReasonString,
    }
}
