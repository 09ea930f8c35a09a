//! Operating the real `shoal` binary: its admin endpoints and metrics, its refusal of bad
//! configuration, its help, its orderly shutdown on SIGTERM, and its reload on SIGHUP.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Shoal {
    child: std::process::Child,
    mqtt: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Shoal {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the binary with these extra flags.
    async fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mqtt: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .env("SHOAL_LISTEN", mqtt.to_string())
            .env("SHOAL_ADMIN_LISTEN", admin.to_string())
            .env("SHOAL_LOG", "warn")
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start shoal");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(admin).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "shoal did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            mqtt,
            admin,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.admin)
            .await
            .expect("connect admin");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (status, body) = http_response(&response);
        (status, body)
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let shoal = Shoal::start().await;
    assert_eq!(shoal.get("/healthz").await.0, 200);
    // Ready once it has entered its cluster (a node alone: its cluster of one), which
    // takes a moment after the admin listener answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shoal.get("/readyz").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shoal.get("/nowhere").await.0, 404);
    let (mut c, _) = Raw::connect(shoal.mqtt, ProtocolVersion::V5, "m", |_| {}).await;
    c.publish("t", b"x", QosPid::AtLeastOnce(pid(1)), false)
        .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    // A client that breaks the protocol is counted by the rule it broke.
    let mut bad = Raw::open(shoal.mqtt, ProtocolVersion::V3_1_1).await;
    bad.send_bytes(&[0x10, 0x80, 0x00]).await;
    assert!(bad.closed().await);
    let (status, metrics) = shoal.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "shoal_connections 1",
        "shoal_messages_received_total{qos=\"1\"} 1",
        "shoal_protocol_errors_total{rule=\"MQTT-1.5.5-1\"} 1",
        "shoal_connects_total{result=\"success\"} 1",
        "shoal_sessions 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn sigterm_disconnects_clients_with_0x8b_and_exits_cleanly() {
    let mut shoal = Shoal::start().await;
    let (mut c, _) = Raw::connect(shoal.mqtt, ProtocolVersion::V5, "bye", |_| {}).await;
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    let rc = unsafe { libc::kill(shoal.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    assert_eq!(
        c.recv().await,
        Some(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ServerShuttingDown
        )))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = shoal.child.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "shoal did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn bad_configuration_is_refused_with_the_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("shoal.toml");
    std::fs::write(&file, "max_qos = 7\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`max_qos`") && stderr.contains("7 is not 0, 1 or 2"),
        "{stderr}"
    );
    std::fs::write(&file, "listen = 5\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_RECEIVE_MAXIMUM", "0")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`receive_maximum`"));
}

#[test]
fn help_lists_every_key_with_its_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--listen",
        "--data-dir",
        "--admin-listen",
        "--max-packet-size",
        "--receive-maximum",
        "--max-qos",
        "--retain-available",
        "--topic-alias-maximum",
        "--max-queued-messages",
        "--max-queued-bytes",
        "--queue-qos0-messages",
        "--max-session-expiry",
        "--server-keep-alive",
        "--sys-interval",
        "--log",
        "--config",
    ] {
        assert!(help.contains(key), "--help does not list {key}");
    }
    assert!(
        help.contains("SHOAL_LISTEN") && help.contains("Default 0.0.0.0:1883"),
        "{help}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_acl_even_when_its_file_looks_unchanged() {
    let files = tempfile::tempdir().expect("tempdir");
    let acl = files.path().join("acl");
    std::fs::write(&acl, "deny all publish x\nallow all all #\n").expect("acl");
    let written = std::fs::metadata(&acl)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut shoal = Shoal::start_with(&["--acl-file", acl.to_str().expect("utf-8")]).await;
    let (mut c, _) = Raw::connect(shoal.mqtt, ProtocolVersion::V5, "pub", |_| {}).await;
    let publish_x = async |c: &mut Raw, id: u16| {
        c.publish("x", b"", QosPid::AtLeastOnce(pid(id)), false)
            .await;
        match c.recv().await {
            Some(Packet::PubAck(ack)) => ack.reason_code,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    };
    assert_eq!(publish_x(&mut c, 1).await, PubAckReasonCode::NotAuthorized);
    // New rules, with the old modification time: the file watch cannot see the change.
    std::fs::write(&acl, "allow all all #\n").expect("acl");
    std::fs::File::options()
        .write(true)
        .open(&acl)
        .and_then(|f| f.set_modified(written))
        .expect("set mtime");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        publish_x(&mut c, 2).await,
        PubAckReasonCode::NotAuthorized,
        "without SIGHUP the old rules stay"
    );
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    let rc = unsafe { libc::kill(shoal.child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut id = 3;
    // Allowed now; nobody subscribes, hence 0x10 (no matching subscribers).
    while publish_x(&mut c, id).await != PubAckReasonCode::NoMatchingSubscribers {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the ACL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        id += 1;
    }
    let _ = shoal.child.kill();
    let _ = shoal.child.wait();
}
