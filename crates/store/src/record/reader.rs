//! `Reader`: a bounds-checked cursor over a record. Every read checks the length first, so
//! no input panics, and nothing is allocated beyond the record itself (lists reserve at
//! most what the remaining bytes can hold).

use bytes::{Buf, Bytes, BytesMut};
use shoal_codec::MqttString;

use crate::error::DecodeRecordError;

/// A cursor over the bytes of one record: `&[u8]` to peek at a header without copying,
/// `BytesMut` to decode a whole record whose strings and payloads share its buffer.
pub(crate) struct Reader<B> {
    buf: B,
}

impl<B: Buf> Reader<B> {
    pub(crate) fn new(buf: B) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, needed: usize) -> Result<(), DecodeRecordError> {
        let remaining = self.buf.remaining();
        if remaining < needed {
            return Err(DecodeRecordError::Truncated { needed, remaining });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeRecordError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeRecordError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeRecordError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeRecordError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeRecordError> {
        self.need(n)?;
        self.buf.advance(n);
        Ok(())
    }

    /// Skips a string with its two-byte length.
    pub(crate) fn skip_string(&mut self) -> Result<(), DecodeRecordError> {
        let len = self.u16()?;
        self.skip(usize::from(len))
    }

    /// Reads the format version byte and checks it.
    pub(crate) fn version(&mut self) -> Result<(), DecodeRecordError> {
        match self.u8()? {
            super::VERSION => Ok(()),
            other => Err(DecodeRecordError::UnsupportedVersion(other)),
        }
    }

    /// A four-byte count of items of at least `min_size` bytes each, and the capacity to
    /// reserve for them: never more than the remaining bytes can hold.
    pub(crate) fn count(&mut self, min_size: usize) -> Result<(u32, usize), DecodeRecordError> {
        let count = self.u32()?;
        let fits = self.remaining() / min_size.max(1);
        Ok((count, (count as usize).min(fits)))
    }

    /// Checks that the whole record was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeRecordError> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(DecodeRecordError::TrailingBytes(n)),
        }
    }
}

impl Reader<BytesMut> {
    /// The bytes not read yet, to look at without reading them.
    pub(crate) fn rest(&self) -> &[u8] {
        &self.buf
    }

    /// The next `n` bytes, sharing the record's buffer.
    pub(crate) fn split(&mut self, n: usize) -> Result<BytesMut, DecodeRecordError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// A string with its two-byte length, sharing the record's buffer.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<MqttString, DecodeRecordError> {
        let len = self.u16()?;
        let bytes: Bytes = self.split(usize::from(len))?.freeze();
        MqttString::from_bytes(bytes).map_err(|source| DecodeRecordError::String { field, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors_not_panics() {
        let mut r = Reader::new(&[1u8, 2, 3][..]);
        assert_eq!(
            r.u32(),
            Err(DecodeRecordError::Truncated {
                needed: 4,
                remaining: 3
            })
        );
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.finish(), Err(DecodeRecordError::TrailingBytes(1)));
        assert!(r.skip(2).is_err());
    }

    #[test]
    fn a_huge_count_reserves_only_what_the_record_can_hold() {
        let mut r = Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0][..]);
        assert_eq!(r.count(4), Ok((u32::MAX, 1)));
    }
}
