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
