//! The broker's protocol behaviour over real sockets, seen through the exact packets it
//! sends. One in-process node per test, data in a temp folder.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use shoal_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V3: ProtocolVersion = ProtocolVersion::V3_1;

#[tokio::test]
async fn connack_states_the_limits_and_assigns_a_client_id() {
    let node = TestNode::start().await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert!(!ack.session_present);
    let p = &ack.properties;
    let assigned = p
        .assigned_client_identifier
        .as_ref()
        .expect("an identifier is assigned");
    assert!(!assigned.is_empty());
    assert_eq!(p.receive_maximum, NonZeroU16::new(1024));
    assert_eq!(p.maximum_packet_size, NonZeroU32::new(1 << 20));
    assert_eq!(p.topic_alias_maximum, Some(64));
}

#[tokio::test]
async fn client_identifier_rules_per_version() {
    let node = TestNode::start().await;
    // 3.1.1: an empty identifier needs a clean session [MQTT-3.1.3-8].
    let (_c, ack) = Raw::connect(node.addr(), V4, "", |c| c.clean_start = false).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::ClientIdentifierNotValid);
    // MQTT 5 refusals say why.
    let (_c, ack) = Raw::connect(node.addr(), V5, "c", |c| {
        c.properties.authentication_method = Some(s("X"))
    })
    .await;
    assert!(
        ack.properties
            .reason_string
            .expect("a Reason String")
            .contains("§4.12")
    );
    let (_c, ack) = Raw::connect(node.addr(), V4, "", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // 3.1: 1 to 23 characters.
    let (_c, ack) = Raw::connect(node.addr(), V3, "this-client-id-is-too-long", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::ClientIdentifierNotValid);
    let (_c, ack) = Raw::connect(node.addr(), V3, "ok", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn an_unsupported_protocol_level_gets_return_code_1() {
    let node = TestNode::start().await;
    let mut raw = Raw::open(node.addr(), V4).await;
    // "MQTT" level 6.
    raw.send_bytes(&[
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ])
    .await;
    assert_eq!(
        raw.recv().await,
        Some(Packet::ConnAck(Box::new(ConnAck::new(
            ConnectReasonCode::UnsupportedProtocolVersion,
            false
        ))))
    );
    assert!(raw.closed().await);
}

#[tokio::test]
async fn an_authentication_method_the_server_lacks_gets_0x8c() {
    let node = TestNode::start().await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "c", |c| {
        c.properties.authentication_method = Some(s("SCRAM-SHA-1"))
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadAuthenticationMethod);
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over() {
    let node = TestNode::start().await;
    let (mut first, _) = Raw::connect(node.addr(), V5, "same", |c| {
        c.properties.session_expiry_interval = Some(60)
    })
    .await;
    first.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
    let (mut second, ack) = Raw::connect(node.addr(), V5, "same", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    })
    .await;
    assert!(ack.session_present);
    assert_eq!(
        first.recv().await,
        Some(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::SessionTakenOver
        )))
    );
    assert!(first.closed().await);
    // The subscription came along.
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher
        .publish("t", b"x", QosPid::AtMostOnce, false)
        .await;
    assert_eq!(
        second.next_publish().await.payload,
        Bytes::from_static(b"x")
    );
}

