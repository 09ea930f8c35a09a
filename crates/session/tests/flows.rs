//! The session's flows, driven as a client would drive them: each step asserts the exact
//! packets, events and changes it produces. Every packet crosses the codec both ways, so
//! what the session emits is valid on the wire.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shoal_codec::*;
use shoal_session::*;

fn s(text: &str) -> MqttString {
    MqttString::try_from(text).expect("valid")
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// A session with a client attached, and a clock to step.
struct Client {
    session: Session,
    version: ProtocolVersion,
    now: Timestamp,
}

impl Client {
    fn connect(version: ProtocolVersion, tweak: impl FnOnce(&mut Connect)) -> Self {
        Self::connect_with(SessionConfig::default(), version, tweak)
    }

    fn connect_with(
        config: SessionConfig,
        version: ProtocolVersion,
        tweak: impl FnOnce(&mut Connect),
    ) -> Self {
        let session = Session::new(s("c1"), Arc::new(config));
        let mut client = Self {
            session,
            version,
            now: Timestamp(1_000_000),
        };
        client.attach(tweak);
        client
    }

    fn attach(&mut self, tweak: impl FnOnce(&mut Connect)) {
        let mut connect = Connect::new(self.version, s("c1"));
        tweak(&mut connect);
        let connect = roundtrip_connect(connect);
        let present = self.session.record().subscriptions.len() + self.session.queued() > 0;
        self.session.attach(
            self.now,
            &connect,
            AttachOptions {
                session_present: present,
                ..Default::default()
            },
        );
    }

    fn send(&mut self, packet: Packet) {
        let packet = self.roundtrip(packet);
        self.session.handle_packet(self.now, packet);
    }

    fn out(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(packet) = self.session.poll_transmit(self.now) {
            out.push(self.roundtrip(packet));
            assert!(out.len() < 10_000, "poll_transmit does not end");
        }
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    fn changes(&mut self) -> Vec<Change> {
        std::iter::from_fn(|| self.session.poll_change()).collect()
    }

    fn roundtrip(&self, packet: Packet) -> Packet {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf).expect("encodes");
        Decoder::with_version(self.version, u32::MAX)
            .decode(&mut buf)
            .expect("decodes")
            .expect("whole")
    }

    fn deliver(&mut self, topic: &str, qos: QoS, granted: QoS) -> Delivery {
        let message = message(topic, qos, self.now);
        self.session
            .deliver(self.now, message, granted, false, Vec::new())
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }
}

fn roundtrip_connect(connect: Connect) -> Connect {
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V5, &mut buf)
        .ok();
    match Decoder::new(u32::MAX).decode(&mut buf) {
        Ok(Some(Packet::Connect(c))) => *c,
        other => panic!("CONNECT does not round trip: {other:?}"),
    }
}

fn message(topic: &str, qos: QoS, now: Timestamp) -> Arc<Message> {
    Arc::new(Message {
        topic: s(topic),
        payload: Bytes::from_static(b"hello"),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        received_at: now,
    })
}

fn publish(topic: &str, qos_pid: QosPid) -> Packet {
    let mut publish = Publish::new(s(topic), Bytes::from_static(b"hello"));
    publish.qos_pid = qos_pid;
    Packet::Publish(publish)
}

fn published(packets: &[Packet]) -> Vec<(String, QoS, Option<u16>, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                p.topic.to_string(),
                p.qos(),
                p.qos_pid.packet_id().map(PacketId::get),
                p.dup,
            )),
            _ => None,
        })
        .collect()
}

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

#[test]
fn connack_states_the_servers_limits() {
    let config = SessionConfig {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..Default::default()
    };
    let mut client = Client::connect_with(config, V5, |c| {
        c.properties.session_expiry_interval = Some(u32::MAX - 1)
    });
    let out = client.out();
    let [Packet::ConnAck(ack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, NonZeroU16::new(1024));
    assert_eq!(p.maximum_packet_size, NonZeroU32::new(1 << 20));
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.retain_available, Some(false));
    // The requested expiry exceeded the server's maximum: CONNACK says what applies.
    assert_eq!(p.session_expiry_interval, Some(7 * 24 * 3600));
}

