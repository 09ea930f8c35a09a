//! Every way in: TLS and mutual TLS, WebSocket and WebSocket over TLS, MQTT over QUIC, the
//! PROXY protocol, certificate reloading and bounded handshakes, each with real clients
//! (rumqttc, paho-mqtt, openssl s_client, tungstenite, quinn) and certificates made in the
//! test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::pki::{Pki, client_config};
use common::*;
use shoal_broker::RawConfig;
use shoal_broker::config::RawListener;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS-based listener with the test PKI's server certificate.
fn tls_listener(name: &str, kind: &str, pki: &Pki) -> RawListener {
    RawListener {
        cert: Some(pki.server.cert.clone()),
        key: Some(pki.server.key.clone()),
        ..listener(name, kind)
    }
}

async fn node_with(listeners: Vec<RawListener>, tweak: impl FnOnce(&mut RawConfig)) -> TestNode {
    TestNode::start_with(|raw| {
        raw.listeners = Some(listeners);
        tweak(raw);
    })
    .await
}

fn addr(node: &TestNode, name: &str) -> SocketAddr {
    node.node.listener_addr(name).expect("listener is bound")
}

/// A TLS connection to `addr`, as a byte stream.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Connects over TLS and sends CONNECT; `None` if the handshake or the connection fails.
async fn tls_mqtt(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Option<(Raw, ConnAck)> {
    let tls = tls_connect(addr, config).await.ok()?;
    let mut raw = Raw::over(Box::new(tls), ProtocolVersion::V5);
    let ack = raw.handshake(client_id, |_| {}).await?;
    Some((raw, ack))
}

/// One message through: `subscriber` subscribed to `topic`, `publisher` publishes on it.
async fn round_trip(subscriber: &mut Raw, publisher: &mut Raw, topic: &str) {
    let ack = subscriber.subscribe(1, &[(topic, QoS::AtLeastOnce)]).await;
    assert_eq!(
        ack.reason_codes,
        vec![SubAckReasonCode::granted(QoS::AtLeastOnce)]
    );
    publisher
        .publish(
            topic,
            b"across transports",
            QosPid::AtLeastOnce(pid(7)),
            false,
        )
        .await;
    let got = subscriber.next_publish().await;
    assert_eq!(got.topic.as_str(), topic);
    assert_eq!(&got.payload[..], b"across transports");
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
}

#[tokio::test]
async fn tls_carries_mqtt_for_raw_and_rumqttc_clients() {
    let pki = Pki::new();
    let node = node_with(vec![tls_listener("tls", "tls", &pki)], |_| {}).await;
    let tls_addr = addr(&node, "tls");
    let config = client_config(&pki.ca, None, &[]);
    let (mut over_tls, ack) = tls_mqtt(tls_addr, Arc::clone(&config), "raw-tls")
        .await
        .expect("TLS connect");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let (mut over_tcp, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "raw-tcp", |_| {}).await;
    round_trip(&mut over_tls, &mut over_tcp, "t/tls-in").await;
    round_trip(&mut over_tcp, &mut over_tls, "t/tls-out").await;

    // rumqttc over TLS, trusting the test CA.
    let mut options = rumqttc::MqttOptions::new("rumqttc-tls", "localhost", tls_addr.port());
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(config),
    ));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client
        .subscribe("t/rumqttc", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let got = tokio::time::timeout(WAIT, async {
        let mut published = false;
        loop {
            match eventloop.poll().await.expect("rumqttc over TLS") {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) if !published => {
                    over_tcp
                        .publish("t/rumqttc", b"to rumqttc", QosPid::AtMostOnce, false)
                        .await;
                    published = true;
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => return p,
                _ => {}
            }
        }
    })
    .await
    .expect("rumqttc receives over TLS");
    assert_eq!(&got.payload[..], b"to rumqttc");
}

