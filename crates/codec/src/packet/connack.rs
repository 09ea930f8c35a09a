//! CONNACK (§3.2): acknowledge flags, reason code (MQTT 3.x: return code), properties.

use bytes::{BufMut, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::ConnAckProperties;
use crate::reason::{ConnectReasonCode, ReasonCode};
use crate::types::ProtocolVersion;
use crate::wire::Reader;

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumes a session it had (always false with an error code, and
    /// not on the wire in MQTT 3.1).
    pub session_present: bool,
    /// The reason code; before MQTT 5 it travels as the nearest return code (0 to 5).
    pub reason_code: ConnectReasonCode,
    /// The properties (MQTT 5).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with this code and no properties.
    pub fn new(reason_code: ConnectReasonCode, session_present: bool) -> Self {
        Self {
            session_present,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        // MQTT 3.1 has no Session Present: the whole byte is reserved there.
        let allowed = if version == ProtocolVersion::V3_1 {
            0
        } else {
            1
        };
        if flags & !allowed != 0 {
            return Err(DecodeError::InvalidConnAckFlags(flags));
        }
        let code = r.u8()?;
        let reason_code = if version.is_v5() {
            ConnectReasonCode::from_u8(code)
        } else {
            ConnectReasonCode::from_v3_return_code(code)
        }
        .ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?;
        let session_present = flags & 1 != 0;
        if session_present && reason_code.is_error() {
            return Err(DecodeError::SessionPresentWithError(code));
        }
        let properties = if version.is_v5() {
            ConnAckProperties::decode(r)?
        } else {
            ConnAckProperties::default()
        };
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((2, 0));
        }
        Ok((2 + self.properties.encoded_len()?, self.properties.len()?))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props) = self.sizes(version)?;
        put_header(buf, PacketType::ConnAck, 0, remaining)?;
        let present = self.session_present
            && !self.reason_code.is_error()
            && version != ProtocolVersion::V3_1;
        buf.put_u8(u8::from(present));
        if version.is_v5() {
            buf.put_u8(self.reason_code.into());
            self.properties.encode(props, buf);
        } else {
            buf.put_u8(self.reason_code.to_v3_return_code());
        }
        Ok(())
    }
}
