//! `shoal cluster local` and `shoal cluster status`, run as the real binary: three nodes on
//! loopback that route a message from node 1 to node 3, a status read from one of them,
//! SIGTERM to the supervisor stopping every node, and a node's death ending the
//! supervisor.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, pid};
use shoal_codec::{Packet, ProtocolVersion, PubAckReasonCode, QoS, QosPid};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// `count` consecutive loopback ports that are free now, below the ephemeral range (so
/// that no outgoing connection of a parallel test takes one meanwhile).
fn free_ports(count: u16) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 104_729) % 12_000) as u16;
        let held: Vec<_> = (base..base + count)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}

/// Whether `pid` is gone (no process, not even a zombie).
fn gone(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    !alive && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a pid this test started (the supervisor) or was told by it.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// `shoal cluster local ...` running, its output read as it comes.
struct Supervisor {
    child: Child,
    stdout: Receiver<String>,
    /// Everything it and its nodes printed, for failure messages.
    output: Arc<Mutex<String>>,
    /// The nodes' pids, as it announced them.
    pids: Arc<Mutex<Vec<i32>>>,
}

impl Supervisor {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(SHOAL)
            .args(["cluster", "local"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shoal cluster local starts");
        let output = Arc::new(Mutex::new(String::new()));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let (tx, stdout) = channel();
        let out = child.stdout.take().expect("stdout");
        let all = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.lock().expect("lock").push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let (all, found) = (Arc::clone(&output), Arc::clone(&pids));
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                // "shoal cluster: started node 2 (pid 1234): ..."
                if let Some(pid) = line
                    .split("(pid ")
                    .nth(1)
                    .and_then(|rest| rest.split(')').next())
                    .and_then(|p| p.parse().ok())
                {
                    found.lock().expect("lock").push(pid);
                }
                all.lock().expect("lock").push_str(&format!("{line}\n"));
            }
        });
        Self {
            child,
            stdout,
            output,
            pids,
        }
    }

    fn output(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    /// Waits for the table printed once every node is ready: each row's node, pid, MQTT
    /// and admin addresses.
    fn table(&self, nodes: usize, wait: Duration) -> Vec<(u16, i32, SocketAddr, String)> {
        let deadline = Instant::now() + wait;
        let mut rows = Vec::new();
        let mut in_table = false;
        while rows.len() < nodes {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.stdout.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no table within {wait:?}:\n{}", self.output())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the supervisor ended:\n{}", self.output())
                }
            };
            if line.starts_with("shoal cluster:") && line.ends_with("node(s) ready") {
                in_table = true;
                continue;
            }
            if !in_table || line.starts_with("NODE") {
                continue;
            }
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 6, "a table row: {line}");
            rows.push((
                cells[0].parse().expect("node"),
                cells[1].parse().expect("pid"),
                cells[2].parse().expect("MQTT address"),
                cells[3].to_owned(),
            ));
        }
        rows
    }

    /// Waits up to `wait` for the supervisor to exit: its exit code.
    fn exit_within(&mut self, wait: Duration) -> Option<i32> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // A failed test leaves nothing running: the supervisor, then its nodes, by pid.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &pid in self.pids.lock().expect("lock").iter() {
            if !gone(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// A child process killed (if still running) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shoal cluster status ARGS`: exit code and stdout (stderr appended).
fn cluster_status(args: &[&str]) -> (i32, String) {
    let out = Command::new(SHOAL)
        .args(["cluster", "status"])
        .args(args)
        .output()
        .expect("shoal cluster status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn client(addr: SocketAddr, id: &str) -> Raw {
    let (raw, ack) = Raw::connect(addr, ProtocolVersion::V5, id, |_| {}).await;
    assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_local_nodes_route_node_1_to_node_3_report_their_status_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_ports(9);
    let (mqtt, admin, cluster) = (base, base + 3, base + 6);
    let data = dir.path().join("cluster");
    let mut supervisor = Supervisor::start(&[
        "--nodes",
        "3",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--mqtt-port",
        &mqtt.to_string(),
        "--admin-port",
        &admin.to_string(),
        "--cluster-port",
        &cluster.to_string(),
        "--",
        "--log",
        "warn",
        "--sys-interval",
        "0",
    ]);
    let rows = supervisor.table(3, Duration::from_secs(120));
    for (i, (node, _, addr, admin_url)) in rows.iter().enumerate() {
        let k = i as u16;
        assert_eq!(*node, k + 1);
        assert_eq!(addr.port(), mqtt + k, "{rows:?}");
        assert_eq!(*admin_url, format!("http://127.0.0.1:{}", admin + k));
        assert!(
            data.join(format!("node{}", k + 1)).is_dir(),
            "node data folder"
        );
    }
    let pids: Vec<i32> = rows.iter().map(|r| r.1).collect();
    assert_eq!(*supervisor.pids.lock().expect("lock"), pids);

    // Subscribed on node 3, published on node 1.
    let mut subscriber = client(rows[2].2, "on-node-3").await;
    let ack = subscriber
        .subscribe(1, &[("local/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        ack.reason_codes,
        vec![shoal_codec::SubAckReasonCode::granted(QoS::AtLeastOnce)]
    );
    let mut publisher = client(rows[0].2, "on-node-1").await;
    publisher
        .publish(
            "local/greeting",
            b"from node 1",
            QosPid::AtLeastOnce(pid(1)),
            false,
        )
        .await;
    match publisher.recv_within(Duration::from_secs(15)).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, PubAckReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let got = subscriber.recv_within(Duration::from_secs(15)).await;
    match got {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic.as_str(), "local/greeting");
            assert_eq!(&p.payload[..], b"from node 1");
        }
        other => panic!("node 3's subscriber got {other:?}"),
    }

    // `shoal cluster status` against node 3: three members up, every group led, node 3
    // a voter of each.
    let admin3 = format!("http://127.0.0.1:{}", admin + 2);
    let (code, text) = cluster_status(&["--admin", &admin3]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("node 3's view: 3 member(s), 0 down; 8 group(s), each with a leader"),
        "{text}"
    );
    for k in 0..3u16 {
        let address = format!("127.0.0.1:{}", cluster + k);
        let line = text
            .lines()
            .find(|l| l.contains(&address))
            .unwrap_or_else(|| panic!("member {address} in\n{text}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], (k + 1).to_string(), "{line}");
        assert!(
            line.ends_with("full  no") || line.ends_with("full      no"),
            "{line}"
        );
        assert_eq!(k == 2, line.contains("(this)"), "{line}");
    }
    let groups: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("GROUP"))
        .skip(1)
        .collect();
    let names: Vec<&str> = groups
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "meta",
            "routes/0",
            "routes/1",
            "routes/2",
            "routes/3",
            "retained/0",
            "retained/1",
            "sessions/0"
        ],
        "{text}"
    );
    for line in &groups {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(["1", "2", "3"].contains(&cells[1]), "a leader: {line}");
        assert!(["leader", "follower"].contains(&cells[2]), "{line}");
        assert_eq!(cells[6], "1,2,3", "three voters: {line}");
        assert_eq!(cells[7], "-", "no learners: {line}");
    }
    let (code, json) = cluster_status(&["--admin", &admin3, "--json"]);
    assert_eq!(code, 0, "{json}");
    let view: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(view["node_id"], 3);
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(3), "{view}");
    assert!(
        view["routes"].as_u64() >= Some(1),
        "local/# is routed: {view}"
    );

    // SIGTERM to the supervisor: every node stops in order, then the supervisor, with 0.
    drop(subscriber);
    drop(publisher);
    signal(supervisor.child.id() as i32, libc::SIGTERM);
    let code = supervisor.exit_within(Duration::from_secs(45));
    assert_eq!(code, Some(0), "{}", supervisor.output());
    for pid in pids {
        assert!(gone(pid), "node pid {pid} still exists");
    }
    assert!(
        supervisor.output().contains("every node stopped"),
        "{}",
        supervisor.output()
    );
}

