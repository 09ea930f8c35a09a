//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4 to §3.7): a packet identifier, a reason code and
//! properties, with MQTT 5's short forms.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::packet::put_header;
use crate::property::AckProperties;
use crate::reason::{PubAckReasonCode, PubRelReasonCode, ReasonCode};
use crate::types::PacketId;
use crate::wire::Reader;
use crate::{PacketType, ProtocolVersion};

/// An acknowledgement in a publication flow; `R` is its reason-code family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<R> {
    /// The packet identifier of the publication.
    pub packet_id: PacketId,
    /// The reason code (MQTT 5; always success before).
    pub reason_code: R,
    /// The properties (MQTT 5).
    pub properties: AckProperties,
}

/// PUBACK: the answer to a QoS 1 PUBLISH.
pub type PubAck = Ack<PubAckReasonCode>;
/// PUBREC: the first answer to a QoS 2 PUBLISH.
pub type PubRec = Ack<PubAckReasonCode>;
/// PUBREL: the release of a QoS 2 publication.
pub type PubRel = Ack<PubRelReasonCode>;
/// PUBCOMP: the completion of a QoS 2 publication.
pub type PubComp = Ack<PubRelReasonCode>;

impl<R: ReasonCode> Ack<R> {
    /// A successful acknowledgement without properties.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: R::SUCCESS,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = PacketId::decode(r.u16()?)?;
        let mut ack = Self::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            // Short forms: no reason code means success, no property length means none
            // (§3.4.2.1).
            let code = r.u8()?;
            ack.reason_code = R::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
                packet: r.packet(),
                code,
            })?;
            if !r.is_empty() {
                ack.properties = AckProperties::decode(r)?;
            }
        }
        Ok(ack)
    }

    /// The remaining length and the property length.
    pub(crate) fn sizes(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((2, 0));
        }
        if self.properties.is_empty() {
            let short = if self.reason_code == R::SUCCESS { 2 } else { 3 };
            return Ok((short, 0));
        }
        let props = self.properties.len()?;
        Ok((3 + self.properties.encoded_len()?, props))
    }

    pub(crate) fn encode(
        &self,
        packet: PacketType,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props) = self.sizes(version)?;
        put_header(buf, packet, packet.required_flags(), remaining)?;
        buf.put_u16(self.packet_id.get());
        if remaining > 2 {
            buf.put_u8(self.reason_code.into());
        }
        if remaining > 3 {
            self.properties.encode(props, buf);
        }
        Ok(())
    }
}