#[tokio::test]
async fn plaintext_mqtt_to_a_tls_port_gets_no_connack() {
    let pki = Pki::new();
    let node = node_with(vec![tls_listener("tls", "tls", &pki)], |_| {}).await;
    let mut tcp = TcpStream::connect(addr(&node, "tls"))
        .await
        .expect("connect");
    let mut connect = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(ProtocolVersion::V5, s("plain"))))
        .encode(ProtocolVersion::V5, &mut connect)
        .expect("encode");
    tcp.write_all(&connect).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the broker closes the connection");
    assert_ne!(
        answer.first(),
        Some(&0x20),
        "no CONNACK over plaintext: {answer:?}"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_bad_certificates_and_takes_the_identity_as_username() {
    let pki = Pki::new();
    let acl = pki.dir.path().join("acl");
    std::fs::write(&acl, "allow user:device-1 all devices/device-1/#\n").expect("acl");
    let mtls = RawListener {
        client_ca: Some(pki.ca.clone()),
        use_identity_as_username: Some("cn".into()),
        allow_anonymous: Some(false),
        ..tls_listener("mtls", "tls", &pki)
    };
    let node = node_with(vec![mtls], |raw| raw.acl_file = Some(acl)).await;
    let mtls_addr = addr(&node, "mtls");

    let config = client_config(&pki.ca, Some(&pki.client), &[]);
    let (mut device, ack) = tls_mqtt(mtls_addr, config, "dev")
        .await
        .expect("a good client certificate connects");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // The ACL only knows user device-1: the certificate's CN became the username.
    let granted = device
        .subscribe(1, &[("devices/device-1/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        granted.reason_codes,
        vec![SubAckReasonCode::granted(QoS::AtLeastOnce)]
    );
    let denied = device
        .subscribe(2, &[("devices/device-2/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(denied.reason_codes, vec![SubAckReasonCode::NotAuthorized]);

    for (what, client) in [
        ("no certificate", None),
        ("expired", Some(&pki.expired)),
        ("self-signed", Some(&pki.self_signed)),
        ("another CA's", Some(&pki.wrong_ca)),
    ] {
        let config = client_config(&pki.ca, client, &[]);
        assert!(
            tls_mqtt(mtls_addr, config, "intruder").await.is_none(),
            "{what} client certificate must be refused"
        );
    }
}

#[tokio::test]
async fn optional_client_certificates_and_the_san_identity() {
    let pki = Pki::new();
    let acl = pki.dir.path().join("acl");
    std::fs::write(
        &acl,
        "allow user:device-1.fleet.example all san/#\nallow anonymous all open/#\n",
    )
    .expect("acl");
    let optional = RawListener {
        client_ca: Some(pki.ca.clone()),
        require_client_cert: Some(false),
        ..tls_listener("optional", "tls", &pki)
    };
    let san = RawListener {
        client_ca: Some(pki.ca.clone()),
        use_identity_as_username: Some("san".into()),
        ..tls_listener("san", "tls", &pki)
    };
    let node = node_with(vec![optional, san], |raw| raw.acl_file = Some(acl)).await;
    // Optional: no certificate is fine, a good one too; one from another CA is not.
    let (mut anonymous, ack) = tls_mqtt(
        addr(&node, "optional"),
        client_config(&pki.ca, None, &[]),
        "a",
    )
    .await
    .expect("no certificate is accepted where it is optional");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let granted = anonymous
        .subscribe(1, &[("open/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        granted.reason_codes,
        vec![SubAckReasonCode::granted(QoS::AtLeastOnce)]
    );
    let with_cert = client_config(&pki.ca, Some(&pki.client), &[]);
    assert!(
        tls_mqtt(addr(&node, "optional"), with_cert, "b")
            .await
            .is_some()
    );
    let foreign = client_config(&pki.ca, Some(&pki.wrong_ca), &[]);
    assert!(
        tls_mqtt(addr(&node, "optional"), foreign, "c")
            .await
            .is_none()
    );
    // The first DNS name of the certificate is the username.
    let with_cert = client_config(&pki.ca, Some(&pki.client), &[]);
    let (mut device, _) = tls_mqtt(addr(&node, "san"), with_cert, "d")
        .await
        .expect("connects");
    let granted = device.subscribe(1, &[("san/#", QoS::AtLeastOnce)]).await;
    assert_eq!(
        granted.reason_codes,
        vec![SubAckReasonCode::granted(QoS::AtLeastOnce)]
    );
}

/// `openssl s_client` against `addr` with `args`: whether the handshake succeeded, and
/// what it printed.
async fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .args(["-servername", "localhost", "-brief"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("s_client finishes")
    .expect("openssl runs (Debian package openssl; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.success() && text.contains("CONNECTION ESTABLISHED"),
        text,
    )
}

#[tokio::test]
async fn openssl_s_client_sees_the_configured_versions_and_client_certificate_checks() {
    let pki = Pki::new();
    let ca = pki.ca.to_str().expect("utf-8");
    let listeners = vec![
        tls_listener("tls", "tls", &pki),
        RawListener {
            tls_min_version: Some("1.3".into()),
            ..tls_listener("tls13", "tls", &pki)
        },
        RawListener {
            client_ca: Some(pki.ca.clone()),
            ..tls_listener("mtls", "tls", &pki)
        },
    ];
    let node = node_with(listeners, |_| {}).await;
    let (tls, tls13, mtls) = (
        addr(&node, "tls"),
        addr(&node, "tls13"),
        addr(&node, "mtls"),
    );

    let (ok, text) = s_client(tls, &["-CAfile", ca, "-tls1_2"]).await;
    assert!(ok && text.contains("TLSv1.2"), "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    let (ok, text) = s_client(tls, &["-CAfile", ca, "-tls1_3"]).await;
    assert!(ok && text.contains("TLSv1.3"), "{text}");
    let (ok, text) = s_client(tls13, &["-CAfile", ca, "-tls1_2"]).await;
    assert!(!ok, "TLS 1.2 refused where 1.3 is the minimum: {text}");
    let (ok, text) = s_client(tls13, &["-CAfile", ca, "-tls1_3"]).await;
    assert!(ok, "{text}");

    // TLS 1.2 makes the server's refusal of a client certificate part of the handshake.
    let (ok, text) = s_client(mtls, &["-CAfile", ca, "-tls1_2"]).await;
    assert!(!ok, "no client certificate: refused: {text}");
    let cert = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    for (what, pair) in [("wrong CA", &pki.wrong_ca), ("expired", &pki.expired)] {
        let (ok, text) = s_client(
            mtls,
            &[
                "-CAfile",
                ca,
                "-tls1_2",
                "-cert",
                &cert(&pair.cert),
                "-key",
                &cert(&pair.key),
            ],
        )
        .await;
        assert!(!ok, "{what} client certificate refused: {text}");
    }
    let (ok, text) = s_client(
        mtls,
        &[
            "-CAfile",
            ca,
            "-tls1_2",
            "-cert",
            &cert(&pki.client.cert),
            "-key",
            &cert(&pki.client.key),
        ],
    )
    .await;
    assert!(ok, "a good client certificate is accepted: {text}");
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections() {
    let pki = Pki::new();
    let node = node_with(vec![tls_listener("tls", "tls", &pki)], |_| {}).await;
    let tls_addr = addr(&node, "tls");
    let config = client_config(&pki.ca, None, &[]);
    let first = tls_connect(tls_addr, Arc::clone(&config))
        .await
        .expect("TLS");
    let before = first.get_ref().1.peer_certificates().expect("cert")[0].clone();
    let mut established = Raw::over(Box::new(first), ProtocolVersion::V5);
    established
        .handshake("before", |_| {})
        .await
        .expect("CONNACK");

    pki.replace_server("renewed server");
    node.node.reload();

    let second = tls_connect(tls_addr, Arc::clone(&config))
        .await
        .expect("TLS");
    let after = second.get_ref().1.peer_certificates().expect("cert")[0].clone();
    assert_ne!(before, after, "a new handshake gets the new certificate");
    let renewed = shoal_transport::pem::load_certs(&pki.server.cert).expect("cert");
    assert_eq!(after, renewed[0]);
    // The connection made before the reload still works.
    established.send(Packet::PingReq).await;
    assert_eq!(established.recv().await, Some(Packet::PingResp));

    // A broken file is refused and the current certificate stays.
    std::fs::write(&pki.server.cert, "not a certificate").expect("write");
    node.node.reload();
    let third = tls_connect(tls_addr, config)
        .await
        .expect("TLS still works");
    assert_eq!(
        third.get_ref().1.peer_certificates().expect("cert")[0],
        after
    );
}

#[tokio::test]
async fn certificates_reload_when_their_files_change() {
    let pki = Pki::new();
    let node = node_with(vec![tls_listener("tls", "tls", &pki)], |_| {}).await;
    let tls_addr = addr(&node, "tls");
    let config = client_config(&pki.ca, None, &[]);
    let first = tls_connect(tls_addr, Arc::clone(&config))
        .await
        .expect("TLS");
    let before = first.get_ref().1.peer_certificates().expect("cert")[0].clone();
    // Let the watcher make its first check (at start) before the files change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pki.replace_server("renewed by file");
    // No SIGHUP, no reload call: the files are checked every 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let tls = tls_connect(tls_addr, Arc::clone(&config))
            .await
            .expect("TLS");
        if tls.get_ref().1.peer_certificates().expect("cert")[0] != before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is not served 6 s after its files changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A WebSocket client handshake to `addr` at `path`, offering `protocol`.
async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

fn encoded(packets: &[Packet]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for p in packets {
        p.encode(ProtocolVersion::V5, &mut buf).expect("encode");
    }
    buf.to_vec()
}

#[tokio::test]
async fn websocket_frames_split_and_join_packets_and_refuse_wrong_upgrades() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let node = node_with(vec![listener("ws", "ws")], |_| {}).await;
    let ws_addr = addr(&node, "ws");

    match ws_connect(ws_addr, "/elsewhere", Some("mqtt")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("a wrong path must be refused with 404, got {other:?}"),
    }
    match ws_connect(ws_addr, "/mqtt", None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("no MQTT subprotocol must be refused with 400, got {other:?}"),
    }
    match ws_connect(ws_addr, "/mqtt", Some("chat")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("a foreign subprotocol must be refused with 400, got {other:?}"),
    }

    let mut ws = ws_connect(ws_addr, "/mqtt", Some("mqttv3.1, mqtt"))
        .await
        .expect("upgrade");
    // CONNECT split over two frames.
    let connect = encoded(&[Packet::Connect(Box::new(Connect::new(
        ProtocolVersion::V5,
        s("ws-client"),
    )))]);
    let (a, b) = connect.split_at(5);
    ws.send(Message::Binary(a.to_vec().into()))
        .await
        .expect("send");
    ws.send(Message::Binary(b.to_vec().into()))
        .await
        .expect("send");
    let mut decoder = Decoder::with_version(ProtocolVersion::V5, u32::MAX);
    let mut buf = BytesMut::new();
    let mut next = async |ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>| loop {
        if let Some(packet) = decoder.decode(&mut buf).expect("valid") {
            return packet;
        }
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            Some(Ok(Message::Pong(_))) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    };
    assert!(
        matches!(next(&mut ws).await, Packet::ConnAck(ack) if ack.reason_code == ConnectReasonCode::Success)
    );
    // SUBSCRIBE and a PUBLISH to it in one frame.
    let mut publish = Publish::new(s("ws/t"), bytes::Bytes::from_static(b"framed"));
    publish.qos_pid = QosPid::AtLeastOnce(pid(2));
    let both = encoded(&[
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![(s("ws/t"), SubscriptionOptions::with_qos(QoS::AtLeastOnce))],
        }),
        Packet::Publish(publish),
    ]);
    ws.send(Message::Binary(both.into())).await.expect("send");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut ws).await);
    }
    assert!(
        seen.iter().any(|p| matches!(p, Packet::SubAck(_))),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"framed")),
        "{seen:?}"
    );
    // WebSocket ping is answered with pong; MQTT still works after it.
    ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(data))) => return data,
                Some(Ok(_)) => {}
                other => panic!("expected pong, got {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(&pong[..], b"hi");
    ws.send(Message::Binary(encoded(&[Packet::PingReq]).into()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Packet::PingResp);
    // A Close frame ends the connection: the broker answers the close and lets go.
    ws.send(Message::Close(None)).await.expect("close");
    let ended =
        tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(ended.is_ok(), "the WebSocket closes");
}

#[tokio::test]
async fn rumqttc_over_websocket_and_websocket_tls() {
    let pki = Pki::new();
    let node = node_with(
        vec![listener("ws", "ws"), tls_listener("wss", "wss", &pki)],
        |_| {},
    )
    .await;
    let (mut publisher, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "pub", |_| {}).await;
    for (name, transport) in
        [
            ("ws", rumqttc::Transport::Ws),
            (
                "wss",
                rumqttc::Transport::wss_with_config(rumqttc::TlsConfiguration::Rustls(
                    client_config(&pki.ca, None, &[]),
                )),
            ),
        ]
    {
        let port = addr(&node, name).port();
        let url = format!("{name}://localhost:{port}/mqtt");
        let mut options = rumqttc::MqttOptions::new(format!("rumqttc-{name}"), url, port);
        options.set_transport(transport);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        let topic = format!("t/{name}");
        client
            .subscribe(&topic, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let got = tokio::time::timeout(WAIT, async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        publisher
                            .publish(&topic, name.as_bytes(), QosPid::AtLeastOnce(pid(3)), false)
                            .await;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => return p,
                    Ok(_) => {}
                    Err(e) => panic!("rumqttc over {name}: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("rumqttc over {name} receives"));
        assert_eq!(&got.payload[..], name.as_bytes());
    }
}

#[tokio::test]
async fn paho_python_over_tls_websocket_and_secure_websocket() {
    let pki = Pki::new();
    let node = node_with(
        vec![
            tls_listener("tls", "tls", &pki),
            listener("ws", "ws"),
            tls_listener("wss", "wss", &pki),
        ],
        |_| {},
    )
    .await;
    let script = r#"
import sys, threading
import paho.mqtt.client as mqtt
port, transport, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
got = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + sys.argv[4],
                transport="websockets" if transport == "websockets" else "tcp",
                protocol=mqtt.MQTTv5)
if transport == "websockets":
    c.ws_set_options(path="/mqtt")
if ca != "-":
    c.tls_set(ca_certs=ca)
def on_connect(client, userdata, flags, rc, props):
    client.subscribe("paho/t", qos=1)
def on_subscribe(client, userdata, mid, rcs, props):
    client.publish("paho/t", b"hello from paho", qos=1)
def on_message(client, userdata, msg):
    if msg.payload == b"hello from paho":
        got.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("localhost", port)
c.loop_start()
ok = got.wait(5)
c.loop_stop()
print("ok" if ok else "timeout")
sys.exit(0 if ok else 1)
"#;
    let ca = pki.ca.to_str().expect("utf-8");
    for (name, transport, ca) in [
        ("tls", "tcp", ca),
        ("ws", "websockets", "-"),
        ("wss", "websockets", ca),
    ] {
        let port = addr(&node, name).port().to_string();
        let output = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::process::Command::new("python3")
                .args(["-c", script, &port, transport, ca, name])
                .output(),
        )
        .await
        .expect("paho finishes")
        .expect("python3 runs (paho-mqtt: .ci/run installs it)");
        assert!(
            output.status.success(),
            "paho over {name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A QUIC client connection (ALPN `mqtt`) to `addr`, as a byte stream.
async fn quic_connect(addr: SocketAddr, pki: &Pki) -> shoal_transport::QuicIo {
    let crypto = (*client_config(&pki.ca, None, &[b"mqtt"])).clone();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("QUIC TLS");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (send, recv) = connection.open_bi().await.expect("stream");
    shoal_transport::QuicIo::new(connection, send, recv)
}

#[tokio::test]
async fn quic_carries_mqtt_on_its_first_stream_and_sessions_survive() {
    let pki = Pki::new();
    let node = node_with(vec![tls_listener("quic", "quic", &pki)], |_| {}).await;
    let quic_addr = addr(&node, "quic");
    let mut quic = Raw::over(
        Box::new(quic_connect(quic_addr, &pki).await),
        ProtocolVersion::V5,
    );
    let ack = quic
        .handshake("quic-client", |c| {
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(60);
        })
        .await
        .expect("CONNACK over QUIC");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    assert!(!ack.session_present);
    let (mut tcp, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "tcp-client", |_| {}).await;
    round_trip(&mut quic, &mut tcp, "q/in").await;
    round_trip(&mut tcp, &mut quic, "q/out").await;
    quic.send(Packet::Disconnect(Disconnect::default())).await;
    drop(quic);

    // Offline: a message queues for the persistent session, and comes over a new QUIC
    // connection.
    tcp.publish("q/in", b"while away", QosPid::AtLeastOnce(pid(9)), false)
        .await;
    assert!(matches!(tcp.recv().await, Some(Packet::PubAck(_))));
    let mut again = Raw::over(
        Box::new(quic_connect(quic_addr, &pki).await),
        ProtocolVersion::V5,
    );
    let ack = again
        .handshake("quic-client", |c| c.clean_start = false)
        .await
        .expect("CONNACK");
    assert!(ack.session_present, "the session survives over QUIC");
    // First the message left unacknowledged before, resent with DUP; then the queued one.
    let resent = again.next_publish().await;
    assert_eq!(&resent.payload[..], b"across transports");
    assert!(resent.dup);
    let queued = again.next_publish().await;
    assert_eq!(&queued.payload[..], b"while away");
}

/// A PROXY protocol v1 line claiming `source`.
fn proxy_v1(source: &str) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 40000 1883\r\n").into_bytes()
}

async fn admin_post(node: &TestNode, path: &str, body: &str) -> String {
    let mut tcp = TcpStream::connect(node.node.admin_addr())
        .await
        .expect("admin");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn proxy_protocol_gives_the_real_address_and_is_required_only_where_configured() {
    let pki = Pki::new();
    let node = node_with(
        vec![
            listener("default", "tcp"),
            RawListener {
                proxy_protocol: Some(true),
                ..listener("proxied", "tcp")
            },
            RawListener {
                proxy_protocol: Some(true),
                ..tls_listener("proxied-tls", "tls", &pki)
            },
        ],
        |raw| raw.listen = None,
    )
    .await;
    let proxied = addr(&node, "proxied");

    // The header's address is the client's: banning it refuses only clients behind it.
    let response = admin_post(
        &node,
        "/bans",
        r#"{"target":"addr:192.0.2.7","reason":"test"}"#,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let mut banned = Raw::open(proxied, ProtocolVersion::V5).await;
    banned.send_bytes(&proxy_v1("192.0.2.7")).await;
    assert_eq!(banned.handshake("behind-proxy", |_| {}).await, None);
    let mut allowed = Raw::open(proxied, ProtocolVersion::V5).await;
    allowed.send_bytes(&proxy_v1("192.0.2.8")).await;
    let ack = allowed
        .handshake("behind-proxy", |_| {})
        .await
        .expect("CONNACK");
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);

    // Version 2, binary, then TLS inside.
    let mut tcp = TcpStream::connect(addr(&node, "proxied-tls"))
        .await
        .expect("tcp");
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x22, 0xb3,
    ]);
    tcp.write_all(&header).await.expect("write");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(client_config(&pki.ca, None, &[]))
        .connect(name, tcp)
        .await
        .expect("TLS after a PROXY v2 header");
    let mut over_tls = Raw::over(Box::new(tls), ProtocolVersion::V5);
    assert!(over_tls.handshake("v2-tls", |_| {}).await.is_some());

    // Required but missing: closed without a CONNACK.
    let mut missing = Raw::open(proxied, ProtocolVersion::V5).await;
    assert_eq!(missing.handshake("no-header", |_| {}).await, None);
    // Present where not expected: it is not MQTT, so no CONNACK either.
    let mut unexpected = Raw::open(addr(&node, "default"), ProtocolVersion::V5).await;
    unexpected.send_bytes(&proxy_v1("192.0.2.9")).await;
    assert_eq!(unexpected.handshake("spoofer", |_| {}).await, None);
}

#[tokio::test]
async fn handshakes_beyond_the_bound_wait_their_turn() {
    let pki = Pki::new();
    let node = node_with(vec![tls_listener("tls", "tls", &pki)], |raw| {
        raw.max_handshakes = Some(2)
    })
    .await;
    let tls_addr = addr(&node, "tls");
    // Two connections that never say hello hold both handshake slots.
    let stalled = [
        TcpStream::connect(tls_addr).await.expect("tcp"),
        TcpStream::connect(tls_addr).await.expect("tcp"),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = client_config(&pki.ca, None, &[]);
    let waiting = tokio::spawn(tls_mqtt(tls_addr, config, "patient"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "the third handshake waits for a slot"
    );
    drop(stalled);
    let connected = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("it gets its turn")
        .expect("task");
    assert!(connected.is_some(), "and connects");
}

#[tokio::test]
async fn a_bad_listener_configuration_names_the_listener_and_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = RawListener {
        cert: Some(dir.path().join("nope.pem")),
        ..tls_listener("broken", "tls", &pki)
    };
    let mut raw = RawConfig {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: Some(dir.path().to_owned()),
        listeners: Some(vec![missing]),
        ..Default::default()
    };
    let config = shoal_broker::Config::from_raw(raw.clone()).expect("the keys are valid");
    let err = shoal_broker::Node::start(config, None)
        .await
        .expect_err("the certificate file is missing");
    let text = err.to_string();
    assert!(
        text.contains("broken") && text.contains("nope.pem"),
        "{text}"
    );

    raw.listeners = Some(vec![RawListener {
        cert: None,
        ..tls_listener("nocert", "tls", &pki)
    }]);
    let err = shoal_broker::Config::from_raw(raw.clone()).expect_err("refused");
    assert!(err.to_string().contains("listeners[0].cert"), "{err}");
    raw.listeners = Some(vec![listener("bad", "mqtts")]);
    let err = shoal_broker::Config::from_raw(raw).expect_err("refused");
    assert!(err.to_string().contains("listeners[0].kind"), "{err}");
}
