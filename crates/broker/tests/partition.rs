//! A network partition of one node of three, made by this test: the node runs in a
//! network namespace of its own (`ip netns`, root only), joined to the others by a veth
//! pair, and is cut off from the other nodes with iptables rules inside its namespace
//! (its MQTT port stays reachable, so the test sees what it tells its clients). The
//! majority keeps routing; the cut-off node loses its lease, disconnects its clients and
//! refuses new ones; after the heal it serves again.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::{Raw, free_port, http_response, pid};
use shoal_codec::{
    ConnectReasonCode, DisconnectReasonCode, Packet, ProtocolVersion, PubAckReasonCode, QoS, QosPid,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;
use common::QUICK_CLUSTER as QUICK;

/// A node process, killed (SIGKILL) on drop.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Node {
    mqtt: SocketAddr,
    admin: SocketAddr,
    cluster: SocketAddr,
    _dir: tempfile::TempDir,
    _process: NodeProcess,
}

fn start(netns: Option<&str>, id: u64, ip: &str, seed: Option<SocketAddr>) -> Node {
    let mqtt: SocketAddr = format!("{ip}:{}", free_port()).parse().expect("addr");
    let admin: SocketAddr = format!("{ip}:{}", free_port()).parse().expect("addr");
    let cluster: SocketAddr = format!("{ip}:{}", free_port()).parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shoal")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_shoal")),
    };
    command
        .args(QUICK)
        .args([
            "--listen",
            &mqtt.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args([
            "--cluster-listen",
            &cluster.to_string(),
            "--node-id",
            &id.to_string(),
        ])
        .args(["--sys-interval", "0", "--log", "warn"])
        .arg("--data-dir")
        .arg(dir.path());
    match seed {
        Some(seed) => command.args(["--seeds", &seed.to_string()]),
        None => command.args(["--bootstrap", "true"]),
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start shoal");
    Node {
        mqtt,
        admin,
        cluster,
        _dir: dir,
        _process: NodeProcess(child),
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await;
    Some(http_response(&response))
}

async fn ready_within(node: &Node, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if http_get(node.admin, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn client(addr: SocketAddr, id: &str) -> Raw {
    let (raw, ack) = Raw::connect(addr, V5, id, |_| {}).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success, "{id}");
    raw
}

async fn publish_qos1(raw: &mut Raw, topic: &str, n: u16) -> PubAckReasonCode {
    raw.publish(topic, &n.to_be_bytes(), QosPid::AtLeastOnce(pid(n)), false)
        .await;
    loop {
        match raw.recv_within(Duration::from_secs(15)).await {
            Some(Packet::PubAck(ack)) if ack.packet_id == pid(n) => return ack.reason_code,
            Some(_) => continue,
            None => panic!("no PUBACK for {n}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_stops_serving_the_majority_routes_on_and_it_comes_back() {
    let Some(netns) = Netns::create("part", 231) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to make network namespaces"
        );
        eprintln!("skipped: network namespaces need root");
        return;
    };
    let n1 = start(None, 1, &netns.host_ip, None);
    assert!(
        ready_within(&n1, Duration::from_secs(30)).await,
        "node 1 ready"
    );
    let n2 = start(None, 2, &netns.host_ip, Some(n1.cluster));
    let n3 = start(Some(&netns.name), 3, &netns.ns_ip, Some(n1.cluster));
    assert!(
        ready_within(&n2, Duration::from_secs(30)).await,
        "node 2 ready"
    );
    assert!(
        ready_within(&n3, Duration::from_secs(30)).await,
        "node 3 ready"
    );

    let mut on_majority = client(n1.mqtt, "majority-sub").await;
    on_majority
        .subscribe(1, &[("part/#", QoS::AtLeastOnce)])
        .await;
    let mut on_minority = client(n3.mqtt, "minority-sub").await;
    on_minority
        .subscribe(1, &[("part/#", QoS::AtLeastOnce)])
        .await;
    let mut publisher = client(n2.mqtt, "publisher").await;
    assert_eq!(
        publish_qos1(&mut publisher, "part/x", 1).await,
        PubAckReasonCode::Success
    );
    assert!(matches!(on_majority.recv().await, Some(Packet::Publish(_))));
    assert!(matches!(on_minority.recv().await, Some(Packet::Publish(_))));

    // The partition: node 3 neither reaches nor is reached by the other nodes.
    let (p1, p2, p3) = (n1.cluster.port(), n2.cluster.port(), n3.cluster.port());
    for (direction, port) in [("--dport", p3), ("--sport", p1), ("--sport", p2)] {
        let port = port.to_string();
        netns.iptables(&["-A", "INPUT", "-p", "tcp", direction, &port, "-j", "DROP"]);
    }
    let cut = Instant::now();

    // The minority node tells its client to go elsewhere once its lease lapses.
    let told = loop {
        match on_minority.recv_within(Duration::from_secs(10)).await {
            Some(Packet::Disconnect(d)) => break Some(d.reason_code),
            Some(_) => continue,
            None => break None,
        }
    };
    assert_eq!(
        told,
        Some(DisconnectReasonCode::ServerBusy),
        "the cut-off node's client"
    );
    let stopped_after = cut.elapsed();
    let (refused, ack) = Raw::connect(n3.mqtt, V5, "newcomer", |_| {}).await;
    drop(refused);
    assert_eq!(
        ack.reason_code,
        ConnectReasonCode::ServerBusy,
        "a new client of the cut-off node"
    );
    assert_eq!(http_get(n3.admin, "/readyz").await.map(|r| r.0), Some(503));

    // The majority routes on: once node 3 is declared down, every publication is
    // acknowledged, and every acknowledged one is delivered (one refused meanwhile, since
    // node 3 did not take its copy, may still reach the majority's subscriber).
    let mut delivered_after = None;
    let mut acked = Vec::new();
    for n in 2..=400u16 {
        let reason = publish_qos1(&mut publisher, "part/x", n).await;
        if reason == PubAckReasonCode::Success {
            delivered_after.get_or_insert(cut.elapsed());
            acked.push(n);
            if acked.len() >= 20 {
                break;
            }
        } else {
            assert_eq!(reason, PubAckReasonCode::UnspecifiedError, "message {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut got = Vec::new();
    while let Some(packet) = on_majority.recv_within(Duration::from_millis(500)).await {
        if let Packet::Publish(p) = packet {
            got.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
            if let QosPid::AtLeastOnce(id) = p.qos_pid {
                on_majority
                    .send(Packet::PubAck(shoal_codec::PubAck::new(id)))
                    .await;
            }
        }
    }
    let lost: Vec<u16> = acked.iter().filter(|n| !got.contains(n)).copied().collect();
    assert!(lost.is_empty(), "acknowledged and not delivered: {lost:?}");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in publish order: {got:?}"
    );
    let delivered_after = delivered_after.expect("the majority routes on");
    eprintln!(
        "partition: the cut-off node stopped serving after {stopped_after:?}; the majority acknowledged again after {delivered_after:?}"
    );

    // The heal: node 3 serves again, and routes again.
    netns.iptables(&["-F", "INPUT"]);
    assert!(
        ready_within(&n3, Duration::from_secs(30)).await,
        "node 3 ready after the heal"
    );
    let mut back = client(n3.mqtt, "minority-again").await;
    back.subscribe(1, &[("healed/#", QoS::AtLeastOnce)]).await;
    assert_eq!(
        publish_qos1(&mut publisher, "healed/x", 500).await,
        PubAckReasonCode::Success
    );
    match back.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload.as_ref(), 500u16.to_be_bytes()),
        other => panic!("expected the publication after the heal, got {other:?}"),
    }
}