#[test]
fn qos0_publish_is_dispatched_without_acknowledgement() {
    let mut client = Client::connect(V4, |_| {});
    client.out();
    client.send(publish("a/b", QosPid::AtMostOnce));
    let events = client.events();
    let [
        Event::Publish {
            message,
            packet_id: None,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(message.topic, "a/b");
    assert!(client.out().is_empty());
}

#[test]
fn qos1_publish_is_acknowledged_only_when_the_broker_is_done() {
    let mut client = Client::connect(V4, |_| {});
    client.out();
    client.send(publish("a/b", QosPid::AtLeastOnce(pid(7))));
    assert!(
        matches!(client.events().as_slice(), [Event::Publish { packet_id: Some(id), .. }] if *id == pid(7))
    );
    assert!(
        client.out().is_empty(),
        "no PUBACK before the message is durable"
    );
    // A resend while the broker works is not dispatched twice.
    client.send(publish("a/b", QosPid::AtLeastOnce(pid(7))));
    assert!(client.events().is_empty());
    client
        .session
        .handle_publish_done(pid(7), PubAckReasonCode::Success);
    assert_eq!(client.out(), vec![Packet::PubAck(PubAck::new(pid(7)))]);
}

#[test]
fn qos2_publish_is_delivered_exactly_once() {
    let mut client = Client::connect(V5, |c| c.properties.session_expiry_interval = Some(60));
    client.out();
    client.changes();
    client.send(publish("a/b", QosPid::ExactlyOnce(pid(3))));
    assert_eq!(client.events().len(), 1);
    // The receipt is held; the broker writes it with the message's queued copies.
    assert_eq!(client.session.incoming_qos2().collect::<Vec<_>>(), [pid(3)]);
    assert!(client.changes().is_empty());
    client
        .session
        .handle_publish_done(pid(3), PubAckReasonCode::Success);
    assert_eq!(client.out(), vec![Packet::PubRec(PubRec::new(pid(3)))]);
    // The PUBREC was lost and the client resends with DUP: PUBREC again, no second delivery.
    let mut again = Publish::new(s("a/b"), Bytes::from_static(b"hello"));
    again.qos_pid = QosPid::ExactlyOnce(pid(3));
    again.dup = true;
    client.send(Packet::Publish(again));
    assert!(client.events().is_empty());
    assert_eq!(client.out(), vec![Packet::PubRec(PubRec::new(pid(3)))]);
    client.send(Packet::PubRel(PubRel::new(pid(3))));
    assert_eq!(client.out(), vec![Packet::PubComp(PubComp::new(pid(3)))]);
    assert_eq!(client.session.incoming_qos2().count(), 0);
    // Its end is logged, so that the store forgets the receipt.
    assert_eq!(
        client.changes(),
        vec![Change::Released { packet_id: pid(3) }]
    );
    // An unknown PUBREL gets PUBCOMP with Packet Identifier not found.
    client.send(Packet::PubRel(PubRel::new(pid(9))));
    let mut comp = PubComp::new(pid(9));
    comp.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
    assert_eq!(client.out(), vec![Packet::PubComp(comp)]);
    // After the flow, the identifier is free: the same id is a new message.
    client.send(publish("a/b", QosPid::ExactlyOnce(pid(3))));
    assert_eq!(client.events().len(), 1);
}

#[test]
fn outbound_qos1_respects_the_clients_receive_maximum() {
    let mut client = Client::connect(V5, |c| c.properties.receive_maximum = NonZeroU16::new(2));
    client.out();
    for _ in 0..5 {
        assert_eq!(
            client.deliver("t", QoS::AtLeastOnce, QoS::AtLeastOnce),
            Delivery::Queued
        );
    }
    let out = client.out();
    assert_eq!(
        published(&out),
        vec![
            ("t".into(), QoS::AtLeastOnce, Some(1), false),
            ("t".into(), QoS::AtLeastOnce, Some(2), false)
        ]
    );
    client.send(Packet::PubAck(PubAck::new(pid(1))));
    assert_eq!(
        published(&client.out()).len(),
        1,
        "one slot freed, one more sent"
    );
    assert_eq!(client.session.queued(), 4);
}

#[test]
fn outbound_qos2_completes_with_pubrec_pubrel_pubcomp() {
    let mut client = Client::connect(V4, |_| {});
    client.out();
    client.deliver("t", QoS::ExactlyOnce, QoS::ExactlyOnce);
    assert_eq!(
        published(&client.out()),
        vec![("t".into(), QoS::ExactlyOnce, Some(1), false)]
    );
    client.send(Packet::PubRec(PubRec::new(pid(1))));
    assert_eq!(client.out(), vec![Packet::PubRel(PubRel::new(pid(1)))]);
    client.send(Packet::PubComp(PubComp::new(pid(1))));
    assert!(client.out().is_empty());
    assert_eq!(client.session.queued(), 0);
}

#[test]
fn messages_are_downgraded_to_the_granted_qos() {
    let mut client = Client::connect(V4, |_| {});
    client.out();
    client.deliver("t", QoS::ExactlyOnce, QoS::AtLeastOnce);
    client.deliver("t", QoS::AtMostOnce, QoS::ExactlyOnce);
    let out = published(&client.out());
    assert_eq!(out[0].1, QoS::AtLeastOnce);
    assert_eq!(out[1].1, QoS::AtMostOnce);
}

#[test]
fn inflight_messages_are_resent_in_order_with_dup_after_reconnect() {
    let mut client = Client::connect(V4, |c| c.clean_start = false);
    client.out();
    client.deliver("a", QoS::AtLeastOnce, QoS::AtLeastOnce);
    client.deliver("b", QoS::ExactlyOnce, QoS::ExactlyOnce);
    client.deliver("c", QoS::ExactlyOnce, QoS::ExactlyOnce);
    assert_eq!(published(&client.out()).len(), 3);
    client.send(Packet::PubRec(PubRec::new(pid(2))));
    assert_eq!(client.out(), vec![Packet::PubRel(PubRel::new(pid(2)))]);
    let close = CloseReason {
        reason: DisconnectReasonCode::UnspecifiedError,
        publish_will: true,
        by: ClosedBy::Network,
    };
    client.session.detach(client.now, close);
    client.deliver("d", QoS::AtLeastOnce, QoS::AtLeastOnce);
    client.attach(|c| c.clean_start = false);
    let out = client.out();
    assert!(matches!(&out[0], Packet::ConnAck(ack) if ack.session_present));
    // a and c again with DUP and their identifiers, the PUBREL of b, in the original
    // order, then the message queued while offline.
    assert_eq!(
        published(&out[1..2]),
        vec![("a".into(), QoS::AtLeastOnce, Some(1), true)]
    );
    assert_eq!(out[2], Packet::PubRel(PubRel::new(pid(2))));
    assert_eq!(
        published(&out[3..]),
        vec![
            ("c".into(), QoS::ExactlyOnce, Some(3), true),
            ("d".into(), QoS::AtLeastOnce, Some(4), false)
        ]
    );
}

#[test]
fn retain_queued_drops_refused_messages_in_flight_too_and_frees_their_identifiers() {
    let mut client = Client::connect(V5, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
    });
    client.out();
    client.deliver("secret/a", QoS::AtLeastOnce, QoS::AtLeastOnce);
    client.deliver("open/b", QoS::ExactlyOnce, QoS::ExactlyOnce);
    client.deliver("secret/c", QoS::ExactlyOnce, QoS::ExactlyOnce);
    assert_eq!(published(&client.out()).len(), 3);
    // c has its PUBREC: released, waiting for PUBCOMP.
    client.send(Packet::PubRec(PubRec::new(pid(3))));
    client.out();
    client.deliver("secret/d", QoS::AtLeastOnce, QoS::AtLeastOnce);
    let close = CloseReason {
        reason: DisconnectReasonCode::UnspecifiedError,
        publish_will: true,
        by: ClosedBy::Network,
    };
    client.session.detach(client.now, close);
    client.changes();
    let dropped = client
        .session
        .retain_queued(|m| !m.topic.starts_with("secret/"));
    assert_eq!(dropped, 3);
    assert_eq!(client.session.queued(), 1);
    let mut removed: Vec<u64> = client
        .changes()
        .into_iter()
        .filter_map(|c| match c {
            Change::Removed { seq } => Some(seq),
            _ => None,
        })
        .collect();
    removed.sort_unstable();
    assert_eq!(removed, vec![0, 2, 3]);
    // Only b is resent; a PUBACK for a's identifier completes nothing.
    client.attach(|c| c.clean_start = false);
    let out = client.out();
    assert_eq!(
        published(&out[1..]),
        vec![("open/b".into(), QoS::ExactlyOnce, Some(2), true)]
    );
    assert_eq!(out.len(), 2, "{out:?}");
    client.send(Packet::PubAck(PubAck::new(pid(1))));
    assert_eq!(client.session.queued(), 1);
}

#[test]
fn expired_messages_are_dropped_and_the_rest_carry_their_remaining_time() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    let mut m = (*message("t", QoS::AtLeastOnce, client.now)).clone();
    m.expires_at = Some(client.now.plus_secs(10));
    client.session.deliver(
        client.now,
        Arc::new(m.clone()),
        QoS::AtLeastOnce,
        false,
        vec![],
    );
    m.expires_at = Some(client.now.plus_secs(2));
    client
        .session
        .deliver(client.now, Arc::new(m), QoS::AtMostOnce, false, vec![]);
    client.advance(Duration::from_secs(3));
    let out = client.out();
    assert_eq!(out.len(), 1);
    let Packet::Publish(p) = &out[0] else {
        panic!()
    };
    assert_eq!(p.properties.message_expiry_interval, Some(7));
    assert_eq!(client.session.take_drops().expired, 1);
}

