//! One live connection per client id, also when CONNECTs with the same client id arrive at
//! the same instant: exactly one wins, the other is taken over.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use shoal_codec::*;

/// Opens a connection and sends all of a CONNECT for `client_id` but its last byte.
async fn almost_connected(
    node: &TestNode,
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
) -> (Raw, u8) {
    let mut raw = Raw::open(node.addr(), version).await;
    let mut connect = Connect::new(version, s(client_id));
    connect.clean_start = clean_start;
    if version.is_v5() && !clean_start {
        connect.properties.session_expiry_interval = Some(600);
    }
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(version, &mut bytes)
        .expect("encodes");
    let last = bytes[bytes.len() - 1];
    raw.send_bytes(&bytes[..bytes.len() - 1]).await;
    (raw, last)
}

/// Reads until CONNACK; false if the connection closed first.
async fn connack(raw: &mut Raw) -> bool {
    loop {
        match raw.recv().await {
            Some(Packet::ConnAck(_)) => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

/// Whether the connection still serves its client: it answers PINGREQ.
async fn is_live(raw: &mut Raw) -> bool {
    raw.send_bytes(&[0xC0, 0x00]).await;
    loop {
        match raw.recv_within(Duration::from_secs(2)).await {
            Some(Packet::PingResp) => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

async fn race(version: ProtocolVersion, clean_start: bool, tries: usize) {
    let node = TestNode::start().await;
    let mut both_live = 0;
    for n in 0..tries {
        let id = format!("race-{n}");
        let (a, a_last) = almost_connected(&node, version, &id, clean_start).await;
        let (b, b_last) = almost_connected(&node, version, &id, clean_start).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let release = |mut raw: Raw, last: u8, barrier: Arc<tokio::sync::Barrier>| {
            tokio::spawn(async move {
                barrier.wait().await;
                raw.send_bytes(&[last]).await;
                raw
            })
        };
        let a = release(a, a_last, Arc::clone(&barrier));
        let b = release(b, b_last, barrier);
        let (mut a, mut b) = (a.await.expect("task"), b.await.expect("task"));
        // Once both have their CONNACK, the winner's came after the loser let go: from then
        // on only one may answer.
        let (a_ack, b_ack) = tokio::join!(connack(&mut a), connack(&mut b));
        assert!(a_ack && b_ack, "try {n}: a CONNECT got no CONNACK");
        let (a_live, b_live) = tokio::join!(is_live(&mut a), is_live(&mut b));
        assert!(a_live || b_live, "try {n}: neither connection was served");
        if a_live && b_live {
            both_live += 1;
        }
    }
    assert_eq!(
        both_live, 0,
        "{both_live} of {tries} tries left two live connections with one client id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_clean_start_connects_leave_one_live_connection() {
    race(ProtocolVersion::V5, true, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_resuming_connects_leave_one_live_connection() {
    race(ProtocolVersion::V5, false, 500).await;
    race(ProtocolVersion::V3_1_1, false, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_of_two_connects_takes_over_and_the_earlier_gets_0x8e() {
    let node = TestNode::start().await;
    let (mut first, ack) = Raw::connect(node.addr(), ProtocolVersion::V5, "twice", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (mut second, ack) = Raw::connect(node.addr(), ProtocolVersion::V5, "twice", |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    match first.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::SessionTakenOver)
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(is_live(&mut second).await);
    assert!(!is_live(&mut first).await);
}
