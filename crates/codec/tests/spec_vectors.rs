//! Byte-exact vectors written out from the examples of the MQTT 3.1.1 and 5.0
//! specifications. Each decodes to the packet shown and that packet encodes to the same
//! bytes.

mod common;

use std::num::NonZeroU32;

use bytes::Bytes;
use common::*;
use shoal_codec::*;

fn s(text: &'static str) -> MqttString {
    MqttString::from_static(text)
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// Decodes `bytes` as one packet equal to `packet`, and encodes `packet` to `bytes`.
fn check(side: Side, version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    assert_eq!(
        decode_one(side, bytes),
        Ok(packet.clone()),
        "decode of {bytes:02X?}"
    );
    assert_eq!(encode(&packet, version), bytes, "encode of {packet:?}");
}

#[test]
fn connect_v3_1_1_figure_3_6_flags_ce_keep_alive_10() {
    // Variable header of Figure 3.6: "MQTT", level 4, flags 0xCE (user name, password,
    // will QoS 1, will flag, clean session), keep alive 10; then the payload fields in
    // order: client id, will topic, will message, user name, password.
    let bytes = [
        0x10, 0x1C, // CONNECT, remaining length 28
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A, //
        0x00, 0x02, b'c', b'1', // client id
        0x00, 0x01, b'w', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will message
        0x00, 0x01, b'u', // user name
        0x00, 0x01, b'p', // password
    ];
    let connect = Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 10,
        properties: ConnectProperties::default(),
        client_id: s("c1"),
        will: Some(LastWill {
            topic: s("w"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"p")),
    };
    check(
        Side::Server,
        V3_1_1,
        &bytes,
        Packet::Connect(Box::new(connect)),
    );
}

#[test]
fn connect_v5_example_with_session_expiry_10() {
    // §3.1.2.12: "MQTT", level 5, keep alive 10, properties length 5, Session Expiry
    // Interval (17) = 10.
    let bytes = [
        0x10, 0x14, //
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x0A, //
        0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, // properties
        0x00, 0x02, b'c', b'1',
    ];
    let mut connect = Connect::new(V5, s("c1"));
    connect.keep_alive = 10;
    connect.properties.session_expiry_interval = Some(10);
    check(Side::Server, V5, &bytes, Packet::Connect(Box::new(connect)));
}

#[test]
fn connect_v3_1_mqisdp_level_3() {
    let bytes = [
        0x10, 0x10, //
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, //
        0x00, 0x02, b'c', b'1',
    ];
    check(
        Side::Server,
        V3_1,
        &bytes,
        Packet::Connect(Box::new(Connect::new(V3_1, s("c1")))),
    );
}

#[test]
fn connack_forms() {
    // 3.1.1: session present, accepted.
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(Box::new(ConnAck::new(ConnectReasonCode::Success, true))),
    );
    // 3.1.1: return code 5, not authorized.
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x20, 0x02, 0x00, 0x05],
        Packet::ConnAck(Box::new(ConnAck::new(
            ConnectReasonCode::NotAuthorized,
            false,
        ))),
    );
    // 5.0: 0x84 unsupported protocol version, no properties.
    check(
        Side::Version(V5),
        V5,
        &[0x20, 0x03, 0x00, 0x84, 0x00],
        Packet::ConnAck(Box::new(ConnAck::new(
            ConnectReasonCode::UnsupportedProtocolVersion,
            false,
        ))),
    );
    // 5.0 code sent to a 3.1.1 client: the nearest return code (Banned -> 5).
    let banned = Packet::ConnAck(Box::new(ConnAck::new(ConnectReasonCode::Banned, false)));
    assert_eq!(encode(&banned, V3_1_1), [0x20, 0x02, 0x00, 0x05]);
}

