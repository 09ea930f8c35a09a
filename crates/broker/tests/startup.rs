//! What a new user meets first, through the real binary: `--help`, the start-up errors and
//! their exit statuses, the start-up log, every config example of the README started as
//! written (addresses moved to free loopback ports, certificate paths to test files), and
//! the `$SYS` topics (load rates; no drops counted for $SYS topics nobody reads).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::http_response;

const START: Duration = Duration::from_secs(20);

fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("SHOAL_LOG").env("RUST_BACKTRACE", "0");
    cmd
}

/// A running binary, its log lines as they come, and its addresses from the log.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    /// Starts `cmd` and waits for "shoal is up".
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shoal starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut running = Self {
            child,
            lines,
            log: Vec::new(),
        };
        running.wait_for("shoal is up");
        running
    }

    /// Waits for a log line containing `needle`: the line.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(START) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut stderr = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut stderr);
                    }
                    panic!(
                        "no log line with {needle:?}; log:\n{}\nstderr:\n{stderr}",
                        self.log.join("\n")
                    );
                }
            }
        }
    }

    /// The address a log field (`admin_addr=`, `addr=`) of the line with `needle` names.
    fn addr(&mut self, needle: &str, field: &str) -> SocketAddr {
        let line = self.wait_for(needle);
        let at = line
            .find(&format!("{field}="))
            .unwrap_or_else(|| panic!("{field}= in {line}"));
        line[at + field.len() + 1..]
            .split_whitespace()
            .next()
            .and_then(|a| a.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("an address in {line}"))
    }

    fn admin(&mut self) -> SocketAddr {
        self.addr("shoal is up", "admin_addr")
    }

    fn mqtt(&mut self) -> SocketAddr {
        self.addr("listener=default", "addr")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (status, body) = http_response(&response);
    (status, body)
}

fn loopback(cmd: &mut Command, dir: &Path) {
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error is said once, on one line, with no "Caused by" chain repeating it.
fn assert_one_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].starts_with("shoal: "), "{stderr}");
    assert!(!stderr.contains("Caused by"), "{stderr}");
}

#[test]
fn help_names_the_other_commands_listeners_and_exit_statuses_and_claims_no_cluster() {
    let out = shoal().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "shoal passwd",
        "shoal ctl",
        "[[listeners]]",
        "Exit status",
        "Default 0.0.0.0:18083",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    assert!(
        !help.contains("a clustered MQTT broker"),
        "the node is not clustered yet:\n{help}"
    );
}

#[test]
fn a_bad_environment_variable_is_named_as_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = shoal()
        .env("SHOAL_MAX_QOS", "two")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert_one_line(&text);
    assert!(text.contains("SHOAL_MAX_QOS"), "{text}");
    assert!(!text.contains("--max-qos"), "{text}");
}

#[test]
fn a_second_node_on_the_same_data_folder_is_refused_with_exit_status_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = shoal();
    loopback(&mut first, dir.path());
    let _first = Running::start(first);
    let mut second = shoal();
    loopback(&mut second, dir.path());
    let out = second.output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert_one_line(&text);
    assert!(
        text.contains(&format!(
            "another shoal is using {} (lock held)",
            dir.path().display()
        )),
        "{text}"
    );
}

/// Runs `cmd`, which must be refused at start: exits with status 3 within 20 s (a node
/// that took the folder would run on: `taken` says so) with one line on stderr, returned.
fn refused_with_3(mut cmd: Command, taken: &str) -> String {
    let mut refused = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while refused.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            let _ = refused.wait();
            panic!("{taken}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = refused.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert_one_line(&text);
    text
}

/// A data folder holds its node's Raft state: started under another node id, it is
/// refused (exit status 3, naming `node_id` and the id the folder belongs to).
#[test]
fn a_data_folder_refuses_another_node_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = shoal();
    loopback(&mut first, dir.path());
    let mut child = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    // Node 1 (a node alone) records its id before its groups start (within 0.1 s here).
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    let mut second = shoal();
    loopback(&mut second, dir.path());
    second.args(["--node-id", "2"]);
    let text = refused_with_3(second, "node 2 started on node 1's data folder");
    assert!(
        text.contains("`node_id` is 2") && text.contains("node 1"),
        "{text}"
    );
}

/// A data folder's sessions are in the session shards they were written through: started
/// with another number, the node is refused (exit status 3, naming `session_shards` and
/// the folder's number), and started with the folder's number it runs.
#[test]
fn a_data_folder_refuses_another_number_of_session_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = shoal();
    loopback(&mut first, dir.path());
    first.args(["--session-shards", "3"]);
    drop(Running::start(first));
    let mut second = shoal();
    loopback(&mut second, dir.path());
    let text = refused_with_3(second, "a node of 1 session shard started on a folder of 3");
    assert!(
        text.contains("`session_shards` is 1") && text.contains("set session_shards = 3"),
        "{text}"
    );
    let mut third = shoal();
    loopback(&mut third, dir.path());
    third.args(["--session-shards", "3"]);
    drop(Running::start(third));
}

#[test]
fn an_address_in_use_exits_3_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = shoal()
        .arg("--listen")
        .arg(addr.to_string())
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert_one_line(&text);
    assert!(text.contains(&addr.to_string()), "{text}");
}