#[test]
fn topic_aliases_from_the_client_are_resolved_and_checked() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    let mut p = Publish::new(s("long/topic"), Bytes::new());
    p.properties.topic_alias = NonZeroU16::new(3);
    client.send(Packet::Publish(p.clone()));
    p.topic = MqttString::empty();
    client.send(Packet::Publish(p.clone()));
    let events = client.events();
    assert_eq!(events.len(), 2);
    for event in events {
        let Event::Publish { message, .. } = event else {
            panic!()
        };
        assert_eq!(message.topic, "long/topic");
        assert_eq!(message.properties.topic_alias, None);
    }
    // An alias that was never set is a protocol error.
    p.properties.topic_alias = NonZeroU16::new(4);
    client.send(Packet::Publish(p.clone()));
    assert!(
        matches!(client.events().as_slice(), [Event::Close(c)] if c.reason == DisconnectReasonCode::ProtocolError)
    );
    let out = client.out();
    let [Packet::Disconnect(d)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError);
    assert!(
        d.properties
            .reason_string
            .as_ref()
            .expect("a Reason String")
            .contains("never set")
    );
}

#[test]
fn an_alias_above_the_maximum_closes_with_topic_alias_invalid() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    let mut p = Publish::new(s("t"), Bytes::new());
    p.properties.topic_alias = NonZeroU16::new(65);
    client.send(Packet::Publish(p));
    assert!(
        matches!(client.events().as_slice(), [Event::Close(c)] if c.reason == DisconnectReasonCode::TopicAliasInvalid && c.publish_will)
    );
}

