//! The format of a retained message (a value of the `retained` tree): the version byte,
//! then the message (see `message.rs`).

use bytes::{BufMut, BytesMut};
use shoal_session::{Message, Timestamp};

use crate::error::{DecodeRecordError, EncodeRecordError};
use crate::record::VERSION;
use crate::record::message::{decode_message, encode_message, peek_message_expiry};
use crate::record::reader::Reader;

/// Encodes a retained message.
pub(crate) fn encode_retained(message: &Message) -> Result<BytesMut, EncodeRecordError> {
    let mut buf = BytesMut::with_capacity(message.weight() + 24);
    buf.put_u8(VERSION);
    encode_message(&mut buf, message)?;
    Ok(buf)
}

/// Decodes a retained message stored under `key`, checking that its topic is that key.
pub(crate) fn decode_retained_at(key: &[u8], value: &[u8]) -> Result<Message, DecodeRecordError> {
    let mut r = Reader::new(BytesMut::from(value));
    r.version()?;
    let message = decode_message(&mut r)?;
    r.finish()?;
    if message.topic.as_bytes().as_ref() != key {
        return Err(DecodeRecordError::KeyMismatch);
    }
    Ok(message)
}

/// The expiry of a retained message, read from its first bytes only.
pub(crate) fn peek_retained_expiry(value: &[u8]) -> Result<Option<Timestamp>, DecodeRecordError> {
    let mut r = Reader::new(value);
    r.version()?;
    peek_message_expiry(&mut r)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::message::tests::{message, simple};

    proptest! {
        #[test]
        fn a_retained_message_round_trips(m in message()) {
            let buf = encode_retained(&m).expect("encodes");
            prop_assert_eq!(peek_retained_expiry(&buf), Ok(m.expires_at));
            prop_assert_eq!(decode_retained_at(m.topic.as_bytes(), &buf), Ok(m));
        }
    }

    #[test]
    fn a_retained_message_under_another_topic_is_corrupt() {
        let buf = encode_retained(&simple()).expect("encodes");
        assert_eq!(
            decode_retained_at(b"a/c", &buf),
            Err(DecodeRecordError::KeyMismatch)
        );
        let mut trailing = buf.clone();
        trailing.put_u8(0);
        assert_eq!(
            decode_retained_at(b"a/b", &trailing),
            Err(DecodeRecordError::TrailingBytes(1))
        );
    }
}
