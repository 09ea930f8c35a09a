//! The load generator against a real Mosquitto: message accounting, loss and duplicate
//! detection by a broker that really drops or repeats, exit status, machine output.

mod common;

use std::time::Duration;

use common::{Mosquitto, at, json, loadtest, num, raw_connect, run};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn qos1_pairs_deliver_every_message_once() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let out_json = dir.path().join("r.json");
    let out = loadtest(
        &[
            "pairs",
            "-b",
            &broker.url(),
            "-c",
            "4",
            "-q",
            "1",
            "-n",
            "500",
            "-r",
            "max",
            "--expect-loss",
            "0",
            "--json",
            out_json.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out_json);
    assert_eq!(num(&r, "total.sent"), 2000);
    assert_eq!(num(&r, "total.acked"), 2000);
    assert_eq!(num(&r, "total.expected"), 2000);
    assert_eq!(num(&r, "total.received"), 2000);
    assert_eq!(num(&r, "total.lost"), 0);
    assert_eq!(num(&r, "total.duplicates"), 0);
    assert_eq!(num(&r, "flows.count"), 4);
    assert_eq!(num(&r, "connections.succeeded"), 8);
    assert_eq!(num(&r, "connections.peak_open"), 8);
    assert_eq!(num(&r, "total.latency.count"), 2000);
    assert!(num(&r, "total.latency.p99_us") >= num(&r, "total.latency.p50_us"));
    assert!(at(&r, "passed").as_bool().expect("bool"));
}

#[test]
fn qos0_and_qos2_at_mqtt_311_and_5_count_every_message() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    for (version, qos) in [("3.1.1", "0"), ("5", "0"), ("5", "2")] {
        let path = dir.path().join(format!("r-{version}-{qos}.json"));
        let out = loadtest(
            &[
                "pairs",
                "-b",
                &broker.url(),
                "-V",
                version,
                "-c",
                "2",
                "-q",
                qos,
                "-n",
                "300",
                "-r",
                "2000",
                "--json",
                path.to_str().expect("utf-8"),
            ],
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(0), "MQTT {version} QoS {qos}");
        let r = json(&path);
        assert_eq!(num(&r, "mqtt_version"), if version == "5" { 5 } else { 4 });
        assert_eq!(num(&r, "total.sent"), 600, "MQTT {version} QoS {qos}");
        assert_eq!(num(&r, "total.received"), 600, "MQTT {version} QoS {qos}");
        assert_eq!(num(&r, "total.lost"), 0, "MQTT {version} QoS {qos}");
    }
}

#[test]
fn a_subscriber_kicked_mid_run_shows_up_as_loss_and_fails_expect_loss() {
    let broker = Mosquitto::start("");
    let port = broker.port;
    // Take the subscriber's session over after a second: Mosquitto disconnects it, and
    // the run goes on without it.
    let kicker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        raw_connect(port, "lt-sub-0", true)
    });
    let (out, r) = run(
        &[
            "pairs",
            "-b",
            &broker.url(),
            "-c",
            "1",
            "-q",
            "0",
            "-r",
            "500",
            "-d",
            "2s",
            "--expect-loss",
            "0",
        ],
        LIMIT,
    );
    drop(kicker.join());
    assert_eq!(out.status.code(), Some(3), "--expect-loss 0 must fail");
    let sent = num(&r, "total.sent");
    let lost = num(&r, "total.lost");
    assert!(sent >= 900, "{sent}");
    assert!(lost >= 300 && lost < sent, "lost {lost} of {sent}");
    assert_eq!(num(&r, "total.received") + lost, sent);
    assert_eq!(num(&r, "flows.with_loss"), 1);
    assert_eq!(num(&r, "connections.lost"), 1);
    // Mosquitto 2.0 closes a taken-over MQTT 5 connection without a DISCONNECT.
    assert_eq!(num(&r, "errors.closed by broker"), 1);
    assert_eq!(at(&r, "flows.worst.0.publisher"), "lt-pub-0");
    assert!(!at(&r, "passed").as_bool().expect("bool"));
    assert_eq!(at(&r, "expectations.0.ok"), false);
}

