//! The cluster fault suite (issue 13, first part; deploy/faults/README.md): a cluster of
//! real `shoal` processes on loopback under load from the real `shoal-loadtest` (persistent
//! QoS 1 and QoS 2 subscribers, a shared group of two persistent QoS 1 members, publishers
//! on every node the fault spares, `--placement cross`, `--reconnect`, `--record`), one
//! fault injected at a seeded random moment, healed,
//! drained, and the record handed to `shoal-loadtest check`: no acknowledged message lost,
//! no QoS 2 duplicate, no order violation.
//!
//! Faults: kill -9 (then a restart with its data) of a *bystander*, a node holding no
//! client of the run, at random or the leader of `meta`, of a route shard, of a retained
//! shard or of the session group; a network partition of a bystander (root only: the node
//! runs in a network namespace of its own, cut with iptables as in `partition.rs`); kill -9
//! of a node holding subscribers' sessions, restarted with its data (`kill-subscriber-node`)
//! or kept down while its clients fail over to another node (`lose-subscriber-node`); and a
//! rolling restart, every node SIGTERMed in turn and restarted once drained. For the kill
//! faults, clients with a Will sit on the victim and a watcher on another node checks that
//! each Will is published exactly once.
//!
//! `ci_series` runs a few of each within about three minutes; `long_series` (ignored) is the
//! documented long run, driven by environment variables (see deploy/faults/README.md).

mod common;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::{Process, QUICK_CLUSTER, Raw, free_port, http_response, s};
use shoal_codec::{
    ConnectReasonCode, LastWill, Packet, ProtocolVersion, PubAck, PubAckReasonCode, QoS, QosPid,
    ReasonCode, Subscribe, SubscriptionOptions, WillProperties,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raft groups whose leader a fault can aim at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Meta,
    Routes,
    Retained,
    Sessions,
}

/// One fault of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// kill -9 a random bystander, restart it with its data.
    KillBystander,
    /// kill -9 the (bystander) leader of a group of this kind, restart it.
    KillLeader(GroupKind),
    /// Cut a bystander off from the other nodes, then heal.
    Partition,
    /// kill -9 a node holding subscribers' sessions and restart it with its data; its
    /// clients come back to it (their sessions are on its disk).
    KillSubscriberNode,
    /// kill -9 a node holding subscribers' sessions (and publishers) for good; its clients
    /// reconnect to another node (`--failover`), where their replicated sessions are taken
    /// up, and its QoS 2 publishers resend what was not acknowledged.
    LoseSubscriberNode,
    /// SIGTERM every node in turn (each holds clients), restart it with its data, wait
    /// until it is ready and the leaderships have spread again, then the next; its clients
    /// come back to it (their sessions are on its disk).
    RollingRestart,
    /// Fill the disk of a node holding clients (its data folder is a small tmpfs), wait,
    /// free it, and restart the node once `/healthz` says its store failed (what an
    /// orchestrator's liveness probe does); its clients come back to it.
    DiskFull,
    /// Jump the wall clock of a node holding clients by 10 min to 2 h, forward or back
    /// (libfaketime), then kill -9 it and restart it on that clock: it runs skewed from
    /// the others to the end; its clients come back to it.
    ClockJump,
}

impl Fault {
    const ALL: [Self; 11] = [
        Self::KillBystander,
        Self::KillLeader(GroupKind::Meta),
        Self::KillLeader(GroupKind::Routes),
        Self::KillLeader(GroupKind::Retained),
        Self::KillLeader(GroupKind::Sessions),
        Self::Partition,
        Self::KillSubscriberNode,
        Self::LoseSubscriberNode,
        Self::RollingRestart,
        Self::DiskFull,
        Self::ClockJump,
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.to_string() == name)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KillBystander => "kill-bystander",
            Self::KillLeader(GroupKind::Meta) => "kill-meta-leader",
            Self::KillLeader(GroupKind::Routes) => "kill-route-leader",
            Self::KillLeader(GroupKind::Retained) => "kill-retained-leader",
            Self::KillLeader(GroupKind::Sessions) => "kill-session-leader",
            Self::Partition => "partition",
            Self::KillSubscriberNode => "kill-subscriber-node",
            Self::LoseSubscriberNode => "lose-subscriber-node",
            Self::RollingRestart => "rolling-restart",
            Self::DiskFull => "disk-full",
            Self::ClockJump => "clock-jump",
        })
    }
}

/// The faults a series runs unless told otherwise: those the cluster must survive today.
const DEFAULT_FAULTS: [Fault; 11] = [
    Fault::KillBystander,
    Fault::KillLeader(GroupKind::Meta),
    Fault::KillLeader(GroupKind::Routes),
    Fault::KillLeader(GroupKind::Retained),
    Fault::KillLeader(GroupKind::Sessions),
    Fault::Partition,
    Fault::KillSubscriberNode,
    Fault::LoseSubscriberNode,
    Fault::RollingRestart,
    Fault::DiskFull,
    Fault::ClockJump,
];

/// How long a node whose store failed (a full disk) may take to stop on SIGTERM: its
/// groups stopped on the error, so its drain has nothing to hand over or to write.
const DISK_FULL_EXIT_MAX: Duration = Duration::from_secs(4);

/// How much longer the load of a rolling restart runs than the shape says, per node
/// (each takes 3–4 s to drain, come back and get its leaderships again).
const ROLL_EXTRA_LOAD_PER_NODE: Duration = Duration::from_secs(5);
/// How much longer the load runs when a disk fills: the node's store fails some seconds
/// after the disk is full, the runner waits for `/healthz` to say so, and the node then
/// drains and restarts (4–15 s in all). Its subscribers reconnect to it only once it is
/// back: the load must outlast that, or what their sessions kept is never fetched.
const DISK_FULL_EXTRA_LOAD: Duration = Duration::from_secs(15);
/// How long a node has to exit after SIGTERM in a rolling restart.
const ROLL_EXIT_WAIT: Duration = Duration::from_secs(20);
/// How long a rolling restart waits for the leaderships to spread after each restart.
const ROLL_SETTLE_WAIT: Duration = Duration::from_secs(15);

