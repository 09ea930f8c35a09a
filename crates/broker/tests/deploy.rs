//! The deployment files checked against the real things: the container image built from
//! the binary this test suite already built, run by the real docker engine and spoken to in
//! MQTT; the single-node compose file brought up with it; the three-node compose file
//! brought up as a cluster that routes between its nodes; the Prometheus configuration
//! through `promtool`; the Grafana dashboard's queries against the metric names the broker
//! exports (`src/metrics.rs`).
//!
//! Docker, docker compose and promtool are required under CI (`CI=true`): a missing one
//! fails the test there. Elsewhere a test without its tool says so and passes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::http_response;

/// How long a container gets to start serving.
const START: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `tool` can be used; under CI a missing tool fails the test.
fn require(tool: &str, works: bool) -> bool {
    if !works {
        assert!(
            !in_ci(),
            "{tool} is required under CI=true and is not usable"
        );
        eprintln!("skipped: {tool} is not usable here");
    }
    works
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_works() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `docker compose` (v2) or `docker-compose` (v1), whichever is installed.
fn compose() -> Option<Command> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        return Some(cmd);
    }
    let v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    v1.then(|| Command::new("docker-compose"))
}

/// One HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: shoal\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (status, body) = http_response(&response);
    Ok((status, body))
}

/// Waits until `addr` answers `path` with 200.
fn wait_ok(addr: SocketAddr, path: &str, logs: impl Fn() -> String) {
    wait_ok_within(addr, path, START, logs);
}

