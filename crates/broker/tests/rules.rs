//! MQTT 5 rules about flow control and keep alive, through real sockets: Receive Maximum
//! counts a QoS 2 message until PUBCOMP (§4.9), `max_keep_alive` caps what clients ask,
//! `server_keep_alive` is imposed on MQTT 5 clients only.

mod common;

use std::time::Duration;

use common::*;
use shoal_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

#[tokio::test]
async fn receive_maximum_counts_qos2_until_pubcomp() {
    let node = TestNode::start_with(|raw| raw.receive_maximum = Some(20)).await;
    let (mut client, ack) = Raw::connect(node.addr(), V5, "rm", |_| {}).await;
    assert_eq!(
        ack.properties.receive_maximum,
        std::num::NonZeroU16::new(20)
    );
    // 20 QoS 2 messages acknowledged with PUBREC and never released hold the whole quota.
    for n in 1..=20 {
        client
            .publish("rm/t", b"x", QosPid::ExactlyOnce(pid(n)), false)
            .await;
        assert!(
            matches!(client.recv().await, Some(Packet::PubRec(_))),
            "PUBREC {n}"
        );
    }
    client
        .publish("rm/t", b"x", QosPid::ExactlyOnce(pid(21)), false)
        .await;
    match client.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::ReceiveMaximumExceeded)
        }
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
}

#[tokio::test]
async fn pubcomp_returns_the_quota() {
    let node = TestNode::start_with(|raw| raw.receive_maximum = Some(2)).await;
    let (mut client, _) = Raw::connect(node.addr(), V5, "rm2", |_| {}).await;
    for round in 0..5u16 {
        for n in 1..=2 {
            let id = pid(round * 2 + n);
            client
                .publish("rm/t", b"x", QosPid::ExactlyOnce(id), false)
                .await;
            assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
            client.send(Packet::PubRel(PubRel::new(id))).await;
            assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
        }
    }
}

#[tokio::test]
async fn an_mqtt_3_client_past_the_receive_maximum_is_closed() {
    let node = TestNode::start_with(|raw| raw.receive_maximum = Some(3)).await;
    let (mut client, _) = Raw::connect(node.addr(), V4, "rm3", |_| {}).await;
    for n in 1..=3 {
        client
            .publish("rm/t", b"x", QosPid::ExactlyOnce(pid(n)), false)
            .await;
        assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
    }
    client
        .publish("rm/t", b"x", QosPid::ExactlyOnce(pid(4)), false)
        .await;
    assert!(client.closed().await, "closed past the bound");
}

#[tokio::test]
async fn max_keep_alive_caps_mqtt5_clients_and_refuses_mqtt3_clients_past_it() {
    let node = TestNode::start_with(|raw| raw.max_keep_alive = Some(30)).await;
    for (asked, told) in [(60, Some(30)), (0, Some(30)), (20, None), (30, None)] {
        let (_, ack) = Raw::connect(node.addr(), V5, "ka5", |c| c.keep_alive = asked).await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success);
        assert_eq!(ack.properties.server_keep_alive, told, "asked {asked}");
    }
    for asked in [60, 0] {
        let mut raw = Raw::open(node.addr(), V4).await;
        let ack = raw
            .handshake("ka3", |c| c.keep_alive = asked)
            .await
            .expect("CONNACK");
        assert_eq!(
            ack.reason_code,
            ConnectReasonCode::ClientIdentifierNotValid,
            "asked {asked}: CONNACK return code 2"
        );
    }
    let (_, ack) = Raw::connect(node.addr(), V4, "ka3", |c| c.keep_alive = 30).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn server_keep_alive_binds_mqtt5_clients_only() {
    let node = TestNode::start_with(|raw| raw.server_keep_alive = Some(1)).await;
    let (mut v5, ack) = Raw::connect(node.addr(), V5, "ska5", |c| c.keep_alive = 0).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    // A 3.1.1 client that asked for no keep alive cannot be told otherwise: it may stay
    // silent. The MQTT 5 one is closed after 1.5 s of silence.
    let (mut v3, _) = Raw::connect(node.addr(), V4, "ska3", |c| c.keep_alive = 0).await;
    match v5.recv_within(Duration::from_secs(4)).await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::KeepAliveTimeout)
        }
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    v3.send(Packet::PingReq).await;
    assert!(matches!(v3.recv().await, Some(Packet::PingResp)));
}

/// A retained message with this Message Expiry Interval.
async fn retain_with_expiry(client: &mut Raw, seconds: u32, payload: &[u8], id: u16) {
    let mut p = Publish::new(s("ret/exp"), bytes::Bytes::copy_from_slice(payload));
    p.retain = true;
    p.qos_pid = QosPid::AtLeastOnce(pid(id));
    p.properties.message_expiry_interval = Some(seconds);
    client.send(Packet::Publish(p)).await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
}

#[tokio::test]
async fn a_retained_message_expires_on_its_own_time_not_on_the_one_it_replaced() {
    let node = TestNode::start().await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "retainer", |_| {}).await;
    retain_with_expiry(&mut publisher, 1, b"short", 1).await;
    retain_with_expiry(&mut publisher, 3, b"long", 2).await;
    // Past the first message's expiry: the second is still retained.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let (mut late, _) = Raw::connect(node.addr(), V5, "late", |_| {}).await;
    late.subscribe(1, &[("ret/exp", QoS::AtMostOnce)]).await;
    assert_eq!(&late.next_publish().await.payload[..], b"long");
    // Past its own: gone.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let (mut later, _) = Raw::connect(node.addr(), V5, "later", |_| {}).await;
    later.subscribe(1, &[("ret/exp", QoS::AtMostOnce)]).await;
    assert!(later.silent_for(Duration::from_millis(300)).await);
}
