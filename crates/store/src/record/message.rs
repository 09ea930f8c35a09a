//! The format of a `Message`: a small header (flags, received at, expires at), then the
//! message as an MQTT 5 PUBLISH packet, which carries the topic, QoS, RETAIN, properties
//! and payload in a published format and delimits itself by its fixed header.
//!
//! ```text
//! u8   flags          bit 0: expires_at follows; the other bits are 0
//! u64  received_at    milliseconds since the epoch
//! u64  expires_at     if flag bit 0
//! ..   PUBLISH        MQTT 5 encoding; packet identifier 1 when QoS > 0 (a placeholder);
//!                     no Message Expiry Interval, Topic Alias or Subscription Identifier
//! ```

use std::num::NonZeroU16;

use bytes::{BufMut, BytesMut};
use shoal_codec::{
    Decoder, FixedHeader, Packet, PacketId, PacketType, PropertyId, ProtocolVersion,
    PublishProperties, QosPid,
};
use shoal_session::{Message, Timestamp};

use crate::error::{DecodeRecordError, EncodeRecordError};
use crate::record::reader::Reader;

/// Flag bit: `expires_at` follows `received_at`.
const EXPIRES: u8 = 0b1;

/// The packet identifier written into the PUBLISH of a QoS 1 or 2 message: a placeholder,
/// since a stored message belongs to no connection.
const PLACEHOLDER_ID: PacketId = PacketId(NonZeroU16::MIN);

/// Appends `message` to `buf`.
pub(crate) fn encode_message(
    buf: &mut BytesMut,
    message: &Message,
) -> Result<(), EncodeRecordError> {
    if message.topic.is_empty() {
        return Err(EncodeRecordError::EmptyTopic);
    }
    buf.put_u8(if message.expires_at.is_some() {
        EXPIRES
    } else {
        0
    });
    buf.put_u64(message.received_at.as_millis());
    if let Some(at) = message.expires_at {
        buf.put_u64(at.as_millis());
    }
    // Per-hop properties are not part of a message (see `Message::properties`).
    let properties = PublishProperties {
        message_expiry_interval: None,
        topic_alias: None,
        subscription_identifiers: Vec::new(),
        ..message.properties.clone()
    };
    let publish = shoal_codec::Publish {
        dup: false,
        qos_pid: QosPid::from_parts(message.qos, PLACEHOLDER_ID),
        retain: message.retain,
        topic: message.topic.clone(),
        properties,
        payload: message.payload.clone(),
    };
    Packet::Publish(publish)
        .encode(ProtocolVersion::V5, buf)
        .map_err(EncodeRecordError::Publish)
}

/// Reads the header of a message and returns its expiry, leaving the reader inside it.
pub(crate) fn peek_message_expiry(
    r: &mut Reader<&[u8]>,
) -> Result<Option<Timestamp>, DecodeRecordError> {
    let flags = r.u8()?;
    check_flags(flags)?;
    r.skip(8)?;
    if flags & EXPIRES == 0 {
        return Ok(None);
    }
    Ok(Some(Timestamp(r.u64()?)))
}

fn check_flags(flags: u8) -> Result<(), DecodeRecordError> {
    if flags & !EXPIRES != 0 {
        return Err(DecodeRecordError::Invalid {
            field: "message flags",
            value: flags.into(),
        });
    }
    Ok(())
}

