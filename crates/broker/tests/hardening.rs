//! A node under attack from its own clients, over real sockets: takeovers that must not
//! leak what the ACL denies, `$` topics reserved to the broker, limits on retained messages
//! and on slow packets, password guessing across many connections, and protocol errors
//! that must not be accepted. Floods are bounded in count and time, on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Helpers

/// A CONNECT tweak that logs in as `user` with `password`.
fn login(user: &str, password: &str) -> impl FnOnce(&mut Connect) {
    let user = s(user);
    let password = Bytes::copy_from_slice(password.as_bytes());
    move |c| {
        c.username = Some(user);
        c.password = Some(password);
    }
}

/// Writes `text` as the ACL file `dir/acl`.
fn acl_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("acl");
    std::fs::write(&path, text).expect("ACL file written");
    path
}

/// Publishes at QoS 1 and returns the PUBACK's reason code.
async fn publish_qos1(raw: &mut Raw, id: u16, topic: &str, payload: &[u8], retain: bool) -> u8 {
    raw.publish(topic, payload, QosPid::AtLeastOnce(pid(id)), retain)
        .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => ack.reason_code.into(),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// One request to the admin listener; returns the status code.
async fn admin_status(node: &TestNode, request: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(node.node.admin_addr())
        .await
        .expect("connect admin");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("the admin API answers in time")
        .expect("read the response");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// A session that changes hands is judged again, in-flight messages included

/// alice (client id V, persistent) subscribes to `secret/#` and leaves a retained message
/// and a published one unacknowledged; bob resumes V (clean start 0) and must receive
/// neither. With `restart`, the node is restarted after bob left and alice's client id is
/// resumed without any ACL: what the takeover dropped must be gone from the store too.
async fn takeover_sends_nothing_the_new_user_may_not_read(
    version: ProtocolVersion,
    qos: QoS,
    alice_online: bool,
    restart: bool,
) {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "apw"), ("bob", "bpw")]);
    let acl = acl_file(files.path(), "allow user:alice all secret/#\n");
    let node = TestNode::start_with(|raw| {
        raw.password_file = Some(passwd);
        raw.acl_file = Some(acl);
    })
    .await;
    let persistent = move |c: &mut Connect| {
        c.clean_start = false;
        if c.protocol.is_v5() {
            c.properties.session_expiry_interval = Some(3600);
        }
    };
    let qos_pid = |id| QosPid::from_parts(qos, pid(id));
    // A retained message before alice subscribes, sent to her by her SUBSCRIBE.
    let (mut publisher, _) = Raw::connect(node.addr(), version, "pub", login("alice", "apw")).await;
    publisher
        .publish("secret/r", b"retained", qos_pid(1), true)
        .await;
    assert!(publisher.recv().await.is_some(), "no acknowledgement");
    let (mut alice, ack) = Raw::connect(node.addr(), version, "V", |c| {
        login("alice", "apw")(c);
        persistent(c);
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    alice.subscribe(1, &[("secret/#", qos)]).await;
    publisher
        .publish("secret/data", b"payload", qos_pid(2), false)
        .await;
    // alice receives both and acknowledges neither.
    let mut topics = Vec::new();
    while topics.len() < 2 {
        match alice.recv().await {
            Some(Packet::Publish(p)) => topics.push(p.topic.to_string()),
            Some(_) => {}
            None => panic!("alice received {topics:?} only"),
        }
    }
    topics.sort();
    assert_eq!(topics, ["secret/data", "secret/r"]);
    if !alice_online {
        alice
            .send(Packet::Disconnect(Disconnect::new(
                DisconnectReasonCode::NormalDisconnection,
            )))
            .await;
        assert!(alice.closed().await);
    }
    let (mut bob, ack) = Raw::connect(node.addr(), version, "V", |c| {
        login("bob", "bpw")(c);
        persistent(c);
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert!(ack.session_present, "bob did not resume alice's session");
    if alice_online {
        assert!(alice.closed().await, "alice was not taken over");
    }
    let mut leaked = Vec::new();
    while let Some(packet) = bob.recv_within(QUIET).await {
        if let Packet::Publish(p) = packet {
            leaked.push(p.topic.to_string());
        }
    }
    assert!(leaked.is_empty(), "bob received {leaked:?}");
    // Nor anything published later.
    publisher
        .publish("secret/data", b"later", qos_pid(3), false)
        .await;
    assert!(bob.silent_for(QUIET).await, "bob received a later message");
    if !restart {
        return;
    }
    bob.send(Packet::Disconnect(Disconnect::new(
        DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    assert!(bob.closed().await);
    drop(publisher);
    let node = node.restart().await;
    let (mut again, ack) = Raw::connect(node.addr(), version, "V", persistent).await;
    assert!(ack.session_present);
    assert!(
        again.silent_for(QUIET).await,
        "a dropped message came back from the store"
    );
}

macro_rules! takeover_cases {
    ($($name:ident: $version:expr, $qos:expr, $online:expr, $restart:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            takeover_sends_nothing_the_new_user_may_not_read($version, $qos, $online, $restart)
                .await;
        }
    )*};
}

takeover_cases! {
    takeover_v5_qos1_owner_offline_leaks_nothing: V5, QoS::AtLeastOnce, false, false;
    takeover_v5_qos1_owner_online_leaks_nothing: V5, QoS::AtLeastOnce, true, false;
    takeover_v5_qos2_owner_offline_leaks_nothing_and_the_store_forgets: V5, QoS::ExactlyOnce, false, true;
    takeover_v5_qos2_owner_online_leaks_nothing: V5, QoS::ExactlyOnce, true, false;
    takeover_v311_qos1_owner_offline_leaks_nothing_and_the_store_forgets: V4, QoS::AtLeastOnce, false, true;
    takeover_v311_qos1_owner_online_leaks_nothing: V4, QoS::AtLeastOnce, true, false;
    takeover_v311_qos2_owner_offline_leaks_nothing: V4, QoS::ExactlyOnce, false, false;
    takeover_v311_qos2_owner_online_leaks_nothing: V4, QoS::ExactlyOnce, true, false;
}

#[tokio::test]
async fn with_client_ids_bound_to_usernames_another_user_is_refused() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "apw"), ("bob", "bpw")]);
    let node = TestNode::start_with(|raw| {
        raw.password_file = Some(passwd);
        raw.bind_client_id_to_username = Some(true);
    })
    .await;
    let persistent = |c: &mut Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    };
    let (mut alice, ack) = Raw::connect(node.addr(), V5, "V", |c| {
        login("alice", "apw")(c);
        persistent(c);
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // bob may neither resume alice's session nor start it anew (throwing her off).
    for clean_start in [false, true] {
        let (_bob, ack) = Raw::connect(node.addr(), V5, "V", |c| {
            login("bob", "bpw")(c);
            c.clean_start = clean_start;
        })
        .await;
        assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
        let (_bob, ack) = Raw::connect(node.addr(), V4, "V", |c| {
            login("bob", "bpw")(c);
            c.clean_start = clean_start;
        })
        .await;
        assert_eq!(ack.reason_code.to_v3_return_code(), 5);
    }
    assert!(alice.silent_for(QUIET).await, "alice was disturbed");
    // alice herself resumes it, from another connection.
    let (_again, ack) = Raw::connect(node.addr(), V5, "V", |c| {
        login("alice", "apw")(c);
        persistent(c);
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert!(ack.session_present);
    // Without the option, bob may take it over (the default, as in Mosquitto).
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "apw"), ("bob", "bpw")]);
    let open = TestNode::start_with(|raw| raw.password_file = Some(passwd)).await;
    let (_alice, _) = Raw::connect(open.addr(), V5, "W", login("alice", "apw")).await;
    let (_bob, ack) = Raw::connect(open.addr(), V5, "W", login("bob", "bpw")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

// ---------------------------------------------------------------------------------------
// `$` topics are the broker's

#[tokio::test]
async fn without_an_acl_a_client_publish_to_sys_is_refused_and_reaches_no_one() {
    let node = TestNode::start().await;
    let (mut watcher, _) = Raw::connect(node.addr(), V5, "watcher", |_| {}).await;
    watcher.subscribe(1, &[("$SYS/#", QoS::AtLeastOnce)]).await;
    let (mut v5, _) = Raw::connect(node.addr(), V5, "spoof5", |_| {}).await;
    assert_eq!(
        publish_qos1(&mut v5, 1, "$SYS/broker/uptime", b"0", true).await,
        0x87
    );
    v5.publish("$SYS/broker/x", b"2", QosPid::ExactlyOnce(pid(2)), false)
        .await;
    match v5.recv().await {
        Some(Packet::PubRec(rec)) => assert_eq!(u8::from(rec.reason_code), 0x87),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // MQTT 3.1.1 has no reason codes: dropped and acknowledged, the connection stays.
    let (mut v4, _) = Raw::connect(node.addr(), V4, "spoof4", |_| {}).await;
    assert_eq!(
        publish_qos1(&mut v4, 1, "$SYS/broker/uptime", b"0", true).await,
        0
    );
    assert_eq!(publish_qos1(&mut v4, 2, "ordinary", b"ok", false).await, 0);
    assert!(
        watcher.silent_for(QUIET).await,
        "a spoofed $SYS message was delivered"
    );
    // Nothing was retained either.
    let (mut late, _) = Raw::connect(node.addr(), V5, "late", |_| {}).await;
    late.subscribe(1, &[("$SYS/broker/uptime", QoS::AtLeastOnce)])
        .await;
    assert!(
        late.silent_for(QUIET).await,
        "a spoofed $SYS message was retained"
    );
}

#[tokio::test]
async fn without_an_acl_a_will_on_a_dollar_topic_refuses_the_connect() {
    let node = TestNode::start().await;
    let will = |c: &mut Connect| {
        c.will = Some(LastWill {
            topic: s("$SYS/broker/clients/connected"),
            payload: Bytes::from_static(b"0"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: WillProperties::default(),
        })
    };
    let (_c, ack) = Raw::connect(node.addr(), V5, "w5", will).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    let (_c, ack) = Raw::connect(node.addr(), V4, "w4", will).await;
    // Return code 5, not authorized.
    assert_eq!(ack.reason_code.to_v3_return_code(), 5);
}

#[tokio::test]
async fn an_acl_rule_naming_a_dollar_topic_lets_that_user_publish_there() {
    let files = tempfile::tempdir().expect("tempdir");
    let acl = acl_file(
        files.path(),
        "allow user:ops publish $SYS/ops/#\nallow all all #\nallow all subscribe $SYS/#\n",
    );
    let node = TestNode::start_with(|raw| raw.acl_file = Some(acl)).await;
    let (mut watcher, _) = Raw::connect(node.addr(), V5, "watcher", |c| {
        c.username = Some(s("watch"))
    })
    .await;
    watcher
        .subscribe(1, &[("$SYS/ops/#", QoS::AtLeastOnce)])
        .await;
    let (mut bob, _) = Raw::connect(node.addr(), V5, "bob", |c| c.username = Some(s("bob"))).await;
    assert_eq!(
        publish_qos1(&mut bob, 1, "$SYS/ops/note", b"bob", false).await,
        0x87
    );
    let (mut ops, _) = Raw::connect(node.addr(), V5, "ops", |c| c.username = Some(s("ops"))).await;
    assert_eq!(
        publish_qos1(&mut ops, 1, "$SYS/ops/note", b"ops", false).await,
        0
    );
    let got = watcher.next_publish().await;
    assert_eq!(&got.payload[..], b"ops");
    assert!(watcher.silent_for(QUIET).await);
}

// ---------------------------------------------------------------------------------------
// Protocol errors

#[tokio::test]
async fn authentication_data_without_a_method_is_a_protocol_error() {
    let node = TestNode::start().await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "authdata", |c| {
        c.properties.authentication_data = Some(Bytes::from_static(b"secret"))
    })
    .await;
    assert_eq!(ack.reason_code, ConnectReasonCode::ProtocolError);
}

#[tokio::test]
async fn a_client_publish_with_a_subscription_identifier_is_a_protocol_error() {
    let node = TestNode::start().await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
    let (mut client, _) = Raw::connect(node.addr(), V5, "subid", |_| {}).await;
    let mut publish = Publish::new(s("t"), Bytes::from_static(b"x"));
    publish.qos_pid = QosPid::AtLeastOnce(pid(1));
    publish.properties.subscription_identifiers =
        vec![std::num::NonZeroU32::new(7).expect("non-zero")];
    client.send(Packet::Publish(publish)).await;
    match client.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(client.closed().await);
    assert!(sub.silent_for(QUIET).await, "the message was delivered");
}

#[tokio::test]
async fn the_admin_bearer_scheme_is_case_insensitive() {
    let node = TestNode::start_with(|raw| raw.admin_token = Some("t0ken".into())).await;
    for (auth, status) in [
        ("Bearer t0ken", 200),
        ("bearer t0ken", 200),
        ("BEARER t0ken", 200),
        ("bearer wrong", 401),
    ] {
        let request = format!("GET /bans HTTP/1.1\r\nhost: shoal\r\nauthorization: {auth}\r\n\r\n");
        assert_eq!(admin_status(&node, &request).await, status, "{auth}");
    }
}

// ---------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn retained_messages_past_the_limits_get_quota_exceeded_and_replacing_one_still_works() {
    let node = TestNode::start_with(|raw| {
        raw.max_retained_messages = Some(3);
        raw.max_retained_bytes = Some(2000);
    })
    .await;
    let (mut c, _) = Raw::connect(node.addr(), V5, "keeper", |_| {}).await;
    for i in 1..=3 {
        assert_eq!(
            publish_qos1(&mut c, i, &format!("r/{i}"), b"v1", true).await,
            0x10
        );
    }
    // A flood of new topics past the count: every one refused, quickly.
    let flood = tokio::time::timeout(Duration::from_secs(5), async {
        for i in 4..200u16 {
            assert_eq!(
                publish_qos1(&mut c, i, &format!("r/{i}"), b"v", true).await,
                0x97
            );
        }
    });
    flood.await.expect("refusals come promptly");
    // Replacing a topic's message works at the limit; clearing one makes room.
    assert_eq!(publish_qos1(&mut c, 1, "r/1", b"v2", true).await, 0x10);
    assert_eq!(publish_qos1(&mut c, 2, "r/2", b"", true).await, 0x10);
    assert_eq!(publish_qos1(&mut c, 3, "r/9", b"v1", true).await, 0x10);
    // MQTT 3.1.1: acknowledged, not kept.
    let (mut old, _) = Raw::connect(node.addr(), V4, "old", |_| {}).await;
    assert_eq!(publish_qos1(&mut old, 1, "r/10", b"v1", true).await, 0);
    let (mut reader, _) = Raw::connect(node.addr(), V5, "reader", |_| {}).await;
    reader.subscribe(1, &[("r/#", QoS::AtMostOnce)]).await;
    let mut kept = Vec::new();
    while let Some(Packet::Publish(p)) = reader.recv_within(QUIET).await {
        kept.push((p.topic.to_string(), p.payload.to_vec()));
    }
    kept.sort();
    assert_eq!(
        kept,
        [
            ("r/1".to_string(), b"v2".to_vec()),
            ("r/3".to_string(), b"v1".to_vec()),
            ("r/9".to_string(), b"v1".to_vec()),
        ]
    );
    // The byte limit (the reader subscribes now: accepted messages get 0): two messages of
    // ~900 bytes fit in 2000, and a replacement that would pass it is refused.
    let big = vec![b'x'; 830];
    let (mut c, _) = Raw::connect(node.addr(), V5, "bytes", |_| {}).await;
    assert_eq!(publish_qos1(&mut c, 1, "r/1", &big, true).await, 0);
    assert_eq!(publish_qos1(&mut c, 2, "r/3", &big, true).await, 0);
    assert_eq!(publish_qos1(&mut c, 3, "r/3", &[b'y'; 100], true).await, 0);
    assert_eq!(publish_qos1(&mut c, 4, "r/3", &big, true).await, 0);
    assert_eq!(publish_qos1(&mut c, 5, "r/9", &big, true).await, 0x97);
}

/// Sends the first `sent` bytes of a QoS 0 PUBLISH of `size` payload bytes.
async fn start_publish(raw: &mut Raw, size: usize, sent: usize) -> Vec<u8> {
    let publish = Publish::new(s("big"), Bytes::from(vec![7u8; size]));
    let mut buf = bytes::BytesMut::new();
    Packet::Publish(publish)
        .encode(raw.version, &mut buf)
        .expect("encodes");
    raw.send_bytes(&buf[..sent]).await;
    buf[sent..].to_vec()
}

#[tokio::test]
async fn a_packet_not_completed_in_time_closes_the_connection_whatever_the_keep_alive() {
    let node = TestNode::start_with(|raw| raw.packet_timeout = Some(1)).await;
    // Many connections with keep alive 0 each hold most of a 64 KiB PUBLISH.
    let started = std::time::Instant::now();
    let mut holders = Vec::new();
    for i in 0..50 {
        let version = if i % 2 == 0 { V5 } else { V4 };
        let (mut raw, _) = Raw::connect(node.addr(), version, &format!("slow-{i}"), |c| {
            c.keep_alive = 0
        })
        .await;
        start_publish(&mut raw, 64 * 1024, 60 * 1024).await;
        holders.push(raw);
    }
    for (i, raw) in holders.iter_mut().enumerate() {
        if i % 2 == 0 {
            match raw.recv().await {
                Some(Packet::Disconnect(d)) => {
                    assert_eq!(d.reason_code, DisconnectReasonCode::KeepAliveTimeout)
                }
                other => panic!("expected DISCONNECT, got {other:?}"),
            }
        }
        assert!(raw.closed().await, "connection {i} still open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_busy_connection_whose_reads_end_mid_packet_is_not_closed() {
    let node = TestNode::start_with(|raw| raw.packet_timeout = Some(1)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe(1, &[("big", QoS::AtMostOnce)]).await;
    let (mut raw, _) = Raw::connect(node.addr(), V5, "busy", |c| c.keep_alive = 0).await;
    // For 2.5 s, every write ends inside a packet, and each packet completes within the
    // timeout: a packet every 250 ms, split in two.
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    let mut rest = start_publish(&mut raw, 1000, 500).await;
    let mut sent = 1;
    while std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let next = {
            let publish = Publish::new(s("big"), Bytes::from(vec![7u8; 1000]));
            let mut buf = bytes::BytesMut::new();
            Packet::Publish(publish)
                .encode(V5, &mut buf)
                .expect("encodes");
            buf.to_vec()
        };
        rest.extend_from_slice(&next[..500]);
        raw.send_bytes(&rest).await;
        rest = next[500..].to_vec();
        sent += 1;
    }
    raw.send_bytes(&rest).await;
    for _ in 0..sent {
        assert_eq!(sub.next_publish().await.payload.len(), 1000);
    }
    assert!(
        raw.silent_for(QUIET).await,
        "the busy connection was closed"
    );
}

#[tokio::test]
async fn the_admin_listener_closes_a_request_that_trickles_past_its_deadline() {
    let node = TestNode::start_with(|raw| raw.admin_request_timeout = Some(1)).await;
    let mut stream = tokio::net::TcpStream::connect(node.node.admin_addr())
        .await
        .expect("connect admin");
    let started = std::time::Instant::now();
    // One byte every 200 ms: never 5 s without a byte, never a whole request.
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nhost: shoal\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .iter()
        .cycle()
        .take(50)
    {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the trickling request was kept open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A prompt request is still served.
    let status = admin_status(&node, "GET /healthz HTTP/1.1\r\nhost: shoal\r\n\r\n").await;
    assert_eq!(status, 200);
}
