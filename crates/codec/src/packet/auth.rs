//! AUTH (§3.15): enhanced authentication exchange, MQTT 5 only.

use bytes::{BufMut, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::AuthProperties;
use crate::reason::{AuthReasonCode, ReasonCode};
use crate::types::ProtocolVersion;
use crate::wire::Reader;

/// AUTH: one step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The reason code.
    pub reason_code: AuthReasonCode,
    /// The properties: Authentication Method and Data.
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut auth = Self {
            reason_code: AuthReasonCode::Success,
            properties: AuthProperties::default(),
        };
        if !r.is_empty() {
            let code = r.u8()?;
            auth.reason_code =
                AuthReasonCode::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::Auth,
                    code,
                })?;
            if !r.is_empty() {
                auth.properties = AuthProperties::decode(r)?;
            }
        }
        Ok(auth)
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::NotInVersion {
                packet: PacketType::Auth,
                version,
            });
        }
        if self.properties.is_empty() {
            return Ok((usize::from(self.reason_code != AuthReasonCode::SUCCESS), 0));
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
        put_header(buf, PacketType::Auth, 0, remaining)?;
        if remaining > 0 {
            buf.put_u8(self.reason_code.into());
        }
        if remaining > 1 {
            self.properties.encode(props, buf);
        }
        Ok(())
    }
}