#[test]
fn publish_figure_3_11_topic_a_b_packet_id_10() {
    let mut publish = Publish::new(s("a/b"), Bytes::from_static(b"hi"));
    publish.qos_pid = QosPid::AtLeastOnce(pid(10));
    let v4 = [
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &v4,
        Packet::Publish(publish.clone()),
    );
    // MQTT 5 adds the property length 0 after the packet identifier.
    let v5 = [
        0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'h', b'i',
    ];
    check(Side::Version(V5), V5, &v5, Packet::Publish(publish));
}

#[test]
fn publish_with_the_utf8_example_of_1_5_4() {
    // "A𪛔": 0x00 0x05 0x41 0xF0 0xAA 0x9B 0x94.
    let bytes = [0x31, 0x07, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];
    let mut publish = Publish::new(s("A\u{2A6D4}"), Bytes::new());
    publish.retain = true;
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &bytes,
        Packet::Publish(publish),
    );
}

#[test]
fn publish_v5_with_properties() {
    let bytes = [
        0x3B, 0x1A, // PUBLISH, DUP, QoS 1, RETAIN
        0x00, 0x01, b't', 0x00, 0x07, //
        0x13, // property length 19
        0x01, 0x01, // payload format: UTF-8
        0x02, 0x00, 0x00, 0x00, 0x3C, // message expiry 60
        0x23, 0x00, 0x05, // topic alias 5
        0x0B, 0x81, 0x01, // subscription identifier 129 (two bytes)
        0x26, 0x00, 0x01, b'k', 0x00, 0x00, // user property k = ""
        b'x',
    ];
    let mut publish = Publish::new(s("t"), Bytes::from_static(b"x"));
    publish.dup = true;
    publish.retain = true;
    publish.qos_pid = QosPid::AtLeastOnce(pid(7));
    publish.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    publish.properties.message_expiry_interval = Some(60);
    publish.properties.topic_alias = std::num::NonZeroU16::new(5);
    publish.properties.subscription_identifiers = vec![NonZeroU32::new(129).expect("non-zero")];
    publish.properties.user_properties = vec![(s("k"), s(""))];
    check(Side::Version(V5), V5, &bytes, Packet::Publish(publish));
}

#[test]
fn acknowledgements_of_3_1_1() {
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x40, 0x02, 0x00, 0x0A],
        Packet::PubAck(PubAck::new(pid(10))),
    );
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x50, 0x02, 0x00, 0x0A],
        Packet::PubRec(PubRec::new(pid(10))),
    );
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x62, 0x02, 0x00, 0x0A],
        Packet::PubRel(PubRel::new(pid(10))),
    );
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x70, 0x02, 0x00, 0x0A],
        Packet::PubComp(PubComp::new(pid(10))),
    );
}

#[test]
fn acknowledgements_of_5_use_the_short_forms() {
    // Success without properties: packet identifier only (§3.4.2.1).
    check(
        Side::Version(V5),
        V5,
        &[0x40, 0x02, 0x00, 0x0A],
        Packet::PubAck(PubAck::new(pid(10))),
    );
    // A reason code without properties: no property length.
    let mut ack = PubAck::new(pid(10));
    ack.reason_code = PubAckReasonCode::NoMatchingSubscribers;
    check(
        Side::Version(V5),
        V5,
        &[0x40, 0x03, 0x00, 0x0A, 0x10],
        Packet::PubAck(ack.clone()),
    );
    // With a reason string, the full form.
    ack.properties.reason_string = Some(s("no"));
    check(
        Side::Version(V5),
        V5,
        &[
            0x40, 0x09, 0x00, 0x0A, 0x10, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
        ],
        Packet::PubAck(ack),
    );
    // The long form of a plain success still decodes.
    assert_eq!(
        decode_one(Side::Version(V5), &[0x40, 0x04, 0x00, 0x0A, 0x00, 0x00]),
        Ok(Packet::PubAck(PubAck::new(pid(10))))
    );
    let mut rel = PubRel::new(pid(3));
    rel.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
    check(
        Side::Version(V5),
        V5,
        &[0x62, 0x03, 0x00, 0x03, 0x92],
        Packet::PubRel(rel),
    );
}

