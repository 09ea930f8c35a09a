//! The Will is published exactly when the specification says (§3.1.2.5, §3.1.3.2.2): when
//! the Will Delay Interval has passed or the session ends, whichever is first; never while
//! the client is back (cancelled by client id); not for a takeover that resumes the session;
//! and a Will waiting for its delay survives a restart of the node, also kill -9.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use shoal_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A client `id` with a Will on `wills/<id>`, `delay` seconds of Will Delay and `expiry`
/// seconds of Session Expiry.
fn with_will(id: &str, delay: u32, expiry: u32) -> impl FnOnce(&mut Connect) + '_ {
    move |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(expiry);
        c.will = Some(LastWill {
            topic: s(&format!("wills/{id}")),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(delay),
                ..Default::default()
            },
        });
    }
}

/// A subscriber to `wills/#`.
async fn watcher(addr: std::net::SocketAddr) -> Raw {
    let (mut watcher, _) = Raw::connect(addr, V5, "watcher", |_| {}).await;
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]).await;
    watcher
}

/// How long until the watcher gets a Will (acknowledging it), if within `wait`.
async fn will_within(watcher: &mut Raw, wait: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let left = wait.checked_sub(start.elapsed())?;
        match watcher.recv_within(left).await? {
            Packet::Publish(p) => {
                if let Some(id) = p.qos_pid.packet_id() {
                    watcher.send(Packet::PubAck(PubAck::new(id))).await;
                }
                return Some(start.elapsed());
            }
            _ => continue,
        }
    }
}

/// Drops the connection without DISCONNECT (the network broke).
fn drop_connection(raw: Raw) {
    drop(raw);
}

#[tokio::test]
async fn a_will_delay_beyond_a_session_that_ends_with_its_connection_is_due_at_once() {
    let node = TestNode::start().await;
    let mut watcher = watcher(node.addr()).await;
    let (client, _) = Raw::connect(node.addr(), V5, "w0", with_will("w0", 5, 0)).await;
    drop_connection(client);
    let after = will_within(&mut watcher, Duration::from_secs(3)).await;
    assert!(
        after.is_some(),
        "the session ended: the Will is due at once"
    );
}

#[tokio::test]
async fn a_will_is_due_when_the_session_expires_before_its_delay() {
    let node = TestNode::start().await;
    let mut watcher = watcher(node.addr()).await;
    let (client, _) = Raw::connect(node.addr(), V5, "w2", with_will("w2", 5, 2)).await;
    drop_connection(client);
    let after = will_within(&mut watcher, Duration::from_secs(6))
        .await
        .expect("the Will is published");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_millis(4000),
        "due when the session ends (2 s), not after the delay (5 s): {after:?}"
    );
}

#[tokio::test]
async fn a_client_back_within_the_delay_cancels_its_will_whatever_its_clean_start() {
    let node = TestNode::start().await;
    let mut watcher = watcher(node.addr()).await;
    for (n, clean_start) in [(0, false), (1, true)] {
        let id = format!("back{n}");
        let (client, _) = Raw::connect(node.addr(), V5, &id, with_will(&id, 2, 60)).await;
        drop_connection(client);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_back, ack) = Raw::connect(node.addr(), V5, &id, |c| {
            c.clean_start = clean_start;
            c.properties.session_expiry_interval = Some(60);
        })
        .await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success);
        assert!(
            will_within(&mut watcher, Duration::from_secs(3))
                .await
                .is_none(),
            "clean start {clean_start}: the Will of a client that came back was published"
        );
    }
}

#[tokio::test]
async fn a_takeover_that_resumes_the_session_does_not_publish_the_old_will() {
    let node = TestNode::start().await;
    let mut watcher = watcher(node.addr()).await;
    let (mut first, _) = Raw::connect(node.addr(), V5, "tk", with_will("tk", 0, 60)).await;
    let (_second, ack) = Raw::connect(node.addr(), V5, "tk", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    })
    .await;
    assert!(ack.session_present);
    assert!(
        matches!(first.recv().await, Some(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::SessionTakenOver)
    );
    assert!(
        will_within(&mut watcher, Duration::from_secs(1))
            .await
            .is_none(),
        "the session goes on: no Will"
    );
    // A takeover with a clean start ends the session: its Will is due.
    let (mut third, _) = Raw::connect(node.addr(), V5, "tk2", with_will("tk2", 0, 60)).await;
    let (_fourth, _) = Raw::connect(node.addr(), V5, "tk2", |c| c.clean_start = true).await;
    assert!(matches!(third.recv().await, Some(Packet::Disconnect(_))));
    assert!(
        will_within(&mut watcher, Duration::from_secs(2))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_will_waiting_for_its_delay_survives_a_restart() {
    let node = TestNode::start().await;
    let (client, _) = Raw::connect(node.addr(), V5, "rs", with_will("rs", 2, 60)).await;
    drop_connection(client);
    // The drop is seen, then the node restarts within the delay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = node.restart().await;
    let mut watcher = watcher(node.addr()).await;
    assert!(
        will_within(&mut watcher, Duration::from_secs(5))
            .await
            .is_some(),
        "the pending Will was lost with the restart"
    );
}

#[tokio::test]
async fn a_will_waiting_for_its_delay_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Process::start(dir.path()).await;
    let (client, _) = Raw::connect(broker.addr, V5, "k9", with_will("k9", 2, 60)).await;
    drop_connection(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = broker.addr.port();
    broker.kill_9();
    let broker = Process::start_on(dir.path(), port).await;
    let mut watcher = watcher(broker.addr).await;
    assert!(
        will_within(&mut watcher, Duration::from_secs(5))
            .await
            .is_some(),
        "the pending Will was lost with kill -9"
    );
}
