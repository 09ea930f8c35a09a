//! One run spread over several brokers (`--more-brokers`), against several real Mosquitto
//! processes: which client each broker really saw (from the broker's own log), flows that
//! stay on one broker, worker processes, the brokers' CPU and memory summed, and a mix of
//! schemes refused; `--placement cross`, which puts every subscriber on another broker than
//! its publisher, over two separate brokers (every message lost: none can cross) and over
//! two bridged ones (nothing lost: every message crossed the bridge).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Mosquitto, at, loadtest, num, run};

const LIMIT: Duration = Duration::from_secs(30);

/// A Mosquitto that logs each connection to `{dir}/mosquitto.log`, one flushed line each.
/// `user root` keeps a broker started as root from switching to the `mosquitto` user, which
/// could not write into the test's directory (it has no effect for any other user).
fn logging_broker() -> Mosquitto {
    Mosquitto::start("user root\nlog_dest file {dir}/mosquitto.log\nconnection_messages true")
}

/// The client ids of the run that connected to `broker`, from its log:
/// `New client connected from 127.0.0.1:40000 as lt-conn-3 (p5, c1, k60).` The tool's
/// version probe (`lt-version`, before the run) is left out.
fn clients_of(broker: &Mosquitto) -> BTreeSet<String> {
    let log = std::fs::read_to_string(broker.dir.path().join("mosquitto.log"))
        .expect("the broker writes its log");
    log.lines()
        .filter(|l| l.contains("New client connected from"))
        .filter_map(|l| l.split(" as ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .filter(|&id| id != "lt-version")
        .map(str::to_owned)
        .collect()
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// Resident memory of a process now, bytes (`VmRSS` of `/proc/PID/status`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a live process");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

#[test]
fn conn_spreads_clients_round_robin_and_sums_the_brokers_cpu_and_memory() {
    let a = logging_broker();
    let b = logging_broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let html = dir.path().join("r.html");
    let pids = format!("{},{}", a.pid(), b.pid());
    let (out, r) = run(
        &[
            "conn",
            "-b",
            &a.url(),
            "--more-brokers",
            &b.url(),
            "-c",
            "10",
            "-d",
            "1s",
            "--broker-pid",
            &pids,
            "--expect-connections",
            "10",
            "--html",
            html.to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(num(&r, "connections.succeeded"), 10);
    assert_eq!(num(&r, "connections.failed"), 0);
    // Each broker saw its half, by client index.
    assert_eq!(
        clients_of(&a),
        ids(&[
            "lt-conn-0",
            "lt-conn-2",
            "lt-conn-4",
            "lt-conn-6",
            "lt-conn-8"
        ])
    );
    assert_eq!(
        clients_of(&b),
        ids(&[
            "lt-conn-1",
            "lt-conn-3",
            "lt-conn-5",
            "lt-conn-7",
            "lt-conn-9"
        ])
    );
    // `broker` stays the first URL; `brokers` lists them all, and each one's version.
    assert_eq!(at(&r, "broker").as_str(), Some(a.url().as_str()));
    assert_eq!(at(&r, "brokers"), &serde_json::json!([a.url(), b.url()]));
    for k in 0..2 {
        let version = at(&r, &format!("broker_versions.{k}"));
        assert!(
            version
                .as_str()
                .is_some_and(|v| v.starts_with("mosquitto version ")),
            "broker {k}: {version}"
        );
    }
    assert_eq!(
        at(&r, "broker_usage.pids"),
        &serde_json::json!([a.pid(), b.pid()])
    );
    // Summed memory: more than either broker alone holds.
    let one = rss(a.pid()).max(rss(b.pid()));
    let peak = num(&r, "broker_usage.rss_peak_bytes");
    assert!(peak > one * 3 / 2, "peak {peak} for two brokers of {one}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("conn against {}, {} (MQTT", a.url(), b.url())),
        "{summary}"
    );
    assert!(summary.contains("brokers (2 processes): "), "{summary}");
    assert!(
        summary.contains("broker version: mosquitto version "),
        "{summary}"
    );
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(
        page.contains(&b.url()),
        "the report names the second broker"
    );
}

#[test]
fn pairs_over_two_brokers_keep_each_flow_on_one_broker() {
    // Five pairs: a run-wide ordinal would put subscriber i (ordinal i) and publisher i
    // (ordinal 5 + i) on different brokers, and every message would be lost. By the index in
    // the group, both ends of flow i share broker i mod 2.
    let a = logging_broker();
    let b = logging_broker();
    let (out, r) = run(
        &[
            "pairs",
            "-b",
            &a.url(),
            "--more-brokers",
            &b.url(),
            "-c",
            "5",
            "-q",
            "1",
            "-n",
            "100",
            "--broker-pid",
            &a.pid().to_string(),
            "--broker-pid",
            &b.pid().to_string(),
            "--expect-loss",
            "0",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(num(&r, "total.sent"), 500);
    assert_eq!(num(&r, "total.acked"), 500);
    assert_eq!(num(&r, "total.expected"), 500);
    assert_eq!(num(&r, "total.received"), 500);
    assert_eq!(num(&r, "total.lost"), 0);
    assert!(at(&r, "errors").as_object().expect("map").is_empty());
    assert_eq!(
        clients_of(&a),
        ids(&[
            "lt-pub-0", "lt-pub-2", "lt-pub-4", "lt-sub-0", "lt-sub-2", "lt-sub-4"
        ])
    );
    assert_eq!(
        clients_of(&b),
        ids(&["lt-pub-1", "lt-pub-3", "lt-sub-1", "lt-sub-3"])
    );
    assert_eq!(
        at(&r, "broker_usage.pids"),
        &serde_json::json!([a.pid(), b.pid()])
    );
}

#[test]
fn worker_processes_connect_to_every_broker_too() {
    // Two workers (even and odd indexes) over three brokers: each broker gets clients of
    // both workers, so both must have been given the extra brokers.
    let brokers = [logging_broker(), logging_broker(), logging_broker()];
    let more = format!("{},{}", brokers[1].url(), brokers[2].url());
    let (out, r) = run(
        &[
            "conn",
            "-b",
            &brokers[0].url(),
            "--more-brokers",
            &more,
            "-c",
            "9",
            "-d",
            "1s",
            "--workers",
            "2",
            "--expect-connections",
            "9",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(num(&r, "workers"), 2);
    assert_eq!(num(&r, "connections.succeeded"), 9);
    for (k, broker) in brokers.iter().enumerate() {
        let expected: BTreeSet<String> = [k, k + 3, k + 6]
            .iter()
            .map(|i| format!("lt-conn-{i}"))
            .collect();
        assert_eq!(clients_of(broker), expected, "broker {k}");
    }
}

#[test]
fn brokers_of_different_schemes_are_refused() {
    let out = loadtest(
        &[
            "conn",
            "-b",
            "mqtt://127.0.0.1:1883",
            "--more-brokers",
            "mqtts://127.0.0.1:8883",
            "-c",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mqtt://127.0.0.1:1883") && stderr.contains("mqtts://127.0.0.1:8883"),
        "{stderr}"
    );
}

/// `pairs -c 4 --placement cross` over brokers `a` and `b`, 20 QoS 1 messages per pair.
fn cross_pairs(
    a: &Mosquitto,
    b: &Mosquitto,
    expect: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let (a_url, b_url) = (a.url(), b.url());
    let mut args = vec![
        "pairs",
        "-b",
        &a_url,
        "--more-brokers",
        &b_url,
        "--placement",
        "cross",
        "-c",
        "4",
        "-q",
        "1",
        "-n",
        "20",
        "-r",
        "200",
        "--drain",
        "3s",
    ];
    args.extend_from_slice(expect);
    run(&args, LIMIT)
}

/// Publisher i on broker i mod 2, its subscriber on the other one, as each broker's log
/// shows.
fn assert_crossed(a: &Mosquitto, b: &Mosquitto) {
    assert_eq!(
        clients_of(a),
        ids(&["lt-pub-0", "lt-pub-2", "lt-sub-1", "lt-sub-3"])
    );
    assert_eq!(
        clients_of(b),
        ids(&["lt-pub-1", "lt-pub-3", "lt-sub-0", "lt-sub-2"])
    );
}

#[test]
fn cross_pairs_over_separate_brokers_lose_every_message() {
    // Two brokers that do not forward to each other: with every subscriber on the other
    // broker than its publisher, nothing can arrive, and the run says so per flow.
    let a = logging_broker();
    let b = logging_broker();
    // Two worker processes (even and odd indexes): each places its clients alike.
    let (out, r) = cross_pairs(&a, &b, &["--expect-loss", "0", "--workers", "2"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the loss misses --expect-loss 0"
    );
    assert_crossed(&a, &b);
    assert_eq!(num(&r, "workers"), 2);
    assert_eq!(num(&r, "total.sent"), 80);
    assert_eq!(num(&r, "total.acked"), 80);
    assert_eq!(num(&r, "total.expected"), 80);
    assert_eq!(num(&r, "total.received"), 0);
    assert_eq!(num(&r, "total.lost"), 80);
    assert_eq!(at(&r, "placement").as_str(), Some("cross"));
    assert_eq!(at(&r, "groups.0.name").as_str(), Some("sub"));
    assert_eq!(at(&r, "groups.0.brokers"), &serde_json::json!([1, 0]));
    assert_eq!(at(&r, "groups.1.brokers"), &serde_json::json!([0, 1]));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(
            "placement: cross; brokers of clients 0, 1, ... (-b = 0, repeating): sub 1,0; pub 0,1"
        ),
        "{summary}"
    );
}

#[test]
fn cross_pairs_over_bridged_brokers_lose_nothing() {
    // `b` bridges `lt/#` both ways to `a`, as a cluster would forward: every message
    // crosses the bridge, and arrives once. `a` logs subscriptions too, so that the test
    // starts once the bridge has subscribed (`vm.to-a 1 lt/#`).
    let a = Mosquitto::start(
        "user root\nlog_dest file {dir}/mosquitto.log\nconnection_messages true\n\
         log_type notice\nlog_type information\nlog_type subscribe",
    );
    let b = Mosquitto::start(&format!(
        "user root\nlog_dest file {{dir}}/mosquitto.log\nconnection_messages true\n\
         connection to-a\naddress 127.0.0.1:{}\ntopic lt/# both 1\n",
        a.port
    ));
    let log = a.dir.path().join("mosquitto.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" 1 lt/#")) {
        assert!(
            Instant::now() < deadline,
            "the bridge did not subscribe in 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (out, r) = cross_pairs(&a, &b, &["--expect-loss", "0"]);
    assert_eq!(out.status.code(), Some(0));
    assert_crossed(&a, &b);
    assert_eq!(num(&r, "total.sent"), 80);
    assert_eq!(num(&r, "total.received"), 80);
    assert_eq!(num(&r, "total.lost"), 0);
    assert_eq!(num(&r, "total.duplicates"), 0);
    assert_eq!(at(&r, "placement").as_str(), Some("cross"));
}

#[test]
fn cross_with_one_broker_is_refused() {
    let out = loadtest(
        &[
            "pairs",
            "-b",
            "mqtt://127.0.0.1:1883",
            "--placement",
            "cross",
            "-c",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--placement cross needs at least two brokers"),
        "{stderr}"
    );
}

#[test]
fn cross_pairs_over_two_shoal_nodes_name_their_version_and_cross_every_message() {
    // Two standalone shoal nodes on port 0, no cluster between them: they do not forward to
    // each other, so every message that crosses is lost, which shows that each one crossed.
    // Once two nodes can be started as one cluster here, the same run with --expect-loss 0
    // is the cluster test.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let nodes: Vec<shoal_broker::Node> = dirs
        .iter()
        .map(|dir| {
            let raw: shoal_broker::RawConfig = toml::from_str(&format!(
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
                dir.path().to_str().expect("utf-8"),
            ))
            .expect("config");
            let config = shoal_broker::Config::from_raw(raw).expect("valid config");
            runtime
                .block_on(shoal_broker::Node::start(config, None))
                .expect("shoal starts")
        })
        .collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("mqtt://{}", n.mqtt_addr()))
        .collect();
    let (out, r) = run(
        &[
            "pairs",
            "-b",
            &urls[0],
            "--more-brokers",
            &urls[1],
            "--placement",
            "cross",
            "-c",
            "4",
            "-q",
            "1",
            "-n",
            "10",
            "--drain",
            "2s",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(at(&r, "placement").as_str(), Some("cross"));
    let version = format!("shoal {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        at(&r, "broker_versions"),
        &serde_json::json!([version, version])
    );
    assert_eq!(num(&r, "connections.succeeded"), 8);
    assert_eq!(num(&r, "total.sent"), 40);
    assert_eq!(num(&r, "total.expected"), 40);
    assert_eq!(
        num(&r, "total.lost"),
        40,
        "no subscriber shares a node with its publisher"
    );
    // Each node says so itself: no subscriber there matched.
    assert_eq!(num(&r, "errors.puback: NoMatchingSubscribers (0x10)"), 40);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("broker version: {version}\n")),
        "{summary}"
    );
    for node in nodes {
        runtime.block_on(node.shutdown());
    }
}
