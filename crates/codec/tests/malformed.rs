//! The malformed-input table: each row is input that breaks one statement of the
//! specification, and the statement the decoder must name for it.

mod common;

use bytes::BytesMut;
use common::*;
use shoal_codec::{DecodeError, Decoder, DisconnectReasonCode};

/// A CONNECT body: protocol name, level, flags, keep alive 10, then `rest`.
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x0A]);
    body.extend_from_slice(rest);
    frame(0x10, &body)
}

/// A v5 PUBLISH QoS 0 to "t" with these property bytes (length computed) and payload "x".
fn publish_v5(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b't', props.len() as u8];
    body.extend_from_slice(props);
    body.push(b'x');
    frame(0x30, &body)
}

const V4: Side = Side::Version(V3_1_1);
const V5S: Side = Side::Version(V5);

/// (statement, what the row shows, decoder, bytes)
fn table() -> Vec<(&'static str, &'static str, Side, Vec<u8>)> {
    vec![
        (
            "MQTT-3.1.0-1",
            "PUBLISH before CONNECT",
            Side::Server,
            frame(0x30, &[0x00, 0x01, b'a']),
        ),
        (
            "MQTT-3.1.0-1",
            "PINGREQ before CONNECT",
            Side::Server,
            vec![0xC0, 0x00],
        ),
        ("§2.1.2", "packet type 0", V4, vec![0x00, 0x00]),
        ("§2.1.2", "AUTH in MQTT 3.1.1", V4, vec![0xF0, 0x00]),
        (
            "MQTT-2.1.3-1",
            "SUBSCRIBE with flags 0000",
            V4,
            frame(0x80, &[0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
        ),
        (
            "MQTT-2.1.3-1",
            "PUBREL with flags 0000",
            V4,
            frame(0x60, &[0x00, 0x01]),
        ),
        (
            "MQTT-2.1.3-1",
            "PUBACK with flags 0010",
            V4,
            frame(0x42, &[0x00, 0x01]),
        ),
        (
            "MQTT-2.1.3-1",
            "UNSUBSCRIBE with flags 0000",
            V4,
            frame(0xA0, &[0x00, 0x01, 0x00, 0x01, b'a']),
        ),
        (
            "MQTT-2.1.3-1",
            "PINGREQ with flags 0001",
            V4,
            vec![0xC1, 0x00],
        ),
        (
            "MQTT-2.1.3-1",
            "CONNECT with flags 0001",
            Side::Server,
            vec![0x11, 0x00],
        ),
        (
            "MQTT-3.3.1-4",
            "PUBLISH with QoS 3",
            V4,
            frame(0x36, &[0x00, 0x01, b'a', 0x00, 0x01]),
        ),
        (
            "MQTT-3.3.1-2",
            "DUP on a QoS 0 PUBLISH",
            V4,
            frame(0x38, &[0x00, 0x01, b'a']),
        ),
        (
            "§1.5.5",
            "remaining length of five bytes",
            V4,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "MQTT-1.5.5-1",
            "remaining length not minimal",
            V4,
            vec![0x30, 0x80, 0x00],
        ),
        (
            "MQTT-1.5.5-1",
            "property length not minimal",
            V5S,
            frame(0x30, &[0x00, 0x01, b't', 0x80, 0x00]),
        ),
        (
            "MQTT-1.5.4-1",
            "surrogate in a topic name",
            V4,
            frame(0x30, &[0x00, 0x03, 0xED, 0xA0, 0x80]),
        ),
        (
            "MQTT-1.5.4-1",
            "truncated UTF-8 sequence in a client id",
            Side::Server,
            connect(b"MQTT", 4, 0x02, &[0x00, 0x01, 0xC3]),
        ),
        (
            "MQTT-1.5.4-2",
            "U+0000 in a topic name",
            V4,
            frame(0x30, &[0x00, 0x03, b'a', 0x00, b'b']),
        ),
        (
            "MQTT-1.5.4-2",
            "U+0000 in a user property",
            V5S,
            publish_v5(&[0x26, 0x00, 0x01, 0x00, 0x00, 0x00]),
        ),
        (
            "MQTT-3.3.2-2",
            "+ in a topic name",
            V4,
            frame(0x30, &[0x00, 0x03, b'a', b'/', b'+']),
        ),
        (
            "MQTT-3.3.2-2",
            "# in a topic name",
            V4,
            frame(0x30, &[0x00, 0x01, b'#']),
        ),
        (
            "MQTT-3.3.2-2",
            "wildcard in a will topic",
            Side::Server,
            connect(
                b"MQTT",
                4,
                0x06,
                &[0x00, 0x01, b'c', 0x00, 0x01, b'#', 0x00, 0x00],
            ),
        ),
        (
            "MQTT-3.3.2-2",
            "wildcard in a response topic",
            V5S,
            publish_v5(&[0x08, 0x00, 0x01, b'+']),
        ),
        (
            "MQTT-4.7.3-1",
            "empty topic name in 3.1.1",
            V4,
            frame(0x30, &[0x00, 0x00]),
        ),
        (
            "MQTT-4.7.3-1",
            "empty topic name without topic alias",
            V5S,
            frame(0x30, &[0x00, 0x00, 0x00]),
        ),
        (
            "MQTT-4.7.3-1",
            "empty topic filter in SUBSCRIBE",
            V4,
            frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x00]),
        ),
        (
            "MQTT-4.7.3-1",
            "empty topic filter in UNSUBSCRIBE",
            V4,
            frame(0xA2, &[0x00, 0x01, 0x00, 0x00]),
        ),
        (
            "MQTT-2.2.1-3",
            "QoS 1 PUBLISH with packet identifier 0",
            V4,
            frame(0x32, &[0x00, 0x01, b'a', 0x00, 0x00]),
        ),
        (
            "MQTT-2.2.1-3",
            "PUBACK for packet identifier 0",
            V4,
            frame(0x40, &[0x00, 0x00]),
        ),
        (
            "MQTT-2.2.1-3",
            "SUBSCRIBE with packet identifier 0",
            V4,
            frame(0x82, &[0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
        ),
        (
            "MQTT-3.1.2-1",
            "protocol name MQTX",
            Side::Server,
            connect(b"MQTX", 4, 0x02, &[0x00, 0x00]),
        ),
        (
            "MQTT-3.1.2-2",
            "protocol level 6",
            Side::Server,
            connect(b"MQTT", 6, 0x02, &[0x00, 0x00]),
        ),
        (
            "MQTT-3.1.2-2",
            "MQTT with level 3",
            Side::Server,
            connect(b"MQTT", 3, 0x02, &[0x00, 0x00]),
        ),
        (
            "MQTT-3.1.2-3",
            "reserved CONNECT flag",
            Side::Server,
            connect(b"MQTT", 4, 0x03, &[0x00, 0x00]),
        ),
        (
            "MQTT-3.1.2-11",
            "will QoS without will flag",
            Side::Server,
            connect(b"MQTT", 4, 0x0A, &[0x00, 0x00]),
        ),
        (
            "MQTT-3.1.2-11",
            "will retain without will flag",
            Side::Server,
            connect(b"MQTT", 4, 0x22, &[0x00, 0x00]),
        ),
        (
            "MQTT-3.1.2-12",
            "will QoS 3",
            Side::Server,
            connect(
                b"MQTT",
                4,
                0x1E,
                &[0x00, 0x00, 0x00, 0x01, b'w', 0x00, 0x00],
            ),
        ),
        (
            "§3.1.2.11.10",
            "CONNECT with Authentication Data and no Authentication Method",
            Side::Server,
            connect(
                b"MQTT",
                5,
                0x02,
                &[0x04, 0x16, 0x00, 0x01, b'x', 0x00, 0x00],
            ),
        ),
        (
            "MQTT-3.1.2-22",
            "3.1.1 password without user name",
            Side::Server,
            connect(b"MQTT", 4, 0x42, &[0x00, 0x00, 0x00, 0x00]),
        ),
        (
            "§2.1.4",
            "PUBACK shorter than a packet identifier",
            V4,
            frame(0x40, &[0x00]),
        ),
        (
            "§2.1.4",
            "string longer than the packet",
            V4,
            frame(0x30, &[0x00, 0x09, b'a']),
        ),
        (
            "§2.1.4",
            "property length past the end",
            V5S,
            frame(0x30, &[0x00, 0x01, b't', 0x09, 0x01]),
        ),
        (
            "§2.1.4",
            "3.1.1 PUBACK with a trailing byte",
            V4,
            frame(0x40, &[0x00, 0x01, 0x00]),
        ),
        ("§2.1.4", "PINGREQ with a body", V4, frame(0xC0, &[0x00])),
        (
            "§2.1.4",
            "CONNECT with bytes after the payload",
            Side::Server,
            connect(b"MQTT", 4, 0x02, &[0x00, 0x00, 0xFF]),
        ),
        (
            "§2.1.4",
            "DISCONNECT of 3.1.1 with a body",
            V4,
            frame(0xE0, &[0x00]),
        ),
        (
            "§2.2.2.2",
            "unknown property 0x7F",
            V5S,
            publish_v5(&[0x7F, 0x00]),
        ),
        (
            "§2.2.2.2",
            "Session Expiry Interval in PUBLISH",
            V5S,
            publish_v5(&[0x11, 0x00, 0x00, 0x00, 0x01]),
        ),
        (
            "§2.2.2.2",
            "Topic Alias in CONNECT",
            Side::Server,
            connect(b"MQTT", 5, 0x02, &[0x03, 0x23, 0x00, 0x01, 0x00, 0x00]),
        ),
        (
            "§2.2.2.2",
            "Message Expiry Interval twice",
            V5S,
            publish_v5(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
        ),
        (
            "§2.2.2.2",
            "Reason String twice in PUBACK",
            V5S,
            frame(
                0x40,
                &[0x00, 0x01, 0x00, 0x06, 0x1F, 0x00, 0x00, 0x1F, 0x00, 0x00],
            ),
        ),
        (
            "MQTT-3.3.2-8",
            "Topic Alias 0",
            V5S,
            publish_v5(&[0x23, 0x00, 0x00]),
        ),
        (
            "§3",
            "Payload Format Indicator 2",
            V5S,
            publish_v5(&[0x01, 0x02]),
        ),
        (
            "§3",
            "Subscription Identifier 0",
            V5S,
            frame(
                0x82,
                &[0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00],
            ),
        ),
        (
            "§3",
            "Receive Maximum 0",
            Side::Server,
            connect(b"MQTT", 5, 0x02, &[0x03, 0x21, 0x00, 0x00, 0x00, 0x00]),
        ),
        (
            "§3",
            "Maximum Packet Size 0",
            Side::Server,
            connect(b"MQTT", 5, 0x02, &[0x05, 0x27, 0, 0, 0, 0, 0x00, 0x00]),
        ),
        (
            "§3",
            "Request Problem Information 2",
            Side::Server,
            connect(b"MQTT", 5, 0x02, &[0x02, 0x17, 0x02, 0x00, 0x00]),
        ),
        (
            "§3",
            "Maximum QoS 2 in CONNACK",
            V5S,
            frame(0x20, &[0x00, 0x00, 0x02, 0x24, 0x02]),
        ),
        (
            "MQTT-3.4.2-1",
            "PUBACK reason code 0x05",
            V5S,
            frame(0x40, &[0x00, 0x01, 0x05]),
        ),
        (
            "MQTT-3.4.2-1",
            "PUBREL reason code 0x10",
            V5S,
            frame(0x62, &[0x00, 0x01, 0x10]),
        ),
        (
            "MQTT-3.4.2-1",
            "3.1.1 SUBACK return code 0x03",
            V4,
            frame(0x90, &[0x00, 0x01, 0x03]),
        ),
        (
            "MQTT-3.4.2-1",
            "3.1.1 SUBACK with a 5.0-only code 0x87",
            V4,
            frame(0x90, &[0x00, 0x01, 0x87]),
        ),
        (
            "MQTT-3.4.2-1",
            "3.1.1 CONNACK return code 6",
            V4,
            frame(0x20, &[0x00, 0x06]),
        ),
        (
            "MQTT-3.4.2-1",
            "DISCONNECT reason code 0x01",
            V5S,
            frame(0xE0, &[0x01]),
        ),
        (
            "MQTT-3.4.2-1",
            "AUTH reason code 0x87",
            V5S,
            frame(0xF0, &[0x87]),
        ),
        (
            "MQTT-3.2.2-1",
            "reserved CONNACK flag",
            V4,
            frame(0x20, &[0x02, 0x00]),
        ),
        (
            "MQTT-3.2.2-6",
            "session present with a failure",
            V5S,
            frame(0x20, &[0x01, 0x87, 0x00]),
        ),
        (
            "MQTT-3.8.3-2",
            "SUBSCRIBE with no topic filter",
            V4,
            frame(0x82, &[0x00, 0x01]),
        ),
        (
            "MQTT-3.10.3-2",
            "UNSUBSCRIBE with no topic filter",
            V5S,
            frame(0xA2, &[0x00, 0x01, 0x00]),
        ),
        (
            "MQTT-3.8.3-5",
            "reserved subscription option bits",
            V5S,
            frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0xC0]),
        ),
        (
            "MQTT-3.8.3-5",
            "Retain Handling 3",
            V5S,
            frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]),
        ),
        (
            "MQTT-3.8.3-5",
            "subscription QoS 3",
            V5S,
            frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03]),
        ),
        (
            "MQTT-3.8.3-5",
            "3.1.1 No Local bit (reserved there)",
            V4,
            frame(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', 0x04]),
        ),
        (
            "MQTT-3.8.3-4",
            "No Local on a shared subscription",
            V5S,
            frame(
                0x82,
                &[
                    0x00, 0x01, 0x00, 0x00, 0x09, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g',
                    b'/', 0x04,
                ],
            ),
        ),
    ]
}

