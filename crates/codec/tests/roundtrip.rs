//! Round-trip property tests: every packet type, at every protocol level, encodes to bytes
//! of its announced size that decode back to the same packet, also when fed byte by byte.

mod common;

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use common::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use shoal_codec::*;

fn string() -> impl Strategy<Value = MqttString> {
    // ASCII, Latin-1, a three-byte and a four-byte character, and the level separator.
    "[a-z0-9/é€𪛔 _-]{0,12}".prop_map(|s| MqttString::try_from(s).expect("no U+0000"))
}

fn topic_name() -> impl Strategy<Value = MqttString> {
    "[a-z0-9/é$]{1,16}".prop_map(|s| MqttString::try_from(s).expect("valid"))
}

fn topic_filter() -> impl Strategy<Value = MqttString> {
    prop_oneof!["[a-z0-9/+#]{1,16}", "\\$share/[a-z]{1,4}/[a-z/+#]{1,8}",]
        .prop_map(|s| MqttString::try_from(s).expect("valid"))
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|n| PacketId::new(n).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((string(), string()), 0..3)
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|n| NonZeroU16::new(n).expect("non-zero"))
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|n| NonZeroU32::new(n).expect("non-zero"))
}

fn sub_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=MAX_REMAINING_LENGTH).prop_map(|n| NonZeroU32::new(n).expect("non-zero"))
}

fn format() -> impl Strategy<Value = PayloadFormat> {
    prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)]
}

fn code<R: ReasonCode>() -> impl Strategy<Value = R> {
    proptest::sample::select(R::ALL)
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (of(any::<u32>()), of(nz16()), of(nz32()), of(any::<u16>())),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(string()),
            of(binary()),
        ),
        user_properties(),
    )
        .prop_map(
            |((sei, rm, mps, tam), (rri, rpi, am, ad), user_properties)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                // Authentication Data needs a method (§3.1.2.11.10).
                authentication_data: ad.filter(|_| am.is_some()),
                authentication_method: am,
                user_properties,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        (of(any::<u32>()), of(format()), of(any::<u32>())),
        (of(string()), of(topic_name()), of(binary())),
        user_properties(),
    )
        .prop_map(
            |((delay, pfi, mei), (ct, rt, cd), user_properties)| WillProperties {
                will_delay_interval: delay,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            },
        )
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 {
                properties
            } else {
                WillProperties::default()
            },
        });
    (
        (any::<bool>(), any::<u16>(), connect_properties(), string()),
        (of(will), of(string()), of(binary())),
    )
        .prop_map(
            move |(
                (clean_start, keep_alive, properties, client_id),
                (will, username, password),
            )| {
                // Before MQTT 5 a password needs a user name [MQTT-3.1.2-22].
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    properties: if v5 {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            of(any::<u32>()),
            of(nz16()),
            of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
            of(any::<bool>()),
        ),
        (of(nz32()), of(string()), of(any::<u16>()), of(string())),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<u16>()),
        ),
        (of(string()), of(string()), of(string()), of(binary())),
        user_properties(),
    )
        .prop_map(|(a, b, c, d, user_properties)| ConnAckProperties {
            session_expiry_interval: a.0,
            receive_maximum: a.1,
            maximum_qos: a.2,
            retain_available: a.3,
            maximum_packet_size: b.0,
            assigned_client_identifier: b.1,
            topic_alias_maximum: b.2,
            reason_string: b.3,
            wildcard_subscription_available: c.0,
            subscription_identifiers_available: c.1,
            shared_subscription_available: c.2,
            server_keep_alive: c.3,
            response_information: d.0,
            server_reference: d.1,
            authentication_method: d.2,
            authentication_data: d.3,
            user_properties,
        })
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason = if version.is_v5() {
        code::<ConnectReasonCode>().boxed()
    } else {
        (0u8..=5)
            .prop_map(|rc| ConnectReasonCode::from_v3_return_code(rc).expect("0..=5"))
            .boxed()
    };
    (any::<bool>(), reason, connack_properties()).prop_map(
        move |(present, reason_code, properties)| {
            // Session Present exists from 3.1.1 on, and only beside success [MQTT-3.2.2-6].
            let session_present = present && !reason_code.is_error() && version != V3_1;
            Packet::ConnAck(Box::new(ConnAck {
                session_present,
                reason_code,
                properties: if version.is_v5() {
                    properties
                } else {
                    ConnAckProperties::default()
                },
            }))
        },
    )
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        (of(format()), of(any::<u32>()), of(nz16()), of(topic_name())),
        (of(binary()), of(string()), vec(sub_id(), 0..3)),
        user_properties(),
    )
        .prop_map(|((pfi, mei, alias, rt), (cd, ct, ids), user_properties)| {
            PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: alias,
                response_topic: rt,
                correlation_data: cd,
                content_type: ct,
                subscription_identifiers: ids,
                user_properties,
            }
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        (any::<bool>(), qos(), packet_id(), any::<bool>()),
        (
            topic_name(),
            any::<bool>(),
            publish_properties(),
            vec(any::<u8>(), 0..64),
        ),
    )
        .prop_map(
            move |((dup, qos, id, retain), (topic, drop_topic, properties, payload))| {
                let properties = if version.is_v5() {
                    properties
                } else {
                    PublishProperties::default()
                };
                // MQTT 5: a Topic Alias may stand for the whole topic name.
                let topic = if drop_topic && properties.topic_alias.is_some() {
                    MqttString::empty()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos_pid: QosPid::from_parts(qos, id),
                    retain,
                    topic,
                    properties,
                    payload: Bytes::from(payload),
                })
            },
        )
}