#[test]
fn subscribe_figure_3_21_and_suback_figure_3_26() {
    let subscribe = Subscribe {
        packet_id: pid(10),
        properties: SubscribeProperties::default(),
        filters: vec![
            (s("a/b"), SubscriptionOptions::with_qos(QoS::AtLeastOnce)),
            (s("c/d"), SubscriptionOptions::with_qos(QoS::ExactlyOnce)),
        ],
    };
    let bytes = [
        0x82, 0x0E, 0x00, 0x0A, //
        0x00, 0x03, b'a', b'/', b'b', 0x01, //
        0x00, 0x03, b'c', b'/', b'd', 0x02,
    ];
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &bytes,
        Packet::Subscribe(subscribe),
    );
    let suback = SubAck {
        packet_id: pid(10),
        properties: AckProperties::default(),
        reason_codes: vec![
            SubAckReasonCode::GrantedQos0,
            SubAckReasonCode::GrantedQos2,
            SubAckReasonCode::UnspecifiedError,
        ],
    };
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80],
        Packet::SubAck(suback),
    );
}

#[test]
fn subscribe_v5_options_and_identifier() {
    // No Local, Retain As Published, Retain Handling 2, QoS 1: 0b0010_1101.
    let bytes = [
        0x82, 0x0B, 0x00, 0x0A, 0x02, 0x0B, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x2D,
    ];
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let subscribe = Subscribe {
        packet_id: pid(10),
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(1),
            ..Default::default()
        },
        filters: vec![(s("a/b"), options)],
    };
    check(
        Side::Version(V5),
        V5,
        &bytes,
        Packet::Subscribe(subscribe.clone()),
    );
    // The same SUBSCRIBE for a 3.1.1 connection keeps the QoS bits only.
    assert_eq!(
        encode(&Packet::Subscribe(subscribe), V3_1_1),
        [0x82, 0x08, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01]
    );
    // A failure code of MQTT 5 goes to a 3.1.1 client as 0x80.
    let suback = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: vec![SubAckReasonCode::NotAuthorized],
    };
    assert_eq!(
        encode(&Packet::SubAck(suback), V3_1_1),
        [0x90, 0x03, 0x00, 0x01, 0x80]
    );
}

#[test]
fn unsubscribe_figure_3_30_and_unsuback() {
    let unsubscribe = Unsubscribe {
        packet_id: pid(10),
        properties: UnsubscribeProperties::default(),
        filters: vec![s("a/b"), s("c/d")],
    };
    let bytes = [
        0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'd',
    ];
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &bytes,
        Packet::Unsubscribe(unsubscribe),
    );
    let unsuback = UnsubAck {
        packet_id: pid(10),
        properties: AckProperties::default(),
        reason_codes: vec![],
    };
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0xB0, 0x02, 0x00, 0x0A],
        Packet::UnsubAck(unsuback),
    );
    let unsuback = UnsubAck {
        packet_id: pid(10),
        properties: AckProperties::default(),
        reason_codes: vec![
            UnsubAckReasonCode::Success,
            UnsubAckReasonCode::NoSubscriptionExisted,
        ],
    };
    check(
        Side::Version(V5),
        V5,
        &[0xB0, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x11],
        Packet::UnsubAck(unsuback),
    );
}

