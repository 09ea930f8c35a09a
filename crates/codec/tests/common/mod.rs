//! Helpers shared by the codec's integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::BytesMut;
use shoal_codec::{DecodeError, Decoder, Packet, ProtocolVersion};

/// A large enough maximum packet size for tests.
pub const MAX: u32 = 1 << 20;

/// Which decoder a test uses.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// A server's decoder, before CONNECT.
    Server,
    /// A decoder for a connection of this version.
    Version(ProtocolVersion),
}

pub use ProtocolVersion::{V3_1, V3_1_1, V5};

pub fn decoder(side: Side) -> Decoder {
    match side {
        Side::Server => Decoder::new(MAX),
        Side::Version(v) => Decoder::with_version(v, MAX),
    }
}

/// A whole packet: `first` byte, the remaining length, then `body`.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Decodes exactly one packet from all of `bytes`.
pub fn decode_one(side: Side, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut decoder = decoder(side);
    let mut buf = BytesMut::from(bytes);
    let packet = decoder.decode(&mut buf)?.expect("a whole packet was given");
    assert!(buf.is_empty(), "{} bytes left after the packet", buf.len());
    Ok(packet)
}

/// Encodes `packet` as `version` writes it.
pub fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).expect("encodes");
    assert_eq!(
        packet.encoded_len(version),
        Ok(buf.len()),
        "encoded_len agrees"
    );
    buf.to_vec()
}