fn ack_properties(version: ProtocolVersion) -> impl Strategy<Value = AckProperties> {
    (of(string()), user_properties()).prop_map(move |(reason_string, user_properties)| {
        if version.is_v5() {
            AckProperties {
                reason_string,
                user_properties,
            }
        } else {
            AckProperties::default()
        }
    })
}

fn ack<R: ReasonCode>(version: ProtocolVersion) -> impl Strategy<Value = Ack<R>> {
    (packet_id(), code::<R>(), ack_properties(version)).prop_map(
        move |(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code: if version.is_v5() {
                reason_code
            } else {
                R::SUCCESS
            },
            properties,
        },
    )
}

fn options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = prop_oneof![
        Just(RetainHandling::SendOnSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, rap, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: rap,
                    retain_handling,
                }
            } else {
                SubscriptionOptions::with_qos(qos)
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        of(sub_id()),
        user_properties(),
        vec((topic_filter(), options(version)), 1..5),
    )
        .prop_map(move |(packet_id, id, user_properties, filters)| {
            let properties = if version.is_v5() {
                SubscribeProperties {
                    subscription_identifier: id,
                    user_properties,
                }
            } else {
                SubscribeProperties::default()
            };
            // No Local is a protocol error on a shared subscription [MQTT-3.8.3-4].
            let filters = filters
                .into_iter()
                .map(|(f, mut o)| {
                    o.no_local &= !f.starts_with("$share/");
                    (f, o)
                })
                .collect();
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        vec(code::<SubAckReasonCode>(), 0..5).boxed()
    } else {
        let v3 = [
            SubAckReasonCode::GrantedQos0,
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::GrantedQos2,
            SubAckReasonCode::UnspecifiedError,
        ];
        vec(proptest::sample::select(v3.to_vec()), 0..5).boxed()
    };
    (packet_id(), ack_properties(version), codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        },
    )
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (packet_id(), user_properties(), vec(topic_filter(), 1..5)).prop_map(
        move |(packet_id, user_properties, filters)| {
            let properties = if version.is_v5() {
                UnsubscribeProperties { user_properties }
            } else {
                UnsubscribeProperties::default()
            };
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        },
    )
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        ack_properties(version),
        vec(code::<UnsubAckReasonCode>(), 0..5),
    )
        .prop_map(move |(packet_id, properties, codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes: if version.is_v5() { codes } else { Vec::new() },
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        code::<DisconnectReasonCode>(),
        (of(any::<u32>()), of(string()), of(string())),
        user_properties(),
    )
        .prop_map(move |(reason_code, (sei, rs, sr), user_properties)| {
            if !version.is_v5() {
                return Packet::Disconnect(Disconnect::default());
            }
            Packet::Disconnect(Disconnect {
                reason_code,
                properties: DisconnectProperties {
                    session_expiry_interval: sei,
                    reason_string: rs,
                    server_reference: sr,
                    user_properties,
                },
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        code::<AuthReasonCode>(),
        (of(string()), of(binary()), of(string())),
        user_properties(),
    )
        .prop_map(|(reason_code, (am, ad, rs), user_properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties,
                },
            })
        })
}

/// Every packet that exists in `version` (CONNECT excepted: it has its own test).
fn any_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connack(version).boxed(),
        publish(version).boxed(),
        ack::<PubAckReasonCode>(version)
            .prop_map(Packet::PubAck)
            .boxed(),
        ack::<PubAckReasonCode>(version)
            .prop_map(Packet::PubRec)
            .boxed(),
        ack::<PubRelReasonCode>(version)
            .prop_map(Packet::PubRel)
            .boxed(),
        ack::<PubRelReasonCode>(version)
            .prop_map(Packet::PubComp)
            .boxed(),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version).boxed(),
    ];
    if version.is_v5() {
        all.push(auth().boxed());
    }
    proptest::strategy::Union::new(all).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
}

/// Encodes, checks the size, and decodes back both whole and byte by byte.
fn round_trip(side: Side, version: ProtocolVersion, packet: &Packet) -> Result<(), TestCaseError> {
    let bytes = encode(packet, version);
    let decoded = decode_one(side, &bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(packet));
    let mut decoder = decoder(side);
    let mut buf = BytesMut::new();
    let mut decoded = None;
    for &byte in &bytes {
        prop_assert!(decoded.is_none(), "decoded before the last byte");
        buf.extend_from_slice(&[byte]);
        decoded = decoder
            .decode(&mut buf)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_packet_round_trips(
        (version, packet) in version().prop_flat_map(|v| (Just(v), any_packet(v)))
    ) {
        round_trip(Side::Version(version), version, &packet)?;
    }

    #[test]
    fn connect_round_trips_through_a_server_decoder(
        packet in version().prop_flat_map(connect)
    ) {
        let Packet::Connect(c) = &packet else { unreachable!("the strategy makes CONNECTs") };
        round_trip(Side::Server, c.protocol, &packet)?;
    }

    #[test]
    fn several_packets_in_one_buffer_decode_in_order(
        (version, packets) in version().prop_flat_map(|v| (Just(v), vec(any_packet(v), 1..8)))
    ) {
        let mut buf = BytesMut::new();
        for packet in &packets {
            packet.encode(version, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut decoder = Decoder::with_version(version, MAX);
        for packet in &packets {
            let decoded = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded.as_ref(), Some(packet));
        }
        prop_assert!(buf.is_empty());
    }
}
