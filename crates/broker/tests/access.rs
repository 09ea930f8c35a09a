//! Who may connect and what they may do, over real sockets: the password file and anonymous
//! access, the slow-down of repeated failures, the ACL (publish, subscribe, Wills, wildcards
//! over denied sub-topics, shared subscriptions, `$SYS`, `%c`/`%u`, reloads), bans through
//! the admin API, flapping detection, and the per-client and per-listener limits. One
//! in-process node per test; its password and ACL files live in a temp folder of the test.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use shoal_broker::config::RawListener;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

/// The ACL most tests run under: the first rule that matches decides.
const ACL: &str = "\
# Access rules of the access tests.
allow user:alice all       sensors/#
deny  all        subscribe sensors/secret/#
allow all        publish   devices/%c/#    # each device its own tree
allow all        publish   users/%u/#
allow anonymous  subscribe public/#
allow user:ops   subscribe $SYS/#
deny  all        subscribe a/secret/#
allow all        subscribe a/#
allow all        publish   a/#
allow user:watch subscribe #
";

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

/// A CONNECT tweak that logs in as `user` with `password`.
fn login(user: &str, password: &str) -> impl FnOnce(&mut Connect) {
    let user = s(user);
    let password = Bytes::copy_from_slice(password.as_bytes());
    move |c| {
        c.username = Some(user);
        c.password = Some(password);
    }
}

/// A CONNECT tweak that gives only a username (no password file: it is taken as is).
fn user(name: &str) -> impl FnOnce(&mut Connect) {
    let name = s(name);
    move |c| c.username = Some(name)
}

/// A CONNECT tweak that sets a QoS 1 Will on `topic`.
fn will(topic: &str) -> impl FnOnce(&mut Connect) {
    let topic = s(topic);
    move |c| {
        c.will = Some(LastWill {
            topic,
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties::default(),
        })
    }
}

/// A connection to `addr` from the loopback address `source` (`127.0.0.2`: another client
/// machine, as far as the broker can tell).
async fn open_from(source: &str, addr: SocketAddr, version: ProtocolVersion) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind the source address");
    let stream = socket.connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    Raw::over(Box::new(stream), version)
}

/// Sends a CONNECT without caring whether the socket is already closed, and tells whether
/// the connection ended without any CONNACK (what a banned address or a full listener
/// gets).
async fn closed_without_connack(raw: &mut Raw, client_id: &str) -> bool {
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(raw.version, s(client_id))))
        .encode(raw.version, &mut buf)
        .expect("encodes");
    raw.send_bytes(&buf).await;
    match raw.recv().await {
        None => true,
        Some(Packet::ConnAck(ack)) => {
            println!(
                "CONNACK {:?} instead of a closed connection",
                ack.reason_code
            );
            false
        }
        Some(other) => panic!("expected nothing or CONNACK, got {other:?}"),
    }
}