#[tokio::test]
async fn qos_1_and_2_flow_end_to_end_with_downgrade() {
    let node = TestNode::start().await;
    let (mut sub, _) = Raw::connect(node.addr(), V4, "sub", |_| {}).await;
    let ack = sub
        .subscribe(1, &[("a/+", QoS::ExactlyOnce), ("b/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        ack.reason_codes,
        vec![SubAckReasonCode::GrantedQos2, SubAckReasonCode::GrantedQos1]
    );
    let (mut publisher, _) = Raw::connect(node.addr(), V4, "pub", |_| {}).await;
    publisher
        .publish("a/x", b"two", QosPid::ExactlyOnce(pid(5)), false)
        .await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PubRec(PubRec::new(pid(5))))
    );
    publisher.send(Packet::PubRel(PubRel::new(pid(5)))).await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PubComp(PubComp::new(pid(5))))
    );
    let got = sub.next_publish().await;
    assert_eq!((got.topic.as_str(), got.qos()), ("a/x", QoS::ExactlyOnce));
    let id = got.qos_pid.packet_id().expect("QoS 2 has an id");
    sub.send(Packet::PubRec(PubRec::new(id))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(PubRel::new(id))));
    sub.send(Packet::PubComp(PubComp::new(id))).await;
    // QoS 2 published, QoS 1 granted: delivered at QoS 1.
    publisher
        .publish("b/c/d", b"one", QosPid::ExactlyOnce(pid(6)), false)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    let got = sub.next_publish().await;
    assert_eq!((got.topic.as_str(), got.qos()), ("b/c/d", QoS::AtLeastOnce));
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_every_identifier() {
    let node = TestNode::start().await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe_with(
        1,
        vec![("a/#", SubscriptionOptions::with_qos(QoS::AtMostOnce))],
        Some(7),
    )
    .await;
    sub.subscribe_with(
        2,
        vec![("a/+", SubscriptionOptions::with_qos(QoS::AtLeastOnce))],
        Some(9),
    )
    .await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher
        .publish("a/b", b"x", QosPid::AtLeastOnce(pid(1)), false)
        .await;
    let got = sub.next_publish().await;
    assert_eq!(
        got.qos(),
        QoS::AtLeastOnce,
        "the highest QoS of the matches"
    );
    let ids: Vec<u32> = got
        .properties
        .subscription_identifiers
        .iter()
        .map(|i| i.get())
        .collect();
    assert_eq!(ids, vec![7, 9]);
    assert!(
        sub.silent_for(Duration::from_millis(200)).await,
        "delivered once"
    );
}

#[tokio::test]
async fn no_local_and_retain_as_published() {
    let node = TestNode::start().await;
    let (mut me, _) = Raw::connect(node.addr(), V5, "me", |_| {}).await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::with_qos(QoS::AtMostOnce)
    };
    me.subscribe_with(1, vec![("nl", no_local)], None).await;
    let rap = SubscriptionOptions {
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
        ..Default::default()
    };
    me.subscribe_with(
        2,
        vec![
            ("rap", rap),
            (
                "plain",
                SubscriptionOptions {
                    retain_handling: RetainHandling::DoNotSend,
                    ..Default::default()
                },
            ),
        ],
        None,
    )
    .await;
    me.publish("nl", b"mine", QosPid::AtMostOnce, false).await;
    assert!(
        me.silent_for(Duration::from_millis(200)).await,
        "No Local: not sent back to its publisher"
    );
    let (mut other, _) = Raw::connect(node.addr(), V5, "other", |_| {}).await;
    other.publish("rap", b"r", QosPid::AtMostOnce, true).await;
    assert!(
        me.next_publish().await.retain,
        "Retain As Published keeps RETAIN"
    );
    other.publish("plain", b"r", QosPid::AtMostOnce, true).await;
    assert!(
        !me.next_publish().await.retain,
        "otherwise RETAIN is cleared on forwarding"
    );
}

