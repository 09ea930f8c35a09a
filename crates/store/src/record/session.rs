//! The format of a `SessionRecord` (a value of the `sessions` tree).
//!
//! ```text
//! u8   version (1)
//! u16  client id length, client id     (checked against the key it is stored under)
//! u32  session expiry interval
//! u8   flags: bit 0 disconnected_at follows, bit 1 a will ends the record, rest 0
//! u64  disconnected_at, if flag bit 0
//! u32  count, then per subscription:
//!        u16 length, topic filter; u8 options as MQTT 5 writes them;
//!        u32 Subscription Identifier, 0 for none
//! u32  count, then a u16 per QoS 2 packet identifier awaiting PUBREL
//! u32  will delay, then the will message (see `message.rs`), if flag bit 1
//! ```

use std::num::NonZeroU32;

use bytes::{BufMut, BytesMut};
use shoal_codec::{MqttString, PacketId, ProtocolVersion, SubscriptionOptions};
use shoal_session::{SessionRecord, SubscriptionRecord, Timestamp, WillRecord};

use crate::error::{DecodeRecordError, EncodeRecordError};
use crate::record::message::{decode_message, encode_message};
use crate::record::reader::Reader;
use crate::record::{VERSION, put_count, put_string};

const DISCONNECTED: u8 = 0b01;
const WILL: u8 = 0b10;

/// Encodes a session.
pub(crate) fn encode_session(session: &SessionRecord) -> Result<BytesMut, EncodeRecordError> {
    let filters: usize = session
        .subscriptions
        .iter()
        .map(|s| s.filter.len() + 7)
        .sum();
    let will = session.will.as_ref().map_or(0, |w| w.message.weight() + 32);
    let mut buf = BytesMut::with_capacity(32 + session.client_id.len() + filters + will);
    buf.put_u8(VERSION);
    put_string(&mut buf, &session.client_id);
    buf.put_u32(session.expiry_interval);
    let mut flags = 0;
    if session.disconnected_at.is_some() {
        flags |= DISCONNECTED;
    }
    if session.will.is_some() {
        flags |= WILL;
    }
    buf.put_u8(flags);
    if let Some(at) = session.disconnected_at {
        buf.put_u64(at.as_millis());
    }
    put_count(&mut buf, "subscriptions", session.subscriptions.len())?;
    for sub in &session.subscriptions {
        put_string(&mut buf, &sub.filter);
        buf.put_u8(sub.options.to_byte(ProtocolVersion::V5));
        buf.put_u32(sub.identifier.map_or(0, NonZeroU32::get));
    }
    put_count(
        &mut buf,
        "QoS 2 packet identifiers",
        session.incoming_qos2.len(),
    )?;
    for id in &session.incoming_qos2 {
        buf.put_u16(id.get());
    }
    if let Some(will) = &session.will {
        buf.put_u32(will.delay);
        encode_message(&mut buf, &will.message)?;
    }
    Ok(buf)
}

/// The value of a subscription entry (its filter is in the key): the format version, the
/// options as MQTT 5 writes them, and the Subscription Identifier (0 for none).
pub(crate) fn encode_subscription(sub: &SubscriptionRecord) -> [u8; 6] {
    let mut value = [0u8; 6];
    value[0] = VERSION;
    value[1] = sub.options.to_byte(ProtocolVersion::V5);
    value[2..].copy_from_slice(&sub.identifier.map_or(0, NonZeroU32::get).to_be_bytes());
    value
}

/// Decodes a subscription entry of `filter`.
pub(crate) fn decode_subscription(
    filter: MqttString,
    value: &[u8],
) -> Result<SubscriptionRecord, DecodeRecordError> {
    let [version, options, id @ ..] = value else {
        return Err(DecodeRecordError::Invalid {
            field: "subscription length",
            value: value.len() as u64,
        });
    };
    if *version != VERSION {
        return Err(DecodeRecordError::Invalid {
            field: "subscription version",
            value: u64::from(*version),
        });
    }
    let id: [u8; 4] = id.try_into().map_err(|_| DecodeRecordError::Invalid {
        field: "subscription length",
        value: value.len() as u64,
    })?;
    Ok(SubscriptionRecord {
        filter,
        options: options_from_byte(*options)?,
        identifier: NonZeroU32::new(u32::from_be_bytes(id)),
    })
}

