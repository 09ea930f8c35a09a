//! Test support: a real Mosquitto on a free loopback port, the built binary run with a time
//! limit, and a minimal raw MQTT client (shoal-codec over a std socket) that tests use to
//! disturb a run, e.g. by taking a client's session over.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shoal_codec::{Connect, Decoder, MqttString, Packet, ProtocolVersion};

/// A Mosquitto broker started for one test, killed (by its PID) when dropped.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port} after 5 s");
}

impl Mosquitto {
    /// Starts Mosquitto with a TCP listener on a free port, plus `extra` config lines (which
    /// may use `{dir}` for the temporary directory).
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n{}\n",
            extra.replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = spawn(&conf);
        wait_listening(port);
        Self {
            child,
            port,
            dir,
            conf,
        }
    }

    /// The broker URL of the TCP listener.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker and starts it again with the same configuration.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.conf);
        wait_listening(self.port);
    }
}

/// The Mosquitto binary: on the PATH, or where Debian puts it (/usr/sbin is not on every
/// PATH).
fn mosquitto_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("mosquitto").is_file()));
    if !on_path && sbin.is_file() {
        sbin
    } else {
        PathBuf::from("mosquitto")
    }
}

fn spawn(conf: &Path) -> Child {
    Command::new(mosquitto_bin())
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed (apt-get install mosquitto; .ci/run does it)")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load tester with `args`, killing it after `limit`.
pub fn loadtest(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-loadtest"))
        .args(args)
        .args(if matches!(args.first(), Some(&"report" | &"check")) {
            &[][..]
        } else {
            &["--progress", "off"][..]
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    eprintln!(
        "shoal-loadtest {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads a JSON result.
/// Runs the tool with `args` plus `--json` into a temporary file, within `limit`; returns
/// how it exited and the result it wrote.
pub fn run(args: &[&str], limit: Duration) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.json");
    let path_arg = path.to_str().expect("utf-8");
    let mut all = args.to_vec();
    all.extend(["--json", path_arg]);
    let out = loadtest(&all, limit);
    (out, json(&path))
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the run wrote its JSON result");
    serde_json::from_str(&text).expect("the JSON result parses")
}

/// A raw MQTT connection: CONNECT with `client_id` and wait for CONNACK. Used to take a
/// session over from a load-test client.
pub fn raw_connect(port: u16, client_id: &str, clean_start: bool) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut connect = Connect::new(
        ProtocolVersion::V5,
        MqttString::try_from(client_id).expect("valid client id"),
    );
    connect.clean_start = clean_start;
    if !clean_start {
        connect.properties.session_expiry_interval = Some(300);
    }
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V5, &mut buf)
        .expect("encode CONNECT");
    stream.write_all(&buf).expect("send CONNECT");
    let mut decoder = Decoder::with_version(ProtocolVersion::V5, 1 << 20);
    let mut rbuf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(packet) = decoder.decode(&mut rbuf).expect("valid packet") {
            assert!(matches!(packet, Packet::ConnAck(_)), "{packet:?}");
            return stream;
        }
        let n = stream.read(&mut chunk).expect("read CONNACK");
        assert!(n > 0, "closed before CONNACK");
        rbuf.extend_from_slice(&chunk[..n]);
    }
}

/// A value of a JSON result by path, e.g. `at(&v, "total.lost")`.
pub fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

/// A number of a JSON result by path.
pub fn num(v: &serde_json::Value, path: &str) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number: {}", at(v, path)))
}
