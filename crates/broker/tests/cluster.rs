//! The cluster, tested with real `shoal` processes on loopback that join each other, route
//! between each other, and are killed with SIGKILL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Process, Raw, free_port, http_response, pid};
use shoal_codec::{DisconnectReasonCode, Packet, ProtocolVersion, PubAckReasonCode, QoS, QosPid};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;

use common::QUICK_CLUSTER as QUICK;

/// One node of a test cluster: its ports and data folder, and the process while it runs.
struct Member {
    id: u64,
    mqtt: u16,
    cluster: u16,
    admin: u16,
    dir: TempDir,
    frontend: bool,
    process: Option<Process>,
}

/// Nodes started as one cluster: node 1 bootstraps, the others join through it.
struct TestCluster {
    members: Vec<Member>,
    /// Whether each node records its MQTT address (`--mqtt-advertise`).
    mqtt_advertise: bool,
    /// Flags every node gets.
    extra: Vec<String>,
}

impl TestCluster {
    /// `full` full nodes (and `frontends` front ends after them).
    async fn start(full: usize, frontends: usize) -> Self {
        Self::start_with(full, frontends, false, &[]).await
    }

    /// `start`, each node recording its MQTT address if `mqtt_advertise`, and with `extra`
    /// flags.
    async fn start_with(
        full: usize,
        frontends: usize,
        mqtt_advertise: bool,
        extra: &[&str],
    ) -> Self {
        let mut cluster = Self {
            members: Vec::new(),
            mqtt_advertise,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..full + frontends {
            cluster.push_member(i >= full);
        }
        cluster.run(0).await;
        // The others join at once, in parallel, as pods of a StatefulSet do.
        let joins: Vec<_> = (1..cluster.members.len())
            .map(|i| {
                let (dir, mqtt, args) = cluster.command(i);
                tokio::spawn(async move {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    Process::start_args(dir.as_path(), mqtt, &args, Duration::from_secs(60)).await
                })
            })
            .collect();
        for (i, join) in joins.into_iter().enumerate() {
            cluster.members[i + 1].process = Some(join.await.expect("a node starts"));
        }
        for i in 1..cluster.members.len() {
            cluster.ready(i).await;
        }
        cluster
    }

    /// Waits until member `i` has joined: `/readyz` answers 200 (its MQTT listener is bound
    /// from the start, and accepts once it has joined).
    async fn ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut stream) =
                tokio::net::TcpStream::connect(("127.0.0.1", self.members[i].admin)).await
            {
                let _ = stream
                    .write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .await;
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text).await;
                if text.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "node {} did not join", i + 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn command(&self, i: usize) -> (std::path::PathBuf, u16, Vec<String>) {
        let m = &self.members[i];
        let mut args: Vec<String> = QUICK.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--node-id".into(),
            m.id.to_string(),
            "--cluster-listen".into(),
            format!("127.0.0.1:{}", m.cluster),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", m.admin),
        ]);
        if i == 0 {
            args.extend(["--bootstrap".into(), "true".into()]);
        } else {
            args.extend([
                "--seeds".into(),
                format!("127.0.0.1:{}", self.members[0].cluster),
            ]);
        }
        if m.frontend {
            args.extend(["--role".into(), "frontend".into()]);
        }
        if self.mqtt_advertise {
            args.extend(["--mqtt-advertise".into(), format!("127.0.0.1:{}", m.mqtt)]);
        }
        args.extend(self.extra.iter().cloned());
        (m.dir.path().to_path_buf(), m.mqtt, args)
    }

    /// A new member (not started), on free ports; returns its index.
    fn push_member(&mut self, frontend: bool) -> usize {
        let i = self.members.len();
        self.members.push(Member {
            id: i as u64 + 1,
            mqtt: free_port(),
            cluster: free_port(),
            admin: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            frontend,
            process: None,
        });
        i
    }

    /// Adds a new full node that joins the running cluster; returns its index.
    async fn add(&mut self) -> usize {
        let i = self.push_member(false);
        self.run(i).await;
        i
    }

    /// Adds a new full node that is not told where the cluster is: with `seeds` (none: it
    /// waits for `shoal cluster join`); returns its index without waiting for it to join.
    async fn add_unjoined(&mut self, seeds: Option<String>) -> usize {
        let i = self.push_member(false);
        let (dir, mqtt, mut args) = self.command(i);
        let at = args.iter().position(|a| a == "--seeds").expect("a seed");
        args.drain(at..at + 2);
        if let Some(seeds) = seeds {
            args.extend(["--seeds".into(), seeds]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Process::start_args(&dir, mqtt, &args, Duration::from_secs(60)).await;
        self.members[i].process = Some(process);
        i
    }

    /// `shoal cluster ARGS` against member `i`'s admin API: exit code, stdout, stderr.
    async fn cli(&self, i: usize, args: &[&str]) -> (i32, String, String) {
        let admin = format!("http://127.0.0.1:{}", self.members[i].admin);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("cluster")
            .args(args)
            .args(["--admin", &admin])
            .output()
            .await
            .expect("shoal cluster runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts (or restarts, with its data) member `i`.
    async fn run(&mut self, i: usize) {
        let (dir, mqtt, args) = self.command(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Process::start_args(&dir, mqtt, &args, Duration::from_secs(60)).await;
        self.members[i].process = Some(process);
        self.ready(i).await;
    }

    fn addr(&self, i: usize) -> SocketAddr {
        format!("127.0.0.1:{}", self.members[i].mqtt)
            .parse()
            .expect("addr")
    }

    /// Sends `signal` (`STOP`, `CONT`) to member `i`'s process, which this test started.
    fn signal(&self, i: usize, signal: &str) {
        let process = self.members[i].process.as_ref().expect("running");
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &process.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// SIGKILL: no shutdown, no flush, no goodbye to the other nodes.
    fn kill(&mut self, i: usize) {
        if let Some(process) = self.members[i].process.take() {
            process.kill_9();
        }
    }

    /// `GET /api/v1/cluster` of member `i`.
    async fn status(&self, i: usize) -> serde_json::Value {
        let (code, body) = self.admin(i, "GET", "/api/v1/cluster").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Each group's leader as member `i` sees it.
    async fn leaders(&self, i: usize) -> BTreeMap<String, u64> {
        let status = self.status(i).await;
        status["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| {
                (
                    g["group"].as_str().unwrap_or("").to_owned(),
                    g["leader"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until the route and retained shards' leaderships are spread: every full node
    /// leads one at least. Returns the leaders.
    async fn leaders_spread(&self, i: usize, full: u64) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let leaders = self.leaders(i).await;
            let leading: BTreeSet<u64> = leaders
                .iter()
                .filter(|(group, _)| *group != "meta")
                .map(|(_, leader)| *leader)
                .collect();
            if (1..=full).all(|node| leading.contains(&node)) {
                return leaders;
            }
            assert!(
                Instant::now() < deadline,
                "the leaderships did not spread: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls `GET /api/v1/cluster` of member `i` (for up to 20 s) until `until` holds of
    /// it; returns it.
    async fn status_when(
        &self,
        i: usize,
        what: &str,
        until: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, body) = self.admin(i, "GET", "/api/v1/cluster").await;
            if code == 200 {
                let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                if until(&status) {
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {what}: {code} {body}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One request to member `i`'s admin API: status code and body.
    async fn admin(&self, i: usize, method: &str, path: &str) -> (u16, String) {
        self.admin_with(i, method, path, "").await
    }

    /// One request with a JSON `body` to member `i`'s admin API: status code and body.
    async fn admin_with(&self, i: usize, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.members[i].admin))
            .await
            .expect("admin listener");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        http_response(&text)
    }
}

/// A clean MQTT 5 client of `addr`.
async fn client(addr: SocketAddr, id: &str) -> Raw {
    let (raw, ack) = Raw::connect(addr, V5, id, |_| {}).await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    raw
}

/// Publishes at QoS 1 and returns the PUBACK's reason code.
async fn publish_qos1(raw: &mut Raw, topic: &str, payload: &[u8], id: u16) -> PubAckReasonCode {
    raw.publish(topic, payload, QosPid::AtLeastOnce(pid(id)), false)
        .await;
    loop {
        match raw.recv_within(Duration::from_secs(15)).await {
            Some(Packet::PubAck(ack)) if ack.packet_id == pid(id) => return ack.reason_code,
            Some(Packet::Publish(_)) => continue,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// Subscribes and checks the SUBACK granted every filter.
async fn subscribe(raw: &mut Raw, id: u16, filter: &str, qos: QoS) {
    let ack = raw.subscribe(id, &[(filter, qos)]).await;
    assert_eq!(
        ack.reason_codes,
        vec![shoal_codec::SubAckReasonCode::granted(qos)],
        "SUBACK of {filter}"
    );
}

/// The payloads of the PUBLISH packets that arrive within `wait` of each other, acked.
async fn drain(raw: &mut Raw, wait: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(packet) = raw.recv_within(wait).await {
        if let Packet::Publish(p) = packet {
            if let QosPid::AtLeastOnce(id) = p.qos_pid {
                raw.send(Packet::PubAck(shoal_codec::PubAck::new(id))).await;
            }
            got.push(p.payload.to_vec());
        }
    }
    got
}

/// A subscriber on member `to` (SUBACK first) gets what a client of member `from`
/// publishes at QoS 1 afterwards; `tag` names the clients and the topic.
async fn assert_routes(cluster: &TestCluster, from: usize, to: usize, tag: &str) {
    let mut subscriber = client(cluster.addr(to), &format!("{tag}-sub")).await;
    subscribe(&mut subscriber, 1, &format!("{tag}/#"), QoS::AtLeastOnce).await;
    let mut publisher = client(cluster.addr(from), &format!("{tag}-pub")).await;
    assert_eq!(
        publish_qos1(&mut publisher, &format!("{tag}/x"), tag.as_bytes(), 1).await,
        PubAckReasonCode::Success,
        "{tag}: node {} to node {}",
        from + 1,
        to + 1
    );
    assert_eq!(
        subscriber.next_publish().await.payload.as_ref(),
        tag.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_bootstrap_join_and_route_every_way() {
    let cluster = TestCluster::start(3, 0).await;
    let status = cluster.status(1).await;
    assert_eq!(status["enabled"], true);
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    for group in status["groups"].as_array().expect("groups") {
        assert_eq!(group["voters"].as_array().map(Vec::len), Some(3), "{group}");
        assert_ne!(group["leader"], 0, "{group}");
    }
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut raw = client(cluster.addr(i), &format!("sub{i}")).await;
        subscribe(&mut raw, 1, "every/#", QoS::AtLeastOnce).await;
        subscribers.push(raw);
    }
    for i in 0..3 {
        let mut publisher = client(cluster.addr(i), &format!("pub{i}")).await;
        let reason = publish_qos1(&mut publisher, &format!("every/{i}"), b"hello", 1).await;
        assert_eq!(reason, PubAckReasonCode::Success);
    }
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let mut got = drain(subscriber, Duration::from_millis(500)).await;
        got.sort();
        assert_eq!(got.len(), 3, "subscriber on node {} got {got:?}", i + 1);
    }
    // Each publisher's node forwarded its QoS 1 copy to two others and timed their
    // acceptance.
    let (code, metrics) = cluster.admin(0, "GET", "/metrics").await;
    assert_eq!(code, 200);
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_cluster_forward_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(count, Some(2), "{metrics}");
}

/// SUBACK from any node means a publication afterwards on any node reaches the subscriber:
/// hundreds of random placements, with the SUBACK latency this costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_publish_across_nodes_never_misses() {
    let cluster = TestCluster::start(3, 0).await;
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for i in 0..3 {
        subscribers.push(client(cluster.addr(i), &format!("s{i}")).await);
        publishers.push(client(cluster.addr(i), &format!("p{i}")).await);
    }
    let mut seed: u64 = 0x5eed_1234;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % n) as usize
    };
    let mut misses = 0;
    let mut latencies = Vec::new();
    const RUNS: u16 = 300;
    for run in 1..=RUNS {
        let (s, p) = (next(3), next(3));
        let topic = format!("stp/{run}");
        let started = Instant::now();
        subscribe(&mut subscribers[s], run, &topic, QoS::AtLeastOnce).await;
        latencies.push(started.elapsed());
        let reason = publish_qos1(&mut publishers[p], &topic, &run.to_be_bytes(), run).await;
        assert_eq!(
            reason,
            PubAckReasonCode::Success,
            "run {run}: the publishing node {} did not see the route made on node {}",
            p + 1,
            s + 1
        );
        match subscribers[s].recv_within(Duration::from_secs(5)).await {
            Some(Packet::Publish(got)) if got.payload.as_ref() == run.to_be_bytes() => {
                if let QosPid::AtLeastOnce(id) = got.qos_pid {
                    subscribers[s]
                        .send(Packet::PubAck(shoal_codec::PubAck::new(id)))
                        .await;
                }
            }
            other => {
                misses += 1;
                eprintln!("run {run}: sub on {}, pub on {}: {other:?}", s + 1, p + 1);
            }
        }
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("SUBACK of a new filter in a 3-node cluster: p50 {p50:?}, p99 {p99:?}");
    assert_eq!(misses, 0, "publications after SUBACK that never arrived");
}

/// A client id connected on one node and then on another: the first connection is closed
/// with 0x8E before the second's CONNACK; two CONNECTs racing on two nodes leave one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_client_id_across_nodes() {
    let cluster = TestCluster::start(3, 0).await;
    let mut first = client(cluster.addr(0), "device-7").await;
    let _second = client(cluster.addr(1), "device-7").await;
    // By the time the second CONNACK arrived, the first connection was told.
    match first.recv_within(Duration::from_millis(200)).await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::SessionTakenOver)
        }
        other => panic!("expected DISCONNECT 0x8E on the first node, got {other:?}"),
    }

    for round in 0..40 {
        let id = format!("racer-{round}");
        let (a, b) = tokio::join!(
            Raw::connect(cluster.addr(round % 3), V5, &id, |_| {}),
            Raw::connect(cluster.addr((round + 1) % 3), V5, &id, |_| {}),
        );
        let mut alive = 0;
        for (mut raw, _) in [a, b] {
            raw.send(Packet::PingReq).await;
            let mut live = false;
            while let Some(packet) = raw.recv_within(Duration::from_secs(2)).await {
                match packet {
                    Packet::PingResp => {
                        live = true;
                        break;
                    }
                    Packet::Disconnect(d) => {
                        assert_eq!(d.reason_code, DisconnectReasonCode::SessionTakenOver);
                        break;
                    }
                    _ => {}
                }
            }
            if live && !raw.silent_for(Duration::from_millis(300)).await {
                live = false;
            }
            alive += usize::from(live);
        }
        assert_eq!(
            alive, 1,
            "round {round}: {alive} live connections for one client id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_set_on_one_node_are_everywhere() {
    let cluster = TestCluster::start(3, 0).await;
    let mut publisher = client(cluster.addr(2), "retainer").await;
    publisher
        .publish("config/7", b"v1", QosPid::AtLeastOnce(pid(1)), true)
        .await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.reason_code, PubAckReasonCode::NoMatchingSubscribers)
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    for i in 0..3 {
        let mut raw = client(cluster.addr(i), &format!("reader{i}")).await;
        subscribe(&mut raw, 1, "config/+", QoS::AtLeastOnce).await;
        let got = raw.next_publish().await;
        assert_eq!(got.payload.as_ref(), b"v1", "node {}", i + 1);
        assert!(got.retain);
    }
    // Cleared on another node: gone everywhere.
    let mut clearer = client(cluster.addr(1), "clearer").await;
    clearer
        .publish("config/7", b"", QosPid::AtLeastOnce(pid(2)), true)
        .await;
    assert!(matches!(clearer.recv().await, Some(Packet::PubAck(_))));
    let mut late = client(cluster.addr(0), "late").await;
    subscribe(&mut late, 1, "config/+", QoS::AtLeastOnce).await;
    assert!(late.silent_for(Duration::from_millis(500)).await);
}

/// A ban made on one node holds on every node: a connected client of another node is
/// kicked (0x98), a new CONNECT anywhere is refused (0x8A), the ban outlives a restart of
/// every node, and lifting it on a third node lets the client in everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_on_one_node_holds_on_every_node_and_outlives_a_restart() {
    let mut cluster = TestCluster::start(3, 0).await;
    let mut victim = client(cluster.addr(1), "rogue").await;
    let (status, body) = cluster
        .admin_with(
            0,
            "POST",
            "/api/v1/bans",
            r#"{"target":"client:rogue","reason":"misbehaves"}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (reason, _) = disconnect_of(&mut victim, Duration::from_secs(5)).await;
    assert_eq!(reason, DisconnectReasonCode::AdministrativeAction);
    for i in 0..3 {
        let (_c, ack) = Raw::connect(cluster.addr(i), V5, "rogue", |_| {}).await;
        assert_eq!(
            ack.reason_code,
            shoal_codec::ConnectReasonCode::Banned,
            "node {}",
            i + 1
        );
        let (status, body) = cluster.admin(i, "GET", "/api/v1/bans").await;
        assert_eq!(status, 200);
        assert!(body.contains("misbehaves"), "node {}: {body}", i + 1);
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    // All at once: a node alone cannot elect the leaders it needs to serve.
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let (dir, mqtt, args) = cluster.command(i);
            tokio::spawn(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Process::start_args(&dir, mqtt, &args, Duration::from_secs(60)).await
            })
        })
        .collect();
    for (i, start) in starts.into_iter().enumerate() {
        cluster.members[i].process = Some(start.await.expect("start task"));
    }
    for i in 0..3 {
        cluster.ready(i).await;
    }
    for i in 0..3 {
        let (_c, ack) = Raw::connect(cluster.addr(i), V5, "rogue", |_| {}).await;
        assert_eq!(
            ack.reason_code,
            shoal_codec::ConnectReasonCode::Banned,
            "node {} after the restart",
            i + 1
        );
    }
    let (status, body) = cluster
        .admin(2, "DELETE", "/api/v1/bans/client:rogue")
        .await;
    assert_eq!(status, 204, "{body}");
    for i in 0..3 {
        let (_c, ack) = Raw::connect(cluster.addr(i), V5, "rogue", |_| {}).await;
        assert_eq!(
            ack.reason_code,
            shoal_codec::ConnectReasonCode::Success,
            "node {} once lifted",
            i + 1
        );
    }
}

/// A shared group with members on two nodes gets each message once, whichever node it is
/// published on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_across_nodes_deliver_each_message_once() {
    let cluster = TestCluster::start(3, 0).await;
    let mut a = client(cluster.addr(0), "worker-a").await;
    let mut b = client(cluster.addr(1), "worker-b").await;
    subscribe(&mut a, 1, "$share/workers/jobs/#", QoS::AtLeastOnce).await;
    subscribe(&mut b, 1, "$share/workers/jobs/#", QoS::AtLeastOnce).await;
    let mut publisher = client(cluster.addr(2), "dispatcher").await;
    const N: u16 = 60;
    for n in 1..=N {
        let reason = publish_qos1(&mut publisher, "jobs/x", &n.to_be_bytes(), n).await;
        assert_eq!(reason, PubAckReasonCode::Success);
    }
    let (got_a, got_b) = tokio::join!(
        drain(&mut a, Duration::from_millis(700)),
        drain(&mut b, Duration::from_millis(700))
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both members share the work"
    );
    let mut all: Vec<Vec<u8>> = got_a.into_iter().chain(got_b).collect();
    all.sort();
    let expected: Vec<Vec<u8>> = (1..=N).map(|n| n.to_be_bytes().to_vec()).collect();
    assert_eq!(all, expected, "each message exactly once in the group");
}

/// A node that holds neither the publisher nor the subscriber is killed mid-traffic: no
/// acknowledged QoS 1 message between them is lost, and its routes go after the failure
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bystander_loses_no_message_between_the_others() {
    let mut cluster = TestCluster::start(3, 0).await;
    let mut subscriber = client(cluster.addr(0), "keeper").await;
    subscribe(&mut subscriber, 1, "flow/#", QoS::AtLeastOnce).await;
    let mut bystander = client(cluster.addr(2), "bystander").await;
    subscribe(&mut bystander, 1, "flow/#", QoS::AtLeastOnce).await;
    let mut publisher = client(cluster.addr(1), "source").await;
    let mut acked = BTreeSet::new();
    let mut killed_at = None;
    let mut failing_since: Option<Instant> = None;
    let mut restored_after = None;
    for n in 1..=400u16 {
        if n == 100 {
            cluster.kill(2);
            killed_at = Some(Instant::now());
        }
        let reason = publish_qos1(&mut publisher, "flow/x", &n.to_be_bytes(), n).await;
        match reason {
            PubAckReasonCode::Success => {
                acked.insert(n);
                if let (Some(since), None) = (failing_since, restored_after) {
                    restored_after = Some(since.elapsed());
                }
            }
            PubAckReasonCode::UnspecifiedError => {
                // A copy for the dead node was not accepted: not acknowledged.
                failing_since.get_or_insert_with(Instant::now);
            }
            other => panic!("message {n}: unexpected PUBACK {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got: BTreeSet<u16> = drain(&mut subscriber, Duration::from_millis(700))
        .await
        .into_iter()
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let lost: Vec<u16> = acked.difference(&got).copied().collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never delivered: {lost:?}"
    );
    assert!(
        acked.contains(&400),
        "routing to the live subscriber resumed"
    );
    eprintln!(
        "bystander killed: {} acknowledged of 400, failures for {:?} after the kill at {:?}",
        acked.len(),
        restored_after,
        killed_at.map(|k| k.elapsed())
    );
    let status = cluster.status(0).await;
    let down: Vec<bool> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["id"] == 3)
        .map(|n| n["down"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(down, vec![true], "node 3 declared down: {status}");
}

/// Kill -9 the leader of the groups under traffic: new leaders are elected, and a route
/// made afterwards on the survivors works; then the dead node restarts with its data and
/// rejoins as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_routing_recovers_and_it_rejoins_with_its_data() {
    let mut cluster = TestCluster::start(3, 0).await;
    let leaders = cluster.leaders(0).await;
    let victim = (leaders["routes/0"] - 1) as usize;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let mut subscriber = client(cluster.addr(survivors[0]), "after-sub").await;
    let mut publisher = client(cluster.addr(survivors[1]), "after-pub").await;
    cluster.kill(victim);
    let killed = Instant::now();
    // Every route shard gets a new filter; SUBACK waits for a leader where needed.
    for shard_probe in 0..8u16 {
        let topic = format!("recover/{shard_probe}");
        subscribe(&mut subscriber, shard_probe + 1, &topic, QoS::AtLeastOnce).await;
        let reason = publish_qos1(&mut publisher, &topic, b"x", shard_probe + 1).await;
        assert_eq!(reason, PubAckReasonCode::Success, "{topic}");
        assert_eq!(subscriber.next_publish().await.payload.as_ref(), b"x");
    }
    eprintln!(
        "leader of routes/0 killed: routing on new filters restored in {:?}",
        killed.elapsed()
    );

    cluster.run(victim).await;
    let mut back = client(cluster.addr(victim), "back").await;
    subscribe(&mut back, 1, "recover/#", QoS::AtLeastOnce).await;
    let reason = publish_qos1(&mut publisher, "recover/again", b"y", 100).await;
    assert_eq!(reason, PubAckReasonCode::Success);
    assert_eq!(back.next_publish().await.payload.as_ref(), b"y");
    let status = cluster.status(victim).await;
    assert_eq!(status["node_id"], victim as u64 + 1);
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
}

/// Leaderships spread over the nodes once the cluster settles. Killing a node that leads
/// route and retained shards: the others elect new leaders, and claims (CONNECT), routes
/// (SUBSCRIBE) and retained messages work on at once; when it returns, its groups are
/// handed back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_and_a_killed_leader_gets_its_groups_back() {
    let mut cluster = TestCluster::start(3, 0).await;
    // The victim: a node that leads a retained shard and not meta (the shards move one
    // round at a time: wait for one).
    let deadline = Instant::now() + Duration::from_secs(40);
    let (leaders, victim_id) = loop {
        let leaders = cluster.leaders_spread(0, 3).await;
        let meta = leaders["meta"];
        let victim = leaders
            .iter()
            .find(|(group, leader)| {
                // 0: no leader at this moment (a handoff under way).
                group.starts_with("retained/") && **leader != meta && **leader > 0
            })
            .map(|(_, leader)| *leader);
        if let Some(victim) = victim {
            break (leaders, victim);
        }
        assert!(
            Instant::now() < deadline,
            "no retained shard moved off meta's leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let victim = (victim_id - 1) as usize;
    let led: BTreeSet<String> = leaders
        .iter()
        .filter(|(_, leader)| **leader == victim_id)
        .map(|(group, _)| group.clone())
        .collect();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let mut subscriber = client(cluster.addr(survivors[0]), "spread-sub").await;
    let mut publisher = client(cluster.addr(survivors[1]), "spread-pub").await;
    cluster.kill(victim);
    let killed = Instant::now();
    for probe in 0..8u16 {
        // A retained message and a new filter in every shard, and new connections that
        // claim client ids in every shard.
        let topic = format!("spread/{probe}");
        publisher
            .publish(&topic, b"r", QosPid::AtLeastOnce(pid(probe + 1)), true)
            .await;
        match publisher.recv_within(Duration::from_secs(15)).await {
            Some(Packet::PubAck(ack)) => assert!(
                ack.reason_code == PubAckReasonCode::NoMatchingSubscribers,
                "{topic}: {ack:?}"
            ),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        subscribe(&mut subscriber, probe + 1, &topic, QoS::AtLeastOnce).await;
        let retained = subscriber.next_publish().await;
        assert_eq!(retained.payload.as_ref(), b"r", "{topic}");
        let _claim = client(cluster.addr(survivors[usize::from(probe) % 2]), &topic).await;
    }
    eprintln!(
        "node {victim_id}, leader of {led:?}, killed: retained, routes and claims work again in {:?}",
        killed.elapsed()
    );
    cluster.run(victim).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let leaders = cluster.leaders(victim).await;
        if led.iter().all(|group| leaders[group] == victim_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim_id} did not get {led:?} back: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut back = client(cluster.addr(victim), "back").await;
    subscribe(&mut back, 1, "spread/#", QoS::AtLeastOnce).await;
    assert_eq!(drain(&mut back, Duration::from_millis(500)).await.len(), 8);
}

/// The bootstrap node loses its data folder: restarted with seeds, it asks them first and
/// joins the cluster that exists (as the member it was), instead of starting a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_node_that_lost_its_data_joins_the_cluster_that_exists() {
    let mut cluster = TestCluster::start(3, 0).await;
    let mut subscriber = client(cluster.addr(1), "still-here").await;
    subscribe(&mut subscriber, 1, "again/#", QoS::AtLeastOnce).await;
    cluster.kill(0);
    cluster.members[0].dir = tempfile::tempdir().expect("tempdir");
    let (dir, mqtt, mut args) = cluster.command(0);
    args.extend([
        "--seeds".to_owned(),
        format!("127.0.0.1:{}", cluster.members[1].cluster),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.members[0].process =
        Some(Process::start_args(&dir, mqtt, &args, Duration::from_secs(60)).await);
    cluster.ready(0).await;
    // One cluster: the new node 1 knows the three members...
    cluster
        .status_when(0, "not three members", |status| {
            status["nodes"].as_array().map(Vec::len) == Some(3)
        })
        .await;
    // ...and, once it has caught up, routes to node 2's subscriber.
    let mut publisher = client(cluster.addr(0), "on-the-new-node-1").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 1;
    while publish_qos1(&mut publisher, "again/1", b"one", id).await != PubAckReasonCode::Success {
        assert!(Instant::now() < deadline, "node 1 never routed to node 2");
        id += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(subscriber.next_publish().await.payload.as_ref(), b"one");
}

/// The address a member is known at in `status` (its cluster address, as meta has it).
fn address_of(status: &serde_json::Value, id: u64) -> Option<String> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["address"].as_str().map(str::to_owned))
}

/// A node killed and restarted with its data at another cluster address: it tells the
/// cluster, whose groups reach it there from then on (openraft's membership names the
/// address; without the update nobody would hear its leaders, nor it theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_at_another_address_is_reached_there() {
    let mut cluster = TestCluster::start(3, 0).await;
    cluster.kill(2);
    cluster.members[2].cluster = free_port();
    cluster.run(2).await;
    let moved = format!("127.0.0.1:{}", cluster.members[2].cluster);
    cluster
        .status_when(0, "node 3 at its new address", |status| {
            address_of(status, 3).as_deref() == Some(moved.as_str())
        })
        .await;
    assert_routes(&cluster, 0, 2, "moved-in").await;
    assert_routes(&cluster, 2, 1, "moved-out").await;
}

/// A node alone (a cluster of one, no listener) restarted with `cluster_listen` becomes
/// the first node of a cluster that others join; what it held (a retained message) is
/// the cluster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_grows_into_a_cluster() {
    let mut cluster = TestCluster {
        members: Vec::new(),
        mqtt_advertise: false,
        extra: Vec::new(),
    };
    cluster.push_member(false);
    cluster.push_member(false);
    let (dir, mqtt, admin) = {
        let m = &cluster.members[0];
        (m.dir.path().to_path_buf(), m.mqtt, m.admin)
    };
    let admin_listen = format!("127.0.0.1:{admin}");
    cluster.members[0].process = Some(
        Process::start_args(
            &dir,
            mqtt,
            &["--admin-listen", &admin_listen],
            Duration::from_secs(60),
        )
        .await,
    );
    cluster.ready(0).await;
    assert_eq!(cluster.status(0).await["alone"], true);
    let mut publisher = client(cluster.addr(0), "lone-pub").await;
    publisher
        .publish("grow/r", b"kept", QosPid::AtLeastOnce(pid(1)), true)
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    drop(publisher);
    cluster.kill(0);
    // Now with a cluster listener (node 1 still, as its data folder says), then a second node.
    cluster.run(0).await;
    cluster.run(1).await;
    let listen = format!("127.0.0.1:{}", cluster.members[0].cluster);
    cluster
        .status_when(1, "two members, node 1 at its listener", |status| {
            status["nodes"].as_array().map(Vec::len) == Some(2)
                && address_of(status, 1).as_deref() == Some(listen.as_str())
        })
        .await;
    let mut late = client(cluster.addr(1), "late").await;
    subscribe(&mut late, 1, "grow/#", QoS::AtLeastOnce).await;
    assert_eq!(late.next_publish().await.payload.as_ref(), b"kept");
    assert_routes(&cluster, 0, 1, "grown-a").await;
    assert_routes(&cluster, 1, 0, "grown-b").await;
}

/// A front end joins every group as a learner and serves clients like any node; five
/// full nodes make five voters, but for the session group's three (`session_replicas`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_and_a_frontend_that_holds_no_vote() {
    let cluster = TestCluster::start(5, 1).await;
    let status = cluster.status(5).await;
    for group in status["groups"].as_array().expect("groups") {
        // The session group has `session_replicas` (3) voters, the first full nodes to
        // join; the others follow as learners.
        if group["group"] == "sessions/0" {
            let ids = |key: &str| -> BTreeSet<u64> {
                group[key]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .filter_map(serde_json::Value::as_u64)
                    .collect()
            };
            let (voters, learners) = (ids("voters"), ids("learners"));
            assert_eq!(voters.len(), 3, "{group}");
            assert!(learners.contains(&6) && !voters.contains(&6), "{group}");
            let all: BTreeSet<u64> = voters.union(&learners).copied().collect();
            assert_eq!(all, (1..=6).collect(), "{group}");
        } else {
            assert_eq!(group["voters"].as_array().map(Vec::len), Some(5), "{group}");
            assert_eq!(group["learners"], serde_json::json!([6]), "{group}");
        }
        assert_eq!(group["role"], "learner", "{group}");
    }
    assert_routes(&cluster, 3, 5, "fe").await;
}

/// A node leaves: its clients are told to go (0x8B: no node recorded an MQTT address), it
/// is removed from every group, its process stops, and the others route on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_the_cluster_and_the_others_route_on() {
    let mut cluster = TestCluster::start(3, 0).await;
    let mut leaving_client = client(cluster.addr(2), "on-the-leaver").await;
    subscribe(&mut leaving_client, 1, "leave/#", QoS::AtLeastOnce).await;
    // `shoal cluster leave` (POST /api/v1/cluster/leave) against the leaving node.
    let admin = format!("http://127.0.0.1:{}", cluster.members[2].admin);
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "leave", "--admin", &admin])
        .output()
        .await
        .expect("shoal cluster leave runs");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    match leaving_client.recv().await {
        Some(Packet::Disconnect(d)) => {
            // No node recorded an MQTT address: nowhere to send the client.
            assert_eq!(d.reason_code, DisconnectReasonCode::ServerShuttingDown);
            assert_eq!(d.properties.server_reference, None);
        }
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    let mut process = cluster.members[2].process.take().expect("running");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = process.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the node that left did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let status = cluster.status(0).await;
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    for group in status["groups"].as_array().expect("groups") {
        assert_eq!(group["voters"], serde_json::json!([1, 2]), "{group}");
        assert_eq!(group["learners"], serde_json::json!([]), "{group}");
    }
    let mut subscriber = client(cluster.addr(0), "stays").await;
    subscribe(&mut subscriber, 1, "leave/#", QoS::AtLeastOnce).await;
    let mut publisher = client(cluster.addr(1), "stays-too").await;
    assert_eq!(
        publish_qos1(&mut publisher, "leave/x", b"on", 1).await,
        PubAckReasonCode::Success
    );
    assert_eq!(subscriber.next_publish().await.payload.as_ref(), b"on");
}

/// A fresh node joins a cluster under publish load: no acknowledged message between the
/// others is lost meanwhile, and the new node routes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_joins_under_load() {
    let mut cluster = TestCluster::start(3, 0).await;
    let mut subscriber = client(cluster.addr(1), "steady-sub").await;
    subscribe(&mut subscriber, 1, "load/#", QoS::AtLeastOnce).await;
    let publisher_addr = cluster.addr(0);
    let load = tokio::spawn(async move {
        let mut publisher = client(publisher_addr, "steady-pub").await;
        let mut acked = Vec::new();
        for n in 1..=300u16 {
            if publish_qos1(&mut publisher, "load/x", &n.to_be_bytes(), n).await
                == PubAckReasonCode::Success
            {
                acked.push(n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    });
    let joined = cluster.add().await;
    let mut newcomer = client(cluster.addr(joined), "on-the-new-node").await;
    subscribe(&mut newcomer, 1, "fresh/#", QoS::AtLeastOnce).await;
    let acked = load.await.expect("the load ran");
    assert_eq!(
        acked.len(),
        300,
        "every publication acknowledged while a node joined"
    );
    let got: Vec<u16> = drain(&mut subscriber, Duration::from_millis(700))
        .await
        .into_iter()
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    assert_eq!(got, acked, "all of them, in order");
    let mut publisher = client(cluster.addr(2), "to-the-new-node").await;
    assert_eq!(
        publish_qos1(&mut publisher, "fresh/1", b"hi", 1).await,
        PubAckReasonCode::Success
    );
    assert_eq!(newcomer.next_publish().await.payload.as_ref(), b"hi");
    let status = cluster.status(joined).await;
    for group in status["groups"].as_array().expect("groups") {
        // The session group keeps its three voters (`session_replicas`): the fourth node
        // follows it as a learner.
        let voters = if group["group"] == "sessions/0" { 3 } else { 4 };
        assert_eq!(
            group["voters"].as_array().map(Vec::len),
            Some(voters),
            "{group}"
        );
    }
}

/// A node started with a cluster listener and neither seeds nor bootstrap waits, not
/// serving, until `shoal cluster join` names a member; then it is one, and routes both
/// ways. A node trying a wrong seed takes the right one the same way; a member refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_cluster_join_makes_a_waiting_node_a_member() {
    let mut cluster = TestCluster::start(1, 0).await;
    let waiting = cluster.add_unjoined(None).await;
    // It answers its admin API, says it waits (once its groups are open), and is not ready.
    cluster
        .status_when(waiting, "not waiting", |status| {
            assert_eq!(status["joined"], false, "{status}");
            status["waiting"] == true
        })
        .await;
    let (code, _) = cluster.admin(waiting, "GET", "/readyz").await;
    assert_eq!(code, 503, "a waiting node is not ready");
    let (code, out, _) = cluster.cli(waiting, &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("shoal cluster join"), "{out}");
    // Still waiting a while later: it did not start a cluster of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.status(waiting).await["waiting"], true);

    let seed = format!("127.0.0.1:{}", cluster.members[0].cluster);
    let (code, out, err) = cluster.cli(waiting, &["join", &seed]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("joined the cluster"), "{out}");
    cluster.ready(waiting).await;
    let status = cluster.status(0).await;
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    // A message published on the new member reaches a subscriber on node 1, and back.
    assert_routes(&cluster, waiting, 0, "joined").await;
    assert_routes(&cluster, 0, waiting, "back").await;

    // A member answers 409 with why.
    let (code, _, err) = cluster.cli(waiting, &["join", &seed]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("409") && err.contains("member"), "{err}");

    // A node trying a wrong seed (nothing listens there) takes the right one.
    let wrong = format!("127.0.0.1:{}", free_port());
    let lost = cluster.add_unjoined(Some(wrong.clone())).await;
    cluster
        .status_when(lost, "no failed attempt reported", |status| {
            assert_eq!(status["waiting"], false, "{status}");
            assert_eq!(status["seeds"], serde_json::json!([wrong]), "{status}");
            status["last_error"].is_string()
        })
        .await;
    let (code, out, err) = cluster.cli(lost, &["join", &seed]).await;
    assert_eq!(code, 0, "{out}{err}");
    cluster.ready(lost).await;
    // Its copy of meta has all three once it has applied the entries after its join.
    cluster
        .status_when(lost, "not three members", |status| {
            status["nodes"].as_array().map(Vec::len) == Some(3)
        })
        .await;
}

/// The MQTT address each member recorded (`mqtt_advertise`), by node id.
fn mqtt_addresses(status: &serde_json::Value) -> BTreeMap<u64, String> {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| Some((n["id"].as_u64()?, n["mqtt"].as_str()?.to_owned())))
        .collect()
}

/// Waits for a DISCONNECT and returns its reason code and Server Reference.
async fn disconnect_of(raw: &mut Raw, wait: Duration) -> (DisconnectReasonCode, Option<String>) {
    loop {
        match raw.recv_within(wait).await {
            Some(Packet::Disconnect(d)) => {
                return (
                    d.reason_code,
                    d.properties.server_reference.map(|s| s.to_string()),
                );
            }
            Some(_) => continue,
            None => panic!("the connection closed without DISCONNECT"),
        }
    }
}

/// With `mqtt_advertise` on every node, a node that leaves sends each MQTT 5 client to
/// another node that is up (DISCONNECT 0x9C with its Server Reference, round robin);
/// an MQTT 3.1.1 client is closed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_sends_mqtt5_clients_to_another_node() {
    let cluster = TestCluster::start_with(3, 0, true, &[]).await;
    let status = cluster.status(0).await;
    let expected: BTreeMap<u64, String> = (0..3)
        .map(|i| {
            (
                i as u64 + 1,
                format!("127.0.0.1:{}", cluster.members[i].mqtt),
            )
        })
        .collect();
    assert_eq!(mqtt_addresses(&status), expected, "{status}");
    let (code, out, _) = cluster.cli(0, &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("MQTT") && out.contains(&expected[&3]), "{out}");

    // Three MQTT 5 clients and one 3.1.1 client: the four turns of the round robin
    // alternate between the two other nodes, so any three of them name both.
    let mut first = client(cluster.addr(2), "leaver-a").await;
    let mut second = client(cluster.addr(2), "leaver-b").await;
    let mut third = client(cluster.addr(2), "leaver-c").await;
    let (mut old, ack) =
        Raw::connect(cluster.addr(2), ProtocolVersion::V3_1_1, "leaver-3", |_| {}).await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    let (code, out, err) = cluster.cli(2, &["leave"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mut sent_to = BTreeSet::new();
    for raw in [&mut first, &mut second, &mut third] {
        let (reason, server) = disconnect_of(raw, Duration::from_secs(10)).await;
        assert_eq!(reason, DisconnectReasonCode::UseAnotherServer);
        let server = server.expect("a Server Reference");
        assert!(
            server == expected[&1] || server == expected[&2],
            "{server} is not another node's MQTT address"
        );
        sent_to.insert(server);
    }
    assert_eq!(sent_to.len(), 2, "round robin over the two other nodes");
    assert_eq!(
        old.recv().await,
        None,
        "an MQTT 3.1.1 client is just closed"
    );
}

/// A node cut off from the majority (the two others stopped with SIGSTOP) sends its MQTT 5
/// clients to another node from its copy of meta (DISCONNECT 0x9C) and refuses new ones
/// with CONNACK 0x9C and a Server Reference; it serves again once the others are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_sends_its_clients_to_another_node() {
    let cluster = TestCluster::start_with(3, 0, true, &[]).await;
    let others = [
        format!("127.0.0.1:{}", cluster.members[1].mqtt),
        format!("127.0.0.1:{}", cluster.members[2].mqtt),
    ];
    let mut raw = client(cluster.addr(0), "stranded").await;
    cluster.signal(1, "STOP");
    cluster.signal(2, "STOP");
    let (reason, server) = disconnect_of(&mut raw, Duration::from_secs(15)).await;
    let refused = Raw::connect(cluster.addr(0), V5, "newcomer", |_| {})
        .await
        .1;
    cluster.signal(1, "CONT");
    cluster.signal(2, "CONT");
    assert_eq!(reason, DisconnectReasonCode::UseAnotherServer);
    let server = server.expect("a Server Reference");
    assert!(others.contains(&server), "{server}");
    assert_eq!(
        refused.reason_code,
        shoal_codec::ConnectReasonCode::UseAnotherServer
    );
    let server = refused
        .properties
        .server_reference
        .map(|s| s.to_string())
        .expect("a Server Reference");
    assert!(others.contains(&server), "{server}");
    cluster.ready(0).await;
    client(cluster.addr(0), "welcome-back").await;
}

/// The groups of `status` by name: (last log, applied, snapshot, purged, installed).
fn groups_of(status: &serde_json::Value) -> BTreeMap<String, [u64; 5]> {
    status["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let n = |key: &str| g[key].as_u64().unwrap_or(0);
            (
                g["group"].as_str().unwrap_or("").to_owned(),
                [
                    n("last_log"),
                    n("applied"),
                    n("snapshot"),
                    n("purged"),
                    n("snapshots_installed"),
                ],
            )
        })
        .collect()
}

/// A node killed with -9 misses so many route and retained changes that the others purge
/// their logs past its position; restarted with its data, it catches up through snapshots
/// (installed, and counted in its status): every retained message is delivered on it, the
/// routes made meanwhile route from it, and new routes on it work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fell_behind_catches_up_through_a_snapshot() {
    const N: u16 = 300;
    let mut cluster =
        TestCluster::start_with(3, 0, false, &["--cluster-snapshot-logs", "50"]).await;
    // A persistent session on node 2, offline: its queue fills while node 3 is away.
    let (mut device, _) = persistent(cluster.addr(1), "snap-device").await;
    subscribe(&mut device, 1, "snapq/#", QoS::AtLeastOnce).await;
    device
        .send(Packet::Disconnect(shoal_codec::Disconnect::default()))
        .await;
    cluster.kill(2);
    // Retained messages on node 1 (both retained shards), routes on node 2 (every route
    // shard), queued messages (the session group): each a log entry, far past 50 + 5 per
    // group.
    let mut retainer = client(cluster.addr(0), "retainer").await;
    for n in 1..=N {
        retainer
            .publish(
                &format!("snap/{n}"),
                &n.to_be_bytes(),
                QosPid::AtLeastOnce(pid(n)),
                true,
            )
            .await;
        match retainer.recv_within(Duration::from_secs(15)).await {
            Some(Packet::PubAck(ack)) => assert!(
                matches!(
                    ack.reason_code,
                    PubAckReasonCode::Success | PubAckReasonCode::NoMatchingSubscribers
                ),
                "retained {n}: {ack:?}"
            ),
            other => panic!("retained {n}: expected PUBACK, got {other:?}"),
        }
    }
    let mut listener = client(cluster.addr(1), "route-holder").await;
    for n in 1..=N {
        subscribe(&mut listener, n, &format!("route/{n}"), QoS::AtLeastOnce).await;
    }
    let mut queuer = client(cluster.addr(0), "snap-queuer").await;
    let queued = publish_range(&mut queuer, "snapq/x", 1..=N).await;
    assert_eq!(
        queued.len(),
        N as usize,
        "every message queued for the session"
    );
    let leader_view = groups_of(&cluster.status(0).await);
    for (group, [_, _, snapshot, purged, _]) in &leader_view {
        if group != "meta" {
            assert!(
                *snapshot > 0 && *purged > 0,
                "{group} snapshotted and purged its log: {leader_view:?}"
            );
        }
    }

    cluster.run(2).await;
    // Caught up: node 3 applied every group as far as node 1's log went.
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
        let view = groups_of(&cluster.status(2).await);
        if leader_view
            .iter()
            .all(|(group, [last_log, ..])| view.get(group).is_some_and(|g| g[1] >= *last_log))
        {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 did not catch up: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("node 1 before the restart: {leader_view:?}\nnode 3 caught up: {caught_up:?}");
    for (group, [.., installed]) in &caught_up {
        if group != "meta" {
            assert!(
                *installed >= 1,
                "{group}: node 3 caught up without a snapshot: {caught_up:?}"
            );
        }
    }
    // Every retained message, on node 3.
    let mut reader = client(cluster.addr(2), "snap-reader").await;
    subscribe(&mut reader, 1, "snap/#", QoS::AtMostOnce).await;
    let mut got = BTreeSet::new();
    while got.len() < N as usize {
        match reader.recv_within(Duration::from_secs(5)).await {
            Some(Packet::Publish(p)) => {
                assert!(p.retain);
                got.insert(u16::from_be_bytes([p.payload[0], p.payload[1]]));
            }
            other => panic!("{} of {N} retained messages, then {other:?}", got.len()),
        }
    }
    assert_eq!(got, (1..=N).collect());
    // The routes made while it was down route from it.
    let mut publisher = client(cluster.addr(2), "snap-publisher").await;
    for n in [1, N / 2, N] {
        assert_eq!(
            publish_qos1(&mut publisher, &format!("route/{n}"), b"from-3", n).await,
            PubAckReasonCode::Success
        );
        let delivered = listener.next_publish().await;
        assert_eq!(delivered.topic.to_string(), format!("route/{n}"));
        if let QosPid::AtLeastOnce(id) = delivered.qos_pid {
            listener
                .send(Packet::PubAck(shoal_codec::PubAck::new(id)))
                .await;
        }
    }
    // And a route made on it is used by node 1.
    assert_routes(&cluster, 0, 2, "after").await;
    // The session's queue came with the snapshot: node 2 dies, and the client resumes on
    // node 3 with every message.
    cluster.kill(1);
    let (mut device, present) = persistent(cluster.addr(2), "snap-device").await;
    assert!(present, "the session is in node 3's snapshot");
    let got = numbers(drain(&mut device, Duration::from_millis(1500)).await);
    let lost: Vec<u16> = queued.difference(&got).copied().collect();
    assert!(lost.is_empty(), "queued and never delivered: {lost:?}");
}

/// SIGTERM on a node that leads shards and meta drains it: its leaderships move to the
/// other nodes while it still runs, its MQTT 5 client is sent to another node (0x9C with
/// a Server Reference) and its 3.1.1 client is closed, it exits 0 within a bound, and a
/// QoS 1 publisher on a second node to a subscriber on the third loses nothing and gets
/// no 0x80 meanwhile, although the draining node had a subscriber of the same topic too
/// (its route is removed before it exits). A message for the persistent session it keeps
/// on its disk is refused (0x80) while it is away, not acknowledged and dropped; back
/// with its data, the node has the session and routes to it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_leaderships_first_and_no_publisher_sees_an_error() {
    let mut cluster = TestCluster::start_with(3, 0, true, &[]).await;
    let leaders = cluster.leaders_spread(0, 3).await;
    let victim_id = leaders["meta"];
    let victim = (victim_id - 1) as usize;
    let led: Vec<&String> = leaders
        .iter()
        .filter(|(_, leader)| **leader == victim_id)
        .map(|(group, _)| group)
        .collect();
    assert!(
        led.len() >= 2,
        "node {victim_id} leads meta and a shard: {leaders:?}"
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let elsewhere: Vec<String> = others
        .iter()
        .map(|i| format!("127.0.0.1:{}", cluster.members[*i].mqtt))
        .collect();

    let mut on_victim = client(cluster.addr(victim), "drained").await;
    subscribe(&mut on_victim, 1, "drain/#", QoS::AtLeastOnce).await;
    let persistent = |c: &mut shoal_codec::Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
    };
    let (mut keeper, _) = Raw::connect(cluster.addr(victim), V5, "keeper", persistent).await;
    subscribe(&mut keeper, 1, "kept/#", QoS::AtLeastOnce).await;
    let (mut old_client, ack) = Raw::connect(
        cluster.addr(victim),
        ProtocolVersion::V3_1_1,
        "drained-3",
        |_| {},
    )
    .await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    let mut subscriber = client(cluster.addr(others[1]), "drain-sub").await;
    subscribe(&mut subscriber, 1, "drain/#", QoS::AtLeastOnce).await;
    let mut publisher = client(cluster.addr(others[0]), "drain-pub").await;
    let mut kept_publisher = client(cluster.addr(others[1]), "kept-pub").await;

    // The publisher runs through the drain and a while after it.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let publishing = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut n: u16 = 0;
        while !*stop_rx.borrow_and_update() {
            n += 1;
            let reason = publish_qos1(&mut publisher, "drain/x", &n.to_be_bytes(), n).await;
            outcomes.push((n, reason));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outcomes
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    cluster.signal(victim, "TERM");
    let sent = Instant::now();
    // The clients are sent away once the leaderships are handed over.
    let (reason, server) = disconnect_of(&mut on_victim, Duration::from_secs(15)).await;
    assert_eq!(reason, DisconnectReasonCode::UseAnotherServer);
    let server = server.expect("a Server Reference");
    assert!(elsewhere.contains(&server), "{server}");
    assert_eq!(
        old_client.recv().await,
        None,
        "an MQTT 3.1.1 client is closed"
    );
    cluster
        .status_when(
            others[0],
            "the leaderships moved off the draining node",
            |s| {
                s["groups"].as_array().is_some_and(|groups| {
                    groups.iter().all(|g| {
                        let leader = g["leader"].as_u64().unwrap_or(0);
                        leader != 0 && leader != victim_id
                    })
                })
            },
        )
        .await;
    // The node may have exited by now (its drain takes well under a second once its
    // clients are gone, and this view is polled): that the leaderships were handed over
    // rather than won in elections after it left shows below: no publisher saw an error
    // (an election after its exit would have refused their messages meanwhile).
    let handed_over = sent.elapsed();
    let mut process = cluster.members[victim].process.take().expect("running");
    let exit = loop {
        if let Some(status) = process.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the node did not exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = sent.elapsed();
    assert!(exit.success(), "{exit:?}");
    // Its persistent session's route stays: a copy for it cannot be taken now.
    assert_eq!(
        publish_qos1(&mut kept_publisher, "kept/x", b"while away", 1).await,
        PubAckReasonCode::UnspecifiedError,
        "a message for the absent node's persistent session is refused"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let outcomes = publishing.await.expect("the publisher");
    let failed: Vec<&(u16, PubAckReasonCode)> = outcomes
        .iter()
        .filter(|(_, reason)| *reason != PubAckReasonCode::Success)
        .collect();
    assert!(failed.is_empty(), "PUBACKs other than success: {failed:?}");
    let got: BTreeSet<u16> = drain(&mut subscriber, Duration::from_millis(700))
        .await
        .into_iter()
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let lost: Vec<u16> = outcomes
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !got.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never delivered: {lost:?}"
    );
    eprintln!(
        "SIGTERM on node {victim_id} (leader of {led:?}): leaderships handed over within {handed_over:?}, exit 0 after {exited:?}; {} QoS 1 messages, none refused or lost",
        outcomes.len()
    );

    // Back with its data: its session is there, and messages reach it again.
    cluster.run(victim).await;
    let (mut back, ack) = Raw::connect(cluster.addr(victim), V5, "keeper", persistent).await;
    assert!(ack.session_present, "the session stayed on the node's disk");
    assert_eq!(
        publish_qos1(&mut kept_publisher, "kept/x", b"back", 2).await,
        PubAckReasonCode::Success
    );
    assert_eq!(back.next_publish().await.payload.as_ref(), b"back");
}

/// A persistent MQTT 5 client of `addr` (clean start 0, session expiry an hour); returns
/// whether the node said Session Present.
async fn persistent(addr: SocketAddr, id: &str) -> (Raw, bool) {
    let (raw, ack) = Raw::connect(addr, V5, id, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    })
    .await;
    assert_eq!(
        ack.reason_code,
        shoal_codec::ConnectReasonCode::Success,
        "{id} connects to {addr}"
    );
    (raw, ack.session_present)
}

/// The numbers in the payloads `drain` returns.
fn numbers(payloads: Vec<Vec<u8>>) -> BTreeSet<u16> {
    payloads
        .into_iter()
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect()
}

/// Publishes `range` at QoS 1 on `topic`; returns those acknowledged with Success.
async fn publish_range(
    raw: &mut Raw,
    topic: &str,
    range: std::ops::RangeInclusive<u16>,
) -> BTreeSet<u16> {
    let mut acked = BTreeSet::new();
    for n in range {
        match publish_qos1(raw, topic, &n.to_be_bytes(), n).await {
            PubAckReasonCode::Success => {
                acked.insert(n);
            }
            PubAckReasonCode::UnspecifiedError => {}
            other => panic!("message {n}: unexpected PUBACK {other:?}"),
        }
    }
    acked
}

/// A persistent session is replicated: its node is killed with -9 while messages wait in
/// its queue, unread, and its client resumes on another node with Session Present and
/// every acknowledged message; what is published afterwards reaches it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_node_died_resumes_on_another_node_with_what_was_acknowledged() {
    let mut cluster = TestCluster::start(3, 0).await;
    let (mut device, present) = persistent(cluster.addr(0), "device-1").await;
    assert!(!present);
    subscribe(&mut device, 1, "fleet/device-1/#", QoS::AtLeastOnce).await;
    // Offline on node 1: its queue fills there.
    device
        .send(Packet::Disconnect(shoal_codec::Disconnect::default()))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut publisher = client(cluster.addr(1), "backend").await;
    let acked = publish_range(&mut publisher, "fleet/device-1/cmd", 1..=60).await;
    assert_eq!(
        acked.len(),
        60,
        "every message has a live subscriber session"
    );
    cluster.kill(0);
    // The client comes back through node 3.
    let (mut device, present) = persistent(cluster.addr(2), "device-1").await;
    assert!(present, "the session survived the death of its node");
    let got = numbers(drain(&mut device, Duration::from_millis(1500)).await);
    let lost: Vec<u16> = acked.difference(&got).copied().collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never delivered: {lost:?}"
    );
    // Its subscription holds on the new node.
    let later = publish_range(&mut publisher, "fleet/device-1/cmd", 61..=80).await;
    let got = numbers(drain(&mut device, Duration::from_millis(700)).await);
    let lost: Vec<u16> = later.difference(&got).copied().collect();
    assert!(
        !later.is_empty() && lost.is_empty(),
        "after the move: lost {lost:?} of {later:?}"
    );
}

/// A persistent session follows its client from node to node while a publisher on a third
/// node keeps publishing: nothing acknowledged is lost, and each reconnect finds the
/// session present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_follows_its_client_between_live_nodes() {
    let cluster = TestCluster::start(3, 0).await;
    let (mut device, _) = persistent(cluster.addr(0), "roamer").await;
    subscribe(&mut device, 1, "roam/#", QoS::AtLeastOnce).await;
    let publisher_addr = cluster.addr(2);
    let publishing = tokio::spawn(async move {
        let mut publisher = client(publisher_addr, "roam-source").await;
        let mut acked = BTreeSet::new();
        for n in 1..=300u16 {
            if publish_qos1(&mut publisher, "roam/x", &n.to_be_bytes(), n).await
                == PubAckReasonCode::Success
            {
                acked.insert(n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    });
    let mut got = BTreeSet::new();
    for hop in [1usize, 0, 1, 2] {
        got.extend(numbers(
            drain(&mut device, Duration::from_millis(300)).await,
        ));
        let (next, present) = persistent(cluster.addr(hop), "roamer").await;
        assert!(present, "session present on node {}", hop + 1);
        device = next;
    }
    let acked = publishing.await.expect("publisher");
    got.extend(numbers(
        drain(&mut device, Duration::from_millis(1000)).await,
    ));
    let lost: Vec<u16> = acked.difference(&got).copied().collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never delivered: {lost:?}"
    );
    assert!(
        acked.len() > 200,
        "most messages acknowledged: {}",
        acked.len()
    );
}

/// Kill -9 of the node holding a persistent session with a Will: once the node is
/// declared down, another node takes the session up (before the dead node's routes go),
/// publishes its Will once, and queues what is published for it meanwhile; its client
/// resumes on a third node with every acknowledged message, and the dead node, back with
/// its data, does not publish the Will again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_of_a_dead_node_are_taken_up_and_their_wills_published_once() {
    let mut cluster = TestCluster::start(3, 0).await;
    let mut watcher = client(cluster.addr(2), "will-watcher").await;
    subscribe(&mut watcher, 1, "wills/#", QoS::AtLeastOnce).await;
    let (mut dying, ack) = Raw::connect(cluster.addr(1), V5, "dying", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
        c.will = Some(shoal_codec::LastWill {
            topic: shoal_codec::MqttString::try_from("wills/dying").expect("topic"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
    })
    .await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    subscribe(&mut dying, 1, "orders/#", QoS::AtLeastOnce).await;
    let mut publisher = client(cluster.addr(2), "orders-source").await;
    let mut acked = publish_range(&mut publisher, "orders/x", 1..=20).await;
    assert_eq!(acked.len(), 20);
    let killed = Instant::now();
    cluster.kill(1);
    // Publishing goes on: refused (0x80) until the session is taken up, then queued there.
    let mut n = 21u16;
    let mut resumed_after = None;
    while killed.elapsed() < Duration::from_secs(12) {
        let got = publish_range(&mut publisher, "orders/x", n..=n).await;
        if !got.is_empty() && resumed_after.is_none() && n > 21 {
            resumed_after = Some(killed.elapsed());
        }
        acked.extend(got);
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let will = watcher.next_publish().await;
    assert_eq!(will.topic.to_string(), "wills/dying");
    if let QosPid::AtLeastOnce(id) = will.qos_pid {
        watcher
            .send(Packet::PubAck(shoal_codec::PubAck::new(id)))
            .await;
    }
    assert!(
        acked.contains(&(n - 1)),
        "publishing to the session works again after its node died (acked {} of {})",
        acked.len(),
        n - 1
    );
    // The client comes back on node 1: its session, with every acknowledged message.
    let (mut device, present) = persistent(cluster.addr(0), "dying").await;
    assert!(present, "the session was taken up");
    let got = numbers(drain(&mut device, Duration::from_millis(1500)).await);
    let lost: Vec<u16> = acked.difference(&got).copied().collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never delivered: {lost:?}"
    );
    // The dead node comes back with its data: the Will is not published again.
    cluster.run(1).await;
    cluster.ready(1).await;
    assert!(
        watcher.recv_within(Duration::from_secs(2)).await.is_none(),
        "the Will was published once"
    );
    eprintln!(
        "session of a dead node: publishing resumed {resumed_after:?} after the kill; {} of {} acknowledged, all delivered",
        acked.len(),
        n - 1
    );
}

/// The QoS 2 PUBLISH packets that arrive within `wait` of each other, each flow completed
/// (PUBREC, then PUBCOMP for the PUBREL); returns their payloads.
async fn take_qos2(raw: &mut Raw, wait: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(packet) = raw.recv_within(wait).await {
        match packet {
            Packet::Publish(p) => {
                if let QosPid::ExactlyOnce(id) = p.qos_pid {
                    raw.send(Packet::PubRec(shoal_codec::PubAck::new(id))).await;
                }
                got.push(p.payload.to_vec());
            }
            Packet::PubRel(rel) => {
                raw.send(Packet::PubComp(shoal_codec::PubComp::new(rel.packet_id)))
                    .await;
            }
            _ => {}
        }
    }
    got
}

/// QoS 2 across nodes stays exactly once when the publisher's node dies mid-flow: node 1
/// forwards a QoS 2 message to subscribers on nodes 2 and 3, node 3 is stopped so that
/// node 1 never completes the publisher's receipt, and node 1 is killed after node 2's
/// subscriber has its copy. The publisher resends the message (DUP) through node 2, as
/// MQTT has it do after a reconnect: the resend goes out under the tag of the pending
/// receipt, and neither subscriber takes it twice. A third subscriber on node 1 itself
/// (in another session shard than the publisher when there are several) resumes on node
/// 2 and gets it once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_resend_after_its_publishers_node_died_is_delivered_once() {
    qos2_resend_after_its_publishers_node_died(1).await;
}

/// The same with three session shards: the publisher's receipt and node 1's copy are in
/// different shards, whose writes are not one atomic step; the copy is marked with the
/// tag, and the resend does not give it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_resend_across_session_shards_after_its_publishers_node_died_is_delivered_once() {
    qos2_resend_after_its_publishers_node_died(3).await;
}

/// Connects `id` (clean start 0) to `addr` until its session is free there (its node
/// died: the claim waits for it); asserts the session is present.
async fn resume(addr: SocketAddr, id: &str) -> Raw {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (raw, ack) = Raw::connect(addr, V5, id, |c| {
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(3600);
        })
        .await;
        if ack.reason_code == shoal_codec::ConnectReasonCode::Success {
            assert!(ack.session_present, "{id}'s session survived");
            return raw;
        }
        assert!(Instant::now() < deadline, "{id} never got back in: {ack:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn qos2_resend_after_its_publishers_node_died(shards: u16) {
    let shards_flag = shards.to_string();
    let mut cluster =
        TestCluster::start_with(3, 0, false, &["--session-shards", &shards_flag]).await;
    let shard = |id: &str| shoal_store::session_shard(id.as_bytes(), shards);
    let local_id = (0..100)
        .map(|i| format!("exact-local-{i}"))
        .find(|id| shards == 1 || shard(id) != shard("exact-source"))
        .expect("a client id of another shard");
    let (mut near, _) = persistent(cluster.addr(1), "exact-near").await;
    subscribe(&mut near, 1, "exact/#", QoS::ExactlyOnce).await;
    let (mut far, _) = persistent(cluster.addr(2), "exact-far").await;
    subscribe(&mut far, 1, "exact/#", QoS::ExactlyOnce).await;
    let (mut local, _) = persistent(cluster.addr(0), &local_id).await;
    subscribe(&mut local, 1, "exact/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) = persistent(cluster.addr(0), "exact-source").await;
    cluster.signal(2, "STOP");
    publisher
        .publish("exact/x", b"once", QosPid::ExactlyOnce(pid(7)), false)
        .await;
    let first = near
        .recv_within(Duration::from_secs(20))
        .await
        .expect("node 2's subscriber gets its copy");
    let Packet::Publish(first) = first else {
        panic!("expected PUBLISH, got {first:?}");
    };
    assert_eq!(first.payload.as_ref(), b"once");
    // Node 1's subscriber is not read: what node 1 sent it dies with the connection, and
    // its session (in the store) has the copy.
    drop(local);
    cluster.kill(0);
    cluster.signal(2, "CONT");
    if let QosPid::ExactlyOnce(id) = first.qos_pid {
        near.send(Packet::PubRec(shoal_codec::PubAck::new(id)))
            .await;
    }
    let mut near_got = vec![first.payload.to_vec()];
    // Node 1 had a subscriber: until it is declared down (and its sessions taken up), its
    // route stands and a resend forwarded to it would be refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.status(1).await;
        let down = status["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["id"] == 1 && n["down"].as_bool().unwrap_or(false));
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never declared down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Node 1's subscriber comes back through node 2 (its session taken up from the store,
    // with the copy and its mark), and so does the publisher; until then a resend could
    // find node 1's sessions on their way to a survivor and be refused (PUBREC 0x80).
    let mut local = resume(cluster.addr(1), &local_id).await;
    let mut publisher = resume(cluster.addr(1), "exact-source").await;
    let mut resend = shoal_codec::Publish::new(
        shoal_codec::MqttString::try_from("exact/x").expect("topic"),
        bytes::Bytes::from_static(b"once"),
    );
    resend.qos_pid = QosPid::ExactlyOnce(pid(7));
    resend.dup = true;
    publisher.send(Packet::Publish(resend)).await;
    match publisher.recv_within(Duration::from_secs(20)).await {
        Some(Packet::PubRec(rec)) => {
            assert_eq!(rec.packet_id, pid(7));
            assert_eq!(rec.reason_code, PubAckReasonCode::Success, "{rec:?}");
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher
        .send(Packet::PubRel(shoal_codec::PubRel::new(pid(7))))
        .await;
    match publisher.recv_within(Duration::from_secs(20)).await {
        Some(Packet::PubComp(comp)) => assert_eq!(comp.packet_id, pid(7)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    near_got.extend(take_qos2(&mut near, Duration::from_millis(1500)).await);
    let far_got = take_qos2(&mut far, Duration::from_millis(1500)).await;
    let local_got = take_qos2(&mut local, Duration::from_millis(1500)).await;
    assert_eq!(near_got, vec![b"once".to_vec()], "node 2's subscriber");
    assert_eq!(far_got, vec![b"once".to_vec()], "node 3's subscriber");
    assert_eq!(
        local_got,
        vec![b"once".to_vec()],
        "node 1's subscriber, resumed"
    );
}

/// An MQTT 3.1.1 QoS 2 publication that another node did not accept (its subscriber's node
/// was just killed) closes the publisher's connection without PUBREC (3.1.1 has no failure
/// code); its resend on the next connection (DUP, same packet identifier) is taken as new
/// and reaches the subscriber once its node is back, rather than being answered PUBREC as
/// a duplicate of what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mqtt311_qos2_publication_is_taken_anew_when_resent() {
    let v311 = ProtocolVersion::V3_1_1;
    let mut cluster = TestCluster::start(3, 0).await;
    let (mut subscriber, _) = persistent(cluster.addr(1), "v311-sub").await;
    subscribe(&mut subscriber, 1, "refused/#", QoS::ExactlyOnce).await;
    drop(subscriber);
    let (mut publisher, ack) = Raw::connect(cluster.addr(0), v311, "v311-pub", |c| {
        c.clean_start = false;
    })
    .await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    cluster.kill(1);
    publisher
        .publish("refused/x", b"once", QosPid::ExactlyOnce(pid(9)), false)
        .await;
    match publisher.recv_within(Duration::from_secs(20)).await {
        None => {}
        Some(packet) => panic!("the failed publication was answered: {packet:?}"),
    }
    cluster.run(1).await;
    // As a 3.1.1 client does: reconnect and resend until it is acknowledged (node 1 may
    // refuse it again while its stream to node 2 comes back).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut publisher = loop {
        let (mut publisher, ack) = Raw::connect(cluster.addr(0), v311, "v311-pub", |c| {
            c.clean_start = false;
        })
        .await;
        assert!(ack.session_present);
        let mut resend = shoal_codec::Publish::new(
            shoal_codec::MqttString::try_from("refused/x").expect("topic"),
            bytes::Bytes::from_static(b"once"),
        );
        resend.qos_pid = QosPid::ExactlyOnce(pid(9));
        resend.dup = true;
        publisher.send(Packet::Publish(resend)).await;
        match publisher.recv_within(Duration::from_secs(20)).await {
            Some(Packet::PubRec(rec)) => {
                assert_eq!(rec.packet_id, pid(9));
                break publisher;
            }
            None => assert!(Instant::now() < deadline, "the resend is never taken"),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    publisher
        .send(Packet::PubRel(shoal_codec::PubRel::new(pid(9))))
        .await;
    match publisher.recv_within(Duration::from_secs(20)).await {
        Some(Packet::PubComp(comp)) => assert_eq!(comp.packet_id, pid(9)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let (mut subscriber, present) = persistent(cluster.addr(1), "v311-sub").await;
    assert!(present);
    let got = take_qos2(&mut subscriber, Duration::from_millis(1500)).await;
    assert_eq!(got, vec![b"once".to_vec()], "delivered once");
}

/// libfaketime's multi-threaded library (the Debian package `faketime`), if installed.
fn faketime_lib() -> Option<std::path::PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// Expiry in the store is the session shard leader's to decide, with its time: a replica
/// whose wall clock runs an hour ahead does not remove a session it holds a copy of, and
/// the client resumes it through that node with what was queued for it. (Each node swept
/// its own store by its own clock before: that node lost the session.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_expires_no_session_by_itself() {
    let Some(lib) = faketime_lib() else {
        panic!("libfaketime is missing: apt-get install faketime (.ci/run does)");
    };
    let mut cluster = TestCluster::start(2, 0).await;
    let ahead = cluster.push_member(false);
    let (dir, mqtt, args) = cluster.command(ahead);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let preload = format!("LD_PRELOAD={}", lib.display());
    let wrapper = ["env", &preload, "FAKETIME=+1h", "DONT_FAKE_MONOTONIC=1"];
    let process = Process::start_at(
        &wrapper,
        "127.0.0.1",
        &dir,
        mqtt,
        &args,
        Duration::from_secs(60),
        None,
    )
    .await;
    cluster.members[ahead].process = Some(process);
    cluster.ready(ahead).await;
    let leaders = cluster.leaders(0).await;
    assert_ne!(
        leaders["sessions/0"], 3,
        "the node an hour ahead must not lead the session group: {leaders:?}"
    );
    // Ten minutes of session expiry: long past on node 3's clock once disconnected.
    let connect = |c: &mut shoal_codec::Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
    };
    let (mut device, _) = Raw::connect(cluster.addr(0), V5, "skewed", connect).await;
    subscribe(&mut device, 1, "skew/#", QoS::AtLeastOnce).await;
    device
        .send(Packet::Disconnect(shoal_codec::Disconnect::default()))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut publisher = client(cluster.addr(1), "skew-source").await;
    let acked = publish_range(&mut publisher, "skew/x", 1..=10).await;
    assert_eq!(acked.len(), 10, "the offline session takes them");
    // Node 3's expiry runs every second: give it a few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut device, ack) = Raw::connect(cluster.addr(ahead), V5, "skewed", connect).await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    assert!(
        ack.session_present,
        "node 3 kept the session its clock says has expired"
    );
    let got = numbers(drain(&mut device, Duration::from_millis(1500)).await);
    let lost: Vec<u16> = acked.difference(&got).copied().collect();
    assert!(lost.is_empty(), "queued and lost: {lost:?}");
}

/// The `voters` or `learners` of the session group (`sessions/0`) in a cluster status.
fn session_members(status: &serde_json::Value, key: &str) -> Vec<u64> {
    status["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == "sessions/0")
        .and_then(|g| g[key].as_array())
        .map(|ids| ids.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default()
}

/// A voter of the session group that leaves is replaced by a learner: of four nodes,
/// three are the group's voters (`session_replicas`), and when one of them leaves the
/// fourth becomes a voter, so that a session write still waits for two disks of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_voter_that_leaves_is_replaced_by_a_learner() {
    let cluster = TestCluster::start(4, 0).await;
    // The fourth node joins as a learner once the others hold the votes (shortly after
    // start: wait for it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (voters, learners) = loop {
        let status = cluster.status(0).await;
        let (voters, learners) = (
            session_members(&status, "voters"),
            session_members(&status, "learners"),
        );
        if voters.len() == 3 && learners.len() == 1 {
            break (voters, learners);
        }
        assert!(Instant::now() < deadline, "{voters:?}, {learners:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leaving = *voters
        .iter()
        .find(|id| **id != 1)
        .expect("a voter but node 1");
    let (code, _, stderr) = cluster.cli(leaving as usize - 1, &["leave"]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut want: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|id| *id != leaving)
        .chain(learners)
        .collect();
    want.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.status(0).await;
        let now = session_members(&status, "voters");
        if now == want {
            assert!(session_members(&status, "learners").is_empty(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {leaving} left; voters {now:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node that died for good is forgotten through a live one (`shoal cluster forget N`,
/// `DELETE /api/v1/nodes/N`): refused while it is up, and once it is declared down it is
/// no member any more, and a learner takes its vote in the session group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_forgotten_and_a_learner_takes_its_vote() {
    let mut cluster = TestCluster::start(4, 0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let voters = loop {
        let status = cluster.status(0).await;
        let voters = session_members(&status, "voters");
        if voters.len() == 3 && session_members(&status, "learners").len() == 1 {
            break voters;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dead = *voters
        .iter()
        .find(|id| **id != 1)
        .expect("a voter but node 1");
    // Up: refused.
    let (code, _, stderr) = cluster.cli(0, &["forget", &dead.to_string()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is up"), "{stderr}");
    cluster.kill(dead as usize - 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, stderr) = cluster.cli(0, &["forget", &dead.to_string()]).await;
        if code == 0 {
            assert!(out.contains("no member"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {dead} was never forgotten: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = cluster.status(0).await;
    let nodes: Vec<u64> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert!(!nodes.contains(&dead), "{status}");
    assert_eq!(nodes.len(), 3, "{status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.status(0).await;
        let voters = session_members(&status, "voters");
        if voters.len() == 3 && !voters.contains(&dead) {
            break;
        }
        assert!(Instant::now() < deadline, "voters {voters:?}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With three session shards on three nodes, the balancer gives each node the leadership
/// of one: the leaders' work on session writes is spread (a lone session group stays
/// where it started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_shards_spread_their_leaders_over_the_nodes() {
    let cluster = TestCluster::start_with(3, 0, false, &["--session-shards", "3"]).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let leaders = cluster.leaders(0).await;
        let shards: BTreeSet<u64> = (0..3)
            .filter_map(|k| leaders.get(&format!("sessions/{k}")).copied())
            .filter(|leader| *leader > 0)
            .collect();
        assert!(
            !leaders.contains_key("sessions/3"),
            "three shards, no more: {leaders:?}"
        );
        if shards.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session shards' leaders did not spread: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An online persistent subscriber acknowledges its messages while their writes wait for
/// the session shard's next proposal: the node leaves those messages out of its proposals
/// (`shoal_session_writes_skipped_total`), and neither it nor a replica keeps any of
/// them: the session resumed on another node (read from that node's store) has nothing to
/// deliver again. Fails if the skip is gone (the count stays 0) or if a message its
/// subscriber acknowledged stayed in the resuming node's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acknowledged_before_their_proposal_are_skipped_and_never_come_back() {
    const MESSAGES: u16 = 400;
    const WINDOW: u16 = 16;
    let cluster = TestCluster::start(3, 0).await;
    let (mut subscriber, _) = persistent(cluster.addr(0), "skip-sub").await;
    subscribe(&mut subscriber, 1, "skip/#", QoS::AtLeastOnce).await;
    // Reads and acknowledges every message as it comes.
    let reader = tokio::spawn(async move {
        let got = drain(&mut subscriber, Duration::from_secs(3)).await;
        (subscriber, got)
    });
    let mut publisher = client(cluster.addr(0), "skip-pub").await;
    let mut next = 1;
    let mut acked = 0;
    while acked < MESSAGES {
        while next <= MESSAGES && next - 1 - acked < WINDOW {
            publisher
                .publish(
                    "skip/x",
                    &next.to_be_bytes(),
                    QosPid::AtLeastOnce(pid(next)),
                    false,
                )
                .await;
            next += 1;
        }
        match publisher.recv_within(Duration::from_secs(15)).await {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.reason_code, PubAckReasonCode::Success, "{ack:?}");
                acked += 1;
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let (subscriber, got) = reader.await.expect("reader");
    assert_eq!(numbers(got), (1..=MESSAGES).collect::<BTreeSet<u16>>());
    let (code, metrics) = cluster.admin(0, "GET", "/metrics").await;
    assert_eq!(code, 200);
    let skipped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_session_writes_skipped_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(skipped.is_some_and(|n| n > 0), "skipped {skipped:?}");
    drop(subscriber);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut resumed, present) = persistent(cluster.addr(1), "skip-sub").await;
    assert!(present, "the session resumes on node 2");
    assert!(
        resumed.silent_for(Duration::from_secs(1)).await,
        "a message its subscriber had acknowledged came back"
    );
}