/// Reads a message; its topic, properties and payload share the reader's buffer.
pub(crate) fn decode_message(r: &mut Reader<BytesMut>) -> Result<Message, DecodeRecordError> {
    let flags = r.u8()?;
    check_flags(flags)?;
    let received_at = Timestamp(r.u64()?);
    let expires_at = if flags & EXPIRES != 0 {
        Some(Timestamp(r.u64()?))
    } else {
        None
    };

    // Size the PUBLISH from its fixed header first: the decoder then sees exactly one whole
    // packet and never reserves room for a longer one.
    let remaining = r.remaining();
    let header = FixedHeader::parse(r.rest(), ProtocolVersion::V5)
        .map_err(DecodeRecordError::Publish)?
        .ok_or(DecodeRecordError::Truncated {
            needed: remaining + 1,
            remaining,
        })?;
    if header.packet_type != PacketType::Publish {
        return Err(DecodeRecordError::Invalid {
            field: "embedded packet type",
            value: header.packet_type as u64,
        });
    }
    let mut frame = r.split(header.packet_len())?;
    let packet = Decoder::with_version(ProtocolVersion::V5, u32::MAX)
        .decode(&mut frame)
        .map_err(DecodeRecordError::Publish)?;
    let Some(Packet::Publish(publish)) = packet else {
        // The header said PUBLISH and the frame is whole: the decoder cannot answer
        // otherwise, but a wrong answer is still only a corrupt record.
        return Err(DecodeRecordError::Invalid {
            field: "embedded packet",
            value: 0,
        });
    };
    let per_hop = if publish.properties.message_expiry_interval.is_some() {
        Some(PropertyId::MessageExpiryInterval)
    } else if publish.properties.topic_alias.is_some() {
        Some(PropertyId::TopicAlias)
    } else if !publish.properties.subscription_identifiers.is_empty() {
        Some(PropertyId::SubscriptionIdentifier)
    } else {
        None
    };
    if let Some(id) = per_hop {
        return Err(DecodeRecordError::Invalid {
            field: "property of a stored message",
            value: id as u64,
        });
    }
    Ok(Message {
        qos: publish.qos(),
        topic: publish.topic,
        payload: publish.payload,
        retain: publish.retain,
        properties: publish.properties,
        expires_at,
        received_at,
    })
}

/// A message in this format as bytes of its own (what nodes of a cluster send each other
/// and what replicated retained messages hold); read back with [`message_from_bytes`].
pub fn message_to_bytes(message: &Message) -> Result<bytes::Bytes, EncodeRecordError> {
    let mut buf = BytesMut::with_capacity(32 + message.topic.len() + message.payload.len());
    encode_message(&mut buf, message)?;
    Ok(buf.freeze())
}