/// Waits up to `wait` until `addr` answers `path` with 200.
fn wait_ok_within(addr: SocketAddr, path: &str, wait: Duration, logs: impl Fn() -> String) {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok((200, _)) = http_get(addr, path) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on {addr} not 200 within {wait:?}; logs:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker port` output (`127.0.0.1:49153`, maybe an IPv6 line too) as the IPv4 address.
fn published(text: &str) -> SocketAddr {
    text.lines()
        .find_map(|line| {
            line.trim()
                .parse::<SocketAddr>()
                .ok()
                .filter(|a| a.is_ipv4())
        })
        .unwrap_or_else(|| panic!("no published IPv4 address in {text:?}"))
}

/// A retained message published through `mqtt` comes back to a new subscriber.
fn mqtt_round_trip(mqtt: SocketAddr) {
    let (host, port) = (mqtt.ip().to_string(), mqtt.port().to_string());
    run(Command::new("mosquitto_pub").args([
        "-h",
        &host,
        "-p",
        &port,
        "-V",
        "5",
        "-q",
        "1",
        "-r",
        "-t",
        "deploy/test",
        "-m",
        "hello from the container",
    ]));
    let got = run(Command::new("mosquitto_sub").args([
        "-h", &host, "-p", &port, "-V", "5", "-q", "1", "-t", "deploy/#", "-C", "1", "-W", "10",
    ]));
    assert_eq!(stdout(&got), "hello from the container");
}

/// Removes what a test made in docker, even when it fails.
struct Cleanup(Vec<Command>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for cmd in self.0.iter_mut().rev() {
            let _ = cmd.output();
        }
    }
}

/// Builds the `FROM scratch` image of the binary under test: its tag.
fn build_local_image(cleanup: &mut Cleanup) -> String {
    let tag = format!("shoal-test:{}", std::process::id());
    let out = run(Command::new(repo().join("deploy/image/build-local.sh"))
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .arg(&tag));
    assert_eq!(stdout(&out).lines().last(), Some(tag.as_str()));
    let mut rmi = Command::new("docker");
    rmi.args(["rmi", "-f", &tag]);
    cleanup.0.push(rmi);
    tag
}

#[test]
fn the_image_serves_mqtt_and_probes_as_a_non_root_user_on_a_read_only_root_and_stops_cleanly() {
    if !require("docker", docker_works()) {
        return;
    }
    let mut cleanup = Cleanup(Vec::new());
    let tag = build_local_image(&mut cleanup);
    let user = run(Command::new("docker").args(["inspect", "--format", "{{.Config.User}}", &tag]));
    assert_eq!(
        stdout(&user),
        "65532:65532",
        "the image runs as the non-root user"
    );

    let name = format!("shoal-test-{}", std::process::id());
    let mut rm = Command::new("docker");
    rm.args(["rm", "-f", "-v", &name]);
    cleanup.0.push(rm);
    // As the Helm chart runs it: read-only root, no capabilities, no privilege gain.
    run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-p",
        "127.0.0.1::1883",
        "-p",
        "127.0.0.1::18083",
        &tag,
    ]));
    let logs = || {
        let out = Command::new("docker").args(["logs", &name]).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
    };
    let admin = published(&stdout(&run(
        Command::new("docker").args(["port", &name, "18083"])
    )));
    let mqtt = published(&stdout(&run(
        Command::new("docker").args(["port", &name, "1883"])
    )));
    wait_ok(admin, "/healthz", logs);
    wait_ok(admin, "/readyz", logs);
    // No admin_token: the API refuses the host, which is not the container's loopback.
    let (status, body) = http_get(admin, "/bans").expect("bans");
    assert_eq!(status, 403, "{body}");
    mqtt_round_trip(mqtt);
    let (status, metrics) = http_get(admin, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("shoal_messages_received_total"),
        "the publish is counted:\n{metrics}"
    );

    // SIGTERM (docker stop) ends the node in order, well inside the grace period.
    let started = Instant::now();
    run(Command::new("docker").args(["stop", "-t", "20", &name]));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped on SIGTERM, not SIGKILL"
    );
    let code =
        run(Command::new("docker").args(["inspect", "--format", "{{.State.ExitCode}}", &name]));
    assert_eq!(stdout(&code), "0", "logs:\n{}", logs());
    assert!(logs().contains("stopped"), "{}", logs());
}

#[test]
fn the_single_node_compose_file_runs_the_local_image() {
    if !require("docker", docker_works()) {
        return;
    }
    let Some(_) = compose() else {
        require("docker compose", false);
        return;
    };
    let mut cleanup = Cleanup(Vec::new());
    let tag = build_local_image(&mut cleanup);
    let project = format!("shoaltest{}", std::process::id());
    let dir = repo().join("deploy/compose");
    let compose_cmd = |args: &[&str]| {
        let mut cmd = compose().expect("compose was found");
        cmd.current_dir(&dir)
            .args(["-p", &project, "-f", "docker-compose.single.yml"])
            .args(args)
            // Free ports on loopback, and the image of the binary under test.
            .env("SHOAL_IMAGE", &tag)
            .env("SHOAL_BIND", "127.0.0.1")
            .env("SHOAL_MQTT_PORT", "")
            .env("SHOAL_ADMIN_PORT", "")
            .env("PROMETHEUS_PORT", "")
            .env("GRAFANA_PORT", "");
        cmd
    };
    cleanup
        .0
        .push(compose_cmd(&["down", "-v", "--remove-orphans"]));
    // Only the broker: Prometheus' and Grafana's images cannot be pulled here.
    run(&mut compose_cmd(&["up", "-d", "--no-build", "shoal"]));
    let logs = || {
        compose_cmd(&["logs", "--no-color", "shoal"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let admin = published(&stdout(&run(&mut compose_cmd(&["port", "shoal", "18083"]))));
    let mqtt = published(&stdout(&run(&mut compose_cmd(&["port", "shoal", "1883"]))));
    wait_ok(admin, "/healthz", logs);
    mqtt_round_trip(mqtt);
    // The data volume outlives a restart of the container: the retained message is kept.
    run(&mut compose_cmd(&["restart", "shoal"]));
    let admin = published(&stdout(&run(&mut compose_cmd(&["port", "shoal", "18083"]))));
    let mqtt = published(&stdout(&run(&mut compose_cmd(&["port", "shoal", "1883"]))));
    wait_ok(admin, "/readyz", logs);
    let (host, port) = (mqtt.ip().to_string(), mqtt.port().to_string());
    let got = run(Command::new("mosquitto_sub").args([
        "-h", &host, "-p", &port, "-t", "deploy/#", "-C", "1", "-W", "10",
    ]));
    assert_eq!(
        stdout(&got),
        "hello from the container",
        "retained across a restart"
    );
}

/// How long the nodes of the compose cluster get to join (each retries its seeds; one
/// asked while it is not a member yet takes a while to say no).
const JOIN: Duration = Duration::from_secs(150);

#[test]
fn the_three_node_compose_file_runs_one_cluster_that_routes_between_its_nodes() {
    if !require("docker", docker_works()) {
        return;
    }
    let Some(_) = compose() else {
        require("docker compose", false);
        return;
    };
    let mut cleanup = Cleanup(Vec::new());
    let tag = build_local_image(&mut cleanup);
    let project = format!("shoaltest3n{}", std::process::id());
    let token = format!("test-{}", std::process::id());
    let dir = repo().join("deploy/compose");
    let compose_cmd = |args: &[&str]| {
        let mut cmd = compose().expect("compose was found");
        cmd.current_dir(&dir)
            .args(["-p", &project, "-f", "docker-compose.yml"])
            .args(args)
            .env("SHOAL_IMAGE", &tag)
            .env("SHOAL_BIND", "127.0.0.1")
            .env("SHOAL_ADMIN_TOKEN", &token);
        for n in 1..=3 {
            cmd.env(format!("SHOAL_{n}_MQTT_PORT"), "")
                .env(format!("SHOAL_{n}_ADMIN_PORT"), "");
        }
        cmd.env("PROMETHEUS_PORT", "").env("GRAFANA_PORT", "");
        cmd
    };
    // `down -v` even when the test fails: the containers, the network and the volumes.
    cleanup
        .0
        .push(compose_cmd(&["down", "-v", "--remove-orphans"]));
    // The nodes only: Prometheus' and Grafana's images cannot be pulled here.
    run(&mut compose_cmd(&[
        "up",
        "-d",
        "--no-build",
        "shoal-1",
        "shoal-2",
        "shoal-3",
    ]));
    let logs = || {
        compose_cmd(&["logs", "--no-color", "shoal-1", "shoal-2", "shoal-3"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut mqtt = Vec::new();
    let mut admin = Vec::new();
    for node in ["shoal-1", "shoal-2", "shoal-3"] {
        admin.push(published(&stdout(&run(&mut compose_cmd(&[
            "port", node, "18083",
        ])))));
        mqtt.push(published(&stdout(&run(&mut compose_cmd(&[
            "port", node, "1883",
        ])))));
    }
    // /readyz: 200 once the node has joined.
    for addr in &admin {
        wait_ok_within(*addr, "/readyz", JOIN, logs);
    }
    // Every node knows the three, by the names they advertise, under DNS discovery.
    for (i, addr) in admin.iter().enumerate() {
        let out = run(Command::new(env!("CARGO_BIN_EXE_shoal")).args([
            "cluster",
            "status",
            "--json",
            "--admin",
            &format!("http://{addr}"),
            "--token",
            &token,
        ]));
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(view["node_id"], i as u64 + 1, "{view}");
        let mut members: Vec<(u64, String)> = view["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                assert_eq!(n["down"], false, "{view}");
                (
                    n["id"].as_u64().expect("id"),
                    n["address"].as_str().expect("address").to_owned(),
                )
            })
            .collect();
        members.sort();
        assert_eq!(
            members,
            [
                (1, "shoal-1:7946".to_owned()),
                (2, "shoal-2:7946".to_owned()),
                (3, "shoal-3:7946".to_owned())
            ],
            "{view}"
        );
    }
    let id = stdout(&run(&mut compose_cmd(&["ps", "-q", "shoal-2"])));
    let aliases = stdout(&run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{range $net, $cfg := .NetworkSettings.Networks}}{{join $cfg.Aliases \",\"}};{{end}}",
        &id,
    ])));
    assert!(
        aliases.split([',', ';']).any(|a| a == "shoal-cluster"),
        "shoal-2 is `shoal-cluster` on the compose network: {aliases}"
    );

    // Subscribed on shoal-3, published on shoal-1: one broker.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use shoal_codec::{Packet, ProtocolVersion, PubAckReasonCode, QoS, QosPid};
        let connect = |addr: SocketAddr, id: &'static str| async move {
            let (raw, ack) = common::Raw::connect(addr, ProtocolVersion::V5, id, |_| {}).await;
            assert_eq!(ack.reason_code, shoal_codec::ConnectReasonCode::Success);
            raw
        };
        let mut subscriber = connect(mqtt[2], "on-shoal-3").await;
        let ack = subscriber
            .subscribe(1, &[("compose/#", QoS::AtLeastOnce)])
            .await;
        assert_eq!(
            ack.reason_codes,
            vec![shoal_codec::SubAckReasonCode::granted(QoS::AtLeastOnce)]
        );
        let mut publisher = connect(mqtt[0], "on-shoal-1").await;
        publisher
            .publish(
                "compose/hello",
                b"from shoal-1",
                QosPid::AtLeastOnce(common::pid(1)),
                false,
            )
            .await;
        match publisher.recv_within(Duration::from_secs(15)).await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, PubAckReasonCode::Success),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        match subscriber.recv_within(Duration::from_secs(15)).await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic.as_str(), "compose/hello");
                assert_eq!(&p.payload[..], b"from shoal-1");
            }
            other => panic!("shoal-3's subscriber got {other:?}"),
        }
    });
    // A retained message published on shoal-2 reaches a new subscriber of shoal-1.
    let (host, port) = (mqtt[1].ip().to_string(), mqtt[1].port().to_string());
    run(Command::new("mosquitto_pub").args([
        "-h",
        &host,
        "-p",
        &port,
        "-V",
        "5",
        "-q",
        "1",
        "-r",
        "-t",
        "compose/kept",
        "-m",
        "retained on shoal-2",
    ]));
    let (host, port) = (mqtt[0].ip().to_string(), mqtt[0].port().to_string());
    let got = run(Command::new("mosquitto_sub").args([
        "-h",
        &host,
        "-p",
        &port,
        "-V",
        "5",
        "-t",
        "compose/kept",
        "-C",
        "1",
        "-W",
        "10",
    ]));
    assert_eq!(stdout(&got), "retained on shoal-2");
}

/// The runtime instructions of a Dockerfile (ENV with its continuation lines, USER,
/// WORKDIR, VOLUME, EXPOSE, STOPSIGNAL, ENTRYPOINT), normalised, in order.
fn runtime_instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut continued: Option<String> = None;
    for line in dockerfile.lines().map(str::trim) {
        if let Some(mut text) = continued.take() {
            text.push(' ');
            text.push_str(line.trim_end_matches('\\').trim());
            if line.ends_with('\\') {
                continued = Some(text);
            } else {
                out.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            continue;
        }
        let keyword = line.split_whitespace().next().unwrap_or("");
        if [
            "ENV",
            "USER",
            "WORKDIR",
            "VOLUME",
            "EXPOSE",
            "STOPSIGNAL",
            "ENTRYPOINT",
        ]
        .contains(&keyword)
        {
            if line.ends_with('\\') {
                continued = Some(line.trim_end_matches('\\').trim().to_string());
            } else {
                out.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    out
}

#[test]
fn the_users_dockerfile_and_the_local_image_run_the_binary_alike() {
    let users = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let script =
        std::fs::read_to_string(repo().join("deploy/image/build-local.sh")).expect("script");
    let local = script
        .split("<<'DOCKERFILE'")
        .nth(1)
        .and_then(|rest| rest.split("\nDOCKERFILE").next())
        .expect("the local Dockerfile in build-local.sh");
    // The final stage: what runs.
    let final_stage = users.rsplit("\nFROM ").next().expect("a FROM");
    let users = runtime_instructions(final_stage);
    assert!(users.len() >= 7, "{users:?}");
    assert_eq!(
        users,
        runtime_instructions(local),
        "same user, volume, ports, defaults"
    );
    assert!(users.contains(&"USER 65532:65532".to_string()));
}

#[test]
fn compose_files_are_valid_and_prometheus_scrapes_every_node() {
    let Some(_) = compose() else {
        require("docker compose", false);
        return;
    };
    let dir = repo().join("deploy/compose");
    for (file, prometheus) in [
        ("docker-compose.yml", "prometheus/prometheus.yml"),
        (
            "docker-compose.single.yml",
            "prometheus/prometheus.single.yml",
        ),
    ] {
        let mut cmd = compose().expect("compose was found");
        let services = run(cmd
            .current_dir(&dir)
            .args(["-f", file, "config", "--services"]));
        let services = stdout(&services);
        let scrape = std::fs::read_to_string(dir.join(prometheus)).expect("prometheus config");
        let nodes: Vec<&str> = services
            .lines()
            .filter(|s| s.starts_with("shoal"))
            .collect();
        assert!(!nodes.is_empty(), "{file} has shoal services: {services}");
        for node in nodes {
            assert!(
                scrape.contains(&format!("\"{node}:18083\"")),
                "{prometheus} scrapes {node}'s admin port"
            );
        }
        assert!(services.lines().any(|s| s == "prometheus"), "{file}");
        assert!(services.lines().any(|s| s == "grafana"), "{file}");
    }
    // The cluster's settings, as compose resolves them: one discovery name that is an alias
    // of every node, a distinct id and advertised name per node, one bootstrapping node.
    let mut cmd = compose().expect("compose was found");
    let resolved = run(cmd
        .current_dir(&dir)
        .args(["-f", "docker-compose.yml", "config"]));
    let Some(config) = yaml_to_json(&resolved.stdout) else {
        require("PyYAML", false);
        return;
    };
    let mut bootstrapping = Vec::new();
    for k in 1..=3 {
        let name = format!("shoal-{k}");
        let service = &config["services"][&name];
        let env = &service["environment"];
        assert_eq!(env["SHOAL_NODE_ID"], k.to_string(), "{name}: {env}");
        assert_eq!(env["SHOAL_CLUSTER_LISTEN"], "0.0.0.0:7946", "{name}");
        assert_eq!(
            env["SHOAL_CLUSTER_ADVERTISE"],
            format!("{name}:7946"),
            "{name} is reached at its service name"
        );
        assert_eq!(
            env["SHOAL_MQTT_ADVERTISE"],
            format!("localhost:{}", 1882 + k),
            "{name} tells clients where to reach it (Server Reference)"
        );
        let discovery = env["SHOAL_DISCOVERY"].as_str().expect("SHOAL_DISCOVERY");
        let alias = discovery
            .strip_prefix("dns:")
            .and_then(|d| d.strip_suffix(":7946"))
            .expect("dns:NAME:7946");
        let aliases = &service["networks"]["shoal"]["aliases"];
        assert!(
            aliases
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == alias)),
            "{name} carries the discovery name {alias} as an alias: {aliases}"
        );
        if env["SHOAL_BOOTSTRAP"] == "true" {
            bootstrapping.push(name);
        }
    }
    assert_eq!(
        bootstrapping,
        ["shoal-1"],
        "exactly one node starts the cluster"
    );
}

/// YAML text as JSON, through python3's PyYAML (`None` when it is missing).
fn yaml_to_json(yaml: &[u8]) -> Option<serde_json::Value> {
    use std::io::Write as _;
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml, json; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    python.stdin.take()?.write_all(yaml).ok()?;
    let out = python.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    let works = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require("promtool", works) {
        return;
    }
    let dir = repo().join("deploy/compose/prometheus");
    for file in ["prometheus.yml", "prometheus.single.yml"] {
        run(Command::new("promtool")
            .current_dir(&dir)
            .args(["check", "config", file]));
    }
    let out =
        run(Command::new("promtool")
            .current_dir(&dir)
            .args(["check", "rules", "alerts.yml"]));
    assert!(stdout(&out).contains("SUCCESS"), "{}", stdout(&out));
}

/// Every metric name the broker exports, from `src/metrics.rs`, and whether it is a
/// histogram (rendered as a summary: `{quantile=..}`, `_sum`, `_count`).
fn exported_metrics() -> Vec<(String, bool)> {
    let source = include_str!("../src/metrics.rs");
    let mut names = Vec::new();
    let mut histogram = false;
    for line in source.lines() {
        let line = line.trim();
        if line.starts_with("/// Histogram") {
            histogram = true;
        }
        if let Some(rest) = line.strip_prefix("pub const ") {
            let name = rest.split('"').nth(1).expect("a string constant");
            names.push((name.to_string(), histogram));
            histogram = false;
        }
    }
    assert!(names.len() > 10, "metrics.rs parsed: {names:?}");
    names
}

/// The `shoal_*` names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<&str> {
    expr.match_indices("shoal_")
        .filter(|(at, _)| {
            *at == 0
                || !expr.as_bytes()[at - 1].is_ascii_alphanumeric()
                    && expr.as_bytes()[at - 1] != b'_'
        })
        .map(|(at, _)| {
            let rest = &expr[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

fn is_exported(name: &str, exported: &[(String, bool)]) -> bool {
    exported.iter().any(|(metric, histogram)| {
        name == metric
            || *histogram
                && [format!("{metric}_sum"), format!("{metric}_count")].contains(&name.to_string())
    })
}

#[test]
fn every_dashboard_panel_and_alert_queries_metrics_the_broker_exports() {
    let exported = exported_metrics();
    let dir = repo().join("deploy/compose");
    let text =
        std::fs::read_to_string(dir.join("grafana/dashboards/shoal.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let provisioned =
        std::fs::read_to_string(dir.join("grafana/provisioning/datasources/prometheus.yml"))
            .expect("datasource");
    let mut used = std::collections::HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has a query");
        for target in targets {
            let uid = target["datasource"]["uid"]
                .as_str()
                .expect("datasource uid");
            assert!(
                provisioned.contains(&format!("uid: {uid}")),
                "{title}: datasource {uid} is provisioned"
            );
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "panel {title:?}: {expr} names a shoal metric"
            );
            for name in names {
                assert!(
                    is_exported(name, &exported),
                    "panel {title:?}: {name} is not exported"
                );
                used.insert(name.to_string());
            }
        }
    }
    for core in [
        "shoal_connections",
        "shoal_messages_received_total",
        "shoal_messages_sent_total",
        "shoal_messages_dropped_total",
        "shoal_queued_messages",
        "shoal_store_flush_seconds",
    ] {
        assert!(used.contains(core), "the dashboard shows {core}");
    }
    let alerts = std::fs::read_to_string(dir.join("prometheus/alerts.yml")).expect("alerts");
    let exprs: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert!(exprs.len() >= 5);
    for expr in exprs {
        for name in metric_names(expr) {
            assert!(
                is_exported(name, &exported),
                "alert {expr}: {name} is not exported"
            );
        }
    }
    // The names the check relies on really are what the exporter prints: a histogram
    // renders as a summary (the dashboard's `{quantile=...}`).
    assert!(is_exported("shoal_store_flush_seconds_count", &exported));
    assert!(!is_exported("shoal_raft_leaders", &exported));
}