#[tokio::test]
async fn retained_messages_are_kept_replaced_cleared_and_sent_per_retain_handling() {
    let node = TestNode::start().await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher
        .publish("status/1", b"old", QosPid::AtLeastOnce(pid(1)), true)
        .await;
    publisher.recv().await;
    publisher
        .publish("status/1", b"on", QosPid::AtLeastOnce(pid(2)), true)
        .await;
    publisher.recv().await;
    publisher
        .publish("status/2", b"off", QosPid::AtLeastOnce(pid(3)), true)
        .await;
    publisher.recv().await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    let ack = sub.subscribe(1, &[("status/+", QoS::AtLeastOnce)]).await;
    assert_eq!(ack.reason_codes, vec![SubAckReasonCode::GrantedQos1]);
    let mut got = [sub.next_publish().await, sub.next_publish().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        got.iter()
            .map(|p| (p.topic.as_str(), &p.payload[..], p.retain))
            .collect::<Vec<_>>(),
        vec![
            ("status/1", &b"on"[..], true),
            ("status/2", &b"off"[..], true)
        ]
    );
    // Retain Handling 1: only for a new subscription.
    let again = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..SubscriptionOptions::with_qos(QoS::AtLeastOnce)
    };
    sub.subscribe_with(2, vec![("status/+", again)], None).await;
    assert!(sub.silent_for(Duration::from_millis(200)).await);
    // An empty retained payload clears it.
    publisher
        .publish("status/2", b"", QosPid::AtLeastOnce(pid(4)), true)
        .await;
    publisher.recv().await;
    let _ = sub.next_publish().await;
    let (mut late, _) = Raw::connect(node.addr(), V5, "late", |_| {}).await;
    late.subscribe(1, &[("status/#", QoS::AtMostOnce)]).await;
    assert_eq!(late.next_publish().await.topic, "status/1");
    assert!(
        late.silent_for(Duration::from_millis(200)).await,
        "status/2 was cleared"
    );
    // Retain Handling 2: none at subscribe.
    let (mut none, _) = Raw::connect(node.addr(), V5, "none", |_| {}).await;
    none.subscribe_with(
        1,
        vec![(
            "status/#",
            SubscriptionOptions {
                retain_handling: RetainHandling::DoNotSend,
                ..Default::default()
            },
        )],
        None,
    )
    .await;
    assert!(none.silent_for(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn the_will_is_published_on_abnormal_close_and_not_on_disconnect() {
    let node = TestNode::start().await;
    let (mut watcher, _) = Raw::connect(node.addr(), V4, "watcher", |_| {}).await;
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]).await;
    let will = |topic: &str| LastWill {
        topic: s(topic),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    };
    let (dies, _) = Raw::connect(node.addr(), V4, "dies", |c| {
        c.will = Some(will("wills/dies"))
    })
    .await;
    drop(dies);
    assert_eq!(watcher.next_publish().await.topic, "wills/dies");
    let (mut polite, _) = Raw::connect(node.addr(), V4, "polite", |c| {
        c.will = Some(will("wills/polite"))
    })
    .await;
    polite.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(polite.closed().await);
    // DISCONNECT 0x04 asks for the Will (MQTT 5).
    let (mut asks, _) = Raw::connect(node.addr(), V5, "asks", |c| {
        c.will = Some(will("wills/asks"))
    })
    .await;
    asks.send(Packet::Disconnect(Disconnect::new(
        DisconnectReasonCode::DisconnectWithWillMessage,
    )))
    .await;
    let got = watcher.next_publish().await;
    assert_eq!(
        got.topic, "wills/asks",
        "no Will for the polite client, one for 0x04"
    );
}

#[tokio::test]
async fn keep_alive_timeout_closes_and_publishes_the_will() {
    let node = TestNode::start().await;
    let (mut watcher, _) = Raw::connect(node.addr(), V5, "watcher", |_| {}).await;
    watcher.subscribe(1, &[("w", QoS::AtMostOnce)]).await;
    let (mut silent, _) = Raw::connect(node.addr(), V5, "silent", |c| {
        c.keep_alive = 1;
        c.will = Some(LastWill {
            topic: s("w"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
    })
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        silent.recv().await,
        Some(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::KeepAliveTimeout
        )))
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(3000),
        "closed after {waited:?}"
    );
    assert_eq!(watcher.next_publish().await.topic, "w");
}

#[tokio::test]
async fn a_client_that_keeps_talking_outlives_many_keep_alive_periods() {
    // The node's keep-alive wheel looks at the session at each deadline and, finding that
    // packets came in since, files it again under the new one.
    let node = TestNode::start().await;
    let (mut client, _) = Raw::connect(node.addr(), V5, "pinger", |c| c.keep_alive = 1).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp));
    }
    // Then silence closes it, as keep alive says.
    assert_eq!(
        client.recv_within(Duration::from_secs(3)).await,
        Some(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::KeepAliveTimeout
        )))
    );
}

