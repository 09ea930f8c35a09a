//! Codec throughput: decode and encode of the packets that dominate a broker's traffic.
//!
//! Decoding runs over a buffer of many packets back to back, as a socket read delivers
//! them; encoding appends to a reused write buffer. Throughput is in bytes; packets per
//! second is the element count divided by the time (see BENCHMARKS.md).

use std::hint::black_box;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use shoal_codec::{
    Connect, Decoder, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, QosPid,
    Subscribe, SubscribeProperties, SubscriptionOptions,
};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn s(text: &str) -> MqttString {
    MqttString::try_from(text).expect("valid")
}

fn publish(payload: usize) -> Packet {
    let mut publish = Publish::new(
        s("site/17/device/4711/telemetry"),
        Bytes::from(vec![0x5A; payload]),
    );
    publish.qos_pid = QosPid::AtLeastOnce(PacketId::new(42).expect("non-zero"));
    Packet::Publish(publish)
}

fn connect_v5() -> Packet {
    let mut connect = Connect::new(V5, s("device-000017-004711"));
    connect.username = Some(s("fleet-gateway"));
    connect.password = Some(Bytes::from_static(b"correct horse battery staple"));
    let p = &mut connect.properties;
    p.session_expiry_interval = Some(3600);
    p.receive_maximum = NonZeroU16::new(64);
    p.maximum_packet_size = NonZeroU32::new(1 << 20);
    p.topic_alias_maximum = Some(16);
    p.request_problem_information = Some(true);
    p.user_properties = vec![(s("site"), s("17")), (s("firmware"), s("4.2.1"))];
    Packet::Connect(Box::new(connect))
}

fn subscribe_10() -> Packet {
    let filters = (0..10)
        .map(|i| {
            (
                s(&format!("site/{i}/device/+/telemetry")),
                SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            )
        })
        .collect();
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(7).expect("non-zero"),
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(12),
            ..Default::default()
        },
        filters,
    })
}

/// The cases: name, packet, version, packets per decode batch.
fn cases() -> Vec<(&'static str, Packet, ProtocolVersion, usize)> {
    vec![
        ("publish_64B_v311", publish(64), V4, 1000),
        ("publish_64B_v5", publish(64), V5, 1000),
        ("publish_16KiB_v311", publish(16 * 1024), V4, 32),
        ("connect_v5_props", connect_v5(), V5, 200),
        ("subscribe_10_filters_v5", subscribe_10(), V5, 200),
    ]
}

fn decoder_for(packet: &Packet, version: ProtocolVersion) -> Decoder {
    match packet {
        Packet::Connect(_) => Decoder::new(1 << 24),
        _ => Decoder::with_version(version, 1 << 24),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, packet, version, batch) in cases() {
        let mut one = BytesMut::new();
        packet.encode(version, &mut one).expect("encodes");
        let stream: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * batch)
            .collect();
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(format!("{name}/x{batch}"), |b| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    // CONNECT is a connection's first packet: one decoder per packet.
                    let mut decoder = decoder_for(&packet, version);
                    while let Some(p) = decoder.decode(&mut buf).expect("valid") {
                        black_box(&p);
                        if matches!(p, Packet::Connect(_)) {
                            decoder = decoder_for(&packet, version);
                        }
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, packet, version, _) in cases() {
        let len = packet.encoded_len(version).expect("has a size");
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = BytesMut::with_capacity(len);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                black_box(&packet)
                    .encode(version, &mut buf)
                    .expect("encodes");
                black_box(&buf);
            });
        });
        group.bench_function(format!("{name}/encoded_len"), |b| {
            b.iter(|| black_box(&packet).encoded_len(version));
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
