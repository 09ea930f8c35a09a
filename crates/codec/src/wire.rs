//! Wire primitives (§1.5): integers, Variable Byte Integers, strings and binary data, read
//! from a zero-copy `Reader` and written into a caller's `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};
use crate::string::MqttString;

/// The largest value of a Variable Byte Integer, and so of a remaining length (§1.5.5).
pub const MAX_VARINT: u32 = 268_435_455;

/// Decodes a Variable Byte Integer from the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the value and how many bytes it used.
pub(crate) fn decode_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A final byte of 0 after continuation bytes adds nothing: not minimal.
            if i > 0 && byte == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}

/// How many bytes the Variable Byte Integer `value` takes.
pub(crate) const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most `MAX_VARINT`) as a Variable Byte Integer.
pub(crate) fn put_varint(buf: &mut BytesMut, mut value: u32) {
    debug_assert!(value <= MAX_VARINT, "callers check the range");
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Writes a UTF-8 encoded string with its two-byte length (the type bounds its length).
pub(crate) fn put_string(buf: &mut BytesMut, s: &MqttString) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// The encoded size of a string: two bytes of length and the bytes.
pub(crate) fn string_len(s: &MqttString) -> usize {
    2 + s.len()
}

/// The encoded size of binary data, checking that its length fits in two bytes.
pub(crate) fn binary_len(data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > usize::from(u16::MAX) {
        return Err(EncodeError::BinaryTooLong(data.len()));
    }
    Ok(2 + data.len())
}

/// Writes binary data whose length `binary_len` has checked.
pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// Reads the body of one packet. Every read that runs past the end is an
/// `UnexpectedEnd` of the packet: its remaining length was too short.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Self { buf, packet }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn end(&self) -> DecodeError {
        DecodeError::UnexpectedEnd {
            packet: self.packet,
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.buf.try_get_u8().map_err(|_| self.end())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.buf.try_get_u16().map_err(|_| self.end())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.buf.try_get_u32().map_err(|_| self.end())
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match decode_varint(&self.buf)? {
            Some((value, used)) => {
                self.buf.advance(used);
                Ok(value)
            }
            None => Err(self.end()),
        }
    }

    /// The next `len` bytes, shared with the read buffer.
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.buf.len() {
            return Err(self.end());
        }
        Ok(self.buf.split_to(len))
    }

    /// A Reader over the next `len` bytes (a property list).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Self, DecodeError> {
        let buf = self.take(len)?;
        Ok(Self::new(buf, self.packet))
    }

    /// Binary data: two bytes of length, then the bytes (§1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string (§1.5.4).
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let bytes = self.binary()?;
        MqttString::from_bytes(bytes).map_err(|source| DecodeError::InvalidString {
            packet: self.packet,
            source,
        })
    }

    /// A topic name: a string with no wildcard characters [MQTT-3.3.2-2].
    pub(crate) fn topic_name(&mut self) -> Result<MqttString, DecodeError> {
        let topic = self.string()?;
        if topic.bytes().any(|b| b == b'+' || b == b'#') {
            return Err(DecodeError::TopicNameWildcard(topic.to_string()));
        }
        Ok(topic)
    }

    /// Everything that is left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Checks that the content ended where the remaining length said (§2.1.4).
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                count: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        // The boundaries of §1.5.5's table.
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(&buf[..], bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(decode_varint(bytes), Ok(Some((value, bytes.len()))));
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal_forms() {
        assert_eq!(
            decode_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode_varint(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode_varint(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            decode_varint(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(decode_varint(&[0x80, 0x80]), Ok(None));
        assert_eq!(decode_varint(&[]), Ok(None));
    }
}