#[test]
fn a_reconnecting_subscriber_loses_only_the_gap() {
    let broker = Mosquitto::start("");
    let port = broker.port;
    let kicker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        raw_connect(port, "lt-sub-0", true)
    });
    let (out, r) = run(
        &[
            "pairs",
            "-b",
            &broker.url(),
            "-c",
            "1",
            "-q",
            "0",
            "-r",
            "500",
            "-d",
            "2s",
            "--reconnect",
            "300ms",
        ],
        LIMIT,
    );
    drop(kicker.join());
    assert_eq!(out.status.code(), Some(0));
    let lost = num(&r, "total.lost");
    // 500 msg/s for at least the 300 ms reconnect delay.
    assert!((100..600).contains(&lost), "lost {lost}");
    assert_eq!(num(&r, "connections.attempts"), 3);
    assert_eq!(num(&r, "connections.lost"), 1);
    assert_eq!(num(&r, "total.duplicates"), 0);
}

#[test]
fn a_persistent_qos1_session_loses_nothing_across_a_takeover() {
    let broker = Mosquitto::start("");
    let port = broker.port;
    // The intruder resumes the subscriber's persistent session and reads nothing; when the
    // subscriber reconnects it takes the session back with everything queued meanwhile.
    let kicker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        let stream = raw_connect(port, "lt-sub-0", false);
        std::thread::sleep(Duration::from_millis(2000));
        drop(stream);
    });
    let (out, r) = run(
        &[
            "pairs",
            "-b",
            &broker.url(),
            "-c",
            "1",
            "-q",
            "1",
            "-r",
            "300",
            "-d",
            "2s",
            "--persistent",
            "--reconnect",
            "300ms",
            "--expect-loss",
            "0",
        ],
        LIMIT,
    );
    drop(kicker.join());
    assert_eq!(out.status.code(), Some(0));
    assert!(num(&r, "total.sent") >= 550);
    assert_eq!(num(&r, "total.lost"), 0);
    assert_eq!(num(&r, "connections.lost"), 1);
}

