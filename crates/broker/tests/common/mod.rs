//! Test support: an in-process node on loopback with its data in a temp folder, and a raw
//! MQTT client over real sockets that shows the exact packets the broker sends.
#![allow(dead_code, unreachable_pub)]

pub mod netns;
pub mod pki;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shoal_broker::{Config, Node, RawConfig};
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// A node and its data folder.
pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = start_in(dir.path(), tweak).await;
        Self { node, dir }
    }

    pub async fn start_hooks(hooks: shoal_broker::Hooks) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::from_raw(test_config(dir.path())).expect("valid config");
        let node = Node::start_with(config, None, hooks)
            .await
            .expect("node starts");
        Self { node, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.mqtt_addr()
    }

    /// Stops the node and starts a new one on the same data folder.
    pub async fn restart(self) -> Self {
        let Self { node, dir } = self;
        node.shutdown().await;
        let node = start_in(dir.path(), |_| {}).await;
        Self { node, dir }
    }
}

fn test_config(dir: &std::path::Path) -> RawConfig {
    RawConfig {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: Some(dir.to_owned()),
        sys_interval: Some(0),
        ..Default::default()
    }
}

pub async fn start_in(dir: &std::path::Path, tweak: impl FnOnce(&mut RawConfig)) -> Node {
    let mut raw = test_config(dir);
    tweak(&mut raw);
    let config = Config::from_raw(raw).expect("valid config");
    Node::start(config, None).await.expect("node starts")
}