/// Reads a message written by [`message_to_bytes`]; the whole buffer must be one message.
/// Bad bytes (from a peer or a damaged entry) are an error, never a panic.
pub fn message_from_bytes(bytes: &[u8]) -> Result<Message, DecodeRecordError> {
    let mut r = Reader::new(BytesMut::from(bytes));
    let message = decode_message(&mut r)?;
    if r.remaining() != 0 {
        return Err(DecodeRecordError::Invalid {
            field: "bytes after a message",
            value: r.remaining() as u64,
        });
    }
    Ok(message)
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use shoal_codec::{MqttString, PayloadFormat, QoS};

    use super::*;

    pub(crate) fn mqtt_string(pattern: &'static str) -> impl Strategy<Value = MqttString> {
        pattern.prop_map(|s| MqttString::try_from(s).expect("the pattern makes MQTT strings"))
    }

    pub(crate) fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    prop_compose! {
        fn properties()(
            utf8 in any::<Option<bool>>(),
            content_type in proptest::option::of(mqtt_string("[a-z/]{0,12}")),
            response_topic in proptest::option::of(mqtt_string("[a-z]{1,8}(/[a-z]{1,8}){0,2}")),
            correlation in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            users in proptest::collection::vec(
                (mqtt_string("[a-zé]{0,6}"), mqtt_string("[ -~]{0,6}")), 0..3),
        ) -> PublishProperties {
            PublishProperties {
                payload_format_indicator: utf8.map(|u| if u { PayloadFormat::Utf8 } else { PayloadFormat::Unspecified }),
                content_type,
                response_topic,
                correlation_data: correlation.map(Bytes::from),
                user_properties: users,
                ..PublishProperties::default()
            }
        }
    }

    prop_compose! {
        pub(crate) fn message()(
            topic in mqtt_string("[a-z0-9$ ]{1,8}(/[a-z0-9]{0,8}){0,3}"),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            qos in qos(),
            retain in any::<bool>(),
            properties in properties(),
            expires_at in proptest::option::of(any::<u64>()),
            received_at in any::<u64>(),
        ) -> Message {
            Message {
                topic,
                payload: Bytes::from(payload),
                qos,
                retain,
                properties,
                expires_at: expires_at.map(Timestamp),
                received_at: Timestamp(received_at),
            }
        }
    }

    fn encoded(message: &Message) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_message(&mut buf, message).expect("encodes");
        buf
    }

    proptest! {
        #[test]
        fn a_message_round_trips(m in message()) {
            let buf = encoded(&m);
            let expiry = peek_message_expiry(&mut Reader::new(&buf[..]));
            prop_assert_eq!(expiry, Ok(m.expires_at));
            let mut r = Reader::new(buf);
            prop_assert_eq!(decode_message(&mut r), Ok(m));
            prop_assert_eq!(r.finish(), Ok(()));
        }

        #[test]
        fn no_prefix_of_a_message_decodes(m in message(), cut in any::<prop::sample::Index>()) {
            let buf = encoded(&m);
            let len = cut.index(buf.len());
            let mut r = Reader::new(BytesMut::from(&buf[..len]));
            prop_assert!(decode_message(&mut r).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_message(&mut Reader::new(BytesMut::from(&bytes[..])));
            let _ = peek_message_expiry(&mut Reader::new(&bytes[..]));
        }
    }

    pub(crate) fn simple() -> Message {
        Message {
            topic: MqttString::from_static("a/b"),
            payload: Bytes::from_static(b"hi"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: Some(Timestamp(0x0102)),
            received_at: Timestamp(7),
        }
    }

    #[test]
    fn the_layout_is_a_header_then_an_mqtt5_publish() {
        let buf = encoded(&simple());
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0b1,                                  // flags: expires_at follows
            0, 0, 0, 0, 0, 0, 0, 7,               // received_at
            0, 0, 0, 0, 0, 0, 1, 2,               // expires_at
            0x33, 10,                             // PUBLISH, QoS 1, RETAIN; remaining length
            0, 3, b'a', b'/', b'b',               // topic
            0, 1,                                 // placeholder packet identifier
            0,                                    // no properties
            b'h', b'i',                           // payload
        ];
        assert_eq!(&buf[..], expected);
    }

    #[test]
    fn per_hop_properties_are_not_stored() {
        let mut m = simple();
        m.properties.message_expiry_interval = Some(9);
        m.properties.topic_alias = NonZeroU16::new(3);
        m.properties.subscription_identifiers = vec![std::num::NonZeroU32::MIN];
        let decoded = decode_message(&mut Reader::new(encoded(&m)));
        assert_eq!(decoded, Ok(simple()));
    }

    #[test]
    fn an_empty_topic_is_refused_at_encoding() {
        let mut m = simple();
        m.topic = MqttString::empty();
        assert_eq!(
            encode_message(&mut BytesMut::new(), &m),
            Err(EncodeRecordError::EmptyTopic)
        );
    }

    #[test]
    fn corrupt_messages_are_typed_errors() {
        let good = encoded(&simple());
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            b
        };
        // A stored message with a Message Expiry Interval property: 0x02 + four bytes.
        let mut per_hop = good[..17].to_vec();
        per_hop.extend_from_slice(&[0x32, 13, 0, 3, b'a', b'/', b'b', 0, 1, 5, 2, 0, 0, 0, 9]);
        let cases: Vec<(&str, BytesMut, DecodeRecordError)> = vec![
            (
                "empty",
                BytesMut::new(),
                DecodeRecordError::Truncated {
                    needed: 1,
                    remaining: 0,
                },
            ),
            (
                "reserved flag bit",
                with(0, 0b10),
                DecodeRecordError::Invalid {
                    field: "message flags",
                    value: 2,
                },
            ),
            (
                "no packet after the header",
                BytesMut::from(&good[..17]),
                DecodeRecordError::Truncated {
                    needed: 1,
                    remaining: 0,
                },
            ),
            (
                "not a PUBLISH",
                with(17, 0x40),
                DecodeRecordError::Invalid {
                    field: "embedded packet type",
                    value: 4,
                },
            ),
            (
                "QoS 3",
                with(17, 0x36),
                DecodeRecordError::Publish(shoal_codec::DecodeError::InvalidQos),
            ),
            (
                "remaining length past the end",
                with(18, 11),
                DecodeRecordError::Truncated {
                    needed: 13,
                    remaining: 12,
                },
            ),
            (
                "per-hop property",
                BytesMut::from(&per_hop[..]),
                DecodeRecordError::Invalid {
                    field: "property of a stored message",
                    value: 2,
                },
            ),
        ];
        for (name, bytes, expected) in cases {
            let got = decode_message(&mut Reader::new(bytes));
            assert_eq!(got, Err(expected), "{name}");
        }
    }
}
