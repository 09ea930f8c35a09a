//! The format of an `OutboundMessage` (a value of the `queues` tree) and of the delivery
//! state that overrides its state (a small value beside it, so that a state change never
//! rewrites the message).
//!
//! ```text
//! outbound message                      state
//! u8   version (1)                      u8   version (1)
//! u8   flags: bits 0-1 delivery QoS,    u8   state: 0 queued, 1 sent, 2 released
//!      bit 2 RETAIN as delivered,       u16  packet identifier, unless queued
//!      bits 3-4 state (as below), rest 0
//! u16  packet identifier, unless queued
//! ..   message (see `message.rs`)
//! u32  count, then a u32 per Subscription Identifier
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use shoal_codec::{PacketId, QoS};
use shoal_session::{OutboundMessage, OutboundState, Timestamp};

use crate::error::{DecodeRecordError, EncodeRecordError};
use crate::record::message::{decode_message, encode_message, peek_message_expiry};
use crate::record::reader::Reader;
use crate::record::{VERSION, put_count};

const RETAIN: u8 = 0b100;
const STATE_SHIFT: u8 = 3;
const RESERVED: u8 = 0b1110_0000;

/// Encodes a message queued for a client.
pub(crate) fn encode_outbound(out: &OutboundMessage) -> Result<BytesMut, EncodeRecordError> {
    let mut buf =
        BytesMut::with_capacity(out.message.weight() + 32 + 4 * out.subscription_ids.len());
    buf.put_u8(VERSION);
    let (tag, id) = state_parts(out.state);
    let retain = if out.retain { RETAIN } else { 0 };
    buf.put_u8(out.qos as u8 | retain | tag << STATE_SHIFT);
    if let Some(id) = id {
        buf.put_u16(id.get());
    }
    encode_message(&mut buf, &out.message)?;
    put_count(
        &mut buf,
        "subscription identifiers",
        out.subscription_ids.len(),
    )?;
    for id in &out.subscription_ids {
        buf.put_u32(id.get());
    }
    Ok(buf)
}

/// Decodes a message queued for a client.
pub(crate) fn decode_outbound(buf: BytesMut) -> Result<OutboundMessage, DecodeRecordError> {
    let mut r = Reader::new(buf);
    r.version()?;
    let flags = r.u8()?;
    if flags & RESERVED != 0 {
        return Err(DecodeRecordError::Invalid {
            field: "outbound flags",
            value: flags.into(),
        });
    }
    let qos = QoS::from_bits(flags & 0b11).ok_or(DecodeRecordError::Invalid {
        field: "delivery QoS",
        value: (flags & 0b11).into(),
    })?;
    let state = read_state(&mut r, (flags >> STATE_SHIFT) & 0b11)?;
    let message = decode_message(&mut r)?;
    let (count, capacity) = r.count(4)?;
    let mut subscription_ids = Vec::with_capacity(capacity);
    for _ in 0..count {
        let raw = r.u32()?;
        let id = NonZeroU32::new(raw).ok_or(DecodeRecordError::Invalid {
            field: "subscription identifier",
            value: 0,
        })?;
        subscription_ids.push(id);
    }
    r.finish()?;
    Ok(OutboundMessage {
        message: Arc::new(message),
        qos,
        retain: flags & RETAIN != 0,
        subscription_ids,
        state,
    })
}

/// The expiry of a queued message, read from its first bytes only.
pub(crate) fn peek_outbound_expiry(value: &[u8]) -> Result<Option<Timestamp>, DecodeRecordError> {
    let mut r = Reader::new(value);
    r.version()?;
    let flags = r.u8()?;
    if (flags >> STATE_SHIFT) & 0b11 != 0 {
        r.skip(2)?;
    }
    peek_message_expiry(&mut r)
}

/// Encodes a delivery state that overrides the one in the message record.
pub(crate) fn encode_state(state: OutboundState) -> BytesMut {
    let mut buf = BytesMut::with_capacity(4);
    buf.put_u8(VERSION);
    let (tag, id) = state_parts(state);
    buf.put_u8(tag);
    if let Some(id) = id {
        buf.put_u16(id.get());
    }
    buf
}

/// Decodes a delivery state record.
pub(crate) fn decode_state(value: &[u8]) -> Result<OutboundState, DecodeRecordError> {
    let mut r = Reader::new(value);
    r.version()?;
    let tag = r.u8()?;
    let state = read_state(&mut r, tag)?;
    r.finish()?;
    Ok(state)
}

fn state_parts(state: OutboundState) -> (u8, Option<PacketId>) {
    match state {
        OutboundState::Queued => (0, None),
        OutboundState::Sent(id) => (1, Some(id)),
        OutboundState::Released(id) => (2, Some(id)),
    }
}

