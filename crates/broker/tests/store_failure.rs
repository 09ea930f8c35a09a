//! A store that fails (a full disk) never acknowledges: PUBACK says 0x80 from the first
//! write that failed on (an MQTT 3.1.1 client is disconnected instead), `/readyz` says the node is not ready and `/healthz` that it needs a restart, and SIGTERM still stops the
//! node promptly. The data folder is a 3 MiB tmpfs that this test mounts (root only).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tmpfs mounted for the test, unmounted at the end.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    http_response(&response).0
}

#[tokio::test]
async fn a_full_disk_answers_failures_reports_not_ready_and_still_stops_on_sigterm() {
    let Some(tmpfs) = Tmpfs::mount("3m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let mqtt: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "--listen",
            &mqtt.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args(["--sys-interval", "0", "--log", "error"])
        .arg("--data-dir")
        .arg(tmpfs.0.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shoal");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(mqtt).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "shoal did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ready once it has entered its cluster of one.
    while http_get(admin, "/readyz").await != 200 {
        assert!(std::time::Instant::now() < deadline, "shoal was not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Connected before the store fails: claiming a client id afterwards is a Raft write,
    // which fails too (below).
    let (mut v3, _) = Raw::connect(mqtt, ProtocolVersion::V3_1_1, "filler3", |_| {}).await;

    // An offline persistent subscriber: every message is written for it.
    let (mut sub, _) = Raw::connect(mqtt, ProtocolVersion::V5, "offline", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    })
    .await;
    sub.subscribe(1, &[("fill/#", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect::default())).await;

    let (mut publisher, _) = Raw::connect(mqtt, ProtocolVersion::V5, "filler", |_| {}).await;
    let payload = Bytes::from(vec![7u8; 20_000]);
    let mut codes = Vec::new();
    for n in 1..=400u16 {
        let mut p = Publish::new(s("fill/t"), payload.clone());
        p.qos_pid = QosPid::AtLeastOnce(pid(n));
        publisher.send(Packet::Publish(p)).await;
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => codes.push(ack.reason_code),
            other => panic!("message {n}: expected PUBACK, got {other:?}"),
        }
    }
    let first_failure = codes
        .iter()
        .position(|c| *c == PubAckReasonCode::UnspecifiedError)
        .expect("8 MB into a 3 MiB folder: some write must fail and be answered 0x80");
    assert!(
        codes[first_failure..]
            .iter()
            .all(|c| *c == PubAckReasonCode::UnspecifiedError),
        "a success after the store failed: {codes:?}"
    );
    assert_eq!(
        http_get(admin, "/readyz").await,
        503,
        "not ready once the store failed"
    );
    assert_eq!(
        http_get(admin, "/healthz").await,
        503,
        "not alive either: only a restart recovers a failed store"
    );
    // MQTT 3.1.1 has no failure code for a publication: the connection is closed instead
    // of acknowledging.
    let mut p = Publish::new(s("fill/t"), payload.clone());
    p.qos_pid = QosPid::AtLeastOnce(pid(1));
    v3.send(Packet::Publish(p)).await;
    assert_eq!(
        v3.recv().await,
        None,
        "MQTT 3.1.1: closed, not acknowledged"
    );
    // A new client: registering its client id is a write too, which fails: refused (or
    // closed), never accepted.
    let mut late = Raw::open(mqtt, ProtocolVersion::V5).await;
    if let Some(ack) = late.handshake("late", |_| {}).await {
        assert_ne!(
            ack.reason_code,
            ConnectReasonCode::Success,
            "a connection accepted after the store failed"
        );
    }

    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("shoal did not stop within 15 s of SIGTERM with a broken store");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
