//! CONNECT (§3.1): protocol name and level, flags, keep alive, properties, client
//! identifier, Will, user name and password.

use bytes::{BufMut, Bytes, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::{ConnectProperties, WillProperties};
use crate::string::MqttString;
use crate::types::{ProtocolVersion, QoS};
use crate::wire::{self, Reader};

/// CONNECT: the first packet of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks; fixed for the whole connection.
    pub protocol: ProtocolVersion,
    /// Clean Start (MQTT 5) / Clean Session (MQTT 3.x).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// The properties (MQTT 5).
    pub properties: ConnectProperties,
    /// The client identifier; may be empty.
    pub client_id: MqttString,
    /// The Will, if the client set one.
    pub will: Option<LastWill>,
    /// The user name (MQTT 5: an MQTT string; MQTT 3.x: a string too).
    pub username: Option<MqttString>,
    /// The password: binary data.
    pub password: Option<Bytes>,
}

/// The Will Message of a CONNECT (§3.1.2.5, §3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// The topic name to publish the Will to.
    pub topic: MqttString,
    /// The payload.
    pub payload: Bytes,
    /// The QoS to publish with.
    pub qos: QoS,
    /// Whether the Will is published as retained.
    pub retain: bool,
    /// The Will properties (MQTT 5).
    pub properties: WillProperties,
}

const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

/// Reads the protocol name and level at the start of a CONNECT body.
fn read_version(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT" | b"MQIsdp", level) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        (other, _) => Err(DecodeError::InvalidProtocolName(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

/// The protocol version a CONNECT body asks for, read without decoding the rest: so that a
/// server can answer a CONNECT that fails to decode in the client's version.
pub(crate) fn peek_version(body: &Bytes) -> Result<ProtocolVersion, DecodeError> {
    read_version(&mut Reader::new(body.clone(), PacketType::Connect))
}

impl Connect {
    /// A CONNECT with a client identifier and every other field at its default: clean
    /// start, keep alive 60 s, no Will, no credentials, no properties.
    pub fn new(protocol: ProtocolVersion, client_id: MqttString) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id,
            will: None,
            username: None,
            password: None,
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let protocol = read_version(r)?;
        let v5 = protocol.is_v5();
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_qos_bits = (flags >> WILL_QOS_SHIFT) & 0b11;
        let has_will = flags & WILL != 0;
        if !has_will && (will_qos_bits != 0 || flags & WILL_RETAIN != 0) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let will_qos = QoS::from_bits(will_qos_bits).ok_or(DecodeError::InvalidWillQos)?;
        if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if v5 {
            ConnectProperties::decode(r)?
        } else {
            ConnectProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod {
                packet: PacketType::Connect,
            });
        }
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if v5 {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = r.topic_name()?;
            if topic.is_empty() {
                return Err(DecodeError::EmptyTopic {
                    packet: PacketType::Connect,
                });
            }
            Some(LastWill {
                topic,
                payload: r.binary()?,
                qos: will_qos,
                retain: flags & WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    pub(crate) fn remaining_len(&self) -> Result<usize, EncodeError> {
        let v5 = self.protocol.is_v5();
        let mut len = 2 + self.protocol.protocol_name().len() + 1 + 1 + 2;
        if v5 {
            len += self.properties.encoded_len()?;
        }
        len += wire::string_len(&self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.encoded_len()?;
            }
            len += wire::string_len(&will.topic) + wire::binary_len(&will.payload)?;
        }
        if let Some(username) = &self.username {
            len += wire::string_len(username);
        }
        if let Some(password) = &self.password {
            len += wire::binary_len(password)?;
        }
        Ok(len)
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        let remaining = self.remaining_len()?;
        put_header(buf, PacketType::Connect, 0, remaining)?;
        let name = self.protocol.protocol_name();
        buf.put_u16(name.len() as u16);
        buf.put_slice(name.as_bytes());
        buf.put_u8(self.protocol.level());
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(self.properties.len()?, buf);
        }
        wire::put_string(buf, &self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                will.properties.encode(will.properties.len()?, buf);
            }
            wire::put_string(buf, &will.topic);
            wire::put_binary(buf, &will.payload);
        }
        if let Some(username) = &self.username {
            wire::put_string(buf, username);
        }
        if let Some(password) = &self.password {
            wire::put_binary(buf, password);
        }
        Ok(())
    }
}