fn read_state<B: bytes::Buf>(
    r: &mut Reader<B>,
    tag: u8,
) -> Result<OutboundState, DecodeRecordError> {
    if tag == 0 {
        return Ok(OutboundState::Queued);
    }
    let invalid = |value: u64| DecodeRecordError::Invalid {
        field: "delivery state",
        value,
    };
    if tag > 2 {
        return Err(invalid(tag.into()));
    }
    let raw = r.u16()?;
    let id = PacketId::new(raw).ok_or(DecodeRecordError::Invalid {
        field: "packet identifier",
        value: 0,
    })?;
    Ok(if tag == 1 {
        OutboundState::Sent(id)
    } else {
        OutboundState::Released(id)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::message::tests::{message, qos};

    fn state() -> impl Strategy<Value = OutboundState> {
        let id = (1u16..).prop_map(|n| PacketId::new(n).expect("non-zero"));
        prop_oneof![
            Just(OutboundState::Queued),
            id.clone().prop_map(OutboundState::Sent),
            id.prop_map(OutboundState::Released),
        ]
    }

    prop_compose! {
        fn outbound()(
            message in message(),
            qos in qos(),
            retain in any::<bool>(),
            ids in proptest::collection::vec(1u32.., 0..4),
            state in state(),
        ) -> OutboundMessage {
            OutboundMessage {
                message: Arc::new(message),
                qos,
                retain,
                subscription_ids: ids.into_iter().filter_map(NonZeroU32::new).collect(),
                state,
            }
        }
    }

    proptest! {
        #[test]
        fn an_outbound_message_round_trips(out in outbound()) {
            let buf = encode_outbound(&out).expect("encodes");
            prop_assert_eq!(peek_outbound_expiry(&buf), Ok(out.message.expires_at));
            prop_assert_eq!(decode_outbound(buf), Ok(out));
        }

        #[test]
        fn a_state_round_trips(state in state()) {
            prop_assert_eq!(decode_state(&encode_state(state)), Ok(state));
        }

        #[test]
        fn no_prefix_of_an_outbound_message_decodes(out in outbound(), cut in any::<prop::sample::Index>()) {
            let buf = encode_outbound(&out).expect("encodes");
            let len = cut.index(buf.len());
            prop_assert!(decode_outbound(BytesMut::from(&buf[..len])).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_outbound(BytesMut::from(&bytes[..]));
            let _ = peek_outbound_expiry(&bytes);
            let _ = decode_state(&bytes);
        }
    }

    #[test]
    fn a_state_record_is_four_bytes_at_most() {
        let id = PacketId::new(0x1234).expect("non-zero");
        assert_eq!(
            &encode_state(OutboundState::Released(id))[..],
            &[1, 2, 0x12, 0x34]
        );
        assert_eq!(&encode_state(OutboundState::Queued)[..], &[1, 0]);
    }

    #[test]
    fn corrupt_states_are_typed_errors() {
        let cases: &[(&str, &[u8], DecodeRecordError)] = &[
            (
                "empty",
                &[],
                DecodeRecordError::Truncated {
                    needed: 1,
                    remaining: 0,
                },
            ),
            (
                "future version",
                &[2, 0],
                DecodeRecordError::UnsupportedVersion(2),
            ),
            (
                "version 0",
                &[0, 0],
                DecodeRecordError::UnsupportedVersion(0),
            ),
            (
                "state 3",
                &[1, 3, 0, 1],
                DecodeRecordError::Invalid {
                    field: "delivery state",
                    value: 3,
                },
            ),
            (
                "packet identifier 0",
                &[1, 1, 0, 0],
                DecodeRecordError::Invalid {
                    field: "packet identifier",
                    value: 0,
                },
            ),
            (
                "sent without identifier",
                &[1, 1, 0],
                DecodeRecordError::Truncated {
                    needed: 2,
                    remaining: 1,
                },
            ),
            (
                "trailing byte",
                &[1, 0, 9],
                DecodeRecordError::TrailingBytes(1),
            ),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(decode_state(bytes).as_ref(), Err(expected), "{name}");
        }
    }

    #[test]
    fn corrupt_outbound_messages_are_typed_errors() {
        let out = OutboundMessage {
            message: Arc::new(crate::record::message::tests::simple()),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![NonZeroU32::MIN],
            state: OutboundState::Queued,
        };
        let good = encode_outbound(&out).expect("encodes");
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            b
        };
        let end = good.len();
        let mut trailing = good.clone();
        trailing.put_u8(0);
        let cases: Vec<(&str, BytesMut, DecodeRecordError)> = vec![
            (
                "reserved flag bit",
                with(1, 0b0010_0001),
                DecodeRecordError::Invalid {
                    field: "outbound flags",
                    value: 0x21,
                },
            ),
            (
                "delivery QoS 3",
                with(1, 0b11),
                DecodeRecordError::Invalid {
                    field: "delivery QoS",
                    value: 3,
                },
            ),
            (
                "subscription identifier 0",
                with(end - 1, 0),
                DecodeRecordError::Invalid {
                    field: "subscription identifier",
                    value: 0,
                },
            ),
            (
                "count past the end",
                with(end - 5, 2),
                DecodeRecordError::Truncated {
                    needed: 4,
                    remaining: 0,
                },
            ),
            (
                "trailing byte",
                trailing,
                DecodeRecordError::TrailingBytes(1),
            ),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(decode_outbound(bytes), Err(expected), "{name}");
        }
    }
}