#[test]
fn a_node_that_dies_ends_the_supervisor_with_an_error_and_stops_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_ports(6);
    let mut supervisor = Supervisor::start(&[
        "--nodes",
        "2",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--mqtt-port",
        &base.to_string(),
        "--admin-port",
        &(base + 2).to_string(),
        "--cluster-port",
        &(base + 4).to_string(),
        "--",
        "--log",
        "warn",
    ]);
    let rows = supervisor.table(2, Duration::from_secs(120));
    signal(rows[1].1, libc::SIGKILL);
    let code = supervisor.exit_within(Duration::from_secs(45));
    assert_eq!(code, Some(1), "{}", supervisor.output());
    assert!(gone(rows[0].1), "node 1 was stopped too");
    let output = supervisor.output();
    assert!(
        output.contains("node 2 exited (killed by signal 9)"),
        "{output}"
    );
}

#[test]
fn status_of_a_node_alone_and_of_no_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = free_ports(2);
    let mut node = Command::new(SHOAL)
        .args(["--listen", &format!("127.0.0.1:{}", admin + 1)])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--sys-interval", "0", "--log", "warn", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("shoal starts");
    let url = format!("http://127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, text) = loop {
        let (code, text) = cluster_status(&["--admin", &url]);
        if (code == 0 && text.contains("runs alone")) || Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = node.kill();
    let _ = node.wait();
    // A node alone is a cluster of one: node 1, leading its every group.
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("node 1 runs alone"), "{text}");
    assert!(
        text.contains("node 1's view: 1 member(s), 0 down; 8 group(s), each with a leader"),
        "{text}"
    );
    // Nothing listening there any more: exit status 2, saying so.
    let (code, text) = cluster_status(&["--admin", &url]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cannot reach the admin API"), "{text}");
    let (code, text) = cluster_status(&["--bogus"]);
    assert_eq!(code, 2, "{text}");
}

#[test]
fn a_node_still_joining_says_so_and_stops_at_once_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Its seed is a port nothing listens on: it keeps trying (for two minutes).
    let base = free_ports(4);
    let mut node = Reaped(
        Command::new(SHOAL)
            .args(["--listen", &format!("127.0.0.1:{base}")])
            .args(["--admin-listen", &format!("127.0.0.1:{}", base + 1)])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", base + 2)])
            .args(["--seeds", &format!("127.0.0.1:{}", base + 3)])
            .args(["--node-id", "7", "--sys-interval", "0", "--log", "warn"])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("shoal starts"),
    );
    let url = format!("http://127.0.0.1:{}", base + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, text) = loop {
        let (code, text) = cluster_status(&["--admin", &url]);
        if code != 2 || Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let asked = Instant::now();
    signal(node.0.id() as i32, libc::SIGTERM);
    let mut status = None;
    while asked.elapsed() < Duration::from_secs(10) {
        status = node.0.try_wait().expect("try_wait");
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("node 7 has not joined its cluster yet"),
        "{text}"
    );
    let status = status.expect("SIGTERM while joining stops the node within 10 s");
    assert!(status.success(), "{status}");
}