#[test]
fn topic_aliases_are_used_towards_a_client_that_allows_them() {
    let mut client = Client::connect(V5, |c| c.properties.topic_alias_maximum = Some(1));
    client.out();
    client.deliver("x/y", QoS::AtMostOnce, QoS::AtMostOnce);
    client.deliver("x/y", QoS::AtMostOnce, QoS::AtMostOnce);
    client.deliver("other", QoS::AtMostOnce, QoS::AtMostOnce);
    let out = client.out();
    let topics: Vec<_> = out
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (
                p.topic.to_string(),
                p.properties.topic_alias.map(NonZeroU16::get),
            ),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        topics,
        vec![
            ("x/y".into(), Some(1)),
            ("".into(), Some(1)),
            ("other".into(), None)
        ]
    );
}

#[test]
fn a_message_too_large_for_the_client_is_dropped_for_it() {
    let mut client = Client::connect(V5, |c| {
        c.properties.maximum_packet_size = NonZeroU32::new(20)
    });
    client.out();
    let mut big = (*message("t", QoS::AtLeastOnce, client.now)).clone();
    big.payload = Bytes::from(vec![0; 100]);
    client
        .session
        .deliver(client.now, Arc::new(big), QoS::AtLeastOnce, false, vec![]);
    client.deliver("t", QoS::AtLeastOnce, QoS::AtLeastOnce);
    assert_eq!(
        published(&client.out()),
        vec![("t".into(), QoS::AtLeastOnce, Some(1), false)]
    );
    assert_eq!(client.session.take_drops().too_large, 1);
}

