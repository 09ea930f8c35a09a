//! The binary format of the records, written by hand with `bytes`. Each value starts with
//! a format version byte ([`VERSION`]); integers are big-endian; strings have a two-byte
//! length as in MQTT. A message is stored as a small header followed by its MQTT 5 PUBLISH
//! encoding (see `message.rs`), so the payload format is a published specification.
//!
//! Decoding is defensive: every length is checked against what remains, nothing panics,
//! nothing is allocated beyond the record, and a record must be read to its last byte.

mod message;

pub use message::{message_from_bytes, message_to_bytes};
mod outbound;
mod reader;
mod retained;
mod session;

pub(crate) use outbound::{
    decode_outbound, decode_state, encode_outbound, encode_state, peek_outbound_expiry,
};
pub(crate) use retained::{decode_retained_at, encode_retained, peek_retained_expiry};
pub(crate) use session::{
    decode_session_at, decode_subscription, encode_session, encode_subscription,
    peek_session_expiry,
};

use bytes::{BufMut, BytesMut};
use shoal_codec::MqttString;

use crate::error::EncodeRecordError;

/// The format version this build writes and reads.
pub(crate) const VERSION: u8 = 1;

/// Writes a string with its two-byte length.
pub(crate) fn put_string(buf: &mut BytesMut, s: &MqttString) {
    // An `MqttString` is at most 65,535 bytes: its length fits.
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// Writes the four-byte count of a list.
pub(crate) fn put_count(
    buf: &mut BytesMut,
    field: &'static str,
    count: usize,
) -> Result<(), EncodeRecordError> {
    let n = u32::try_from(count).map_err(|_| EncodeRecordError::TooMany { field, count })?;
    buf.put_u32(n);
    Ok(())
}
