//! TLS (with a client certificate), WebSocket and WebSocket over TLS against Mosquitto's own
//! listeners, and QUIC against shoal's (Mosquitto has none), with certificates made by
//! rcgen for the test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Mosquitto, free_port, json, loadtest, num, wait_listening};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const LIMIT: Duration = Duration::from_secs(30);

/// Writes ca.pem, server.pem/server.key (for localhost and 127.0.0.1) and
/// client.pem/client.key, all signed by the CA.
fn make_certs(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose subject equals its issuer looks self-signed to OpenSSL.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "shoal-loadtest test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
        .expect("CA certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, sans) in [
        (
            "server",
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        ),
        ("client", vec!["lt-client".to_owned()]),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca).expect("certificate");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf-8").to_owned()
}

#[test]
fn tls_with_a_client_certificate_websocket_and_wss() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let (tls, ws, wss) = (free_port(), free_port(), free_port());
    let c = certs.path();
    let broker = Mosquitto::start(&format!(
        "listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         listener {ws} 127.0.0.1\nprotocol websockets\n\
         listener {wss} 127.0.0.1\nprotocol websockets\ncafile {}\ncertfile {}\nkeyfile {}\n",
        path(c, "ca.pem"),
        path(c, "server.pem"),
        path(c, "server.key"),
        path(c, "ca.pem"),
        path(c, "server.pem"),
        path(c, "server.key"),
    ));
    for port in [tls, ws, wss] {
        wait_listening(port);
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let ca = path(c, "ca.pem");
    let cert = path(c, "client.pem");
    let key = path(c, "client.key");
    let tls_url = format!("mqtts://127.0.0.1:{tls}");
    let ws_url = format!("ws://127.0.0.1:{ws}/mqtt");
    let wss_url = format!("wss://localhost:{wss}/mqtt");
    let runs: [(&str, Vec<&str>); 3] = [
        (
            "tls",
            vec!["-b", &tls_url, "--ca", &ca, "--cert", &cert, "--key", &key],
        ),
        ("ws", vec!["-b", &ws_url]),
        ("wss", vec!["-b", &wss_url, "--ca", &ca]),
    ];
    for (name, transport) in runs {
        let result = out_dir.path().join(format!("{name}.json"));
        let mut args = vec!["pairs", "-c", "3", "-q", "1", "-n", "200", "-r", "1000"];
        args.extend(transport);
        args.extend(["--json", result.to_str().expect("utf-8")]);
        let out = loadtest(&args, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{name}");
        let r = json(&result);
        assert_eq!(num(&r, "connections.succeeded"), 6, "{name}");
        assert_eq!(num(&r, "total.received"), 600, "{name}");
        assert_eq!(num(&r, "total.lost"), 0, "{name}");
    }
    // Without the client certificate the TLS listener refuses the handshake.
    let result = out_dir.path().join("refused.json");
    let out = loadtest(
        &[
            "conn",
            "-c",
            "2",
            "-d",
            "1s",
            "-b",
            &tls_url,
            "--ca",
            &ca,
            "--json",
            result.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = json(&result);
    assert_eq!(num(&r, "connections.succeeded"), 0);
    assert_eq!(num(&r, "connections.failed"), 2);
    drop(broker);
}

#[test]
fn quic_against_a_shoal_node() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let c = certs.path();
    let data = tempfile::tempdir().expect("tempdir");
    let raw: shoal_broker::RawConfig = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nsys_interval = 0\n\
         data_dir = {:?}\n[[listeners]]\nname = \"quic\"\nkind = \"quic\"\n\
         bind = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        data.path().to_str().expect("utf-8"),
        path(c, "server.pem"),
        path(c, "server.key"),
    ))
    .expect("config");
    let config = shoal_broker::Config::from_raw(raw).expect("valid config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let node = runtime
        .block_on(shoal_broker::Node::start(config, None))
        .expect("shoal starts");
    let port = node.listener_addr("quic").expect("QUIC listener").port();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let result = out_dir.path().join("quic.json");
    let url = format!("quic://localhost:{port}");
    let ca = path(c, "ca.pem");
    let out = loadtest(
        &[
            "pairs",
            "-c",
            "3",
            "-q",
            "1",
            "-n",
            "200",
            "-r",
            "1000",
            "-b",
            &url,
            "--ca",
            &ca,
            "--json",
            result.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&result);
    assert_eq!(num(&r, "connections.succeeded"), 6);
    assert_eq!(num(&r, "total.received"), 600);
    assert_eq!(num(&r, "total.lost"), 0);
    runtime.block_on(node.shutdown());
}