#[test]
fn silence_past_one_and_a_half_keep_alives_closes_with_the_will() {
    let mut client = Client::connect(V5, |c| c.keep_alive = 10);
    client.out();
    assert_eq!(
        client.session.poll_timeout(),
        Some(client.now + Duration::from_secs(15))
    );
    client.advance(Duration::from_secs(14));
    client.send(Packet::PingReq);
    assert_eq!(client.out(), vec![Packet::PingResp]);
    client.advance(Duration::from_secs(14));
    client.session.handle_timeout(client.now);
    assert!(
        client.events().is_empty(),
        "the PINGREQ restarted the timer"
    );
    client.advance(Duration::from_secs(2));
    client.session.handle_timeout(client.now);
    assert!(
        matches!(client.events().as_slice(), [Event::Close(c)] if c.reason == DisconnectReasonCode::KeepAliveTimeout && c.publish_will)
    );
}

#[test]
fn a_full_queue_drops_and_counts() {
    let config = SessionConfig {
        max_queued_messages: 3,
        ..Default::default()
    };
    let mut client = Client::connect_with(config, V4, |_| {});
    client.out();
    let results: Vec<_> = (0..5)
        .map(|_| client.deliver("t", QoS::AtLeastOnce, QoS::AtLeastOnce))
        .collect();
    assert_eq!(
        results,
        vec![
            Delivery::Queued,
            Delivery::Queued,
            Delivery::Queued,
            Delivery::QueueFull,
            Delivery::QueueFull
        ]
    );
    assert_eq!(client.session.take_drops().queue_full, 2);
    assert_eq!(client.session.take_drops().queue_full, 0, "taken once");
}

#[test]
fn persistent_sessions_log_queue_changes_and_clean_ones_do_not() {
    let mut durable = Client::connect(V5, |c| c.properties.session_expiry_interval = Some(300));
    durable.out();
    assert!(
        matches!(durable.changes().as_slice(), [Change::Record(r)] if r.expiry_interval == 300)
    );
    durable.deliver("t", QoS::AtLeastOnce, QoS::AtLeastOnce);
    durable.deliver("t", QoS::AtMostOnce, QoS::AtMostOnce);
    durable.out();
    durable.send(Packet::PubAck(PubAck::new(pid(1))));
    let changes = durable.changes();
    assert!(
        matches!(
            changes.as_slice(),
            [
                Change::Enqueued { seq: 0, .. },
                Change::State {
                    seq: 0,
                    state: OutboundState::Sent(_)
                },
                Change::Removed { seq: 0 },
            ]
        ),
        "{changes:?}"
    );
    let mut clean = Client::connect(V5, |_| {});
    clean.out();
    clean.deliver("t", QoS::AtLeastOnce, QoS::AtLeastOnce);
    clean.out();
    assert!(clean.changes().is_empty());
}

