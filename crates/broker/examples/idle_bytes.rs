//! Heap bytes per idle connection, by allocation size: an in-process node, a counting
//! allocator, 2,000 MQTT 5 clients that connect and then stay idle. The clients live in the
//! same process, so each line includes their side's socket registration (one 256-byte
//! block per connection).
//!
//!     cargo run --release -p shoal-broker --example idle_bytes
//!
//! With `IDLE_TLS=DIR`, it instead writes a CA and a server certificate into DIR, listens
//! with TLS on 127.0.0.1:28883, and measures while a separate process (so that only the
//! broker's side counts) holds connections, e.g.
//! `shoal-loadtest conn -c 2000 -b mqtts://localhost:28883 --ca DIR/ca.pem -d 20s`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 2000;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BYTES: [AtomicIsize; 64] = [const { AtomicIsize::new(0) }; 64];
static BLOCKS: [AtomicIsize; 64] = [const { AtomicIsize::new(0) }; 64];

/// The power-of-two class of a size: `n < 1 << class`.
fn class(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()) as usize
}

fn count(size: usize, sign: isize) {
    let bytes = size as isize * sign;
    LIVE.fetch_add(bytes, Ordering::Relaxed);
    BYTES[class(size)].fetch_add(bytes, Ordering::Relaxed);
    BLOCKS[class(size)].fetch_add(sign, Ordering::Relaxed);
}

/// `System`, counting live bytes and blocks by size class.
struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the one `System::alloc` needs.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn snapshot() -> (isize, Vec<(isize, isize)>) {
    let classes = (0..64)
        .map(|i| {
            (
                BYTES[i].load(Ordering::Relaxed),
                BLOCKS[i].load(Ordering::Relaxed),
            )
        })
        .collect();
    (LIVE.load(Ordering::Relaxed), classes)
}

/// A minimal MQTT 5 CONNECT, clean start, keep alive 60 s.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut packet = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0];
    packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    packet[1] = (packet.len() - 2) as u8;
    packet
}

async fn open(addr: std::net::SocketAddr, client_id: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&connect_packet(client_id))
        .await
        .expect("CONNECT");
    let mut connack = [0u8; 64];
    let n = stream.read(&mut connack).await.expect("CONNACK");
    assert!(n > 0 && connack[0] == 0x20, "expected CONNACK");
    stream
}

#[tokio::main]
async fn main() {
    if let Ok(certs) = std::env::var("IDLE_TLS") {
        return tls(std::path::Path::new(&certs)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = shoal_broker::RawConfig {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: Some(dir.path().into()),
        sys_interval: Some(0),
        ..Default::default()
    };
    let config = shoal_broker::Config::from_raw(raw).expect("config");
    let node = shoal_broker::Node::start(config, None)
        .await
        .expect("node starts");
    let addr = node.mqtt_addr();
    let mut clients = Vec::new();
    // Warm up: maps and pools reach their working size before measuring.
    for i in 0..CLIENTS / 10 {
        clients.push(open(addr, &format!("warm-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = snapshot();
    for i in 0..CLIENTS {
        clients.push(open(addr, &format!("client-{i:06}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = snapshot();
    let per = |v: isize| v as f64 / CLIENTS as f64;
    println!(
        "live heap per idle connection: {:.0} bytes",
        per(after.0 - before.0)
    );
    for (i, (now, then)) in after.1.iter().zip(&before.1).enumerate() {
        let blocks = now.1 - then.1;
        if blocks != 0 {
            println!(
                "  blocks under {:>7} bytes: {:>5.2} per connection, {:>7.1} bytes",
                1usize << i,
                per(blocks),
                per(now.0 - then.0)
            );
        }
    }
    node.shutdown().await;
}

/// The TLS measurement: connections come from another process.
async fn tls(certs: &std::path::Path) {
    std::fs::create_dir_all(certs).expect("certificate folder");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "idle_bytes CA");
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    std::fs::write(certs.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(certs.join("server.pem"), server.pem()).expect("write");
    std::fs::write(certs.join("server.key"), key.serialize_pem()).expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("shoal.toml");
    std::fs::write(
        &file,
        format!(
            "admin_listen = \"127.0.0.1:0\"\nsys_interval = 0\ndata_dir = {:?}\n\
             [[listeners]]\nkind = \"tls\"\nbind = \"127.0.0.1:28883\"\ncert = {:?}\nkey = {:?}\n",
            dir.path().join("data"),
            certs.join("server.pem"),
            certs.join("server.key"),
        ),
    )
    .expect("config");
    let raw = shoal_broker::RawConfig {
        config: Some(file),
        ..Default::default()
    };
    let config = shoal_broker::Config::load_from(raw).expect("config");
    let node = shoal_broker::Node::start(config, None)
        .await
        .expect("node starts");
    let before = snapshot();
    println!("listening; measuring in 15 s");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = snapshot();
    println!("live heap grew by {} bytes", after.0 - before.0);
    for (i, (now, then)) in after.1.iter().zip(&before.1).enumerate() {
        let blocks = now.1 - then.1;
        if blocks != 0 {
            println!(
                "  blocks under {:>7} bytes: {:>6} blocks, {:>9} bytes",
                1usize << i,
                blocks,
                now.0 - then.0
            );
        }
    }
    node.shutdown().await;
}
