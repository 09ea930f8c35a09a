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

#[path = "../tests/common/idle.rs"]
mod idle;

use std::time::Duration;

use idle::{open, snapshot};

const CLIENTS: usize = 2000;

#[global_allocator]
static ALLOCATOR: idle::Counting = idle::Counting;

#[tokio::main]
async fn main() {
    if let Ok(certs) = std::env::var("IDLE_TLS") {
        return tls(std::path::Path::new(&certs)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = idle::node(dir.path()).await;
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