#[test]
fn a_session_reconnecting_with_expiry_zero_leaves_the_store() {
    let mut client = Client::connect(V5, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
    });
    client.out();
    client.changes();
    client.session.detach(
        client.now,
        CloseReason {
            reason: DisconnectReasonCode::NormalDisconnection,
            publish_will: false,
            by: ClosedBy::Client,
        },
    );
    client.changes();
    client.attach(|c| c.clean_start = false);
    assert_eq!(client.changes(), vec![Change::Discarded]);
}

#[test]
fn disconnect_cannot_give_expiry_to_a_session_that_had_none() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    client.send(Packet::Disconnect(d));
    assert!(
        matches!(client.events().as_slice(), [Event::Close(c)] if c.reason == DisconnectReasonCode::ProtocolError)
    );
}

#[test]
fn disconnect_with_will_message_asks_for_the_will_and_normal_does_not() {
    for (reason, will) in [
        (DisconnectReasonCode::DisconnectWithWillMessage, true),
        (DisconnectReasonCode::NormalDisconnection, false),
    ] {
        let mut client = Client::connect(V5, |_| {});
        client.out();
        client.send(Packet::Disconnect(Disconnect::new(reason)));
        assert!(
            matches!(client.events().as_slice(), [Event::Close(c)] if c.publish_will == will && c.by == ClosedBy::Client)
        );
    }
}

#[test]
fn subscribe_refuses_bad_filters_itself_and_asks_the_broker_about_the_rest() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    let sub = Subscribe {
        packet_id: pid(5),
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(9),
            ..Default::default()
        },
        filters: vec![
            (s("a/#/b"), SubscriptionOptions::with_qos(QoS::AtLeastOnce)),
            (s("a/+"), SubscriptionOptions::with_qos(QoS::ExactlyOnce)),
            (
                s("$share/g/x"),
                SubscriptionOptions::with_qos(QoS::AtMostOnce),
            ),
        ],
    };
    client.send(Packet::Subscribe(sub));
    let events = client.events();
    let [
        Event::Subscribe {
            packet_id,
            requests,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(*packet_id, pid(5));
    assert!(requests[0].is_none());
    assert_eq!(
        requests[1]
            .as_ref()
            .map(|r| (r.filter.as_str(), r.identifier)),
        Some(("a/+", NonZeroU32::new(9)))
    );
    client.session.handle_subscribe_done(
        pid(5),
        vec![
            Err(SubAckReasonCode::UnspecifiedError),
            Ok(QoS::AtLeastOnce),
            Err(SubAckReasonCode::NotAuthorized),
        ],
    );
    let out = client.out();
    let [Packet::SubAck(ack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        ack.reason_codes,
        vec![
            SubAckReasonCode::TopicFilterInvalid,
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::NotAuthorized
        ]
    );
    let subs = client.session.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].filter.as_str(), subs[0].options.qos),
        ("a/+", QoS::AtLeastOnce)
    );
    // Subscribing again to the same filter replaces it.
    client.send(Packet::Subscribe(Subscribe {
        packet_id: pid(6),
        properties: SubscribeProperties::default(),
        filters: vec![(s("a/+"), SubscriptionOptions::with_qos(QoS::AtMostOnce))],
    }));
    client.events();
    client
        .session
        .handle_subscribe_done(pid(6), vec![Ok(QoS::AtMostOnce)]);
    assert_eq!(client.session.subscriptions().len(), 1);
    assert_eq!(
        client.session.subscriptions()[0].options.qos,
        QoS::AtMostOnce
    );
}