/// Publishes at QoS 1 and returns the PUBACK's reason code.
async fn publish_qos1(raw: &mut Raw, id: u16, topic: &str, payload: &[u8], retain: bool) -> u8 {
    raw.publish(topic, payload, QosPid::AtLeastOnce(pid(id)), retain)
        .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.packet_id, pid(id));
            ack.reason_code.into()
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// The topics of the messages `raw` receives until it has been quiet for `QUIET`,
/// acknowledging QoS 1 ones.
async fn drain_topics(raw: &mut Raw) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(packet) = raw.recv_within(QUIET).await {
        match packet {
            Packet::Publish(p) => {
                if let QosPid::AtLeastOnce(id) = p.qos_pid {
                    raw.send(Packet::PubAck(PubAck::new(id))).await;
                }
                topics.push(p.topic.as_str().to_owned());
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    topics
}

/// One request to the admin API: `(status, body)`.
async fn admin(
    node: &TestNode,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(node.node.admin_addr())
        .await
        .expect("connect admin");
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: shoal\r\n");
    if let Some(token) = token {
        request += &format!("authorization: Bearer {token}\r\n");
    }
    if let Some(body) = body {
        request += &format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
    }
    request += "\r\n";
    request += body.unwrap_or_default();
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("the admin API answers in time")
        .expect("read the response");
    let (status, body) = http_response(&response);
    (status, body)
}

async fn ban(node: &TestNode, json: &str) {
    let (status, body) = admin(node, "POST", "/bans", Some(json), None).await;
    assert_eq!(status, 201, "POST /bans {json}: {body}");
}

/// Runs `shoal passwd ARGS` with `stdin` as its input: (exit code, stdout, stderr).
fn shoal_passwd(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal passwd");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let output = child.wait_with_output().expect("shoal passwd ends");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn anonymous_clients_are_refused_when_anonymous_access_is_off() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let node = TestNode::start_with(|raw| {
        raw.password_file = Some(passwd);
        raw.allow_anonymous = Some(false);
    })
    .await;
    let (mut c, ack) = Raw::connect(node.addr(), V5, "anon", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    assert!(c.closed().await);
    // 3.1.1: return code 5.
    let (_c, ack) = Raw::connect(node.addr(), V4, "anon", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    assert_eq!(ack.reason_code.to_v3_return_code(), 5);
    let (_c, ack) = Raw::connect(node.addr(), V5, "alice-1", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn a_wrong_password_or_an_unknown_user_gets_bad_user_name_or_password() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let node = TestNode::start_with(|raw| raw.password_file = Some(passwd)).await;
    let (mut c, ack) = Raw::connect(node.addr(), V5, "c", login("alice", "wrong")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    assert!(c.closed().await);
    let (_c, ack) = Raw::connect(node.addr(), V5, "c", login("mallory", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    // 3.1.1: return code 4.
    let (_c, ack) = Raw::connect(node.addr(), V4, "c", login("alice", "wrong")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    assert_eq!(ack.reason_code.to_v3_return_code(), 4);
    // The right password, in both versions.
    let (_c, ack) = Raw::connect(node.addr(), V4, "c4", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (_c, ack) = Raw::connect(node.addr(), V5, "c5", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // With anonymous access on (the default), no username still gets in.
    let (_c, ack) = Raw::connect(node.addr(), V5, "anon", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn a_user_added_to_the_password_file_can_connect_after_a_reload() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let path = passwd.clone();
    let node = TestNode::start_with(|raw| raw.password_file = Some(path)).await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "bob", login("bob", "builder")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    password_file(files.path(), &[("alice", "wonderland"), ("bob", "builder")]);
    node.node.reload();
    let (_c, ack) = Raw::connect(node.addr(), V5, "bob", login("bob", "builder")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // Removing a user takes effect the same way.
    password_file(files.path(), &[("bob", "builder")]);
    node.node.reload();
    let (_c, ack) = Raw::connect(node.addr(), V5, "alice", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
}

#[tokio::test]
async fn the_password_file_is_reloaded_when_it_changes() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let node = TestNode::start_with(|raw| raw.password_file = Some(passwd)).await;
    // The watcher takes its first look, at start, while this connects.
    let (_c, ack) = Raw::connect(node.addr(), V5, "bob", login("bob", "builder")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    password_file(files.path(), &[("alice", "wonderland"), ("bob", "builder")]);
    // The file is checked every 2 s; no reload is asked for.
    let written = Instant::now();
    let deadline = written + Duration::from_secs(6);
    loop {
        let (_c, ack) = Raw::connect(node.addr(), V5, "bob", login("bob", "builder")).await;
        if ack.reason_code == ConnectReasonCode::Success {
            break;
        }
        assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
        assert!(
            Instant::now() < deadline,
            "bob was not let in within 6 s of being added"
        );
        // A success clears the address's failures, so that the retries stay quick.
        let (_c, ack) = Raw::connect(node.addr(), V5, "alice", login("alice", "wonderland")).await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("bob let in {:?} after being added", written.elapsed());
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_answered_more_slowly() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let node = TestNode::start_with(|raw| raw.password_file = Some(passwd)).await;
    let mut took = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let (_c, ack) = Raw::connect(node.addr(), V5, "guess", login("alice", "guess")).await;
        took.push(started.elapsed());
        assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    }
    println!("failures answered after {took:?}");
    // 100 ms, 200 ms, 400 ms, 800 ms (plus the hash).
    assert!(took[0] >= Duration::from_millis(100), "{took:?}");
    assert!(took[0] < Duration::from_millis(700), "{took:?}");
    assert!(took[3] >= Duration::from_millis(750), "{took:?}");
    assert!(took[3] >= took[0] + Duration::from_millis(500), "{took:?}");
    // Another address is not slowed by these.
    let started = Instant::now();
    let mut other = open_from("127.0.0.2", node.addr(), V5).await;
    let ack = other
        .handshake("guess", login("alice", "guess"))
        .await
        .expect("CONNACK");
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    assert!(started.elapsed() < Duration::from_millis(700));
    // A success clears the address's record: the next failure is quick again.
    let (_c, ack) = Raw::connect(node.addr(), V5, "alice", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let started = Instant::now();
    let (_c, ack) = Raw::connect(node.addr(), V5, "guess", login("alice", "guess")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    assert!(started.elapsed() < Duration::from_millis(700));
}

#[tokio::test]
async fn shoal_passwd_add_list_and_remove_manage_the_file_the_broker_reads() {
    let files = tempfile::tempdir().expect("tempdir");
    let path = files.path().join("passwd");
    let file = path.to_str().expect("a UTF-8 path");
    // stdin is not a terminal: one line is the password.
    assert_eq!(shoal_passwd(&["add", file, "alice"], "wonderland\n").0, 0);
    assert_eq!(shoal_passwd(&["add", file, "bob"], "builder\r\n").0, 0);
    let (code, users, _) = shoal_passwd(&["list", file], "");
    assert_eq!((code, users.as_str()), (0, "alice\nbob\n"));
    let text = std::fs::read_to_string(&path).expect("the file exists");
    assert!(text.starts_with("alice:$7$"), "{text}");
    assert!(!text.contains("wonderland"), "a password in clear: {text}");
    // An empty password is refused and changes nothing.
    let (code, _, err) = shoal_passwd(&["add", file, "carol"], "\n");
    assert_eq!(code, 1, "{err}");

    let broker_path = path.clone();
    let node = TestNode::start_with(|raw| raw.password_file = Some(broker_path)).await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "a", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (_c, ack) = Raw::connect(node.addr(), V5, "b", login("bob", "builder")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);

    assert_eq!(shoal_passwd(&["remove", file, "bob"], "").0, 0);
    let (code, users, _) = shoal_passwd(&["list", file], "");
    assert_eq!((code, users.as_str()), (0, "alice\n"));
    let (code, _, err) = shoal_passwd(&["remove", file, "bob"], "");
    assert_eq!(code, 1, "removing an absent user is an error");
    assert!(err.contains("bob"), "{err}");
    node.node.reload();
    let (_c, ack) = Raw::connect(node.addr(), V5, "b", login("bob", "builder")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::BadUserNameOrPassword);
    let (_c, ack) = Raw::connect(node.addr(), V5, "a", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

// ---------------------------------------------------------------------------------------
// ACL

async fn acl_node(files: &Path, tweak: impl FnOnce(&mut shoal_broker::RawConfig)) -> TestNode {
    let acl = acl_file(files, ACL);
    TestNode::start_with(|raw| {
        raw.acl_file = Some(acl);
        tweak(raw);
    })
    .await
}

#[tokio::test]
async fn a_denied_publish_gets_0x87_in_mqtt5_and_is_not_delivered() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut alice, _) = Raw::connect(node.addr(), V5, "alice", user("alice")).await;
    let ack = alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::GrantedQos1]);
    let (mut dev, _) = Raw::connect(node.addr(), V5, "dev1", |_| {}).await;
    // QoS 1: PUBACK 0x87.
    assert_eq!(
        publish_qos1(&mut dev, 1, "sensors/t", b"1", false).await,
        0x87
    );
    // QoS 2: PUBREC 0x87.
    dev.publish("sensors/t", b"2", QosPid::ExactlyOnce(pid(2)), false)
        .await;
    match dev.recv().await {
        Some(Packet::PubRec(rec)) => {
            assert_eq!(rec.packet_id, pid(2));
            assert_eq!(rec.reason_code, PubAckReasonCode::NotAuthorized);
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // QoS 0: dropped without a word.
    dev.publish("sensors/t", b"0", QosPid::AtMostOnce, false)
        .await;
    // The connection stays, and what the client may publish goes through.
    let code = publish_qos1(&mut dev, 3, "devices/dev1/x", b"ok", false).await;
    assert!(code < 0x80, "devices/dev1/x refused: 0x{code:02x}");
    // Alice got none of the refused messages: the first she gets is one she may publish.
    let (mut alice2, _) = Raw::connect(node.addr(), V5, "alice2", user("alice")).await;
    assert_eq!(
        publish_qos1(&mut alice2, 1, "sensors/mine", b"ok", false).await,
        0x00
    );
    assert_eq!(drain_topics(&mut alice).await, ["sensors/mine"]);
}

#[tokio::test]
async fn a_denied_publish_in_mqtt311_is_acknowledged_and_dropped() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut alice, _) = Raw::connect(node.addr(), V5, "alice", user("alice")).await;
    alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]).await;
    let (mut dev, _) = Raw::connect(node.addr(), V4, "dev1", |_| {}).await;
    assert_eq!(publish_qos1(&mut dev, 1, "sensors/t", b"1", false).await, 0);
    dev.publish("sensors/t", b"2", QosPid::ExactlyOnce(pid(2)), false)
        .await;
    match dev.recv().await {
        Some(Packet::PubRec(rec)) => assert_eq!(rec.packet_id, pid(2)),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    dev.send(Packet::PubRel(PubRel::new(pid(2)))).await;
    assert!(matches!(dev.recv().await, Some(Packet::PubComp(c)) if c.packet_id == pid(2)));
    // Still connected.
    dev.send(Packet::PingReq).await;
    assert_eq!(dev.recv().await, Some(Packet::PingResp));
    assert!(
        alice.silent_for(QUIET).await,
        "a refused message was delivered"
    );
}

#[tokio::test]
async fn a_denied_subscription_gets_0x87_or_0x80_in_mqtt311() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let filters = [
        ("public/#", QoS::AtLeastOnce),
        ("sensors/#", QoS::AtLeastOnce),
        ("$SYS/#", QoS::AtMostOnce),
    ];
    let (mut v5, _) = Raw::connect(node.addr(), V5, "anon5", |_| {}).await;
    let ack = v5.subscribe(1, &filters).await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::NotAuthorized,
            SubAckReasonCode::NotAuthorized,
        ]
    );
    let (mut v4, _) = Raw::connect(node.addr(), V4, "anon4", |_| {}).await;
    let ack = v4.subscribe(1, &filters).await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::UnspecifiedError,
            SubAckReasonCode::UnspecifiedError,
        ]
    );
    // `anonymous` rules are for clients without a username only.
    let (mut named, _) = Raw::connect(node.addr(), V5, "named", user("bob")).await;
    let ack = named.subscribe(1, &[("public/#", QoS::AtLeastOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::NotAuthorized]);
}

#[tokio::test]
async fn a_will_the_client_may_not_publish_refuses_the_connect() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut c, ack) = Raw::connect(node.addr(), V5, "dev1", will("sensors/dev1")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    assert!(c.closed().await);
    let (_c, ack) = Raw::connect(node.addr(), V5, "dev1", will("devices/dev2/status")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    let (_c, ack) = Raw::connect(node.addr(), V4, "dev1", will("sensors/dev1")).await;
    assert_eq!(ack.reason_code.to_v3_return_code(), 5);
    let (_c, ack) = Raw::connect(node.addr(), V5, "dev1", will("devices/dev1/status")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn a_wildcard_over_a_denied_subtopic_is_granted_but_delivers_nothing_from_it() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publish_qos1(&mut publisher, 1, "a/secret/r", b"retained", true).await;
    publish_qos1(&mut publisher, 2, "a/ok/r", b"retained", true).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    let ack = sub
        .subscribe(
            1,
            &[
                ("a/#", QoS::AtLeastOnce),
                ("a/secret/#", QoS::AtLeastOnce),
                ("a/secret/x", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::NotAuthorized,
            SubAckReasonCode::NotAuthorized,
        ]
    );
    // Of the retained messages, only the one it may read.
    let retained = sub.next_publish().await;
    assert_eq!((retained.topic.as_str(), retained.retain), ("a/ok/r", true));
    assert_eq!(drain_topics(&mut sub).await, Vec::<String>::new());
    publish_qos1(&mut publisher, 3, "a/secret/x", b"no", false).await;
    publish_qos1(&mut publisher, 4, "a/ok", b"yes", false).await;
    assert_eq!(drain_topics(&mut sub).await, ["a/ok"]);
}

#[tokio::test]
async fn shared_subscriptions_are_judged_by_their_inner_filter() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut member, _) = Raw::connect(node.addr(), V5, "member", |_| {}).await;
    let ack = member
        .subscribe(
            1,
            &[
                ("$share/g/a/#", QoS::AtLeastOnce),
                ("$share/g/a/secret/#", QoS::AtLeastOnce),
                ("$share/g/sensors/#", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::NotAuthorized,
            SubAckReasonCode::NotAuthorized,
        ]
    );
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publish_qos1(&mut publisher, 1, "a/secret/x", b"no", false).await;
    publish_qos1(&mut publisher, 2, "a/ok", b"yes", false).await;
    assert_eq!(drain_topics(&mut member).await, ["a/ok"]);
}

#[tokio::test]
async fn sys_topics_are_readable_only_where_a_rule_allows_them() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |raw| raw.sys_interval = Some(1)).await;
    let (mut alice, _) = Raw::connect(node.addr(), V5, "alice", user("alice")).await;
    let ack = alice.subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::NotAuthorized]);
    // `#` never reaches `$` topics, even for a user who may subscribe to it.
    let (mut watch, _) = Raw::connect(node.addr(), V5, "watch", user("watch")).await;
    let ack = watch.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::GrantedQos0]);
    let ack = watch.subscribe(2, &[("$SYS/#", QoS::AtMostOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::NotAuthorized]);
    let (mut ops, _) = Raw::connect(node.addr(), V5, "ops", user("ops")).await;
    let ack = ops.subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::GrantedQos0]);
    let sys = ops
        .recv_within(Duration::from_secs(3))
        .await
        .expect("a $SYS message within 3 s");
    match sys {
        Packet::Publish(p) => assert!(p.topic.starts_with("$SYS/broker/"), "{}", p.topic),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // A full interval later, still nothing $SYS for the others.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (name, raw) in [("alice", &mut alice), ("watch", &mut watch)] {
        let got = drain_topics(raw).await;
        assert!(
            got.iter().all(|t| !t.starts_with('$')),
            "{name} got {got:?}"
        );
    }
}

#[tokio::test]
async fn placeholders_confine_each_client_to_its_own_tree() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut watch, _) = Raw::connect(node.addr(), V5, "watcher", user("watch")).await;
    let ack = watch
        .subscribe(
            1,
            &[
                ("devices/#", QoS::AtLeastOnce),
                ("users/#", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        ack.reason_codes,
        [SubAckReasonCode::GrantedQos1, SubAckReasonCode::GrantedQos1]
    );
    // %c: its client id.
    let (mut dev1, _) = Raw::connect(node.addr(), V5, "dev1", |_| {}).await;
    assert_eq!(
        publish_qos1(&mut dev1, 1, "devices/dev1/t", b"", false).await,
        0
    );
    assert_eq!(
        publish_qos1(&mut dev1, 2, "devices/dev2/t", b"", false).await,
        0x87
    );
    // No username: the %u rule is not for it.
    assert_eq!(
        publish_qos1(&mut dev1, 3, "users/dev1/t", b"", false).await,
        0x87
    );
    // %u: its username.
    let (mut bob, _) = Raw::connect(node.addr(), V5, "bobs-phone", user("bob")).await;
    assert_eq!(
        publish_qos1(&mut bob, 1, "users/bob/t", b"", false).await,
        0
    );
    assert_eq!(
        publish_qos1(&mut bob, 2, "users/alice/t", b"", false).await,
        0x87
    );
    assert_eq!(
        publish_qos1(&mut bob, 3, "devices/bobs-phone/t", b"", false).await,
        0
    );
    assert_eq!(
        drain_topics(&mut watch).await,
        ["devices/dev1/t", "users/bob/t", "devices/bobs-phone/t"]
    );
}

#[tokio::test]
async fn a_reloaded_acl_applies_to_connected_clients() {
    let files = tempfile::tempdir().expect("tempdir");
    let path = acl_file(files.path(), "allow all subscribe x/#\n");
    let node = TestNode::start_with(|raw| raw.acl_file = Some(path)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe(1, &[("x/#", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    assert_eq!(
        publish_qos1(&mut publisher, 1, "x/1", b"", false).await,
        0x87
    );
    acl_file(files.path(), "allow all all x/#\n");
    node.node.reload();
    // The same connection may publish now.
    assert_eq!(publish_qos1(&mut publisher, 2, "x/2", b"", false).await, 0);
    assert_eq!(drain_topics(&mut sub).await, ["x/2"]);
    // A file that does not parse leaves the rules in force.
    acl_file(files.path(), "allow everyone everything\n");
    node.node.reload();
    assert_eq!(publish_qos1(&mut publisher, 3, "x/3", b"", false).await, 0);
    assert_eq!(
        publish_qos1(&mut publisher, 4, "y/4", b"", false).await,
        0x87
    );
    assert_eq!(drain_topics(&mut sub).await, ["x/3"]);
}

#[tokio::test]
async fn a_reloaded_acl_stops_deliveries_it_now_denies() {
    let files = tempfile::tempdir().expect("tempdir");
    let path = acl_file(files.path(), "allow all all x/#\n");
    let node = TestNode::start_with(|raw| raw.acl_file = Some(path)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    let ack = sub.subscribe(1, &[("x/#", QoS::AtLeastOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::GrantedQos1]);
    acl_file(
        files.path(),
        "deny all subscribe x/secret/#\nallow all all x/#\n",
    );
    node.node.reload();
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publish_qos1(&mut publisher, 1, "x/secret/1", b"no", false).await;
    publish_qos1(&mut publisher, 2, "x/ok", b"yes", false).await;
    assert_eq!(drain_topics(&mut sub).await, ["x/ok"]);
}

#[tokio::test]
async fn an_offline_session_queues_nothing_the_acl_keeps_from_it() {
    let files = tempfile::tempdir().expect("tempdir");
    let node = acl_node(files.path(), |_| {}).await;
    let (mut keeper, _) = Raw::connect(node.addr(), V4, "keeper", |c| c.clean_start = false).await;
    keeper.subscribe(1, &[("a/#", QoS::AtLeastOnce)]).await;
    keeper.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(keeper.closed().await);
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publish_qos1(&mut publisher, 1, "a/secret/1", b"no", false).await;
    publish_qos1(&mut publisher, 2, "a/ok/1", b"yes", false).await;
    let (mut keeper, ack) =
        Raw::connect(node.addr(), V4, "keeper", |c| c.clean_start = false).await;
    assert!(ack.session_present);
    assert_eq!(drain_topics(&mut keeper).await, ["a/ok/1"]);
}

#[tokio::test]
async fn after_a_restart_an_offline_session_queues_nothing_the_acl_keeps_from_it() {
    let files = tempfile::tempdir().expect("tempdir");
    let acl = acl_file(files.path(), ACL);
    let config = |raw: &mut shoal_broker::RawConfig| raw.acl_file = Some(acl.clone());
    let node = TestNode::start_with(&config).await;
    let (mut keeper, _) = Raw::connect(node.addr(), V4, "keeper", |c| c.clean_start = false).await;
    keeper.subscribe(1, &[("a/#", QoS::AtLeastOnce)]).await;
    keeper.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(keeper.closed().await);
    let TestNode { node, dir } = node;
    node.shutdown().await;
    let node = TestNode {
        node: start_in(dir.path(), &config).await,
        dir,
    };
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publish_qos1(&mut publisher, 1, "a/secret/1", b"no", false).await;
    publish_qos1(&mut publisher, 2, "a/ok/1", b"yes", false).await;
    let (mut keeper, ack) =
        Raw::connect(node.addr(), V4, "keeper", |c| c.clean_start = false).await;
    assert!(ack.session_present);
    assert_eq!(drain_topics(&mut keeper).await, ["a/ok/1"]);
}

// ---------------------------------------------------------------------------------------
// Bans

#[tokio::test]
async fn bans_of_client_ids_and_usernames_refuse_the_connect_with_0x8a() {
    let node = TestNode::start().await;
    ban(&node, r#"{"target":"client:bad","reason":"tests"}"#).await;
    ban(&node, r#"{"target":"user:mallory","seconds":600}"#).await;
    let (mut c, ack) = Raw::connect(node.addr(), V5, "bad", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
    assert!(c.closed().await);
    let (_c, ack) = Raw::connect(node.addr(), V4, "bad", |_| {}).await;
    assert_eq!(ack.reason_code.to_v3_return_code(), 5);
    let (_c, ack) = Raw::connect(node.addr(), V5, "other", user("mallory")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
    let (_c, ack) = Raw::connect(node.addr(), V5, "other", user("alice")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);

    let (status, body) = admin(&node, "GET", "/bans", None, None).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2, "{body}");
    assert_eq!(list[0]["target"], "client:bad");
    assert_eq!(list[0]["reason"], "tests");
    assert!(list[0]["until_ms"].is_null(), "permanent: {body}");
    assert!(list[0]["created_ms"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(list[1]["target"], "user:mallory");
    let (until, created) = (list[1]["until_ms"].as_u64(), list[1]["created_ms"].as_u64());
    assert_eq!(until.zip(created).map(|(u, c)| u - c), Some(600_000));

    let (status, _) = admin(&node, "DELETE", "/bans/client%3Abad", None, None).await;
    assert_eq!(status, 204);
    let (_c, ack) = Raw::connect(node.addr(), V5, "bad", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (status, _) = admin(&node, "DELETE", "/bans/client:bad", None, None).await;
    assert_eq!(status, 404);
    let (status, body) = admin(&node, "GET", "/bans", None, None).await;
    assert_eq!(status, 200);
    assert!(!body.contains("client:bad"), "{body}");
}

#[tokio::test]
async fn a_ban_disconnects_clients_already_connected() {
    let node = TestNode::start().await;
    let (mut by_id, _) = Raw::connect(node.addr(), V5, "dev-17", |_| {}).await;
    let (mut by_user, _) = Raw::connect(node.addr(), V5, "dev-18", user("mallory")).await;
    let (mut bystander, _) = Raw::connect(node.addr(), V5, "dev-19", user("alice")).await;
    ban(&node, r#"{"target":"client:dev-17"}"#).await;
    ban(&node, r#"{"target":"user:mallory"}"#).await;
    for raw in [&mut by_id, &mut by_user] {
        match raw.recv().await {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::AdministrativeAction)
            }
            other => panic!("expected DISCONNECT 0x98, got {other:?}"),
        }
        assert!(raw.closed().await);
    }
    bystander.send(Packet::PingReq).await;
    assert_eq!(
        bystander.recv().await,
        Some(Packet::PingResp),
        "others stay"
    );
}

#[tokio::test]
async fn bans_survive_a_restart_and_expired_ones_do_not_come_back() {
    let node = TestNode::start().await;
    ban(&node, r#"{"target":"client:kept","reason":"stays"}"#).await;
    ban(&node, r#"{"target":"client:brief","seconds":1}"#).await;
    ban(&node, r#"{"target":"client:lifted"}"#).await;
    let (status, _) = admin(&node, "DELETE", "/bans/client:lifted", None, None).await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let node = node.restart().await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "kept", |_| {}).await;
    assert_eq!(
        ack.reason_code,
        ConnectReasonCode::Banned,
        "a ban outlives the restart"
    );
    for free in ["brief", "lifted"] {
        let (_c, ack) = Raw::connect(node.addr(), V5, free, |_| {}).await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success, "{free}");
    }
    let (_, body) = admin(&node, "GET", "/bans", None, None).await;
    assert!(body.contains("\"reason\":\"stays\""), "{body}");
}

/// A data folder written before bans were replicated keeps them in `bans.json`: they are
/// moved into the cluster at the first start (enforced, listed, lifted like any other) and
/// the file is removed; an expired one is dropped.
#[tokio::test]
async fn bans_of_an_older_data_folder_move_into_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bans.json");
    std::fs::write(
        &file,
        r#"[{"target":"client:old","until_ms":null,"reason":"from the file","created_ms":1},
            {"target":"client:over","until_ms":2,"reason":"expired","created_ms":1}]"#,
    )
    .expect("write bans.json");
    let node = TestNode {
        node: start_in(dir.path(), |_| {}).await,
        dir,
    };
    assert!(!file.exists(), "bans.json is removed once moved");
    let (_c, ack) = Raw::connect(node.addr(), V5, "old", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
    let (_c, ack) = Raw::connect(node.addr(), V5, "over", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (_, body) = admin(&node, "GET", "/bans", None, None).await;
    assert!(
        body.contains("from the file") && !body.contains("expired"),
        "{body}"
    );
    // In the cluster now: it outlives a restart without the file.
    let node = node.restart().await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "old", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
    let (status, _) = admin(&node, "DELETE", "/bans/client:old", None, None).await;
    assert_eq!(status, 204);
    let (_c, ack) = Raw::connect(node.addr(), V5, "old", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn an_address_ban_closes_the_connection_before_connack() {
    let node = TestNode::start().await;
    ban(&node, r#"{"target":"addr:127.0.0.2"}"#).await;
    let mut banned = open_from("127.0.0.2", node.addr(), V5).await;
    assert!(closed_without_connack(&mut banned, "c").await);
    // Other addresses are not concerned.
    let (_c, ack) = Raw::connect(node.addr(), V5, "c", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let mut neighbour = open_from("127.0.0.3", node.addr(), V5).await;
    let ack = neighbour.handshake("n", |_| {}).await.expect("CONNACK");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // A network ban, lifted by its percent-encoded target.
    ban(&node, r#"{"target":"net:127.0.0.3/31"}"#).await;
    let (status, _) = admin(&node, "DELETE", "/bans/addr:127.0.0.2", None, None).await;
    assert_eq!(status, 204);
    for source in ["127.0.0.2", "127.0.0.3"] {
        let mut raw = open_from(source, node.addr(), V5).await;
        assert!(closed_without_connack(&mut raw, "n").await, "{source}");
    }
    let (_c, ack) = Raw::connect(node.addr(), V5, "c", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (status, _) = admin(&node, "DELETE", "/bans/net:127.0.0.2%2F31", None, None).await;
    assert_eq!(status, 204);
    let mut raw = open_from("127.0.0.2", node.addr(), V5).await;
    let ack = raw.handshake("n", |_| {}).await.expect("CONNACK");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn a_ban_for_a_second_expires() {
    let node = TestNode::start().await;
    let banned_at = Instant::now();
    ban(&node, r#"{"target":"client:brief","seconds":1}"#).await;
    let (_c, ack) = Raw::connect(node.addr(), V5, "brief", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
    loop {
        let (_c, ack) = Raw::connect(node.addr(), V5, "brief", |_| {}).await;
        if ack.reason_code == ConnectReasonCode::Success {
            break;
        }
        assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
        assert!(banned_at.elapsed() < Duration::from_secs(4), "still banned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        banned_at.elapsed() >= Duration::from_millis(900),
        "lifted after {:?}",
        banned_at.elapsed()
    );
    let (_, body) = admin(&node, "GET", "/bans", None, None).await;
    assert_eq!(body, "[]");
}

#[tokio::test]
async fn the_admin_token_guards_the_bans() {
    let node = TestNode::start_with(|raw| raw.admin_token = Some("t0ken".into())).await;
    let json = Some(r#"{"target":"client:x"}"#);
    assert_eq!(admin(&node, "GET", "/bans", None, None).await.0, 401);
    assert_eq!(
        admin(&node, "GET", "/bans", None, Some("wrong")).await.0,
        401
    );
    assert_eq!(admin(&node, "POST", "/bans", json, None).await.0, 401);
    assert_eq!(
        admin(&node, "DELETE", "/bans/client:x", None, None).await.0,
        401
    );
    // The refused POST banned nobody.
    let (_c, ack) = Raw::connect(node.addr(), V5, "x", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert_eq!(
        admin(&node, "POST", "/bans", json, Some("t0ken")).await.0,
        201
    );
    let (status, body) = admin(&node, "GET", "/bans", None, Some("t0ken")).await;
    assert_eq!(status, 200);
    assert!(body.contains("client:x"), "{body}");
    // The probes stay open.
    assert_eq!(admin(&node, "GET", "/healthz", None, None).await.0, 200);
}

#[tokio::test]
async fn bad_ban_requests_get_400() {
    let node = TestNode::start().await;
    for body in [
        "not json",
        r#"{"target":"host:x"}"#,
        r#"{"target":"client:"}"#,
        r#"{"target":"addr:300.1.1.1"}"#,
        r#"{"target":"net:10.0.0.0"}"#,
        r#"{"target":"net:10.0.0.0/33"}"#,
        r#"{"target":"client:x","seconds":-1}"#,
        r#"{"target":"client:x","minutes":1}"#,
        r#"{"reason":"no target"}"#,
    ] {
        let (status, answer) = admin(&node, "POST", "/bans", Some(body), None).await;
        assert_eq!(status, 400, "{body} -> {answer}");
    }
    // No Content-Length.
    let (status, _) = admin(&node, "POST", "/bans", None, None).await;
    assert_eq!(status, 400);
    let (status, _) = admin(&node, "DELETE", "/bans/nothing", None, None).await;
    assert_eq!(status, 400);
    let (status, _) = admin(&node, "DELETE", "/bans/client%zz", None, None).await;
    assert_eq!(status, 400);
    assert_eq!(admin(&node, "GET", "/bans", None, None).await.1, "[]");
}

// ---------------------------------------------------------------------------------------
// Flapping

#[tokio::test]
async fn a_client_id_that_reconnects_too_often_is_banned_for_a_while() {
    let node = TestNode::start_with(|raw| {
        raw.flapping_max_connects = Some(3);
        raw.flapping_window = Some(60);
        raw.flapping_ban = Some(2);
    })
    .await;
    for n in 1..=2 {
        let (mut c, ack) = Raw::connect(node.addr(), V5, "flappy", |_| {}).await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success, "connect {n}");
        c.send(Packet::Disconnect(Disconnect::default())).await;
        assert!(c.closed().await);
    }
    let (_c, ack) = Raw::connect(node.addr(), V5, "flappy", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Banned, "connect 3");
    let banned_at = Instant::now();
    let (_c, ack) = Raw::connect(node.addr(), V4, "flappy", |_| {}).await;
    assert_eq!(ack.reason_code.to_v3_return_code(), 5);
    // Other client ids are not concerned.
    let (_c, ack) = Raw::connect(node.addr(), V5, "steady", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (_, body) = admin(&node, "GET", "/bans", None, None).await;
    assert!(
        body.contains("client:flappy") && body.contains("flapping"),
        "{body}"
    );
    loop {
        let (_c, ack) = Raw::connect(node.addr(), V5, "flappy", |_| {}).await;
        if ack.reason_code == ConnectReasonCode::Success {
            break;
        }
        assert_eq!(ack.reason_code, ConnectReasonCode::Banned);
        assert!(banned_at.elapsed() < Duration::from_secs(4), "still banned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        banned_at.elapsed() >= Duration::from_millis(1500),
        "lifted after {:?}",
        banned_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Per-client limits

#[tokio::test]
async fn max_subscriptions_refuses_a_new_filter_past_the_limit_with_0x97() {
    let node = TestNode::start_with(|raw| raw.max_subscriptions = Some(2)).await;
    let (mut c, _) = Raw::connect(node.addr(), V5, "c", |_| {}).await;
    let ack = c
        .subscribe(1, &[("a", QoS::AtLeastOnce), ("b", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        ack.reason_codes,
        [SubAckReasonCode::GrantedQos1, SubAckReasonCode::GrantedQos1]
    );
    let ack = c
        .subscribe(2, &[("c", QoS::AtLeastOnce), ("a", QoS::AtMostOnce)])
        .await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::QuotaExceeded,
            SubAckReasonCode::GrantedQos0
        ]
    );
    // Room again after an UNSUBSCRIBE.
    c.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(3),
        properties: Default::default(),
        filters: vec![s("b")],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::UnsubAck(_))));
    let ack = c.subscribe(4, &[("c", QoS::AtLeastOnce)]).await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::GrantedQos1]);
    // 3.1.1: 0x80.
    let (mut v4, _) = Raw::connect(node.addr(), V4, "v4", |_| {}).await;
    let ack = v4
        .subscribe(
            1,
            &[
                ("a", QoS::AtLeastOnce),
                ("b", QoS::AtLeastOnce),
                ("c", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::UnspecifiedError,
        ]
    );
}

#[tokio::test]
async fn a_filter_repeated_in_one_subscribe_counts_once_against_max_subscriptions() {
    let node = TestNode::start_with(|raw| raw.max_subscriptions = Some(2)).await;
    let (mut c, _) = Raw::connect(node.addr(), V5, "c", |_| {}).await;
    c.subscribe(1, &[("a", QoS::AtLeastOnce)]).await;
    // The second "b" replaces the first [MQTT-3.8.4-3]: one subscription, at QoS 0.
    let ack = c
        .subscribe(2, &[("b", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)])
        .await;
    assert_eq!(
        ack.reason_codes,
        [SubAckReasonCode::GrantedQos1, SubAckReasonCode::GrantedQos0]
    );
}

#[tokio::test]
async fn max_topic_levels_refuses_deeper_topics_and_filters() {
    let node = TestNode::start_with(|raw| raw.max_topic_levels = Some(3)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    let ack = sub
        .subscribe(
            1,
            &[
                ("#", QoS::AtLeastOnce),
                ("a/b/c/d", QoS::AtLeastOnce),
                ("a/b/c/#", QoS::AtLeastOnce),
                ("a/b/c", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        ack.reason_codes,
        [
            SubAckReasonCode::GrantedQos1,
            SubAckReasonCode::TopicFilterInvalid,
            SubAckReasonCode::TopicFilterInvalid,
            SubAckReasonCode::GrantedQos1,
        ]
    );
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    assert_eq!(
        publish_qos1(&mut publisher, 1, "a/b/c/d", b"deep", false).await,
        0x90
    );
    assert_eq!(
        publish_qos1(&mut publisher, 2, "a/b/c", b"ok", false).await,
        0
    );
    // "#" and "a/b/c" both match: one copy (the highest QoS), of the allowed topic only.
    assert_eq!(drain_topics(&mut sub).await, ["a/b/c"]);
    // A Will deeper than the limit could never be published: refused at CONNECT.
    let (_c, ack) = Raw::connect(node.addr(), V5, "deep-will", will("a/b/c/d")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::TopicNameInvalid);
    let (_c, ack) = Raw::connect(node.addr(), V5, "fine-will", will("a/b/c")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn max_inflight_holds_back_qos1_messages_until_one_is_acknowledged() {
    let node = TestNode::start_with(|raw| raw.max_inflight = Some(2)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "slow", |_| {}).await;
    sub.subscribe(1, &[("q/#", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    for n in 1..=4 {
        let topic = format!("q/{n}");
        assert_eq!(publish_qos1(&mut publisher, n, &topic, b"", false).await, 0);
    }
    let first = sub.next_publish().await;
    let second = sub.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), second.topic.as_str()),
        ("q/1", "q/2")
    );
    assert!(sub.silent_for(QUIET).await, "a third message in flight");
    let ack = |p: &Publish| match p.qos_pid {
        QosPid::AtLeastOnce(id) => Packet::PubAck(PubAck::new(id)),
        other => panic!("expected QoS 1, got {other:?}"),
    };
    sub.send(ack(&first)).await;
    let third = sub.next_publish().await;
    assert_eq!(third.topic, "q/3");
    assert!(sub.silent_for(QUIET).await, "a third message in flight");
    sub.send(ack(&second)).await;
    assert_eq!(sub.next_publish().await.topic, "q/4");
}

/// Encodes `count` tiny QoS 0 PUBLISHes on `r` (payload: the index), all in one buffer.
fn burst(version: ProtocolVersion, count: u8) -> BytesMut {
    let mut buf = BytesMut::new();
    for n in 0..count {
        Packet::Publish(Publish::new(s("r"), Bytes::from(vec![n])))
            .encode(version, &mut buf)
            .expect("encodes");
    }
    buf
}

/// Receives `count` messages of `burst`; returns when the first and the last arrived.
async fn receive_burst(sub: &mut Raw, count: u8) -> (Instant, Instant) {
    let mut first = None;
    for n in 0..count {
        let p = sub.next_publish().await;
        assert_eq!(p.payload.as_ref(), [n], "lost or reordered");
        first.get_or_insert_with(Instant::now);
    }
    (first.expect("at least one message"), Instant::now())
}

#[tokio::test]
async fn a_burst_over_the_publish_rate_is_spread_over_time() {
    let node = TestNode::start_with(|raw| raw.publish_rate = Some(20)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe(1, &[("r", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher.send_bytes(&burst(V5, 60)).await;
    let (first, last) = receive_burst(&mut sub, 60).await;
    // 20 at once, then 40 at 20 per second: the last about 2 s after the first.
    assert!(
        last - first >= Duration::from_millis(1500),
        "60 messages in {:?} at 20/s",
        last - first
    );
}

#[tokio::test]
async fn a_client_over_its_publish_rate_is_read_later_and_loses_nothing() {
    let node = TestNode::start_with(|raw| raw.publish_rate = Some(20)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe(1, &[("r", QoS::AtMostOnce), ("after", QoS::AtMostOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher.send_bytes(&burst(V5, 60)).await;
    let (first, _) = receive_burst(&mut sub, 60).await;
    // The broker owes 40 messages' worth (2 s at 20/s): what comes next waits.
    publisher
        .publish("after", b"", QosPid::AtMostOnce, false)
        .await;
    let after = sub.next_publish().await;
    assert_eq!(after.topic, "after");
    let waited = first.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "read after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "read after {waited:?}");
}

#[tokio::test]
async fn a_client_over_its_byte_rate_is_read_later_and_loses_nothing() {
    let node = TestNode::start_with(|raw| raw.publish_bytes_rate = Some(2000)).await;
    let (mut sub, _) = Raw::connect(node.addr(), V5, "sub", |_| {}).await;
    sub.subscribe(1, &[("big", QoS::AtMostOnce), ("after", QoS::AtMostOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    // About 4 KB at once, against 2,000 bytes a second (one second's worth in hand).
    let mut burst = BytesMut::new();
    for n in 0..8u8 {
        Packet::Publish(Publish::new(s("big"), Bytes::from(vec![n; 500])))
            .encode(V5, &mut burst)
            .expect("encodes");
    }
    publisher.send_bytes(&burst).await;
    let mut first = None;
    for n in 0..8u8 {
        let p = sub.next_publish().await;
        assert_eq!(p.payload[0], n, "lost or reordered");
        first.get_or_insert_with(Instant::now);
    }
    let first = first.expect("messages");
    publisher
        .publish("after", b"", QosPid::AtMostOnce, false)
        .await;
    let after = sub.next_publish().await;
    assert_eq!(after.topic, "after");
    let waited = first.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "read after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "read after {waited:?}");
}

// ---------------------------------------------------------------------------------------
// Per-listener limits

#[tokio::test]
async fn max_connections_closes_connections_past_the_limit_at_once() {
    let node = TestNode::start_with(|raw| {
        raw.listeners = Some(vec![RawListener {
            max_connections: Some(2),
            ..listener("limited", "tcp")
        }]);
    })
    .await;
    let addr = node.node.listener_addr("limited").expect("the listener");
    let (first, ack) = Raw::connect(addr, V5, "one", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (_second, ack) = Raw::connect(addr, V5, "two", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let mut third = Raw::open(addr, V5).await;
    assert!(closed_without_connack(&mut third, "three").await);
    // The default listener has its own count.
    let (_c, ack) = Raw::connect(node.addr(), V5, "elsewhere", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut raw = Raw::open(addr, V5).await;
        if !closed_without_connack(&mut raw, "three").await {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a client left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn anonymous_access_can_be_turned_off_on_one_listener() {
    let files = tempfile::tempdir().expect("tempdir");
    let passwd = password_file(files.path(), &[("alice", "wonderland")]);
    let node = TestNode::start_with(|raw| {
        raw.password_file = Some(passwd);
        raw.listeners = Some(vec![RawListener {
            allow_anonymous: Some(false),
            ..listener("members", "tcp")
        }]);
    })
    .await;
    let members = node.node.listener_addr("members").expect("the listener");
    let (_c, ack) = Raw::connect(members, V5, "anon", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    let (_c, ack) = Raw::connect(members, V5, "alice", login("alice", "wonderland")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (_c, ack) = Raw::connect(node.addr(), V5, "anon", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
}

#[tokio::test]
async fn max_connection_rate_delays_accepts_without_refusing_any() {
    let node = TestNode::start_with(|raw| {
        raw.listeners = Some(vec![RawListener {
            max_connection_rate: Some(5),
            ..listener("paced", "tcp")
        }]);
    })
    .await;
    let addr = node.node.listener_addr("paced").expect("the listener");
    let started = Instant::now();
    let clients: Vec<_> = (0..15)
        .map(|n| {
            tokio::spawn(async move {
                let (raw, ack) = Raw::connect(addr, V5, &format!("c{n}"), |_| {}).await;
                (raw, ack.reason_code, started.elapsed())
            })
        })
        .collect();
    let mut took = Vec::new();
    let mut open = Vec::new();
    for client in clients {
        let (raw, code, elapsed) = client.await.expect("the client task");
        assert_eq!(code, ConnectReasonCode::Success);
        took.push(elapsed);
        open.push(raw);
    }
    took.sort();
    println!("accepted after {took:?}");
    // 5 at once, then 5 per second: the last about 2 s in.
    assert!(took[4] < Duration::from_millis(1000), "{took:?}");
    assert!(took[14] >= Duration::from_millis(1500), "{took:?}");
}
