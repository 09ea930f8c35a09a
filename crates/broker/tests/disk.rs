//! What a persistent session writes to disk: each change writes what changed. A session
//! with a megabyte of subscriptions publishing QoS 2 messages, or adding one more
//! subscription, does not rewrite its subscriptions (issue: 1.9 MB per QoS 2 message).

mod common;

use common::*;
use shoal_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// The bytes under `dir`.
fn size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                size(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[tokio::test]
async fn a_session_with_a_megabyte_of_subscriptions_writes_little_per_qos2_message() {
    let node = TestNode::start().await;
    let (mut client, _) = Raw::connect(node.addr(), V5, "heavy", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    })
    .await;
    // 3,900 filters of 250 bytes: about a megabyte of subscriptions, 100 per SUBSCRIBE.
    let long = "x".repeat(240);
    for batch in 0..39u16 {
        let filters: Vec<String> = (0..100)
            .map(|n| format!("{long}/{batch:04}/{n:03}"))
            .collect();
        let filters: Vec<(&str, QoS)> = filters
            .iter()
            .map(|f| (f.as_str(), QoS::AtLeastOnce))
            .collect();
        let ack = client.subscribe(batch + 1, &filters).await;
        assert_eq!(ack.reason_codes.len(), 100);
    }
    let before = size(node.dir.path());
    for n in 1..=100u16 {
        client
            .publish("nobody/listens", b"x", QosPid::ExactlyOnce(pid(n)), false)
            .await;
        assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
        client.send(Packet::PubRel(PubRel::new(pid(n)))).await;
        assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
    }
    // One more subscription, and its removal.
    client
        .subscribe(500, &[("one/more", QoS::AtLeastOnce)])
        .await;
    client
        .send(Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(501),
            properties: Default::default(),
            filters: vec![s("one/more")],
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::UnsubAck(_))));
    let grown = size(node.dir.path()).saturating_sub(before);
    // Rewriting the subscriptions would be about 100 MB here; sled's log segments come in
    // 512 KiB steps.
    assert!(
        grown < 8 * 1024 * 1024,
        "the data folder grew by {grown} bytes for 100 QoS 2 messages"
    );
    // The subscriptions are all there after a restart.
    drop(client);
    let node = node.restart().await;
    let (_, ack) = Raw::connect(node.addr(), V5, "heavy", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    })
    .await;
    assert!(ack.session_present);
    let (mut publisher, _) = Raw::connect(node.addr(), V5, "pub", |_| {}).await;
    publisher
        .publish(
            &format!("{long}/0038/099"),
            b"y",
            QosPid::AtLeastOnce(pid(1)),
            false,
        )
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, PubAckReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}
