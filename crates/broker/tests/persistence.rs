//! What survives a restart: persistent sessions, their queues, retained messages. Once
//! through an orderly shutdown in process, once through `kill -9` of the real binary in the
//! middle of a stream of acknowledged QoS 1 and QoS 2 messages.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use shoal_codec::*;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

fn durable(c: &mut Connect) {
    c.clean_start = false;
}

#[tokio::test]
async fn sessions_queues_and_retained_messages_survive_a_restart() {
    let node = TestNode::start().await;
    let (mut sub, _) = Raw::connect(node.addr(), V4, "keeper", durable).await;
    sub.subscribe(1, &[("r/#", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(sub.closed().await);
    let (mut publisher, _) = Raw::connect(node.addr(), V4, "pub", |_| {}).await;
    publisher
        .publish("r/retained", b"kept", QosPid::AtLeastOnce(pid(1)), true)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    publisher
        .publish("r/queued", b"waiting", QosPid::AtLeastOnce(pid(2)), false)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    drop(publisher);

    let node = node.restart().await;
    let (mut sub, ack) = Raw::connect(node.addr(), V4, "keeper", durable).await;
    assert!(ack.session_present, "the session survived");
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in 0..2 {
        let p = sub.next_publish().await;
        sub.send(Packet::PubAck(PubAck::new(
            p.qos_pid.packet_id().expect("QoS 1"),
        )))
        .await;
        got.push((p.topic.to_string(), p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("r/queued".into(), b"waiting".to_vec()),
            ("r/retained".into(), b"kept".to_vec())
        ]
    );
    let (mut late, _) = Raw::connect(node.addr(), V4, "late", |_| {}).await;
    late.subscribe(1, &[("r/retained", QoS::AtMostOnce)]).await;
    assert_eq!(
        &late.next_publish().await.payload[..],
        b"kept",
        "the retained message survived"
    );
}

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_and_qos2_arrives_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Process::start(dir.path()).await;
    let (mut sub, _) = Raw::connect(broker.addr, V4, "offline-sub", durable).await;
    sub.subscribe(1, &[("k/1", QoS::AtLeastOnce), ("k/2", QoS::ExactlyOnce)])
        .await;
    sub.send(Packet::Disconnect(Disconnect::default())).await;
    assert!(sub.closed().await);

    // Two publishers stream until the broker dies; each records what was acknowledged.
    let acked: Arc<Mutex<HashMap<QoS, Vec<u32>>>> = Arc::default();
    let mut streams = Vec::new();
    for (qos, topic) in [(QoS::AtLeastOnce, "k/1"), (QoS::ExactlyOnce, "k/2")] {
        let (mut publisher, _) = Raw::connect(broker.addr, V4, topic, |_| {}).await;
        let acked = Arc::clone(&acked);
        streams.push(tokio::spawn(async move {
            for seq in 1..=5000u32 {
                let id = pid((seq % 60000) as u16 + 1);
                publisher
                    .publish(
                        topic,
                        &seq.to_be_bytes(),
                        QosPid::from_parts(qos, id),
                        false,
                    )
                    .await;
                match publisher.recv().await {
                    Some(Packet::PubAck(_)) | Some(Packet::PubRec(_)) => {}
                    _ => return,
                }
                // Owned by the broker from PUBACK / PUBREC on.
                acked
                    .lock()
                    .expect("lock")
                    .entry(qos)
                    .or_default()
                    .push(seq);
                if qos == QoS::ExactlyOnce {
                    publisher.send(Packet::PubRel(PubRel::new(id))).await;
                    if !matches!(publisher.recv().await, Some(Packet::PubComp(_))) {
                        return;
                    }
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counts: Vec<usize> = {
            let acked = acked.lock().expect("lock");
            [QoS::AtLeastOnce, QoS::ExactlyOnce]
                .iter()
                .map(|q| acked.get(q).map_or(0, Vec::len))
                .collect()
        };
        if counts.iter().all(|&n| n >= 150) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the streams are too slow: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.kill_9();
    for stream in streams {
        let _ = stream.await;
    }
    let acked = acked.lock().expect("lock").clone();

    let broker = Process::start(dir.path()).await;
    let (mut sub, ack) = Raw::connect(broker.addr, V4, "offline-sub", durable).await;
    assert!(ack.session_present);
    let mut received: HashMap<QoS, Vec<u32>> = HashMap::new();
    while let Some(packet) = sub.recv_within(Duration::from_secs(2)).await {
        match packet {
            Packet::Publish(p) => {
                let seq = u32::from_be_bytes(p.payload[..4].try_into().expect("4 bytes"));
                received.entry(p.qos()).or_default().push(seq);
                let id = p.qos_pid.packet_id().expect("QoS 1 or 2");
                match p.qos() {
                    QoS::AtLeastOnce => sub.send(Packet::PubAck(PubAck::new(id))).await,
                    _ => sub.send(Packet::PubRec(PubRec::new(id))).await,
                }
            }
            Packet::PubRel(rel) => sub.send(Packet::PubComp(PubComp::new(rel.packet_id))).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let got = received.remove(&qos).unwrap_or_default();
        let missing: Vec<u32> = acked[&qos]
            .iter()
            .copied()
            .filter(|seq| !got.contains(seq))
            .collect();
        assert!(
            missing.is_empty(),
            "{qos:?}: {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "{qos:?}: per-topic order kept");
        if qos == QoS::ExactlyOnce {
            sorted.dedup();
            assert_eq!(sorted.len(), got.len(), "QoS 2 delivered exactly once");
        }
    }
}

/// The store's own tree held retained messages before a node alone kept them in its Raft
/// groups (a cluster of one): a data folder from then has them moved into the groups at
/// start (an expired one is dropped), and the tree is emptied, so a restart reads them
/// from the groups alone.
#[tokio::test]
async fn retained_messages_of_an_older_data_folder_move_into_their_groups() {
    use shoal_session::{Message, Timestamp};
    let dir = tempfile::tempdir().expect("tempdir");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let message = |topic: &str, payload: &'static [u8], expires_at: Option<u64>| Message {
        topic: s(topic),
        payload: bytes::Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
        expires_at: expires_at.map(Timestamp),
        received_at: Timestamp(now_ms - 60_000),
    };
    {
        let store = shoal_store::Store::open(dir.path(), Default::default()).expect("store");
        for m in [
            message("old/1", b"one", None),
            message("old/2", b"two", Some(now_ms + 3_600_000)),
            message("old/gone", b"expired", Some(now_ms - 1_000)),
        ] {
            store.put_retained(&m).expect("put");
        }
        store.flush().await.expect("flush");
    }
    let expect_old = |node: &TestNode| {
        let addr = node.addr();
        async move {
            let (mut late, _) = Raw::connect(addr, V4, "late", |_| {}).await;
            late.subscribe(1, &[("old/#", QoS::AtMostOnce)]).await;
            let mut got = Vec::new();
            for _ in 0..2 {
                let p = late.next_publish().await;
                got.push((p.topic.to_string(), p.payload.to_vec()));
            }
            got.sort();
            assert_eq!(
                got,
                [
                    ("old/1".to_owned(), b"one".to_vec()),
                    ("old/2".to_owned(), b"two".to_vec())
                ]
            );
            assert!(
                tokio::time::timeout(Duration::from_millis(300), late.recv())
                    .await
                    .is_err(),
                "the expired message is not delivered"
            );
        }
    };
    let node = TestNode {
        node: start_in(dir.path(), |_| {}).await,
        dir,
    };
    expect_old(&node).await;
    let TestNode { node, dir } = node;
    node.shutdown().await;
    {
        let store = shoal_store::Store::open(dir.path(), Default::default()).expect("store");
        let left = store.load_retained().expect("load");
        assert!(
            left.records.is_empty(),
            "the tree is emptied: {:?}",
            left.records
        );
    }
    let node = TestNode {
        node: start_in(dir.path(), |_| {}).await,
        dir,
    };
    expect_old(&node).await;
}

/// A retained message that expires leaves its Raft group too: after a restart it is not
/// back (not even in memory: the node counts no retained message).
#[tokio::test]
async fn an_expired_retained_message_is_gone_after_a_restart() {
    let node = TestNode::start().await;
    let (mut publisher, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "p", |_| {}).await;
    let mut p = Publish::new(s("short/lived"), bytes::Bytes::from_static(b"x"));
    p.retain = true;
    p.qos_pid = QosPid::AtLeastOnce(pid(1));
    p.properties.message_expiry_interval = Some(1);
    publisher.send(Packet::Publish(p)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    drop(publisher);
    // Expiry runs on the node's sweep (each second) after the message's second is up.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let node = node.restart().await;
    let (mut late, _) = Raw::connect(node.addr(), V4, "late", |_| {}).await;
    late.subscribe(1, &[("short/#", QoS::AtMostOnce)]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), late.recv())
            .await
            .is_err(),
        "an expired message is not delivered"
    );
    // Nor held: the node counts no retained message.
    let mut stream = tokio::net::TcpStream::connect(node.node.admin_addr())
        .await
        .expect("admin");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    let (code, body) = http_response(&response);
    assert_eq!(code, 200, "{response}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["retained"], 0, "{status}");
}