/// A `[[listeners]]` table with only its name, kind and a free loopback address.
pub fn listener(name: &str, kind: &str) -> shoal_broker::config::RawListener {
    shoal_broker::config::RawListener {
        name: Some(name.into()),
        kind: kind.into(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        cert: None,
        key: None,
        client_ca: None,
        require_client_cert: None,
        use_identity_as_username: None,
        tls_min_version: None,
        path: None,
        proxy_protocol: None,
        max_connections: None,
        max_connection_rate: None,
        allow_anonymous: None,
    }
}

pub fn s(text: &str) -> MqttString {
    MqttString::try_from(text).expect("valid")
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// Any byte stream a test client speaks MQTT over (TCP, TLS, WebSocket, QUIC).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A client that speaks packets over a real connection.
pub struct Raw {
    pub stream: Box<dyn Io>,
    pub version: ProtocolVersion,
    decoder: Decoder,
    buf: BytesMut,
}

impl Raw {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self::over(Box::new(stream), version)
    }

    /// A client over an established stream (TLS, WebSocket, QUIC).
    pub fn over(stream: Box<dyn Io>, version: ProtocolVersion) -> Self {
        Self {
            stream,
            version,
            decoder: Decoder::with_version(version, u32::MAX),
            buf: BytesMut::new(),
        }
    }

    /// Sends CONNECT (client id `client_id`, tweaked) and returns the answer, if any.
    pub async fn handshake(
        &mut self,
        client_id: &str,
        tweak: impl FnOnce(&mut Connect),
    ) -> Option<ConnAck> {
        let mut connect = Connect::new(self.version, s(client_id));
        tweak(&mut connect);
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => Some(*ack),
            None => None,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Opens a connection and completes CONNECT; returns the CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        tweak: impl FnOnce(&mut Connect),
    ) -> (Self, ConnAck) {
        let mut raw = Self::open(addr, version).await;
        let ack = raw
            .handshake(client_id, tweak)
            .await
            .expect("expected CONNACK, the connection closed");
        (raw, ack)
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf).expect("encodes");
        self.stream.write_all(&buf).await.expect("write");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet, or `None` when the connection closes (or nothing comes in `WAIT`).
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT).await
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(packet) = self
                .decoder
                .decode(&mut self.buf)
                .expect("the broker sends valid packets")
            {
                return Some(packet);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Whether the broker closed the connection (within `WAIT`), ignoring what came before.
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        self.recv_within(wait).await.is_none()
    }

    pub async fn subscribe(&mut self, id: u16, filters: &[(&str, QoS)]) -> SubAck {
        self.subscribe_with(
            id,
            filters
                .iter()
                .map(|(f, q)| (*f, SubscriptionOptions::with_qos(*q)))
                .collect(),
            None,
        )
        .await
    }

    pub async fn subscribe_with(
        &mut self,
        id: u16,
        filters: Vec<(&str, SubscriptionOptions)>,
        identifier: Option<u32>,
    ) -> SubAck {
        let subscribe = Subscribe {
            packet_id: pid(id),
            properties: SubscribeProperties {
                subscription_identifier: identifier.and_then(std::num::NonZeroU32::new),
                ..Default::default()
            },
            filters: filters.into_iter().map(|(f, o)| (s(f), o)).collect(),
        };
        self.send(Packet::Subscribe(subscribe)).await;
        loop {
            match self.recv().await {
                Some(Packet::SubAck(ack)) => return ack,
                Some(Packet::Publish(_)) => continue,
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos_pid: QosPid, retain: bool) {
        let mut publish = Publish::new(s(topic), Bytes::copy_from_slice(payload));
        publish.qos_pid = qos_pid;
        publish.retain = retain;
        self.send(Packet::Publish(publish)).await;
    }

    /// The next PUBLISH (skipping nothing else: anything else fails the test).
    pub async fn next_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// The real `shoal` binary on a free loopback port, data in `dir`.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Process {
    pub async fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        Self::start_on(dir, port).await
    }

    /// The binary on loopback port `port` (a restart on the port its clients know).
    pub async fn start_on(dir: &std::path::Path, port: u16) -> Self {
        Self::start_args(
            dir,
            port,
            &["--admin-listen", "127.0.0.1:0"],
            Duration::from_secs(10),
        )
        .await
    }

    /// Starts the binary listening for MQTT on `port` with `args` added; waits up to `wait`
    /// for the MQTT listener (which opens once a cluster node has joined).
    pub async fn start_args(
        dir: &std::path::Path,
        port: u16,
        args: &[&str],
        wait: Duration,
    ) -> Self {
        Self::start_at(&[], "127.0.0.1", dir, port, args, wait, None).await
    }

    /// As [`Self::start_args`], on `ip` (a loopback or network namespace address), run
    /// under `wrapper` (e.g. `ip netns exec NAME`, which execs the binary: the child's id
    /// is the node's), its standard error appended to `log` if given.
    pub async fn start_at(
        wrapper: &[&str],
        ip: &str,
        dir: &std::path::Path,
        port: u16,
        args: &[&str],
        wait: Duration,
        log: Option<&std::path::Path>,
    ) -> Self {
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
        // `option_env!`: the examples share this file, and only tests have the binary.
        let Some(shoal) = option_env!("CARGO_BIN_EXE_shoal") else {
            panic!("the shoal binary is built with the tests, not the examples");
        };
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = std::process::Command::new(program);
                c.args(rest).arg(shoal);
                c
            }
            None => std::process::Command::new(shoal),
        };
        // The node's log (on standard output) and its standard error go to `log`.
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("node log file");
                let copy = file.try_clone().expect("node log file");
                (
                    std::process::Stdio::from(copy),
                    std::process::Stdio::from(file),
                )
            }
            None => (std::process::Stdio::null(), std::process::Stdio::inherit()),
        };
        // `SHOAL_TEST_LOG=info` (or debug) for more in the logs of a run kept for a look.
        let level = std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
        let child = command
            .args([
                "--listen",
                &addr.to_string(),
                "--sys-interval",
                "0",
                "--log",
                &level,
            ])
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start shoal");
        let deadline = tokio::time::Instant::now() + wait;
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "shoal did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, addr }
    }

    pub fn kill_9(mut self) {
        // `Child::kill` sends SIGKILL: no shutdown, no flush.
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raft and failure detection made quick for cluster tests (the defaults are 150, 750,
/// 6000 ms).
pub const QUICK_CLUSTER: [&str; 6] = [
    "--cluster-heartbeat-ms",
    "100",
    "--cluster-election-timeout-ms",
    "300",
    "--cluster-failure-timeout-ms",
    "3000",
];

/// A loopback port nothing listens on, below the kernel's ephemeral range (32768 and up
/// here): outgoing connections, which take ephemeral ports, never land on it between this
/// check and the server's bind. Each test process draws from its own slice of
/// 20000..32000 (by process id) and checks each port with a bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slice = (std::process::id() % 240) as u16;
    for _ in 0..50 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 50;
        let port = 20_000 + slice * 50 + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Every port of the slice is taken: fall back to one the kernel picks.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The status code and body of an HTTP/1.1 response read whole (0 if it has no status).
pub fn http_response(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Writes a password file of `users` (name, password) at `dir/passwd`.
pub fn password_file(dir: &std::path::Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("passwd");
    let mut file = shoal_access::password::PasswordFile::new();
    for (user, password) in users {
        file.set(user, password.as_bytes())
            .expect("a valid user name");
    }
    file.save(&path).expect("password file written");
    path
}
