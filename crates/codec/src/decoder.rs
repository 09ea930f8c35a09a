//! The incremental decoder: whole packets out of a growing read buffer.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::packet::{Packet, peek_version};
use crate::wire::{Reader, decode_varint};
use crate::{PacketType, ProtocolVersion};

/// Most that `Decoder::decode` reserves ahead in the read buffer for a partial frame: a
/// header that announces a large packet must not make us allocate before its bytes arrive.
const RESERVE_AHEAD: usize = 64 * 1024;

/// The fixed header of a packet (§2.1): type, flags, remaining length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The four low bits of the first byte.
    pub flags: u8,
    /// The remaining length: the size of the variable header and payload.
    pub remaining_len: u32,
    /// The size of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

impl FixedHeader {
    /// Reads a fixed header from the front of `buf`, checking the packet type and flags as
    /// soon as the first byte is there. `Ok(None)` means more bytes are needed.
    pub fn parse(buf: &[u8], version: ProtocolVersion) -> Result<Option<Self>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let bits = first >> 4;
        let flags = first & 0x0F;
        let packet_type =
            PacketType::from_bits(bits, version).ok_or(DecodeError::ReservedPacketType {
                packet_type: bits,
                version,
            })?;
        if packet_type == PacketType::Publish {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQos);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupWithQos0);
            }
        } else if flags != packet_type.required_flags() {
            return Err(DecodeError::InvalidFlags {
                packet: packet_type,
                flags,
            });
        }
        let Some((remaining_len, used)) = decode_varint(&buf[1..])? else {
            return Ok(None);
        };
        Ok(Some(Self {
            packet_type,
            flags,
            remaining_len,
            header_len: 1 + used,
        }))
    }

    /// The size of the whole packet.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len as usize
    }
}

/// Decodes packets out of a read buffer, one connection's worth.
///
/// A server's decoder starts without a protocol version: the first packet must be CONNECT
/// [MQTT-3.1.0-1], and its version holds for the rest of the connection. A client's decoder
/// starts with the version of the CONNECT it sent.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A server's decoder, waiting for CONNECT; packets larger than `max_packet_size` bytes
    /// (the whole packet, fixed header included) are refused.
    pub fn new(max_packet_size: u32) -> Self {
        Self {
            version: None,
            max_packet_size,
        }
    }

    /// A client's decoder for a connection of this version.
    pub fn with_version(version: ProtocolVersion, max_packet_size: u32) -> Self {
        Self {
            version: Some(version),
            max_packet_size,
        }
    }

    /// The protocol version, once CONNECT has named a supported one (also when the rest of
    /// that CONNECT failed to decode, so the refusal can be written in the client's version).
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The largest packet accepted.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Takes the next whole packet off the front of `buf`. `Ok(None)`: `buf` holds only
    /// part of a packet (nothing is consumed); read more and call again.
    ///
    /// After an error the connection must be closed: the buffer is left at an unknown
    /// position.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let header_version = self.version.unwrap_or(ProtocolVersion::V5);
        let Some(header) = FixedHeader::parse(buf, header_version)? else {
            return Ok(None);
        };
        if self.version.is_none() && header.packet_type != PacketType::Connect {
            return Err(DecodeError::ExpectedConnect {
                packet: header.packet_type,
            });
        }
        let size = header.packet_len();
        if size as u64 > u64::from(self.max_packet_size) {
            return Err(DecodeError::PacketTooLarge {
                size: size as u64,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            buf.reserve((size - buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        let mut frame = buf.split_to(size);
        frame.advance(header.header_len);
        let body = frame.freeze();
        let version = match self.version {
            Some(version) => version,
            None => {
                let version = peek_version(&body)?;
                self.version = Some(version);
                version
            }
        };
        Packet::decode(header, Reader::new(body, header.packet_type), version).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_an_oversize_packet_from_its_header_alone() {
        let mut decoder = Decoder::with_version(ProtocolVersion::V5, 100);
        // A PUBLISH header announcing 200 bytes, with none of them sent.
        let mut buf = BytesMut::from(&[0x30, 0xC8, 0x01][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::PacketTooLarge {
                size: 203,
                max: 100
            })
        );
    }

    #[test]
    fn reserves_at_most_the_read_ahead_for_a_partial_frame() {
        let mut decoder = Decoder::with_version(ProtocolVersion::V5, u32::MAX);
        // A PUBLISH announcing 268,435,455 bytes.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(
            buf.capacity() <= 5 + RESERVE_AHEAD + 64,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn rejects_bad_flags_before_the_rest_arrives() {
        let mut decoder = Decoder::with_version(ProtocolVersion::V3_1_1, 1024);
        let mut buf = BytesMut::from(&[0x82][..]); // SUBSCRIBE must have flags 0010.
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(None),
            "right flags: wait for more"
        );
        let mut buf = BytesMut::from(&[0x80][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::InvalidFlags {
                packet: PacketType::Subscribe,
                flags: 0
            })
        );
    }
}