#[test]
fn each_malformed_input_names_its_statement() {
    let mut failures = Vec::new();
    for (rule, what, side, bytes) in table() {
        let mut decoder = decoder(side);
        let mut buf = BytesMut::from(&bytes[..]);
        match decoder.decode(&mut buf) {
            Err(e) if e.rule() == rule => {}
            other => failures.push(format!("{rule} ({what}): got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_the_statements_the_codec_enforces() {
    let rules: std::collections::BTreeSet<_> = table().into_iter().map(|row| row.0).collect();
    for rule in [
        "MQTT-1.5.4-1",
        "MQTT-1.5.4-2",
        "MQTT-1.5.5-1",
        "MQTT-2.1.3-1",
        "MQTT-2.2.1-3",
        "MQTT-3.1.0-1",
        "MQTT-3.1.2-1",
        "MQTT-3.1.2-2",
        "MQTT-3.1.2-3",
        "MQTT-3.1.2-11",
        "MQTT-3.1.2-12",
        "MQTT-3.1.2-22",
        "MQTT-3.2.2-1",
        "MQTT-3.2.2-6",
        "MQTT-3.3.1-2",
        "MQTT-3.3.1-4",
        "MQTT-3.3.2-2",
        "MQTT-3.3.2-8",
        "MQTT-3.4.2-1",
        "MQTT-3.8.3-2",
        "MQTT-3.8.3-4",
        "MQTT-3.8.3-5",
        "MQTT-3.10.3-2",
        "MQTT-4.7.3-1",
    ] {
        assert!(rules.contains(rule), "no row for {rule}");
    }
}

#[test]
fn errors_map_to_the_reason_codes_of_4_13() {
    let reason = |side, bytes: &[u8]| {
        let mut buf = BytesMut::from(bytes);
        decoder(side)
            .decode(&mut buf)
            .expect_err("malformed")
            .reason_code()
    };
    // Reserved flags: a Malformed Packet.
    assert_eq!(
        reason(V5S, &[0x42, 0x02, 0x00, 0x01]),
        DisconnectReasonCode::MalformedPacket
    );
    // A property twice: a Protocol Error.
    assert_eq!(
        reason(V5S, &publish_v5(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2])),
        DisconnectReasonCode::ProtocolError
    );
    // Topic Alias 0: Topic Alias invalid.
    assert_eq!(
        reason(V5S, &publish_v5(&[0x23, 0x00, 0x00])),
        DisconnectReasonCode::TopicAliasInvalid
    );
    // Too large: Packet too large.
    let mut small = Decoder::with_version(V5, 16);
    let mut buf = BytesMut::from(&frame(0x30, &[0u8; 20])[..]);
    let err = small.decode(&mut buf).expect_err("too large");
    assert_eq!(err.reason_code(), DisconnectReasonCode::PacketTooLarge);
    assert_eq!(err, DecodeError::PacketTooLarge { size: 22, max: 16 });
}

#[test]
fn garbage_never_panics_and_stops_at_the_first_error() {
    // A deterministic pseudo-random stream (xorshift), fed to every kind of decoder.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut garbage = vec![0u8; 1 << 16];
    for byte in &mut garbage {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    for side in [Side::Server, Side::Version(V3_1), V4, V5S] {
        let mut decoder = decoder(side);
        let mut buf = BytesMut::from(&garbage[..]);
        let mut packets = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => packets += 1,
                Ok(None) | Err(_) => break,
            }
            assert!(
                packets < garbage.len(),
                "every packet consumes at least two bytes"
            );
        }
    }
}