/// Decodes a session.
pub(crate) fn decode_session(buf: BytesMut) -> Result<SessionRecord, DecodeRecordError> {
    let mut r = Reader::new(buf);
    r.version()?;
    let client_id = r.string("client id")?;
    let expiry_interval = r.u32()?;
    let flags = read_flags(&mut r)?;
    let disconnected_at = if flags & DISCONNECTED != 0 {
        Some(Timestamp(r.u64()?))
    } else {
        None
    };
    // The smallest subscription: an empty filter, options, identifier.
    let (count, capacity) = r.count(2 + 1 + 4)?;
    let mut subscriptions = Vec::with_capacity(capacity);
    for _ in 0..count {
        let filter = r.string("topic filter")?;
        let options = options_from_byte(r.u8()?)?;
        let identifier = NonZeroU32::new(r.u32()?);
        subscriptions.push(SubscriptionRecord {
            filter,
            options,
            identifier,
        });
    }
    let (count, capacity) = r.count(2)?;
    let mut incoming_qos2 = Vec::with_capacity(capacity);
    for _ in 0..count {
        let id = PacketId::new(r.u16()?).ok_or(DecodeRecordError::Invalid {
            field: "packet identifier",
            value: 0,
        })?;
        incoming_qos2.push(id);
    }
    let will = if flags & WILL != 0 {
        let delay = r.u32()?;
        let message = decode_message(&mut r)?;
        Some(Box::new(WillRecord { message, delay }))
    } else {
        None
    };
    r.finish()?;
    Ok(SessionRecord {
        client_id,
        expiry_interval,
        subscriptions,
        will,
        disconnected_at,
        incoming_qos2,
    })
}

/// Decodes a session stored under `key`, checking that it names that key.
pub(crate) fn decode_session_at(
    key: &[u8],
    value: &[u8],
) -> Result<SessionRecord, DecodeRecordError> {
    let session = decode_session(BytesMut::from(value))?;
    if session.client_id.as_bytes().as_ref() != key {
        return Err(DecodeRecordError::KeyMismatch);
    }
    Ok(session)
}

/// When a session expires, read from its first bytes only.
pub(crate) fn peek_session_expiry(value: &[u8]) -> Result<Option<Timestamp>, DecodeRecordError> {
    let mut r = Reader::new(value);
    r.version()?;
    r.skip_string()?;
    let expiry_interval = r.u32()?;
    let flags = read_flags(&mut r)?;
    let disconnected_at = if flags & DISCONNECTED != 0 {
        Some(Timestamp(r.u64()?))
    } else {
        None
    };
    // The rule is `SessionRecord::expires_at`; an empty record computes it without
    // allocating.
    let header = SessionRecord {
        client_id: MqttString::empty(),
        expiry_interval,
        subscriptions: Vec::new(),
        will: None,
        disconnected_at,
        incoming_qos2: Vec::new(),
    };
    Ok(header.expires_at())
}

fn read_flags<B: bytes::Buf>(r: &mut Reader<B>) -> Result<u8, DecodeRecordError> {
    let flags = r.u8()?;
    if flags & !(DISCONNECTED | WILL) != 0 {
        return Err(DecodeRecordError::Invalid {
            field: "session flags",
            value: flags.into(),
        });
    }
    Ok(flags)
}

