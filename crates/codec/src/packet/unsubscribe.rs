//! UNSUBSCRIBE (§3.10) and UNSUBACK (§3.11).

use bytes::{BufMut, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::{AckProperties, UnsubscribeProperties};
use crate::reason::{ReasonCode, UnsubAckReasonCode};
use crate::string::MqttString;
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{self, Reader};

/// UNSUBSCRIBE: one or more topic filters to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The packet identifier.
    pub packet_id: PacketId,
    /// The properties (MQTT 5).
    pub properties: UnsubscribeProperties,
    /// The topic filters, at least one.
    pub filters: Vec<MqttString>,
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::decode(r.u16()?)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            if filter.is_empty() {
                return Err(DecodeError::EmptyTopic {
                    packet: PacketType::Unsubscribe,
                });
            }
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters {
                packet: PacketType::Unsubscribe,
            });
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        let filters: usize = self.filters.iter().map(wire::string_len).sum();
        if !version.is_v5() {
            return Ok((2 + filters, 0));
        }
        let props = self.properties.len()?;
        Ok((2 + self.properties.encoded_len()? + filters, props))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props) = self.sizes(version)?;
        let flags = PacketType::Unsubscribe.required_flags();
        put_header(buf, PacketType::Unsubscribe, flags, remaining)?;
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(props, buf);
        }
        for filter in &self.filters {
            wire::put_string(buf, filter);
        }
        Ok(())
    }
}

/// UNSUBACK: MQTT 5 gives one reason code per topic filter; MQTT 3.x none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// The properties (MQTT 5).
    pub properties: AckProperties,
    /// The reason codes (MQTT 5; left out before).
    pub reason_codes: Vec<UnsubAckReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::decode(r.u16()?)?;
        let mut ack = Self {
            packet_id,
            properties: AckProperties::default(),
            reason_codes: Vec::new(),
        };
        if version.is_v5() {
            ack.properties = AckProperties::decode(r)?;
            while !r.is_empty() {
                let code = r.u8()?;
                ack.reason_codes
                    .push(UnsubAckReasonCode::from_u8(code).ok_or(
                        DecodeError::InvalidReasonCode {
                            packet: PacketType::UnsubAck,
                            code,
                        },
                    )?);
            }
        }
        Ok(ack)
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((2, 0));
        }
        let props = self.properties.len()?;
        Ok((
            2 + self.properties.encoded_len()? + self.reason_codes.len(),
            props,
        ))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props) = self.sizes(version)?;
        put_header(buf, PacketType::UnsubAck, 0, remaining)?;
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(props, buf);
            for &code in &self.reason_codes {
                buf.put_u8(code.into());
            }
        }
        Ok(())
    }
}