#[test]
fn overlapping_subscriptions_are_counted_as_duplicates() {
    // MQTT 5 lets a broker deliver a message once per matching subscription, and Mosquitto
    // does: every message arrives twice.
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("overlap.toml");
    std::fs::write(
        &scenario,
        r#"
name = "overlap"

[[group]]
name = "sub"
count = 1
subscribe = [{ filter = "lt/dup/+" }, { filter = "lt/dup/#" }]

[[group]]
name = "pub"
count = 2
publish = { topic = "lt/dup/%i", rate = 200, count = 100 }
"#,
    )
    .expect("write scenario");
    let path = dir.path().join("r.json");
    let out = loadtest(
        &[
            "scenario",
            scenario.to_str().expect("utf-8"),
            "-b",
            &broker.url(),
            "--json",
            path.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = json(&path);
    assert_eq!(num(&r, "total.sent"), 200);
    assert_eq!(num(&r, "total.received"), 400);
    assert_eq!(num(&r, "total.duplicates"), 200);
    assert_eq!(num(&r, "total.lost"), 0);
    assert_eq!(num(&r, "flows.with_duplicates"), 2);
    assert_eq!(at(&r, "scenario"), "overlap");
}

#[test]
fn expect_p99_sets_the_exit_status() {
    let broker = Mosquitto::start("");
    let common = [
        "pairs",
        "-b",
        &broker.url(),
        "-c",
        "2",
        "-r",
        "200",
        "-n",
        "100",
    ];
    let fail = loadtest(&[&common[..], &["--expect-p99", "1us"]].concat(), LIMIT);
    assert_eq!(fail.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&fail.stdout).contains("expect p99 <= 1us: FAILED"));
    let pass = loadtest(&[&common[..], &["--expect-p99", "10s"]].concat(), LIMIT);
    assert_eq!(pass.status.code(), Some(0));
}

#[test]
fn fanin_to_a_shared_group_and_fanout_to_many() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fanin.json");
    let out = loadtest(
        &[
            "fanin",
            "-b",
            &broker.url(),
            "-c",
            "10",
            "--subscribers",
            "3",
            "--share",
            "g",
            "-q",
            "1",
            "-n",
            "100",
            "-r",
            "500",
            "--json",
            path.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = json(&path);
    assert_eq!(num(&r, "total.sent"), 1000);
    assert_eq!(
        num(&r, "total.expected"),
        1000,
        "a shared group receives each message once"
    );
    assert_eq!(num(&r, "total.received"), 1000);
    assert_eq!(num(&r, "total.lost"), 0);

    let path = dir.path().join("fanout.json");
    let out = loadtest(
        &[
            "fanout",
            "-b",
            &broker.url(),
            "-c",
            "20",
            "-n",
            "100",
            "-r",
            "500",
            "--json",
            path.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = json(&path);
    assert_eq!(num(&r, "total.sent"), 100);
    assert_eq!(num(&r, "total.expected"), 2000);
    assert_eq!(num(&r, "total.received"), 2000);
    assert_eq!(num(&r, "total.lost"), 0);
}

#[test]
fn conn_holds_connections_and_reports_connect_figures() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.json");
    let csv = dir.path().join("r.csv");
    let out = loadtest(
        &[
            "conn",
            "-b",
            &broker.url(),
            "-c",
            "300",
            "-d",
            "2s",
            "--ramp",
            "1000",
            "--source-ip",
            "127.0.0.2,127.0.0.3",
            "--expect-connections",
            "300",
            "--broker-pid",
            &broker.pid().to_string(),
            "--json",
            path.to_str().expect("utf-8"),
            "--csv",
            csv.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    let r = json(&path);
    assert_eq!(num(&r, "connections.succeeded"), 300);
    assert_eq!(num(&r, "connections.peak_open"), 300);
    assert_eq!(num(&r, "connections.failed"), 0);
    assert_eq!(num(&r, "connections.latency.count"), 300);
    // 300 connections at 1,000/s take about 0.3 s.
    let rate = at(&r, "connections.rate_per_s").as_f64().expect("number");
    assert!((300.0..1500.0).contains(&rate), "{rate}");
    assert!(num(&r, "broker_usage.rss_peak_bytes") > 0);
    assert!(num(&r, "tool_usage.rss_peak_bytes") > 0);
    let samples = at(&r, "samples").as_array().expect("array");
    assert!(samples.len() >= 2);
    let text = std::fs::read_to_string(&csv).expect("csv written");
    let mut lines = text.lines();
    assert!(lines.next().expect("header").starts_with("t_s,phase,open,"));
    assert_eq!(lines.count(), samples.len());
}

#[test]
fn fleet_measures_telemetry_and_commands_as_separate_streams() {
    let broker = Mosquitto::start("");
    let (out, r) = run(
        &[
            "fleet",
            "-b",
            &broker.url(),
            "--devices",
            "100",
            "--sites",
            "4",
            "--interval",
            "200ms",
            "--backends",
            "2",
            "--command-rate",
            "50",
            "-d",
            "2s",
            "--expect-loss",
            "0",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(at(&r, "streams.0.name"), "telemetry");
    assert_eq!(at(&r, "streams.1.name"), "command");
    // 100 devices × 5 messages a second × 2 s, give or take the edges.
    let telemetry = num(&r, "streams.0.sent");
    assert!((900..=1100).contains(&telemetry), "{telemetry}");
    assert_eq!(num(&r, "streams.0.received"), telemetry);
    let commands = num(&r, "streams.1.sent");
    assert!((90..=110).contains(&commands), "{commands}");
    assert_eq!(num(&r, "streams.1.received"), commands);
    assert_eq!(num(&r, "connections.succeeded"), 103);
    assert!(at(&r, "errors").as_object().expect("map").is_empty());
}

#[test]
fn a_refused_connection_is_counted_by_reason_code() {
    let broker = Mosquitto::start("");
    // Nothing listens on the port after this broker's: the connection is refused.
    let closed = common::free_port();
    let (out, r) = run(
        &[
            "conn",
            "-b",
            &format!("mqtt://127.0.0.1:{closed}"),
            "-c",
            "3",
            "-d",
            "1s",
            "--expect-connections",
            "3",
        ],
        LIMIT,
    );
    drop(broker);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(num(&r, "connections.failed"), 3);
    assert_eq!(num(&r, "errors.tcp: connection refused"), 3);
}