#[test]
fn ping_disconnect_and_auth() {
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0xC0, 0x00],
        Packet::PingReq,
    );
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0xD0, 0x00],
        Packet::PingResp,
    );
    check(
        Side::Version(V3_1_1),
        V3_1_1,
        &[0xE0, 0x00],
        Packet::Disconnect(Disconnect::default()),
    );
    check(
        Side::Version(V5),
        V5,
        &[0xE0, 0x00],
        Packet::Disconnect(Disconnect::default()),
    );
    check(
        Side::Version(V5),
        V5,
        &[0xE0, 0x01, 0x8E],
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::SessionTakenOver)),
    );
    let mut disconnect = Disconnect::new(DisconnectReasonCode::NormalDisconnection);
    disconnect.properties.session_expiry_interval = Some(0);
    check(
        Side::Version(V5),
        V5,
        &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        Packet::Disconnect(disconnect),
    );
    // A server's DISCONNECT to a 3.1.1 client has no reason code.
    assert_eq!(
        encode(
            &Packet::Disconnect(Disconnect::new(DisconnectReasonCode::ServerShuttingDown)),
            V3_1_1
        ),
        [0xE0, 0x00]
    );
    let auth = Auth {
        reason_code: AuthReasonCode::Success,
        properties: AuthProperties::default(),
    };
    check(Side::Version(V5), V5, &[0xF0, 0x00], Packet::Auth(auth));
    let auth = Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"\x01")),
            ..Default::default()
        },
    };
    let mut bytes = vec![0xF0, 0x16, 0x18, 0x14, 0x15, 0x00, 0x0D];
    bytes.extend_from_slice(b"SCRAM-SHA-256");
    bytes.extend_from_slice(&[0x16, 0x00, 0x01, 0x01]);
    check(Side::Version(V5), V5, &bytes, Packet::Auth(auth.clone()));
    assert!(matches!(
        Packet::Auth(auth).encode(V3_1_1, &mut bytes::BytesMut::new()),
        Err(EncodeError::NotInVersion { .. })
    ));
}

#[test]
fn remaining_length_boundaries_of_1_5_5() {
    // A QoS 0 PUBLISH to "t" has 3 bytes of topic; the payload fills the rest.
    for (remaining, header) in [
        (127usize, &[0x30, 0x7F][..]),
        (128, &[0x30, 0x80, 0x01]),
        (16_383, &[0x30, 0xFF, 0x7F]),
        (16_384, &[0x30, 0x80, 0x80, 0x01]),
        (2_097_152, &[0x30, 0x80, 0x80, 0x80, 0x01]),
    ] {
        let publish = Publish::new(s("t"), Bytes::from(vec![0u8; remaining - 3]));
        let bytes = encode(&Packet::Publish(publish.clone()), V3_1_1);
        assert_eq!(&bytes[..header.len()], header, "remaining {remaining}");
        assert_eq!(bytes.len(), header.len() + remaining);
        let mut decoder = Decoder::with_version(V3_1_1, 4 << 20);
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Packet::Publish(publish))));
    }
}

#[test]
fn every_prefix_of_a_packet_is_incomplete_and_consumes_nothing() {
    let bytes = [
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    for end in 0..bytes.len() {
        let mut decoder = Decoder::with_version(V3_1_1, MAX);
        let mut buf = bytes::BytesMut::from(&bytes[..end]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "prefix of {end} bytes");
        assert_eq!(buf.len(), end);
    }
}

#[test]
fn a_server_decoder_takes_its_version_from_connect() {
    let mut decoder = Decoder::new(MAX);
    assert_eq!(decoder.version(), None);
    let mut buf = bytes::BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, s("c"))))
        .encode(V5, &mut buf)
        .expect("encodes");
    // A v5 DISCONNECT with a reason right behind it decodes as v5.
    buf.extend_from_slice(&[0xE0, 0x01, 0x04]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Packet::Connect(_)))
    ));
    assert_eq!(decoder.version(), Some(V5));
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::DisconnectWithWillMessage
        ))))
    );
}

#[test]
fn a_connect_that_fails_still_names_its_version() {
    // MQTT 5 CONNECT with Receive Maximum 0: a protocol error, answered in version 5.
    let body = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x0A, 0x03, 0x21, 0x00, 0x00, 0x00,
        0x00,
    ];
    let mut decoder = Decoder::new(MAX);
    let mut buf = bytes::BytesMut::from(&frame(0x10, &body)[..]);
    let err = decoder
        .decode(&mut buf)
        .expect_err("receive maximum 0 is refused");
    assert_eq!(decoder.version(), Some(V5));
    assert_eq!(err.connect_reason_code(), ConnectReasonCode::ProtocolError);
}