/// The subscription options byte as MQTT 5 writes it (§3.8.3.1), decoded by the codec.
fn options_from_byte(byte: u8) -> Result<SubscriptionOptions, DecodeRecordError> {
    SubscriptionOptions::from_byte(byte, ProtocolVersion::V5).map_err(|_| {
        DecodeRecordError::Invalid {
            field: "subscription options",
            value: byte.into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::message::tests::{message, mqtt_string, qos};
    use shoal_codec::{QoS, RetainHandling};

    fn options() -> impl Strategy<Value = SubscriptionOptions> {
        let handling = prop_oneof![
            Just(RetainHandling::SendOnSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ];
        (qos(), any::<bool>(), any::<bool>(), handling).prop_map(|(qos, nl, rap, rh)| {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        })
    }

    prop_compose! {
        fn session()(
            client_id in mqtt_string("[a-zA-Z0-9-]{0,23}"),
            expiry_interval in any::<u32>(),
            subs in proptest::collection::vec(
                (mqtt_string("(\\$share/g/)?[a-z+#/]{0,10}"), options(), any::<u32>()), 0..4),
            will in proptest::option::of((message(), any::<u32>())),
            disconnected_at in proptest::option::of(any::<u64>()),
            qos2 in proptest::collection::vec(1u16.., 0..4),
        ) -> SessionRecord {
            SessionRecord {
                client_id,
                expiry_interval,
                subscriptions: subs.into_iter().map(|(filter, options, id)| SubscriptionRecord {
                    filter, options, identifier: NonZeroU32::new(id),
                }).collect(),
                will: will.map(|(message, delay)| Box::new(WillRecord { message, delay })),
                disconnected_at: disconnected_at.map(Timestamp),
                incoming_qos2: qos2.into_iter().filter_map(PacketId::new).collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn a_session_round_trips(s in session()) {
            let buf = encode_session(&s).expect("encodes");
            prop_assert_eq!(peek_session_expiry(&buf), Ok(s.expires_at()));
            prop_assert_eq!(decode_session_at(s.client_id.as_bytes(), &buf), Ok(s));
        }

        #[test]
        fn no_prefix_of_a_session_decodes(s in session(), cut in any::<prop::sample::Index>()) {
            let buf = encode_session(&s).expect("encodes");
            let len = cut.index(buf.len());
            prop_assert!(decode_session(BytesMut::from(&buf[..len])).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_session(BytesMut::from(&bytes[..]));
            let _ = peek_session_expiry(&bytes);
        }

        #[test]
        fn every_options_byte_decodes_as_the_codec_writes_it(byte in any::<u8>()) {
            if let Ok(options) = options_from_byte(byte) {
                prop_assert_eq!(options.to_byte(ProtocolVersion::V5), byte);
            }
        }
    }

    fn simple() -> SessionRecord {
        SessionRecord {
            client_id: MqttString::from_static("c"),
            expiry_interval: 60,
            subscriptions: vec![SubscriptionRecord {
                filter: MqttString::from_static("a/#"),
                options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                identifier: NonZeroU32::new(5),
            }],
            will: None,
            disconnected_at: Some(Timestamp(1_000)),
            incoming_qos2: vec![PacketId::new(9).expect("non-zero")],
        }
    }

    #[test]
    fn the_layout_is_stable() {
        let buf = encode_session(&simple()).expect("encodes");
        #[rustfmt::skip]
        let expected: &[u8] = &[
            1,                              // version
            0, 1, b'c',                     // client id
            0, 0, 0, 60,                    // expiry interval
            0b01,                           // disconnected_at follows, no will
            0, 0, 0, 0, 0, 0, 0x03, 0xE8,   // disconnected_at
            0, 0, 0, 1,                     // one subscription
            0, 3, b'a', b'/', b'#', 1,      // filter, options (QoS 1)
            0, 0, 0, 5,                     // subscription identifier
            0, 0, 0, 1, 0, 9,               // one QoS 2 packet identifier
        ];
        assert_eq!(&buf[..], expected);
        assert_eq!(peek_session_expiry(&buf), Ok(Some(Timestamp(61_000))));
    }

    #[test]
    fn corrupt_sessions_are_typed_errors() {
        let good = encode_session(&simple()).expect("encodes");
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            b
        };
        let cases: Vec<(&str, BytesMut, DecodeRecordError)> = vec![
            (
                "future version",
                with(0, 9),
                DecodeRecordError::UnsupportedVersion(9),
            ),
            (
                "client id not UTF-8",
                with(3, 0xFF),
                DecodeRecordError::String {
                    field: "client id",
                    source: shoal_codec::StringError::InvalidUtf8,
                },
            ),
            (
                "client id longer than the record",
                with(1, 0xFF),
                DecodeRecordError::Truncated {
                    needed: 0xFF01,
                    remaining: good.len() - 3,
                },
            ),
            (
                "reserved flag",
                with(8, 0b101),
                DecodeRecordError::Invalid {
                    field: "session flags",
                    value: 5,
                },
            ),
            (
                "options with QoS 3",
                with(26, 3),
                DecodeRecordError::Invalid {
                    field: "subscription options",
                    value: 3,
                },
            ),
            (
                "options with reserved bits",
                with(26, 0x41),
                DecodeRecordError::Invalid {
                    field: "subscription options",
                    value: 0x41,
                },
            ),
            (
                "packet identifier 0",
                with(36, 0),
                DecodeRecordError::Invalid {
                    field: "packet identifier",
                    value: 0,
                },
            ),
            (
                "will flag without a will",
                with(8, 0b11),
                DecodeRecordError::Truncated {
                    needed: 4,
                    remaining: 0,
                },
            ),
            (
                "subscription count past the end",
                with(20, 7),
                DecodeRecordError::Truncated {
                    needed: 4,
                    remaining: 3,
                },
            ),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(decode_session(bytes), Err(expected), "{name}");
        }
        assert_eq!(
            decode_session_at(b"other", &good),
            Err(DecodeRecordError::KeyMismatch)
        );
    }
}