#[tokio::test]
async fn a_clean_start_takes_the_client_id_over_with_a_new_session() {
    let node = TestNode::start().await;
    let (mut first, _) = Raw::connect(node.addr(), V5, "again", |c| {
        c.properties.session_expiry_interval = Some(60)
    })
    .await;
    first.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
    let (mut second, ack) = Raw::connect(node.addr(), V5, "again", |_| {}).await;
    assert!(!ack.session_present);
    assert_eq!(
        first.recv().await,
        Some(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::SessionTakenOver
        )))
    );
    assert!(first.closed().await);
    // The old subscription went with the old session.
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher
        .publish("t", b"x", QosPid::AtMostOnce, false)
        .await;
    assert!(second.silent_for(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn a_will_delay_is_cancelled_when_the_client_comes_back() {
    let node = TestNode::start().await;
    let (mut watcher, _) = Raw::connect(node.addr(), V5, "watcher", |_| {}).await;
    watcher.subscribe(1, &[("w", QoS::AtMostOnce)]).await;
    let with_delay = |c: &mut Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        c.will = Some(LastWill {
            topic: s("w"),
            payload: Bytes::from_static(b"late"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(1),
                ..Default::default()
            },
        });
    };
    let (c, _) = Raw::connect(node.addr(), V5, "flaky", with_delay).await;
    drop(c);
    let (_back, ack) = Raw::connect(node.addr(), V5, "flaky", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    })
    .await;
    assert!(ack.session_present);
    assert!(
        watcher.silent_for(Duration::from_millis(1800)).await,
        "the delayed Will was cancelled"
    );
    // Without coming back, the Will goes out after its delay.
    let (c, _) = Raw::connect(node.addr(), V5, "gone", with_delay).await;
    drop(c);
    let started = tokio::time::Instant::now();
    assert_eq!(
        watcher.next_publish().await.payload,
        Bytes::from_static(b"late")
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_persistent_session_queues_while_offline() {
    let node = TestNode::start().await;
    let durable = |c: &mut Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
    };
    let (mut sub, _) = Raw::connect(node.addr(), V5, "durable", durable).await;
    sub.subscribe(1, &[("q", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(sub.closed().await);
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    for i in 0..5u8 {
        publisher
            .publish("q", &[i], QosPid::AtLeastOnce(pid(u16::from(i) + 1)), false)
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let (mut sub, ack) = Raw::connect(node.addr(), V5, "durable", durable).await;
    assert!(ack.session_present);
    for i in 0..5u8 {
        let got = sub.next_publish().await;
        assert_eq!(&got.payload[..], &[i], "in order");
        let id = got.qos_pid.packet_id().expect("QoS 1");
        sub.send(Packet::PubAck(PubAck::new(id))).await;
    }
}

#[tokio::test]
async fn a_session_ends_when_its_expiry_interval_passes() {
    let node = TestNode::start().await;
    let lasting = |expiry| {
        move |c: &mut Connect| {
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(expiry);
        }
    };
    for (client, expiry) in [("brief", 1), ("long", 600)] {
        let (mut c, _) = Raw::connect(node.addr(), V5, client, lasting(expiry)).await;
        c.subscribe(1, &[("x", QoS::AtLeastOnce)]).await;
        c.send(Packet::Disconnect(Disconnect::default())).await;
        assert!(c.closed().await);
    }
    // The sweep runs every second: after 2.5 s the 1 s session is gone, the other is not.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "brief", lasting(1)).await;
    assert!(!ack.session_present, "the expired session was removed");
    let (_c, ack) = Raw::connect(node.addr(), V5, "long", lasting(600)).await;
    assert!(ack.session_present);
}

#[tokio::test]
async fn shared_subscriptions_give_each_message_to_one_member() {
    let node = TestNode::start().await;
    let mut members = Vec::new();
    for name in ["m1", "m2"] {
        let (mut m, _) = Raw::connect(node.addr(), V5, name, |_| {}).await;
        m.subscribe(1, &[("$share/g/jobs/+", QoS::AtMostOnce)])
            .await;
        members.push(m);
    }
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    for i in 0..20u8 {
        publisher
            .publish("jobs/x", &[i], QosPid::AtMostOnce, false)
            .await;
    }
    let mut seen = Vec::new();
    let mut per_member = Vec::new();
    for m in &mut members {
        let mut n = 0;
        while let Some(Packet::Publish(p)) = m.recv_within(Duration::from_millis(300)).await {
            seen.push(p.payload[0]);
            n += 1;
        }
        per_member.push(n);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<_>>(),
        "each message exactly once across the group"
    );
    assert!(
        per_member.iter().all(|&n| n > 0),
        "both members got some: {per_member:?}"
    );
}

#[tokio::test]
async fn message_expiry_drops_stale_messages_and_sends_the_remaining_time() {
    let node = TestNode::start().await;
    let durable = |c: &mut Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
    };
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", durable).await;
    sub.subscribe(1, &[("e", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(sub.closed().await);
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    for (payload, expiry) in [(&b"short"[..], 1), (&b"long"[..], 100)] {
        let mut p = Publish::new(s("e"), Bytes::copy_from_slice(payload));
        p.qos_pid = QosPid::AtLeastOnce(pid(expiry as u16));
        p.properties.message_expiry_interval = Some(expiry);
        publisher.send(Packet::Publish(p)).await;
        publisher.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", durable).await;
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"long");
    let left = got
        .properties
        .message_expiry_interval
        .expect("the remaining time is sent");
    assert!((98..=100).contains(&left), "{left}");
    assert!(
        sub.silent_for(Duration::from_millis(200)).await,
        "the expired one was dropped"
    );
}

#[tokio::test]
async fn topic_aliases_from_a_client_are_resolved() {
    let node = TestNode::start().await;
    let (mut sub, _) = Raw::connect(node.addr(), V4, "sub", |_| {}).await;
    sub.subscribe(1, &[("some/long/topic", QoS::AtMostOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    let mut p = Publish::new(s("some/long/topic"), Bytes::from_static(b"1"));
    p.properties.topic_alias = NonZeroU16::new(1);
    publisher.send(Packet::Publish(p.clone())).await;
    p.topic = MqttString::empty();
    p.payload = Bytes::from_static(b"2");
    publisher.send(Packet::Publish(p)).await;
    assert_eq!(sub.next_publish().await.topic, "some/long/topic");
    let second = sub.next_publish().await;
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("some/long/topic", &b"2"[..])
    );
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_a_leading_wildcard() {
    let node = TestNode::start_with(|raw| raw.sys_interval = Some(1)).await;
    let (mut all, _) = Raw::connect(node.addr(), V4, "all", |_| {}).await;
    all.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
    let (mut sys, _) = Raw::connect(node.addr(), V4, "sys", |_| {}).await;
    sys.subscribe(1, &[("$SYS/broker/version", QoS::AtMostOnce)])
        .await;
    let version = sys.next_publish().await;
    assert!(String::from_utf8_lossy(&version.payload).starts_with("shoal "));
    assert!(
        all.silent_for(Duration::from_millis(1500)).await,
        "# does not match $SYS topics"
    );
}

#[tokio::test]
async fn malformed_input_is_answered_and_counted_and_others_are_unaffected() {
    let node = TestNode::start().await;
    let (mut bystander, _) = Raw::connect(node.addr(), V5, "bystander", |_| {}).await;
    bystander.subscribe(1, &[("ok", QoS::AtMostOnce)]).await;
    // PUBLISH before CONNECT: closed.
    let mut early = Raw::open(node.addr(), V4).await;
    early.send_bytes(&[0x30, 0x03, 0x00, 0x01, b'a']).await;
    assert!(early.closed().await);
    // Garbage: closed.
    let mut garbage = Raw::open(node.addr(), V4).await;
    garbage.send_bytes(&[0xFF; 64]).await;
    assert!(garbage.closed().await);
    // An oversize remaining length after CONNECT (MQTT 5): DISCONNECT 0x95.
    let (mut big, _) = Raw::connect(node.addr(), V5, "big", |_| {}).await;
    big.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    // MQTT 5 clients are told why, with the rule broken, in a Reason String.
    let Some(Packet::Disconnect(d)) = big.recv().await else {
        panic!("expected DISCONNECT")
    };
    assert_eq!(d.reason_code, DisconnectReasonCode::PacketTooLarge);
    let why = d.properties.reason_string.expect("a Reason String");
    assert!(
        why.contains("maximum packet size") && why.contains("§3.2.2.3.6"),
        "{why}"
    );
    // A second CONNECT: protocol error.
    let (mut twice, _) = Raw::connect(node.addr(), V5, "twice", |_| {}).await;
    twice
        .send(Packet::Connect(Box::new(Connect::new(V5, s("twice")))))
        .await;
    let Some(Packet::Disconnect(d)) = twice.recv().await else {
        panic!("expected DISCONNECT")
    };
    assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError);
    assert!(
        d.properties
            .reason_string
            .expect("a Reason String")
            .contains("MQTT-3.1.0-2")
    );
    // Reserved flags in 3.1.1: closed without an answer.
    let (mut flags, _) = Raw::connect(node.addr(), V4, "flags", |_| {}).await;
    flags.send_bytes(&[0x41, 0x02, 0x00, 0x01]).await;
    assert!(flags.closed().await);
    // The bystander still works.
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher
        .publish("ok", b"still here", QosPid::AtMostOnce, false)
        .await;
    assert_eq!(&bystander.next_publish().await.payload[..], b"still here");
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_up_others() {
    let node = TestNode::start_with(|raw| raw.max_queued_messages = Some(100)).await;
    let (mut stuck, _) = Raw::connect(node.addr(), V4, "stuck", |_| {}).await;
    stuck.subscribe(1, &[("flood", QoS::AtMostOnce)]).await;
    let (mut reader, _) = Raw::connect(node.addr(), V4, "reader", |_| {}).await;
    reader.subscribe(1, &[("flood", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = Raw::connect(node.addr(), V4, "pub", |_| {}).await;
    // Ping-pong through the broker: each message must reach the reader before the next is
    // sent. 16 MiB in all goes to `stuck`, which reads nothing: far more than its socket
    // buffers and its queue of 100 hold. A broker that waited on `stuck` would stall here.
    let payload = vec![0u8; 16 * 1024];
    for i in 0..1000u32 {
        publisher
            .publish("flood", &payload, QosPid::AtMostOnce, false)
            .await;
        let got = reader.next_publish().await;
        assert_eq!(got.payload.len(), payload.len(), "message {i}");
    }
    drop(stuck);
}

/// A toy challenge-response method for the hook: the client opens with "hello", the server
/// challenges with "challenge", the client must answer "response".
struct Challenge;

struct ChallengeExchange {
    challenged: bool,
}

impl shoal_broker::EnhancedAuth for Challenge {
    fn method(&self) -> &str {
        "test-challenge"
    }

    fn begin(&self, _client_id: &str) -> Box<dyn shoal_broker::AuthExchange> {
        Box::new(ChallengeExchange { challenged: false })
    }
}

impl shoal_broker::AuthExchange for ChallengeExchange {
    fn step(&mut self, data: Option<&[u8]>) -> shoal_broker::AuthStep {
        use shoal_broker::AuthStep;
        match (self.challenged, data) {
            (false, Some(b"hello")) => {
                self.challenged = true;
                AuthStep::Continue(Bytes::from_static(b"challenge"))
            }
            (true, Some(b"response")) => AuthStep::Success(Some(Bytes::from_static(b"welcome"))),
            _ => AuthStep::Fail(ConnectReasonCode::NotAuthorized),
        }
    }
}

fn hooks() -> shoal_broker::Hooks {
    shoal_broker::Hooks {
        enhanced_auth: vec![std::sync::Arc::new(Challenge)],
    }
}

fn auth(reason: AuthReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason_code: reason,
        properties: AuthProperties {
            authentication_method: Some(s("test-challenge")),
            authentication_data: Some(Bytes::from_static(data)),
            ..Default::default()
        },
    })
}

#[tokio::test]
async fn enhanced_authentication_runs_through_the_hook() {
    let node = TestNode::start_hooks(hooks()).await;
    let mut c = Raw::open(node.addr(), V5).await;
    let mut connect = Connect::new(V5, s("authed"));
    connect.properties.authentication_method = Some(s("test-challenge"));
    connect.properties.authentication_data = Some(Bytes::from_static(b"hello"));
    c.send(Packet::Connect(Box::new(connect.clone()))).await;
    let Some(Packet::Auth(challenge)) = c.recv().await else {
        panic!("expected AUTH")
    };
    assert_eq!(
        challenge.reason_code,
        AuthReasonCode::ContinueAuthentication
    );
    assert_eq!(
        challenge.properties.authentication_data.as_deref(),
        Some(&b"challenge"[..])
    );
    c.send(auth(AuthReasonCode::ContinueAuthentication, b"response"))
        .await;
    let Some(Packet::ConnAck(ack)) = c.recv().await else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert_eq!(
        ack.properties.authentication_method,
        Some(s("test-challenge"))
    );
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(&b"welcome"[..])
    );
    // Re-authentication later on the same connection.
    c.send(auth(AuthReasonCode::ReAuthenticate, b"hello")).await;
    let Some(Packet::Auth(again)) = c.recv().await else {
        panic!("expected AUTH")
    };
    assert_eq!(again.reason_code, AuthReasonCode::ContinueAuthentication);
    c.send(auth(AuthReasonCode::ContinueAuthentication, b"response"))
        .await;
    let Some(Packet::Auth(done)) = c.recv().await else {
        panic!("expected AUTH")
    };
    assert_eq!(done.reason_code, AuthReasonCode::Success);
    // A wrong answer is refused with the method's reason.
    let mut wrong = Raw::open(node.addr(), V5).await;
    connect.client_id = s("wrong");
    wrong.send(Packet::Connect(Box::new(connect))).await;
    assert!(matches!(wrong.recv().await, Some(Packet::Auth(_))));
    wrong
        .send(auth(AuthReasonCode::ContinueAuthentication, b"guess"))
        .await;
    let Some(Packet::ConnAck(ack)) = wrong.recv().await else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    assert!(wrong.closed().await);
    // A method no hook handles: 0x8C.
    let (_c, ack) = Raw::connect(node.addr(), V5, "other", |c| {
        c.properties.authentication_method = Some(s("SCRAM-SHA-1"))
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadAuthenticationMethod);
}