#[test]
fn a_broken_password_file_is_named_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "alice:not-a-hash\n").expect("write");
    let mut cmd = shoal();
    loopback(&mut cmd, &dir.path().join("data"));
    let out = cmd
        .arg("--password-file")
        .arg(&passwd)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert_one_line(&text);
    assert!(text.contains(&passwd.display().to_string()), "{text}");
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn the_start_up_log_says_what_the_password_file_and_acl_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwd = dir.path().join("passwd");
    for user in ["alice", "bob"] {
        let mut child = shoal()
            .args(["passwd", "add"])
            .arg(&passwd)
            .arg(user)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("shoal passwd");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"secret\n")
            .expect("password");
        assert!(child.wait().expect("passwd ends").success());
    }
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "allow user:alice all a/#\nallow all subscribe b/#\ndeny all all c/#\n",
    )
    .expect("write");
    let mut cmd = shoal();
    loopback(&mut cmd, &dir.path().join("data"));
    cmd.arg("--password-file")
        .arg(&passwd)
        .arg("--acl-file")
        .arg(&acl);
    let mut node = Running::start(cmd);
    let line = node.wait_for("password file loaded");
    assert!(line.contains("users=2"), "{line}");
    let line = node.wait_for("ACL loaded");
    assert!(line.contains("rules=3"), "{line}");
}

/// The ```toml blocks of the README.
fn readme_examples() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Starts the binary with `example` as its config file, as written but for its addresses
/// (free loopback ports) and files (test certificates); waits for `/readyz`.
fn start_example(name: &str, example: &str, pki: &common::pki::Pki) {
    let mut rewritten = String::new();
    for line in example.lines() {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (
                k.trim(),
                v.split('#').next().unwrap_or("").trim().trim_matches('"'),
            ),
            None => ("", ""),
        };
        let line = match key {
            "bind" | "listen" | "admin_listen" => {
                let addr: SocketAddr = value.parse().expect("an address");
                // No example takes the admin listener's default port for MQTT.
                if key != "admin_listen" {
                    assert_ne!(addr.port(), 18083, "{name}: {line}");
                }
                format!("{key} = \"127.0.0.1:0\"")
            }
            // The cluster sample alone: a cluster of this one node, on loopback.
            "cluster_listen" => format!("cluster_listen = \"127.0.0.1:{}\"", common::free_port()),
            "seeds" => String::new(),
            "mqtt_advertise" => "mqtt_advertise = \"127.0.0.1:1883\"".to_owned(),
            "cert" => format!("cert = {:?}", pki.server.cert),
            "key" => format!("key = {:?}", pki.server.key),
            "client_ca" => format!("client_ca = {:?}", pki.ca),
            "data_dir" => String::new(),
            _ => line.to_string(),
        };
        rewritten.push_str(&line);
        rewritten.push('\n');
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("shoal.toml");
    std::fs::write(&file, &rewritten).expect("write");
    let mut cmd = shoal();
    cmd.arg("--config")
        .arg(&file)
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"));
    let mut node = Running::start(cmd);
    let (status, _) = http(node.admin(), "GET", "/readyz");
    assert_eq!(status, 200, "{name}:\n{example}");
}

#[test]
fn every_readme_config_example_starts_a_node() {
    let examples = readme_examples();
    assert!(examples.len() >= 7, "{} examples", examples.len());
    let pki = common::pki::Pki::new();
    for (i, example) in examples.iter().enumerate() {
        start_example(&format!("README example {i}"), example, &pki);
    }
}

#[test]
fn the_systemd_sample_configs_start_a_node() {
    let pki = common::pki::Pki::new();
    for (name, example) in [
        (
            "deploy/systemd/shoal.toml",
            include_str!("../../../deploy/systemd/shoal.toml"),
        ),
        (
            "deploy/systemd/cluster-node.toml",
            include_str!("../../../deploy/systemd/cluster-node.toml"),
        ),
    ] {
        start_example(name, example, &pki);
    }
    let unit = include_str!("../../../deploy/systemd/shoal.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/shoal --config /etc/shoal/shoal.toml"));
    assert!(
        unit.contains("RestartPreventExitStatus=2 3"),
        "the documented start-up statuses"
    );
}

#[test]
fn sys_topics_carry_message_rates_and_are_not_counted_as_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = shoal();
    loopback(&mut cmd, dir.path());
    cmd.args(["--sys-interval", "1"]);
    let mut node = Running::start(cmd);
    let (admin, mqtt) = (node.admin(), node.mqtt());
    let (host, port) = (mqtt.ip().to_string(), mqtt.port().to_string());
    // Two $SYS rounds with one topic subscribed and the rest unread.
    let out = Command::new("mosquitto_sub")
        .args(["-h", &host, "-p", &port, "-W", "10", "-C", "2", "-t"])
        .arg("$SYS/broker/load/messages/received/1min")
        .output()
        .expect("mosquitto_sub");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for value in text.lines() {
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("a rate per minute, not {value:?}"));
    }
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        !metrics.contains("cause=\"no_subscribers\""),
        "$SYS is not a drop:\n{metrics}"
    );
    // An ordinary message to nobody still is.
    let status = Command::new("mosquitto_pub")
        .args(["-h", &host, "-p", &port, "-t", "nobody/listens", "-m", "x"])
        .status()
        .expect("mosquitto_pub");
    assert!(status.success());
    let deadline = std::time::Instant::now() + START;
    loop {
        let (_, metrics) = http(admin, "GET", "/metrics");
        if metrics.contains("shoal_messages_dropped_total{cause=\"no_subscribers\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_admin_api_answers_loopback_without_a_token_and_requires_it_when_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = shoal();
    loopback(&mut cmd, dir.path());
    let mut open = Running::start(cmd);
    assert_eq!(http(open.admin(), "GET", "/bans").0, 200);
    drop(open);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = shoal();
    loopback(&mut cmd, dir.path());
    cmd.env("SHOAL_ADMIN_TOKEN", "t0ken");
    let mut guarded = Running::start(cmd);
    assert_eq!(http(guarded.admin(), "GET", "/bans").0, 401);
    assert_eq!(http(guarded.admin(), "GET", "/healthz").0, 200);
}
