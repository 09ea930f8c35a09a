//! Clients that no one here wrote, against a real node: rumqttc (MQTT 3.1.1 and 5),
//! mosquitto_pub / mosquitto_sub, and paho-mqtt (Python). `.ci/run` installs the last two.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet as RPacket, QoS as RQoS};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn rumqttc_v311_publishes_and_receives_qos1() {
    let node = TestNode::start().await;
    let mut options = MqttOptions::new("rumqttc-311", "127.0.0.1", node.addr().port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("plant/+/temp", RQoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut published = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("in time")
            .expect("event");
        match event {
            Event::Incoming(RPacket::SubAck(_)) if !published => {
                client
                    .publish("plant/7/temp", RQoS::AtLeastOnce, false, "21.5")
                    .await
                    .expect("publish");
                published = true;
            }
            Event::Incoming(RPacket::Publish(p)) => {
                assert_eq!(p.topic, "plant/7/temp");
                assert_eq!(&p.payload[..], b"21.5");
                assert_eq!(p.qos, RQoS::AtLeastOnce);
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn rumqttc_v5_passes_properties_through() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as Options5};
    let node = TestNode::start().await;
    let options = Options5::new("rumqttc-5", "127.0.0.1", node.addr().port());
    let (client, mut eventloop) = Client5::new(options, 10);
    client
        .subscribe("req/#", Q5::ExactlyOnce)
        .await
        .expect("subscribe");
    let mut published = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("in time")
            .expect("event");
        match event {
            E5::Incoming(P5::SubAck(_)) if !published => {
                let properties = PublishProperties {
                    response_topic: Some("resp/1".into()),
                    correlation_data: Some(bytes::Bytes::from_static(b"corr")),
                    content_type: Some("application/json".into()),
                    user_properties: vec![("site".into(), "7".into())],
                    ..Default::default()
                };
                client
                    .publish_with_properties("req/a", Q5::ExactlyOnce, false, "{}", properties)
                    .await
                    .expect("publish");
                published = true;
            }
            E5::Incoming(P5::Publish(p)) => {
                assert_eq!(&p.topic[..], b"req/a");
                assert_eq!(p.qos, Q5::ExactlyOnce);
                let props = p.properties.expect("properties");
                assert_eq!(props.response_topic.as_deref(), Some("resp/1"));
                assert_eq!(props.correlation_data.as_deref(), Some(&b"corr"[..]));
                assert_eq!(props.content_type.as_deref(), Some("application/json"));
                assert_eq!(
                    props.user_properties,
                    vec![("site".to_string(), "7".to_string())]
                );
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn mosquitto_clients_work_out_of_the_box() {
    let node = TestNode::start().await;
    let port = node.addr().port().to_string();
    // Async: a blocking wait would stall the in-process node on this test's runtime.
    let mosquitto_pub = async |args: &[&str]| {
        let status = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .status()
            .await
            .expect("mosquitto_pub runs (Debian package mosquitto-clients; .ci/run installs it)");
        assert!(status.success(), "mosquitto_pub {args:?}");
    };
    mosquitto_pub(&["-t", "sensors/1", "-m", "retained-value", "-r", "-q", "1"]).await;
    for version in ["311", "5"] {
        let mut sub = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "sensors/#",
                "-q",
                "2",
                "-C",
                "2",
                "-V",
                version,
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs");
        let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(
            first.as_deref(),
            Some("retained-value"),
            "MQTT {version}: the retained message on subscribe"
        );
        mosquitto_pub(&[
            "-t",
            "sensors/2",
            "-m",
            &format!("live-{version}"),
            "-q",
            "2",
            "-V",
            version,
        ])
        .await;
        let second = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(second, Some(format!("live-{version}")));
        let status = tokio::time::timeout(WAIT, sub.wait())
            .await
            .expect("exits")
            .expect("status");
        assert!(status.success());
    }
}

#[tokio::test]
async fn paho_python_client_round_trips_qos2_with_properties() {
    let node = TestNode::start().await;
    let script = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port = int(sys.argv[1])
done = threading.Event()
got = {}
def on_connect(c, userdata, flags, rc, props):
    c.subscribe("paho/#", qos=2)
def on_subscribe(c, userdata, mid, rcs, props):
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("k", "v")]
    p.ContentType = "text/plain"
    c.publish("paho/t", b"payload", qos=2, properties=p)
def on_message(c, userdata, msg):
    got["topic"] = msg.topic
    got["payload"] = msg.payload
    got["qos"] = msg.qos
    got["props"] = (msg.properties.UserProperty, msg.properties.ContentType)
    done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho", protocol=mqtt.MQTTv5)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_start()
ok = done.wait(10)
c.disconnect(); c.loop_stop()
assert ok, "no message"
assert got == {"topic": "paho/t", "payload": b"payload", "qos": 2, "props": ([("k", "v")], "text/plain")}, got
print("ok")
"#;
    let output = tokio::process::Command::new("python3")
        .args(["-c", script, &node.addr().port().to_string()])
        .output()
        .await
        .expect("python3 runs (paho-mqtt: .ci/run installs it)");
    assert!(
        output.status.success(),
        "paho: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}