#[test]
fn unsubscribe_answers_one_code_per_filter() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    client.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![(s("a"), SubscriptionOptions::default())],
    }));
    client.events();
    client
        .session
        .handle_subscribe_done(pid(1), vec![Ok(QoS::AtMostOnce)]);
    client.out();
    client.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        properties: UnsubscribeProperties::default(),
        filters: vec![s("a"), s("b"), s("x/#/y")],
    }));
    assert_eq!(
        client.events(),
        vec![Event::Unsubscribed {
            filters: vec![s("a")]
        }]
    );
    let out = client.out();
    let [Packet::UnsubAck(ack)] = out.as_slice() else {
        panic!()
    };
    assert_eq!(
        ack.reason_codes,
        vec![
            UnsubAckReasonCode::Success,
            UnsubAckReasonCode::NoSubscriptionExisted,
            UnsubAckReasonCode::TopicFilterInvalid
        ]
    );
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    let mut client = Client::connect(V4, |_| {});
    client.out();
    client.send(Packet::Connect(Box::new(Connect::new(V4, s("c1")))));
    assert!(
        matches!(client.events().as_slice(), [Event::Close(c)] if c.reason == DisconnectReasonCode::ProtocolError)
    );
    assert!(client.out().is_empty(), "MQTT 3.1.1 gets no DISCONNECT");
}

#[test]
fn a_restored_session_resumes_its_queue_and_identifiers() {
    let now = Timestamp(5_000);
    let record = SessionRecord {
        client_id: s("c1"),
        expiry_interval: 600,
        subscriptions: vec![],
        will: None,
        disconnected_at: Some(now),
        incoming_qos2: vec![pid(4)],
    };
    let queued = |state| OutboundMessage {
        message: message("t", QoS::ExactlyOnce, now),
        qos: QoS::ExactlyOnce,
        retain: false,
        subscription_ids: vec![],
        state,
    };
    let queue = vec![
        (7, queued(OutboundState::Released(pid(9)))),
        (8, queued(OutboundState::Queued)),
    ];
    let mut client = Client {
        session: Session::restore(record, queue, Arc::new(SessionConfig::default())),
        version: V4,
        now,
    };
    client.attach(|c| c.clean_start = false);
    let out = client.out();
    assert_eq!(out[1], Packet::PubRel(PubRel::new(pid(9))));
    assert_eq!(
        published(&out[2..]),
        vec![("t".into(), QoS::ExactlyOnce, Some(10), false)]
    );
    // The QoS 2 receipt survived: a resend of id 4 is not delivered again.
    client.send(publish("t", QosPid::ExactlyOnce(pid(4))));
    assert!(client.events().is_empty());
}

#[test]
fn more_unacknowledged_publications_than_our_receive_maximum_close_with_0x93() {
    let config = SessionConfig {
        receive_maximum: NonZeroU16::new(2).expect("non-zero"),
        ..Default::default()
    };
    let mut client = Client::connect_with(config, V5, |_| {});
    client.out();
    client.send(publish("t", QosPid::AtLeastOnce(pid(1))));
    client.send(publish("t", QosPid::AtLeastOnce(pid(2))));
    assert_eq!(client.events().len(), 2, "two in flight are allowed");
    client.send(publish("t", QosPid::AtLeastOnce(pid(3))));
    assert!(
        matches!(client.events().as_slice(), [Event::Close(c)] if c.reason == DisconnectReasonCode::ReceiveMaximumExceeded)
    );
}

#[test]
fn a_payload_that_is_not_the_utf8_it_claims_is_refused_with_0x99() {
    let mut client = Client::connect(V5, |_| {});
    client.out();
    let mut p = Publish::new(s("t"), Bytes::from_static(&[0xFF, 0xFE]));
    p.qos_pid = QosPid::AtLeastOnce(pid(4));
    p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    client.send(Packet::Publish(p));
    assert!(client.events().is_empty(), "not dispatched");
    let mut ack = PubAck::new(pid(4));
    ack.reason_code = PubAckReasonCode::PayloadFormatInvalid;
    assert_eq!(client.out(), vec![Packet::PubAck(ack)]);
}
