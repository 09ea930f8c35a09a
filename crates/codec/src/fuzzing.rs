//! Checks for the fuzz targets in `fuzz/`, also run over the saved corpus by the tests, so
//! that a crash once found stays fixed. They panic when an invariant breaks.

use bytes::BytesMut;

use crate::{Decoder, Packet, ProtocolVersion};

const MAX_PACKET_SIZE: u32 = 1 << 20;

/// The decoder that the first byte of a fuzz input chooses: a server's (waiting for
/// CONNECT) or a client's of one of the three versions.
fn decoder_for(selector: u8) -> Decoder {
    match selector % 4 {
        0 => Decoder::new(MAX_PACKET_SIZE),
        1 => Decoder::with_version(ProtocolVersion::V3_1, MAX_PACKET_SIZE),
        2 => Decoder::with_version(ProtocolVersion::V3_1_1, MAX_PACKET_SIZE),
        _ => Decoder::with_version(ProtocolVersion::V5, MAX_PACKET_SIZE),
    }
}

/// What decoding a whole stream gives: the packets, then the error if one ended it.
type Outcome = (Vec<Packet>, Option<crate::DecodeError>);

fn decode_all(mut decoder: Decoder, data: &[u8], chunk: usize) -> (Outcome, Decoder) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "a decoded packet consumes bytes");
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "a partial frame consumes nothing");
                    break;
                }
                Err(e) => return ((packets, Some(e)), decoder),
            }
        }
    }
    ((packets, None), decoder)
}

/// Target `decode`: any bytes, fed whole and in small pieces, decode to the same packets
/// and the same error, without panicking.
pub fn decode(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk, stream)) = rest.split_first() else {
        return;
    };
    let (whole, _) = decode_all(decoder_for(selector), stream, stream.len());
    let (pieces, _) = decode_all(decoder_for(selector), stream, usize::from(chunk % 16) + 1);
    assert_eq!(whole.0, pieces.0, "packets differ when fed in pieces");
    // An incomplete tail is not an error when whole, so only compare errors that happened.
    if let (Some(a), Some(b)) = (&whole.1, &pieces.1) {
        assert_eq!(a, b, "errors differ when fed in pieces");
    }
}

/// Target `roundtrip`: every packet that decodes encodes to bytes of the announced size
/// that decode back to the same packet.
pub fn roundtrip(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let ((packets, _), decoder) = decode_all(decoder_for(selector), stream, stream.len());
    for packet in packets {
        let version = match &packet {
            Packet::Connect(connect) => connect.protocol,
            _ => decoder
                .version()
                .expect("a packet decoded, so the version is known"),
        };
        let mut buf = BytesMut::new();
        packet
            .encode(version, &mut buf)
            .expect("a decoded packet encodes");
        assert_eq!(
            packet.encoded_len(version).expect("and has a size"),
            buf.len(),
            "encoded_len disagrees with encode for {packet:?}"
        );
        let mut again = match &packet {
            Packet::Connect(_) => Decoder::new(MAX_PACKET_SIZE),
            _ => Decoder::with_version(version, MAX_PACKET_SIZE),
        };
        let decoded = again.decode(&mut buf);
        assert_eq!(decoded, Ok(Some(packet)), "decode(encode(p)) != p");
        assert!(buf.is_empty(), "encode wrote more than one packet");
    }
}
