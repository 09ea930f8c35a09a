//! PUBLISH (§3.3): flags, topic name, packet identifier, properties, payload.

use bytes::{BufMut, Bytes, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::PublishProperties;
use crate::string::MqttString;
use crate::types::{PacketId, ProtocolVersion, QoS, QosPid};
use crate::wire::{self, Reader};

/// PUBLISH: an application message, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a redelivery (never on QoS 0) [MQTT-3.3.1-2].
    pub dup: bool,
    /// The QoS and, above 0, the packet identifier.
    pub qos_pid: QosPid,
    /// RETAIN.
    pub retain: bool,
    /// The topic name; empty only when `properties.topic_alias` stands for it (MQTT 5).
    pub topic: MqttString,
    /// The properties (MQTT 5).
    pub properties: PublishProperties,
    /// The payload, shared with the read buffer or with other subscribers' copies.
    pub payload: Bytes,
}

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

impl Publish {
    /// A QoS 0, non-retained message without properties.
    pub fn new(topic: MqttString, payload: Bytes) -> Self {
        Self {
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic,
            properties: PublishProperties::default(),
            payload,
        }
    }

    /// The QoS.
    pub fn qos(&self) -> QoS {
        self.qos_pid.qos()
    }

    /// The fixed header flags: DUP, QoS, RETAIN.
    fn flags(&self) -> u8 {
        let dup = if self.dup && self.qos() != QoS::AtMostOnce {
            DUP
        } else {
            0
        };
        dup | (self.qos() as u8) << 1 | if self.retain { RETAIN } else { 0 }
    }

    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        // The fixed header has already refused QoS 3 and DUP on QoS 0.
        let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQos)?;
        let topic = r.topic_name()?;
        let qos_pid = match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            qos => QosPid::from_parts(qos, PacketId::decode(r.u16()?)?),
        };
        let properties = if version.is_v5() {
            PublishProperties::decode(r)?
        } else {
            PublishProperties::default()
        };
        // A zero-length topic name stands only beside a Topic Alias (§3.3.2.3.4).
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopic {
                packet: PacketType::Publish,
            });
        }
        Ok(Self {
            dup: flags & DUP != 0,
            qos_pid,
            retain: flags & RETAIN != 0,
            topic,
            properties,
            payload: r.rest(),
        })
    }

    /// The size of the whole packet as `version` writes it, without encoding it.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        crate::packet::total_len(self.sizes(version)?.0)
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        let mut len = wire::string_len(&self.topic) + self.payload.len();
        if self.qos_pid.packet_id().is_some() {
            len += 2;
        }
        if !version.is_v5() {
            return Ok((len, 0));
        }
        let props = self.properties.len()?;
        Ok((len + self.properties.encoded_len()?, props))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props) = self.sizes(version)?;
        put_header(buf, PacketType::Publish, self.flags(), remaining)?;
        wire::put_string(buf, &self.topic);
        if let Some(id) = self.qos_pid.packet_id() {
            buf.put_u16(id.get());
        }
        if version.is_v5() {
            self.properties.encode(props, buf);
        }
        buf.put_slice(&self.payload);
        Ok(())
    }
}