/// splitmix64: a small seeded generator, so that a run is reproduced from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `lo` and `hi` seconds.
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(lo + (hi - lo) * unit)
    }
}

/// What shapes a run besides its seed and fault.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Nodes in the cluster (3 or 5).
    nodes: usize,
    /// How long the publishers publish.
    load: Duration,
    /// Clients per group (subscribers at QoS 1 and 2, publishers at QoS 1, 2 and retained).
    clients: u32,
    /// Messages per second per publisher.
    rate: u32,
}

/// The CLOCK_MONOTONIC time in nanoseconds, the clock `shoal-loadtest` stamps its records
/// with.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One node: its address, ports and data folder, and its process while it runs.
struct Member {
    id: u64,
    ip: String,
    netns: Option<String>,
    mqtt: u16,
    cluster: u16,
    admin: u16,
    dir: PathBuf,
    log: PathBuf,
    /// libfaketime's offset file, if the node runs on a clock of its own.
    clock: Option<PathBuf>,
    process: Option<Process>,
}

/// The session shards of the cluster of the run with `seed`: `FAULTS_SESSION_SHARDS`, or
/// by the seed's parity one (the default) or three (one per node of the usual three, each
/// led by a node of its own once spread), so that a series tests both.
fn session_shards(seed: u64) -> u16 {
    std::env::var("FAULTS_SESSION_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if seed % 2 == 1 { 3 } else { 1 })
}

/// A cluster of real nodes in one run's folder.
struct Cluster {
    members: Vec<Member>,
    /// Every node's `session_shards`.
    session_shards: u16,
}

impl Cluster {
    fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let mut args: Vec<String> = QUICK_CLUSTER.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--node-id".into(),
            m.id.to_string(),
            "--cluster-listen".into(),
            format!("{}:{}", m.ip, m.cluster),
            "--admin-listen".into(),
            format!("{}:{}", m.ip, m.admin),
        ]);
        args.extend(["--session-shards".into(), self.session_shards.to_string()]);
        if i > 0 {
            let seed = &self.members[0];
            args.extend(["--seeds".into(), format!("{}:{}", seed.ip, seed.cluster)]);
        } else {
            args.extend(["--bootstrap".into(), "true".into()]);
        }
        args
    }

    /// Starts (or restarts, with its data) member `i`, and waits until it is ready.
    async fn run(&mut self, i: usize) {
        let args = self.args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let m = &self.members[i];
        let mut wrapper: Vec<String> = match &m.netns {
            Some(ns) => ["ip", "netns", "exec", ns].map(String::from).to_vec(),
            None => Vec::new(),
        };
        if let (Some(clock), Some(lib)) = (&m.clock, faketime_lib()) {
            // Only the wall clock: the node's own clock and its timers are monotonic.
            wrapper.extend([
                "env".to_owned(),
                format!("LD_PRELOAD={}", lib.display()),
                format!("FAKETIME_TIMESTAMP_FILE={}", clock.display()),
                "FAKETIME_CACHE_DURATION=1".to_owned(),
                "DONT_FAKE_MONOTONIC=1".to_owned(),
            ]);
        }
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let process = Process::start_at(
            &wrapper,
            &m.ip,
            &m.dir,
            m.mqtt,
            &args,
            Duration::from_secs(60),
            Some(&m.log),
        )
        .await;
        self.members[i].process = Some(process);
        assert!(
            self.ready_within(i, Duration::from_secs(60)).await,
            "node {} did not become ready",
            i + 1
        );
    }

    async fn start(
        dir: &Path,
        nodes: usize,
        host_ip: &str,
        in_netns: Option<(usize, &Netns)>,
        clock: Option<(usize, PathBuf)>,
        session_shards: u16,
    ) -> Self {
        let mut cluster = Self {
            members: Vec::new(),
            session_shards,
        };
        for i in 0..nodes {
            let netns = in_netns.filter(|(n, _)| *n == i).map(|(_, ns)| ns);
            let node_dir = dir.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&node_dir).expect("node folder");
            cluster.members.push(Member {
                id: i as u64 + 1,
                ip: netns.map_or(host_ip.to_owned(), |ns| ns.ns_ip.clone()),
                netns: netns.map(|ns| ns.name.clone()),
                mqtt: free_port(),
                cluster: free_port(),
                admin: free_port(),
                dir: node_dir,
                log: dir.join(format!("node{}.log", i + 1)),
                clock: clock
                    .as_ref()
                    .filter(|(n, _)| *n == i)
                    .map(|(_, c)| c.clone()),
                process: None,
            });
        }
        for i in 0..nodes {
            let t = Instant::now();
            cluster.run(i).await;
            eprintln!(
                "  node {} ready in {:.1} s",
                i + 1,
                t.elapsed().as_secs_f64()
            );
        }
        cluster
    }

    async fn http_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let m = &self.members[i];
        let connect = tokio::net::TcpStream::connect((m.ip.as_str(), m.admin));
        let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .ok()?
            .ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await;
        Some(http_response(&response))
    }

    async fn ready_within(&self, i: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self
                .http_get(i, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Each group's leader (node id, 0 for none) as member `i` sees it.
    async fn leaders(&self, i: usize) -> Vec<(String, u64)> {
        let Some((200, body)) = self.http_get(i, "/api/v1/cluster").await else {
            return Vec::new();
        };
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| {
                        (
                            g["group"].as_str().unwrap_or("").to_owned(),
                            g["leader"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGTERM member `i` (by its process id) and waits at most `within` for it to exit;
    /// `Err` says what went wrong (no exit in time, or a status other than 0).
    async fn terminate(&mut self, i: usize, within: Duration) -> Result<Duration, String> {
        let Some(mut process) = self.members[i].process.take() else {
            return Err("not running".to_owned());
        };
        let sent = Command::new("kill")
            .args(["-TERM", &process.child.id().to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            return Err("kill -TERM failed".to_owned());
        }
        let start = Instant::now();
        loop {
            match process.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(start.elapsed()),
                Ok(Some(status)) => return Err(format!("exited with {status}")),
                Ok(None) if start.elapsed() < within => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return Err(format!("still running {within:?} after SIGTERM")),
            }
        }
    }

    /// Waits at most `within` until, as member `i` sees it, every group has a leader and
    /// every node leads a route or retained shard; returns whether it happened.
    async fn leaders_spread(&self, i: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let leaders = self.leaders(i).await;
            let spread = !leaders.is_empty()
                && leaders.iter().all(|(_, leader)| *leader > 0)
                && self.members.iter().all(|m| {
                    leaders
                        .iter()
                        .any(|(group, leader)| group != "meta" && *leader == m.id)
                });
            if spread {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// kill -9 member `i` (by its process id).
    fn kill(&mut self, i: usize) {
        if let Some(process) = self.members[i].process.take() {
            process.kill_9();
        }
    }

    fn url(&self, i: usize) -> String {
        let m = &self.members[i];
        format!("mqtt://{}:{}", m.ip, m.mqtt)
    }
}

/// libfaketime (the Debian package `faketime`), if installed.
fn faketime_lib() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// A tmpfs mounted on a node's folder for a run (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The `shoal-loadtest` binary beside `shoal`, built (or brought up to date) with the same
/// profile and target folder: `cargo nextest run --workspace` builds it already; `-p
/// shoal-broker` alone does not.
fn loadtest_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let shoal = Path::new(env!("CARGO_BIN_EXE_shoal"));
            let profile_dir = shoal.parent().expect("the binary's folder");
            let target = profile_dir.parent().expect("the target folder");
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug");
            let profile = if profile == "debug" { "dev" } else { profile };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            // Without what cargo sets for this test (its package's variables): build
            // scripts that watch them would otherwise rebuild what a plain build made.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy().into_owned();
                if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR")
                    || key.starts_with("NEXTEST")
                    || key == "OUT_DIR"
                {
                    build.env_remove(key);
                }
            }
            let status = build
                .args([
                    "build",
                    "-q",
                    "-p",
                    "shoal-loadtest",
                    "--bin",
                    "shoal-loadtest",
                ])
                .args(["--profile", profile, "--target-dir"])
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            let binary = profile_dir.join("shoal-loadtest");
            assert!(
                status.is_ok_and(|s| s.success()) || binary.exists(),
                "cannot build shoal-loadtest"
            );
            binary
        })
        .clone()
}

/// The scenario: every publisher's messages go to one QoS 1 and one QoS 2 persistent
/// subscriber of the same index (so `--placement cross` puts every group on every node and
/// each subscriber on another node than its publishers), and every QoS 1 message also to a
/// shared group of two persistent members on two nodes.
fn scenario(shape: Shape) -> String {
    let (k, r) = (shape.clients, shape.rate);
    let retained_rate = (r / 4).max(1);
    format!(
        r#"name = "faults"

[[group]]
name = "sub1"
count = {k}
subscribe = [{{ filter = "faults/%i/+", qos = 1 }}]

[[group]]
name = "sub2"
count = {k}
subscribe = [{{ filter = "faults/%i/+", qos = 2 }}]

[[group]]
name = "shared"
count = 2
subscribe = [{{ filter = "faults/+/q1", qos = 1, share = "faults" }}]

[[group]]
name = "pub1"
count = {k}
publish = {{ topic = "faults/%i/q1", qos = 1, rate = {r}, size = 64 }}

[[group]]
name = "pub2"
count = {k}
publish = {{ topic = "faults/%i/q2", qos = 2, rate = {r}, size = 64 }}

[[group]]
name = "pubr"
count = {k}
publish = {{ topic = "faults/%i/r", qos = 1, retain = true, rate = {retained_rate}, size = 64 }}
"#
    )
}

/// How many clients with a Will a kill fault puts on its victim.
const WILL_HOLDERS: usize = 3;

/// The Wills of a run: clients with a Will (no delay, persistent sessions) connected to
/// the node a kill fault hits, which never reconnect, and a watcher on another node that
/// counts every Will published. Each holder's Will must be published exactly once: by the
/// node back with its data, or by the survivors that take its sessions up, never both.
struct Wills {
    /// The holders' connections, dropped once their node is killed.
    holders: Vec<Raw>,
    /// Will topic -> how many times the watcher got it.
    seen: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Wills {
    async fn place(holders_at: std::net::SocketAddr, watcher_at: std::net::SocketAddr) -> Self {
        let (mut watcher, ack) = Raw::connect(
            watcher_at,
            ProtocolVersion::V5,
            "faults-will-watcher",
            |c| {
                c.keep_alive = 0;
            },
        )
        .await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success, "watcher");
        watcher
            .subscribe(1, &[("faults/wills/+", QoS::AtLeastOnce)])
            .await;
        let mut holders = Vec::new();
        for k in 0..WILL_HOLDERS {
            let id = format!("faults-will-{k}");
            let (raw, ack) = Raw::connect(holders_at, ProtocolVersion::V5, &id, |c| {
                c.keep_alive = 0;
                c.clean_start = false;
                c.properties.session_expiry_interval = Some(600);
                c.will = Some(LastWill {
                    topic: s(&format!("faults/wills/{k}")),
                    payload: bytes::Bytes::from_static(b"gone"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: WillProperties {
                        will_delay_interval: Some(0),
                        ..Default::default()
                    },
                });
            })
            .await;
            assert_eq!(ack.reason_code, ConnectReasonCode::Success, "{id}");
            holders.push(raw);
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let counts = std::sync::Arc::clone(&seen);
        let watcher = tokio::spawn(async move {
            loop {
                let packet = tokio::select! {
                    _ = &mut stopped => return,
                    packet = watcher.recv_within(Duration::from_secs(3600)) => packet,
                };
                match packet {
                    Some(Packet::Publish(p)) => {
                        if let QosPid::AtLeastOnce(id) = p.qos_pid {
                            watcher.send(Packet::PubAck(PubAck::new(id))).await;
                        }
                        *counts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(p.topic.to_string())
                            .or_insert(0) += 1;
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
        Self {
            holders,
            seen,
            stop: Some(stop),
            watcher,
        }
    }

    /// Waits until every holder's Will came or `within` passed, then a second more for
    /// a second copy; returns (expected, published, missing, duplicated).
    async fn verdict(mut self, within: Duration) -> (u64, u64, u64, u64) {
        self.holders.clear();
        let deadline = Instant::now() + within;
        let all_came = |seen: &std::collections::BTreeMap<String, u64>| seen.len() >= WILL_HOLDERS;
        while Instant::now() < deadline
            && !all_came(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.watcher.await;
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let published: u64 = seen.values().sum();
        let missing = (WILL_HOLDERS - seen.len().min(WILL_HOLDERS)) as u64;
        let duplicated = seen.values().map(|n| n.saturating_sub(1)).sum();
        (WILL_HOLDERS as u64, published, missing, duplicated)
    }
}

/// Subscribe-then-publish probes through the whole run, faults included: a fresh clean
/// client subscribes to a topic of its own on one node, and once it has its SUBACK (a
/// granted code), a fresh client publishes one QoS 1 message to the topic on another node
/// (or the same). An acknowledged message (PUBACK 0x00) must reach the subscriber: it is a
/// miss if it does not within 5 s while the subscriber's connection stays up, and so is a
/// PUBACK 0x10 (no matching subscribers) after the SUBACK. A probe whose connect,
/// subscription or publication fails (a node down, 0x80) promises nothing and is skipped.
struct Probes {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ProbeCount>,
}

/// What the probes found.
#[derive(Debug, Default)]
struct ProbeCount {
    /// Probes whose publication was acknowledged (each a check of the promise).
    checked: u64,
    /// Of those, the messages that did not arrive.
    missed: u64,
    /// What the first misses were.
    examples: Vec<String>,
}

/// How a probe ended.
enum Probe {
    Skipped,
    Delivered,
    Missed(String),
}

impl Probes {
    fn start(nodes: Vec<std::net::SocketAddr>, seed: u64) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut count = ProbeCount::default();
            let n = nodes.len();
            for k in 0u64.. {
                if !matches!(
                    stopped.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ) {
                    break;
                }
                let (a, b) = (k as usize % n, (k as usize / n + k as usize) % n);
                match probe_once(nodes[a], nodes[b], &format!("{seed}-{k}")).await {
                    Probe::Skipped => {}
                    Probe::Delivered => count.checked += 1,
                    Probe::Missed(why) => {
                        count.checked += 1;
                        count.missed += 1;
                        if count.examples.len() < 5 {
                            count.examples.push(format!(
                                "probe {k} (subscribed on node {}, published on node {}): {why}",
                                a + 1,
                                b + 1
                            ));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            count
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn finish(mut self) -> ProbeCount {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap_or_default()
    }
}

/// A clean MQTT 5 client of `addr`, if it connects.
async fn probe_client(addr: std::net::SocketAddr, id: &str) -> Option<Raw> {
    let stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut raw = Raw::over(Box::new(stream), ProtocolVersion::V5);
    let ack = tokio::time::timeout(Duration::from_secs(5), raw.handshake(id, |_| {}))
        .await
        .ok()??;
    (ack.reason_code == ConnectReasonCode::Success).then_some(raw)
}

async fn probe_once(on: std::net::SocketAddr, from: std::net::SocketAddr, name: &str) -> Probe {
    let topic = format!("faults/probe/{name}");
    let Some(mut subscriber) = probe_client(on, &format!("faults-probe-sub-{name}")).await else {
        return Probe::Skipped;
    };
    subscriber
        .send(Packet::Subscribe(Subscribe {
            packet_id: shoal_codec::PacketId::new(1).expect("non-zero"),
            properties: Default::default(),
            filters: vec![(s(&topic), SubscriptionOptions::with_qos(QoS::AtLeastOnce))],
        }))
        .await;
    // A SUBACK waits for its route everywhere: up to `route_timeout` (10 s) under a fault.
    match subscriber.recv_within(Duration::from_secs(15)).await {
        Some(Packet::SubAck(ack)) if ack.reason_codes.iter().all(|c| !c.is_error()) => {}
        _ => return Probe::Skipped,
    }
    let Some(mut publisher) = probe_client(from, &format!("faults-probe-pub-{name}")).await else {
        return Probe::Skipped;
    };
    publisher
        .publish(
            &topic,
            b"probe",
            QosPid::AtLeastOnce(shoal_codec::PacketId::new(1).expect("non-zero")),
            false,
        )
        .await;
    match publisher.recv_within(Duration::from_secs(15)).await {
        Some(Packet::PubAck(ack)) if ack.reason_code == PubAckReasonCode::Success => {}
        Some(Packet::PubAck(ack)) if ack.reason_code == PubAckReasonCode::NoMatchingSubscribers => {
            // Unless the subscriber's node closed its connection meanwhile (a node cut off
            // stops serving): its clean session, and the subscription, ended with it.
            if subscriber.closed().await {
                return Probe::Skipped;
            }
            return Probe::Missed("PUBACK 0x10 (no matching subscribers) after the SUBACK".into());
        }
        _ => return Probe::Skipped,
    }
    let waited = Instant::now();
    loop {
        let left = Duration::from_secs(5).saturating_sub(waited.elapsed());
        match subscriber.recv_within(left).await {
            Some(Packet::Publish(p)) if p.topic.as_str() == topic => return Probe::Delivered,
            Some(_) => {}
            // The subscriber's connection closed (its node died): no promise left.
            None if waited.elapsed() < Duration::from_millis(4900) => return Probe::Skipped,
            None => return Probe::Missed("acknowledged, not delivered within 5 s".into()),
        }
    }
}

/// What one run found.
#[derive(Debug, Clone)]
struct RunReport {
    seed: u64,
    fault: Fault,
    nodes: usize,
    /// The cluster's session shards.
    shards: u16,
    /// The node the fault hit (id), and how.
    victim: u64,
    note: String,
    /// Seconds from the start of publishing to the fault.
    fault_after: f64,
    /// How long the node was down or cut off.
    outage: f64,
    acked: u64,
    lost: u64,
    qos2_duplicates: u64,
    order_violations: u64,
    sessions_lost: u64,
    interrupted: u64,
    recovery_ms: Option<f64>,
    max_pause_ms: f64,
    /// Wills expected and published (kill faults only).
    wills: Option<(u64, u64)>,
    /// Subscribe-then-publish probes checked, and missed.
    probes: (u64, u64),
    passed: bool,
    /// Why the run failed, or was skipped.
    problem: Option<String>,
    folder: PathBuf,
    took: Duration,
}

impl RunReport {
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | node {} {} | {:.1} s | {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} |",
            self.seed,
            self.fault,
            match self.shards {
                1 => self.nodes.to_string(),
                n => format!("{} ({n} session shards)", self.nodes),
            },
            self.victim,
            self.note,
            self.fault_after,
            self.outage,
            self.acked,
            self.lost,
            self.qos2_duplicates,
            self.order_violations,
            self.sessions_lost,
            self.interrupted,
            self.recovery_ms
                .map_or("-".to_owned(), |ms| format!("{ms:.0} ms")),
            self.wills
                .map_or("-".to_owned(), |(e, p)| format!("{p} of {e}")),
            self.probes.1,
            self.probes.0,
            if self.passed {
                "pass".to_owned()
            } else {
                format!("FAIL: {}", self.problem.as_deref().unwrap_or("?"))
            },
        )
    }

    const HEADER: &'static str = "| seed | fault | nodes | victim | fault at | outage | acked | lost | QoS 2 dup | order | sessions lost | interrupted flows | recovery | Wills published | SUBACK probes missed | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";
}

/// Waits until the loadtest's progress lines (stderr, in `log`) show publishing.
async fn publishing_started(log: &Path, child: &mut Child, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains("running")) {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Runs one fault with `seed` in a fresh folder; `None` when it cannot run here (a
/// partition needs root).
async fn run_one(seed: u64, fault: Fault, shape: Shape) -> Option<RunReport> {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let folder = tempfile::Builder::new()
        .prefix("shoal-faults-")
        .tempdir()
        .expect("tempdir");
    let dir = folder.path().to_path_buf();
    let nodes = shape.nodes;
    // A partition's victim runs in a network namespace from the start.
    let netns = if fault == Fault::Partition {
        Some(Netns::create("faults", 232)?)
    } else {
        None
    };
    let partitioned = 1 + rng.below(nodes as u64 - 1) as usize;
    // A full disk's victim has a small tmpfs for a folder, a jumped clock's a clock file
    // for libfaketime, from the start; both hold clients.
    let special = matches!(fault, Fault::DiskFull | Fault::ClockJump)
        .then(|| rng.below(nodes as u64) as usize)
        .unwrap_or(0);
    let mut _tmpfs = None;
    if fault == Fault::DiskFull {
        _tmpfs = Some(Tmpfs::mount(
            &dir.join(format!("node{}", special + 1)),
            "256m",
        )?);
    }
    let clock = dir.join("clock");
    if fault == Fault::ClockJump {
        faketime_lib()?;
        std::fs::write(&clock, "+0\n").expect("clock file");
    }
    let host_ip = netns.as_ref().map_or("127.0.0.1", |ns| ns.host_ip.as_str());
    let mut cluster = Cluster::start(
        &dir,
        nodes,
        host_ip,
        netns.as_ref().map(|ns| (partitioned, ns)),
        (fault == Fault::ClockJump).then(|| (special, clock.clone())),
        session_shards(seed),
    )
    .await;

    // The victim, chosen before the load, so that no client of the run is on it (but for
    // kill-subscriber-node, where every node has clients).
    let mut note = String::new();
    let victim = match fault {
        Fault::KillBystander
        | Fault::KillSubscriberNode
        | Fault::LoseSubscriberNode
        | Fault::RollingRestart => rng.below(nodes as u64) as usize,
        Fault::DiskFull | Fault::ClockJump => special,
        Fault::Partition => partitioned,
        Fault::KillLeader(kind) => {
            let prefix = match kind {
                GroupKind::Meta => "meta",
                GroupKind::Routes => "routes/",
                GroupKind::Retained => "retained/",
                GroupKind::Sessions => "sessions/",
            };
            // Route and retained shards are led by every node once the balancer has spread
            // them (a few seconds after start): wait for that, so that the victim is any
            // node, not the first one that led everything. Meta stays where it started,
            // and so does a lone session group (session shards spread like the others).
            let stays = match kind {
                GroupKind::Meta => true,
                GroupKind::Sessions => cluster.session_shards <= 1,
                _ => false,
            };
            if !stays && !cluster.leaders_spread(0, Duration::from_secs(15)).await {
                note.push_str("(leaders not spread) ");
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let groups: Vec<(String, u64)> = cluster
                    .leaders(0)
                    .await
                    .into_iter()
                    .filter(|(g, leader)| g.starts_with(prefix) && *leader > 0)
                    .collect();
                if !groups.is_empty() {
                    let (group, leader) = &groups[rng.below(groups.len() as u64) as usize];
                    note.push_str(&format!("(leader of {group}, node {leader})"));
                    break (*leader - 1) as usize;
                }
                assert!(Instant::now() < deadline, "no leader of {prefix}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let brokers: Vec<usize> = match fault {
        Fault::KillSubscriberNode
        | Fault::LoseSubscriberNode
        | Fault::RollingRestart
        | Fault::DiskFull
        | Fault::ClockJump => (0..nodes).collect(),
        _ => (0..nodes).filter(|&i| i != victim).collect(),
    };

    // The Wills of the victim's clients, for the faults that kill it (a rolling restart
    // drains its nodes: a graceful shutdown publishes no Will; a partitioned node's
    // clients are not cut off from it).
    let kills = matches!(
        fault,
        Fault::KillBystander
            | Fault::KillLeader(_)
            | Fault::KillSubscriberNode
            | Fault::LoseSubscriberNode
            | Fault::ClockJump
    );
    let mut wills = None;
    if kills {
        let at = |i: usize| -> std::net::SocketAddr {
            let m = &cluster.members[i];
            format!("{}:{}", m.ip, m.mqtt).parse().expect("addr")
        };
        wills = Some(Wills::place(at(victim), at((victim + 1) % nodes)).await);
    }

    // The load.
    let scenario_path = dir.join("scenario.toml");
    std::fs::write(&scenario_path, scenario(shape)).expect("scenario");
    let record = dir.join("record.jsonl");
    let progress_log = dir.join("loadtest.log");
    let more: Vec<String> = brokers[1..].iter().map(|&i| cluster.url(i)).collect();
    // A rolling restart takes a while (each node drained, restarted, leaders spread
    // again): the load goes on through it.
    let load = match fault {
        Fault::RollingRestart => shape.load + ROLL_EXTRA_LOAD_PER_NODE * nodes as u32,
        Fault::DiskFull => shape.load + DISK_FULL_EXTRA_LOAD,
        _ => shape.load,
    };
    let load_secs = load.as_secs_f64();
    let mut loadtest = Command::new(loadtest_binary())
        .arg("scenario")
        .arg(&scenario_path)
        .args([
            "-b",
            &cluster.url(brokers[0]),
            "--more-brokers",
            &more.join(","),
        ])
        .args([
            "--placement",
            "cross",
            "--persistent",
            "--session-expiry",
            "600",
        ])
        .args(["--reconnect", "300ms", "--inflight", "16"])
        .args([
            "-d",
            &format!("{load_secs}s"),
            "--drain",
            "20s",
            "--timeout",
            "5m",
        ])
        .args(["--progress", "lines", "--no-broker-version"])
        .args(if fault == Fault::LoseSubscriberNode {
            &["--failover"][..]
        } else {
            &[]
        })
        .arg("--record")
        .arg(&record)
        .arg("--json")
        .arg(dir.join("result.json"))
        .stdout(std::fs::File::create(dir.join("summary.txt")).expect("summary file"))
        .stderr(std::fs::File::create(&progress_log).expect("log file"))
        .spawn()
        .expect("start shoal-loadtest");
    let mut problem = None;
    if !publishing_started(&progress_log, &mut loadtest, Duration::from_secs(60)).await {
        problem = Some("the load never started publishing".to_owned());
    }
    let publishing = Instant::now();
    let cluster_took = started.elapsed();
    let probes = Probes::start(
        cluster
            .members
            .iter()
            .map(|m| format!("{}:{}", m.ip, m.mqtt).parse().expect("addr"))
            .collect(),
        seed,
    );

    // The fault, at a random moment of the first half of the load, healed well before its
    // end (the drain must not wait on a node still out).
    let (mut fault_at_ns, mut fault_after, mut outage) = (0, 0.0, Duration::ZERO);
    if problem.is_none() {
        let wait = rng.secs(0.15, 0.4).mul_f64(shape.load.as_secs_f64());
        tokio::time::sleep(wait).await;
        if let Fault::KillLeader(_) = fault {
            let now_leads = cluster
                .leaders(brokers[0])
                .await
                .into_iter()
                .filter(|(_, l)| *l == victim as u64 + 1)
                .map(|(g, _)| g)
                .collect::<Vec<_>>();
            if now_leads.is_empty() {
                note.push_str(" (no longer a leader at the fault)");
            }
        }
        fault_after = publishing.elapsed().as_secs_f64();
        fault_at_ns = monotonic_ns();
        match fault {
            Fault::Partition => {
                let ns = netns.as_ref().expect("a namespace for the partition");
                let own = cluster.members[victim].cluster.to_string();
                ns.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", &own, "-j", "DROP"]);
                for (i, m) in cluster.members.iter().enumerate() {
                    if i != victim {
                        let port = m.cluster.to_string();
                        ns.iptables(&["-A", "INPUT", "-p", "tcp", "--sport", &port, "-j", "DROP"]);
                    }
                }
                outage = rng.secs(3.5, 5.0);
                tokio::time::sleep(outage).await;
                ns.iptables(&["-F", "INPUT"]);
                if !cluster.ready_within(victim, Duration::from_secs(30)).await {
                    problem = Some("the partitioned node did not come back".to_owned());
                }
            }
            Fault::LoseSubscriberNode => {
                cluster.kill(victim);
                outage = load.saturating_sub(publishing.elapsed());
            }
            Fault::RollingRestart => {
                let roll = Instant::now();
                let mut steps = Vec::new();
                for step in 0..nodes {
                    let i = (victim + step) % nodes;
                    let drained = match cluster.terminate(i, ROLL_EXIT_WAIT).await {
                        Ok(took) => took,
                        Err(why) => {
                            problem = Some(format!("node {} on SIGTERM: {why}", i + 1));
                            break;
                        }
                    };
                    let stopped = Instant::now();
                    cluster.run(i).await;
                    let away = stopped.elapsed();
                    let spread = cluster.leaders_spread(i, ROLL_SETTLE_WAIT).await;
                    steps.push(format!(
                        "{}: drained {:.1} s, away {:.1} s{}",
                        i + 1,
                        drained.as_secs_f64(),
                        away.as_secs_f64(),
                        if spread { "" } else { ", leaders not spread" }
                    ));
                }
                note = format!("(then each in turn; {})", steps.join("; "));
                outage = roll.elapsed();
            }
            Fault::DiskFull => {
                let filler = cluster.members[victim].dir.join("filler");
                let _ = Command::new("dd")
                    .arg("if=/dev/zero")
                    .arg(format!("of={}", filler.display()))
                    .arg("bs=1M")
                    .stderr(std::process::Stdio::null())
                    .status();
                let full = Instant::now();
                tokio::time::sleep(rng.secs(2.0, 3.5)).await;
                let status = |answer: Option<(u16, String)>| answer.map_or(0, |(code, _)| code);
                // The store fails at its first write past the room sled had reserved: under
                // a light load that may take a few seconds more.
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut alive = status(cluster.http_get(victim, "/healthz").await);
                while alive == 200 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    alive = status(cluster.http_get(victim, "/healthz").await);
                }
                let ready = status(cluster.http_get(victim, "/readyz").await);
                let _ = std::fs::remove_file(&filler);
                note = format!("(full: readyz {ready}, healthz {alive}");
                if alive == 503 {
                    // What a liveness probe does: the node is restarted.
                    match cluster.terminate(victim, ROLL_EXIT_WAIT).await {
                        Ok(took) => {
                            note.push_str(&format!(
                                "; SIGTERM, exit in {:.1} s",
                                took.as_secs_f64()
                            ));
                            // Its groups stopped on the storage error: nothing is left to
                            // hand over or to write, and the restart should not wait.
                            if took > DISK_FULL_EXIT_MAX && problem.is_none() {
                                problem = Some(format!(
                                    "the node whose store failed took {:.1} s to stop on SIGTERM",
                                    took.as_secs_f64()
                                ));
                            }
                        }
                        Err(why) => {
                            note.push_str(&format!("; SIGTERM: {why}, then kill -9"));
                            cluster.kill(victim);
                        }
                    }
                    cluster.run(victim).await;
                    note.push_str("; restarted");
                } else if problem.is_none() {
                    problem = Some(format!(
                        "a full disk left the node alive (healthz {alive}): its store never failed?"
                    ));
                }
                note.push(')');
                outage = full.elapsed();
            }
            Fault::ClockJump => {
                let minutes = 10 + rng.below(111);
                let sign = if rng.below(2) == 0 { '+' } else { '-' };
                std::fs::write(&clock, format!("{sign}{}\n", minutes * 60)).expect("clock file");
                // libfaketime reads the file again within a second.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                cluster.kill(victim);
                outage = rng.secs(0.5, 1.5);
                tokio::time::sleep(outage).await;
                cluster.run(victim).await;
                note = format!("(clock {sign}{minutes} min, restarted on it)");
            }
            _ => {
                cluster.kill(victim);
                outage = rng.secs(0.5, 2.0);
                tokio::time::sleep(outage).await;
                cluster.run(victim).await;
            }
        }
        // A node of the load's clients back only once the load is over: they reconnect to
        // it too late to fetch what their sessions kept, which the checker would count as
        // lost. (The lost node's subscribers go elsewhere.)
        if fault != Fault::LoseSubscriberNode
            && brokers.contains(&victim)
            && problem.is_none()
            && publishing.elapsed() + Duration::from_secs(1) > load
        {
            problem = Some(format!(
                "the fault took {:.1} s, past the end of the load",
                outage.as_secs_f64()
            ));
        }
    }

    // The drain: the load ends by itself; bounded all the same.
    let limit = Instant::now() + load + Duration::from_secs(120);
    let exit = loop {
        if let Ok(Some(status)) = loadtest.try_wait() {
            break Some(status);
        }
        if Instant::now() > limit {
            let _ = loadtest.kill();
            let _ = loadtest.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if exit.is_none_or(|s| s.code() != Some(0)) && problem.is_none() {
        problem = Some(format!("shoal-loadtest ended with {exit:?}"));
    }
    let load_took = publishing.elapsed();
    let probed = probes.finish().await;
    if !probed.examples.is_empty() {
        let _ = std::fs::write(dir.join("probes.txt"), probed.examples.join("\n"));
    }
    if problem.is_none() && probed.missed > 0 {
        problem = Some(format!(
            "{} of {} subscribe-then-publish probes missed: {}",
            probed.missed,
            probed.checked,
            probed.examples.join("; ")
        ));
    }
    let mut will_count = None;
    if let Some(wills) = wills {
        let (expected, published, missing, duplicated) =
            wills.verdict(Duration::from_secs(15)).await;
        will_count = Some((expected, published));
        if problem.is_none() && (missing > 0 || duplicated > 0) {
            problem = Some(format!(
                "Wills: {missing} of {expected} never published, {duplicated} published twice"
            ));
        }
    }
    for i in 0..nodes {
        cluster.kill(i);
    }
    drop(netns);

    // The verdict.
    let verdict_path = dir.join("verdict.json");
    let check = Command::new(loadtest_binary())
        .arg("check")
        .arg(&record)
        .args(["--fault-at-ns", &fault_at_ns.to_string()])
        .arg("--json")
        .arg(&verdict_path)
        .output()
        .expect("run the checker");
    std::fs::write(dir.join("check.txt"), &check.stdout).expect("check output");
    eprintln!(
        "  cluster and connections {:.1} s, load and drain {:.1} s, check {:.1} s",
        cluster_took.as_secs_f64(),
        load_took.as_secs_f64(),
        (started.elapsed() - cluster_took - load_took).as_secs_f64()
    );
    let verdict: serde_json::Value = std::fs::read(&verdict_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let n = |key: &str| verdict[key].as_u64().unwrap_or(0);
    let checked = verdict["passed"].as_bool() == Some(true);
    if problem.is_none() && !checked {
        problem = Some(format!(
            "checker: lost {}, QoS 2 duplicates {}, order {}, sessions lost {} (see {})",
            n("lost"),
            n("qos2_duplicates"),
            n("order_violations"),
            n("sessions_lost"),
            dir.join("check.txt").display()
        ));
    }
    if problem.is_none() && n("acked") < n("sent") / 2 {
        problem = Some(format!(
            "only {} of {} messages acknowledged: the run tested little",
            n("acked"),
            n("sent")
        ));
    }
    let passed = problem.is_none();
    let folder_path = if passed && std::env::var_os("FAULTS_KEEP").is_none() {
        dir
    } else {
        // Kept for the post-mortem: node logs, the record, the checker's examples.
        folder.keep()
    };
    Some(RunReport {
        seed,
        fault,
        nodes,
        shards: cluster.session_shards,
        victim: victim as u64 + 1,
        note,
        fault_after,
        outage: outage.as_secs_f64(),
        acked: n("acked"),
        lost: n("lost"),
        qos2_duplicates: n("qos2_duplicates"),
        order_violations: n("order_violations"),
        sessions_lost: n("sessions_lost"),
        interrupted: verdict["recovery"]["interrupted"].as_u64().unwrap_or(0),
        recovery_ms: verdict["recovery"]["max_ms"].as_f64(),
        max_pause_ms: verdict["recovery"]["max_pause_ms"].as_f64().unwrap_or(0.0),
        wills: will_count,
        probes: (probed.checked, probed.missed),
        passed,
        problem,
        folder: folder_path,
        took: started.elapsed(),
    })
}

/// Runs `faults` in turn (run `i` with seed `base + i`), within `budget`; prints a table.
async fn series(
    base: u64,
    faults: &[Fault],
    runs: usize,
    shape: Shape,
    budget: Duration,
) -> Vec<RunReport> {
    let start = Instant::now();
    eprintln!(
        "fault series: base seed {base}, {runs} runs, {} nodes, load {:?}, faults {}",
        shape.nodes,
        shape.load,
        faults
            .iter()
            .map(Fault::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut reports = Vec::new();
    for i in 0..runs {
        if start.elapsed() >= budget {
            eprintln!("time budget spent after {i} runs");
            break;
        }
        let seed = base.wrapping_add(i as u64);
        let fault = faults[i % faults.len()];
        eprintln!("run {}: seed {seed}, fault {fault}", i + 1);
        match run_one(seed, fault, shape).await {
            Some(r) => {
                eprintln!(
                    "  {} in {:.0} s; longest pause {:.0} ms{}",
                    if r.passed { "passed" } else { "FAILED" },
                    r.took.as_secs_f64(),
                    r.max_pause_ms,
                    if r.passed {
                        String::new()
                    } else {
                        format!("; kept in {}", r.folder.display())
                    }
                );
                reports.push(r);
            }
            None => eprintln!(
                "  skipped: {fault} needs root (network namespaces, tmpfs) or libfaketime"
            ),
        }
    }
    eprintln!("{}", RunReport::HEADER);
    for r in &reports {
        eprintln!("{}", r.row());
    }
    reports
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn base_seed() -> u64 {
    env_or(
        "FAULTS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    )
}

/// The CI series: two runs of kill-bystander and of partition, one of each leader kind,
/// one lose-subscriber-node, one rolling restart, one full disk and one jumped clock,
/// seeded from the clock (printed) or `FAULTS_SEED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_series_loses_no_acknowledged_message() {
    let shape = Shape {
        nodes: 3,
        load: Duration::from_secs(8),
        clients: 4,
        rate: 20,
    };
    let faults = [
        Fault::KillBystander,
        Fault::Partition,
        Fault::KillLeader(GroupKind::Meta),
        Fault::KillLeader(GroupKind::Routes),
        Fault::KillLeader(GroupKind::Retained),
        Fault::KillLeader(GroupKind::Sessions),
        Fault::KillBystander,
        Fault::Partition,
        Fault::LoseSubscriberNode,
        Fault::RollingRestart,
        Fault::DiskFull,
        Fault::ClockJump,
    ];
    let reports = series(
        base_seed(),
        &faults,
        faults.len(),
        shape,
        Duration::from_secs(300),
    )
    .await;
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(RunReport::row)
        .collect();
    assert!(failed.is_empty(), "failed runs:\n{}", failed.join("\n"));
}

/// The long series (deploy/faults/README.md): `FAULTS_RUNS` (24), `FAULTS_SEED` (the
/// clock), `FAULTS_KINDS` (comma-separated; the nine that must pass: all), `FAULTS_NODES` (3),
/// `FAULTS_LOAD_SECS` (10), `FAULTS_BUDGET_SECS` (1800), `FAULTS_OUT` (a markdown table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long series: minutes; run by deploy/faults/run.sh"]
async fn long_series() {
    let faults: Vec<Fault> = match std::env::var("FAULTS_KINDS") {
        Ok(list) => list
            .split(',')
            .map(|name| {
                Fault::parse(name.trim()).unwrap_or_else(|| {
                    let all: Vec<String> = Fault::ALL.iter().map(Fault::to_string).collect();
                    panic!("unknown fault {name:?}: one of {}", all.join(", "))
                })
            })
            .collect(),
        Err(_) => DEFAULT_FAULTS.to_vec(),
    };
    let shape = Shape {
        nodes: env_or("FAULTS_NODES", 3),
        load: Duration::from_secs(env_or("FAULTS_LOAD_SECS", 10)),
        clients: env_or("FAULTS_CLIENTS", 4),
        rate: env_or("FAULTS_RATE", 20),
    };
    assert!(shape.nodes >= 3, "FAULTS_NODES: at least 3");
    let base = base_seed();
    let reports = series(
        base,
        &faults,
        env_or("FAULTS_RUNS", 24),
        shape,
        Duration::from_secs(env_or("FAULTS_BUDGET_SECS", 1800)),
    )
    .await;
    if let Ok(out) = std::env::var("FAULTS_OUT") {
        let mut text = format!("{}\n", RunReport::HEADER);
        for r in &reports {
            text.push_str(&r.row());
            text.push('\n');
        }
        std::fs::write(&out, text).expect("write FAULTS_OUT");
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(RunReport::row)
        .collect();
    assert!(
        failed.is_empty(),
        "failed runs (base seed {base}):\n{}",
        failed.join("\n")
    );
}
