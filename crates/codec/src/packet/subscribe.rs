//! SUBSCRIBE (§3.8) and SUBACK (§3.9).

use bytes::{BufMut, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::{AckProperties, SubscribeProperties};
use crate::reason::{ReasonCode, SubAckReasonCode};
use crate::string::MqttString;
use crate::types::{PacketId, ProtocolVersion, SubscriptionOptions};
use crate::wire::{self, Reader};

/// The prefix of a shared subscription's topic filter (§4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// SUBSCRIBE: one or more topic filters with their options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The packet identifier.
    pub packet_id: PacketId,
    /// The properties (MQTT 5).
    pub properties: SubscribeProperties,
    /// The topic filters with their options, at least one.
    pub filters: Vec<(MqttString, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::decode(r.u16()?)?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            if filter.is_empty() {
                return Err(DecodeError::EmptyTopic {
                    packet: PacketType::Subscribe,
                });
            }
            let options = SubscriptionOptions::from_byte(r.u8()?, version)?;
            if options.no_local && filter.starts_with(SHARE_PREFIX) {
                return Err(DecodeError::NoLocalOnShared(filter.to_string()));
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters {
                packet: PacketType::Subscribe,
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
        let filters: usize = self
            .filters
            .iter()
            .map(|(f, _)| wire::string_len(f) + 1)
            .sum();
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
        put_header(
            buf,
            PacketType::Subscribe,
            PacketType::Subscribe.required_flags(),
            remaining,
        )?;
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(props, buf);
        }
        for (filter, options) in &self.filters {
            wire::put_string(buf, filter);
            buf.put_u8(options.to_byte(version));
        }
        Ok(())
    }
}

/// SUBACK: one reason code per topic filter of the SUBSCRIBE, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// The properties (MQTT 5).
    pub properties: AckProperties,
    /// The reason codes. Before MQTT 5 every failure travels as 0x80.
    pub reason_codes: Vec<SubAckReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::decode(r.u16()?)?;
        let properties = if version.is_v5() {
            AckProperties::decode(r)?
        } else {
            AckProperties::default()
        };
        let mut reason_codes = Vec::new();
        while !r.is_empty() {
            let code = r.u8()?;
            let reason = SubAckReasonCode::from_u8(code)
                .filter(|c| {
                    version.is_v5() || !c.is_error() || *c == SubAckReasonCode::UnspecifiedError
                })
                .ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                })?;
            reason_codes.push(reason);
        }
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((2 + self.reason_codes.len(), 0));
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
        put_header(buf, PacketType::SubAck, 0, remaining)?;
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(props, buf);
        }
        for &code in &self.reason_codes {
            let code = if !version.is_v5() && code.is_error() {
                SubAckReasonCode::UnspecifiedError
            } else {
                code
            };
            buf.put_u8(code.into());
        }
        Ok(())
    }
}
