//! DISCONNECT (§3.14): MQTT 5 adds a reason code and properties, with short forms.

use bytes::{BufMut, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::DisconnectProperties;
use crate::reason::{DisconnectReasonCode, ReasonCode};
use crate::types::ProtocolVersion;
use crate::wire::Reader;

/// DISCONNECT: the last packet of a connection, either way (server to client in MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// The reason code (MQTT 5; normal disconnection before).
    pub reason_code: DisconnectReasonCode,
    /// The properties (MQTT 5).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason_code: DisconnectReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut disconnect = Self::default();
        if version.is_v5() && !r.is_empty() {
            let code = r.u8()?;
            disconnect.reason_code =
                DisconnectReasonCode::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::Disconnect,
                    code,
                })?;
            if !r.is_empty() {
                disconnect.properties = DisconnectProperties::decode(r)?;
            }
        }
        Ok(disconnect)
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((0, 0));
        }
        if self.properties.is_empty() {
            let short = usize::from(self.reason_code != DisconnectReasonCode::SUCCESS);
            return Ok((short, 0));
        }
        let props = self.properties.len()?;
        Ok((1 + self.properties.encoded_len()?, props))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props) = self.sizes(version)?;
        put_header(buf, PacketType::Disconnect, 0, remaining)?;
        if remaining > 0 {
            buf.put_u8(self.reason_code.into());
        }
        if remaining > 1 {
            self.properties.encode(props, buf);
        }
        Ok(())
    }
}
