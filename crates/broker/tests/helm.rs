//! The Helm chart (helm/shoal) through the real `helm`: lint, render with the default
//! values and with every optional feature on (`ci/all-features-values.yaml`), and
//! assertions over the rendered manifests: the probes, the PDB, the discovery name, the
//! drain against the grace period, the security context, the ports. The default values'
//! `shoal.toml` is started by the real binary.
//!
//! helm (deploy/tools/install-helm.sh) and PyYAML (to read the manifests) are required under
//! CI (`CI=true`); elsewhere a test without them says so and passes.

mod common;

use common::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../helm/shoal")
}

fn tools_present() -> bool {
    let helm = Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(helm && yaml) {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "helm and PyYAML are required under CI=true (helm: {helm}, yaml: {yaml})"
        );
        eprintln!("skipped: helm or PyYAML missing (deploy/tools/install-helm.sh)");
    }
    helm && yaml
}

/// `helm template` with these extra arguments: every rendered object.
fn render(args: &[&str]) -> Vec<Value> {
    let out = Command::new("helm")
        .args(["template", "shoal", "--namespace", "mqtt"])
        .arg(chart())
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("manifests to python");
    let json = python.wait_with_output().expect("python ends");
    assert!(json.status.success(), "the rendered manifests are YAML");
    serde_json::from_slice(&json.stdout).expect("JSON from python")
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// shoal's own drain on SIGTERM at the longest, from `src/node.rs`: its leaderships
/// handed over (`HANDOFF_GRACE`), its connections closed (`SHUTDOWN_GRACE`), its clients'
/// routes removed (`DEPART_GRACE`).
fn shoal_shutdown_grace() -> u64 {
    let source = include_str!("../src/node.rs");
    ["HANDOFF_GRACE", "SHUTDOWN_GRACE", "DEPART_GRACE"]
        .iter()
        .map(|name| {
            let line = source
                .lines()
                .find(|l| l.starts_with(&format!("const {name}")))
                .unwrap_or_else(|| panic!("{name} in node.rs"));
            let secs = line
                .split("from_secs(")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .unwrap_or_else(|| panic!("{name} is Duration::from_secs(N)"));
            secs.parse::<u64>().expect("seconds")
        })
        .sum()
}

/// What is wrong with one workload's draining: the preStop sleep, then shoal's drain on
/// SIGTERM and a flush, must end before the kubelet's SIGKILL.
fn drain_problems(workload: &Value) -> Vec<String> {
    let pod = &workload["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    let container = &pod["containers"][0];
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    // The flush after the drain, and the kubelet's own delays: a generous 5 s.
    let needed = pre_stop + shoal_shutdown_grace() + 5;
    if needed > grace {
        vec![format!(
            "preStop {pre_stop} s + drain {} s + 5 s > grace {grace} s",
            shoal_shutdown_grace()
        )]
    } else {
        Vec::new()
    }
}

/// The `admin_listen` port the ConfigMap's shoal.toml sets.
fn admin_port(objects: &[Value]) -> u64 {
    let toml = one(objects, "ConfigMap")["data"]["shoal.toml"]
        .as_str()
        .expect("shoal.toml");
    let line = toml
        .lines()
        .find(|l| l.starts_with("admin_listen"))
        .expect("admin_listen");
    line.trim_end_matches('"')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// A container's environment: each variable's value, or for a `fieldRef` its field path
/// as `fieldRef:PATH`, in order.
fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let name = e["name"].as_str().expect("name").to_owned();
                    let value = match (
                        e["value"].as_str(),
                        e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
                    ) {
                        (Some(v), _) => v.to_owned(),
                        (None, Some(path)) => format!("fieldRef:{path}"),
                        (None, None) => "(secret)".to_owned(),
                    };
                    (name, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The cluster settings of a workload's pods (a broker StatefulSet, or with `frontend` the
/// front ends'): discovery through the brokers' headless Service on its cluster port,
/// which lists pods before they are ready; each pod advertising its own stable name under
/// the headless Service of its StatefulSet; bootstrapping on ordinal 0 of the brokers only.
fn check_cluster_env(objects: &[Value], workload: &Value, headless: &Value, frontend: bool) {
    let spec = &workload["spec"];
    let container = &spec["template"]["spec"]["containers"][0];
    let env = env_of(container);
    let headless_name = headless["metadata"]["name"].as_str().expect("name");
    let cluster_port = headless["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "cluster")
        .expect("the cluster port on the headless Service");
    assert_eq!(cluster_port["port"], 7946);
    assert_eq!(cluster_port["targetPort"], "cluster");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let container_port = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "cluster")
        .expect("a cluster container port");
    assert_eq!(container_port["containerPort"], 7946);
    assert_eq!(
        env_value(&env, "SHOAL_DISCOVERY"),
        Some(format!("dns:{headless_name}.mqtt.svc.cluster.local:7946").as_str()),
        "the discovery name is the brokers' headless Service: {env:?}"
    );
    assert_eq!(
        env_value(&env, "SHOAL_CLUSTER_LISTEN"),
        Some("0.0.0.0:7946")
    );
    // $(POD_NAME) is expanded by the kubelet only from a variable defined before it.
    let pod_name = env
        .iter()
        .position(|(n, v)| n == "POD_NAME" && v == "fieldRef:metadata.name")
        .expect("POD_NAME from the downward API");
    let advertise = env
        .iter()
        .position(|(n, _)| n == "SHOAL_CLUSTER_ADVERTISE")
        .expect("SHOAL_CLUSTER_ADVERTISE");
    assert!(pod_name < advertise, "{env:?}");
    let service = spec["serviceName"].as_str().expect("serviceName");
    let own_headless = named(objects, "Service", service);
    assert_eq!(own_headless["spec"]["clusterIP"], "None");
    assert_eq!(own_headless["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        env[advertise].1,
        format!("$(POD_NAME).{service}.mqtt.svc.cluster.local:7946"),
        "each pod advertises its stable DNS name"
    );
    // Said only when set (`cluster.mqttAdvertise`), after POD_NAME, which it may name.
    if let Some(at) = env.iter().position(|(n, _)| n == "SHOAL_MQTT_ADVERTISE") {
        assert!(pod_name < at, "{env:?}");
        assert!(env[at].1.contains("$(POD_NAME)"), "{env:?}");
    }
    let bootstrap_host = env_value(&env, "SHOAL_BOOTSTRAP_HOST");
    assert_eq!(env_value(&env, "SHOAL_BOOTSTRAP"), None, "{env:?}");
    if frontend {
        assert_eq!(env_value(&env, "SHOAL_ROLE"), Some("frontend"));
        assert_eq!(bootstrap_host, None, "a front end never bootstraps");
        assert_eq!(
            env_value(&env, "POD_INDEX"),
            Some("fieldRef:metadata.labels['apps.kubernetes.io/pod-index']")
        );
        assert_eq!(env_value(&env, "SHOAL_NODE_ID"), Some("100$(POD_INDEX)"));
    } else {
        assert_eq!(env_value(&env, "SHOAL_ROLE"), None);
        assert_eq!(env_value(&env, "SHOAL_NODE_ID"), None, "from the host name");
        let name = workload["metadata"]["name"].as_str().expect("name");
        assert_eq!(
            bootstrap_host,
            Some(format!("{name}-0").as_str()),
            "only ordinal 0's host name bootstraps"
        );
    }
    // Room for a first join behind the store's load: the startup probe waits minutes.
    let startup = &container["startupProbe"];
    let patience = startup["periodSeconds"].as_u64().expect("period")
        * startup["failureThreshold"].as_u64().expect("threshold");
    assert!(patience >= 180, "startup probe gives up after {patience} s");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
}

/// The checks every rendering must pass.
fn check_common(objects: &[Value]) {
    let sts = named(objects, "StatefulSet", "shoal");
    let spec = &sts["spec"];
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let headless = find(objects, "Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    assert_eq!(
        spec["serviceName"], headless["metadata"]["name"],
        "the StatefulSet's pods get their DNS names from the headless Service"
    );
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in headless["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "the headless Service selects the pods");
    }
    let discovery = spec["template"]["metadata"]["annotations"]["shoal.io/discovery"]
        .as_str()
        .expect("discovery annotation");
    let headless_name = headless["metadata"]["name"].as_str().expect("name");
    assert_eq!(
        discovery,
        format!("dns:{headless_name}.mqtt.svc.cluster.local:7946"),
        "the discovery name is the headless Service"
    );

    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    check_cluster_env(objects, sts, headless, false);
    let admin = admin_port(objects);
    let ports = container["ports"].as_array().expect("ports");
    let admin_port = ports
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("admin port");
    assert_eq!(
        admin_port["containerPort"], admin,
        "the probes' port is admin_listen's"
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(drain_problems(sts), Vec::<String>::new());

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().expect("path"))
        .collect();
    assert!(mounts.contains(&"/data"), "{mounts:?}");
    assert_eq!(
        spec["volumeClaimTemplates"][0]["metadata"]["name"], "data",
        "a volume per pod"
    );
    assert!(
        pod["affinity"]["podAntiAffinity"].is_object(),
        "anti-affinity by default"
    );
    assert!(container["resources"]["requests"]["memory"].is_string());

    let pdb = one(objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    for (k, v) in pdb["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("pdb selector")
    {
        assert_eq!(&pod_labels[k], v, "the PDB covers the brokers");
    }

    // Every client Service port leads to a container port of the same name and protocol.
    let client = named(objects, "Service", "shoal");
    for port in client["spec"]["ports"].as_array().expect("ports") {
        let target = &port["targetPort"];
        let container_port = ports
            .iter()
            .find(|p| &p["name"] == target)
            .unwrap_or_else(|| panic!("no container port {target}"));
        assert_eq!(port["protocol"], container_port["protocol"]);
    }
    // Every Secret and ConfigMap a pod mounts is rendered (or named as existing).
    for volume in pod["volumes"].as_array().expect("volumes") {
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            named(objects, "Secret", secret);
        }
        if let Some(config) = volume["configMap"]["name"].as_str() {
            named(objects, "ConfigMap", config);
        }
    }
}

#[test]
fn the_chart_lints_with_default_values_and_with_every_feature() {
    if !tools_present() {
        return;
    }
    for extra in [&[][..], &["-f", "ci/all-features-values.yaml"][..]] {
        let out = Command::new("helm")
            .args(["lint", "--strict"])
            .args(extra)
            .arg(".")
            .current_dir(chart())
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm lint {extra:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn default_values_render_a_broker_statefulset_that_drains_within_its_grace_period() {
    if !tools_present() {
        return;
    }
    let objects = render(&[]);
    check_common(&objects);
    let client = named(&objects, "Service", "shoal");
    let names: Vec<&str> = client["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["mqtt"], "only MQTT over TCP by default");
    assert!(find(&objects, "ServiceMonitor").is_empty());
    assert!(find(&objects, "Deployment").is_empty());
    assert_eq!(
        find(&objects, "StatefulSet").len(),
        1,
        "no front ends by default"
    );
    // Off, the pods carry no cluster settings at all.
    let alone = render(&["--set", "cluster.enabled=false"]);
    let sts = named(&alone, "StatefulSet", "shoal");
    let env = env_of(&sts["spec"]["template"]["spec"]["containers"][0]);
    assert!(
        env.iter()
            .all(|(n, _)| !n.starts_with("SHOAL_") || n == "SHOAL_ADMIN_TOKEN"),
        "{env:?}"
    );
}

#[test]
fn every_optional_feature_renders_consistently() {
    if !tools_present() {
        return;
    }
    let objects = render(&[
        "-f",
        &chart()
            .join("ci/all-features-values.yaml")
            .to_string_lossy(),
    ]);
    check_common(&objects);
    let client = named(&objects, "Service", "shoal");
    assert_eq!(client["spec"]["type"], "LoadBalancer");
    let ports: Vec<(String, String)> = client["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].to_string(), p["protocol"].to_string()))
        .collect();
    for (name, protocol) in [
        ("mqtt", "TCP"),
        ("mqtts", "TCP"),
        ("ws", "TCP"),
        ("wss", "TCP"),
        ("quic", "UDP"),
    ] {
        assert!(
            ports.contains(&(format!("\"{name}\""), format!("\"{protocol}\""))),
            "{name}/{protocol} in {ports:?}"
        );
    }
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let headless = named(&objects, "Service", "shoal-headless");
    assert!(
        headless["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "admin"),
        "the ServiceMonitor's port is on the Service it selects"
    );
    let frontend = named(&objects, "StatefulSet", "shoal-frontend");
    assert_eq!(drain_problems(frontend), Vec::<String>::new());
    check_cluster_env(&objects, frontend, headless, true);
    assert_eq!(
        frontend["spec"]["serviceName"], "shoal-frontend-headless",
        "front ends have stable names of their own"
    );
    let selector = &monitor["spec"]["selector"];
    assert_eq!(
        selector["matchExpressions"][0]["values"],
        serde_json::json!(["broker", "frontend"]),
        "every node is scraped: {selector}"
    );
    assert_eq!(
        client["spec"]["selector"]["app.kubernetes.io/component"], "frontend",
        "clients go to the front ends when there are some"
    );
    let sts = named(&objects, "StatefulSet", "shoal");
    let pod = &sts["spec"]["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_array()
    );
    let env = pod["containers"][0]["env"].to_string();
    assert!(env.contains("SHOAL_ADMIN_TOKEN"), "{env}");
    let toml = one(&objects, "ConfigMap")["data"]["shoal.toml"]
        .as_str()
        .expect("toml");
    for needle in [
        "password_file = \"/etc/shoal/auth/passwd\"",
        "acl_file = \"/etc/shoal/config/acl\"",
        "max_queued_messages = 10000",
        "kind = \"quic\"",
        "client_ca = \"/etc/shoal/tls/ca.crt\"",
    ] {
        assert!(toml.contains(needle), "{needle} in\n{toml}");
    }
}

#[test]
fn a_grace_period_shorter_than_the_drain_is_caught() {
    if !tools_present() {
        return;
    }
    let objects = render(&["--set", "terminationGracePeriodSeconds=8"]);
    let problems = drain_problems(named(&objects, "StatefulSet", "shoal"));
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn the_rendered_config_is_one_the_real_binary_starts_with() {
    if !tools_present() {
        return;
    }
    let objects = render(&[]);
    let toml = one(&objects, "ConfigMap")["data"]["shoal.toml"]
        .as_str()
        .expect("toml")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shoal.toml");
    std::fs::write(&path, toml).expect("write");
    // The file as rendered; only the addresses and the folder move (flags win over the
    // file) so that the test runs anywhere.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal starts");
    let mut out = child.stdout.take().expect("stdout");
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains("shoal is up") {
                let _ = up_tx.send(());
            }
        }
        text
    });
    let up = up_rx.recv_timeout(Duration::from_secs(20)).is_ok();
    // SIGTERM, the way the kubelet stops it.
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().expect("shoal exits");
    let text = reader.join().expect("reader");
    assert!(up, "shoal did not start with the rendered config:\n{text}");
    assert!(status.success(), "{status}");
}

/// A container's environment as the kubelet gives it to pod `pod` (ordinal `index`): the
/// downward API's fields filled in, `$(VAR)` of earlier variables expanded, Secrets left
/// out.
fn pod_environment(container: &Value, pod: &str, index: u32) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in env_of(container) {
        let value = match value.as_str() {
            "fieldRef:metadata.name" => pod.to_owned(),
            "fieldRef:metadata.labels['apps.kubernetes.io/pod-index']" => index.to_string(),
            "(secret)" => continue,
            other if other.starts_with("fieldRef:") => panic!("unexpected field {other}"),
            other => out.iter().fold(other.to_owned(), |text, (n, v)| {
                text.replace(&format!("$({n})"), v)
            }),
        };
        out.push((name, value));
    }
    out
}

/// One GET on loopback `port`: the status and body, if anything answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

/// The real binary run as pod `pod` of `workload` would run it, killed when dropped.
struct Pod {
    child: std::process::Child,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Pod {
    fn start(objects: &[Value], workload: &str, pod: &str, index: u32) -> Self {
        let sts = named(objects, "StatefulSet", workload);
        let env = pod_environment(
            &sts["spec"]["template"]["spec"]["containers"][0],
            pod,
            index,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = one(objects, "ConfigMap")["data"]["shoal.toml"]
            .as_str()
            .expect("toml");
        std::fs::write(dir.path().join("shoal.toml"), toml).expect("write");
        let admin = free_port();
        // As rendered, but on loopback ports and a temporary folder (flags win over the
        // environment), and with a discovery name that resolves here without a DNS server
        // and leads nowhere.
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .env("HOSTNAME", pod)
            .arg("--config")
            .arg(dir.path().join("shoal.toml"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--discovery", &format!("dns:localhost:{}", free_port())])
            .args(["--sys-interval", "0", "--log", "warn"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .spawn()
            .expect("shoal starts");
        Self {
            child,
            admin,
            _dir: dir,
        }
    }

    /// `GET /api/v1/cluster` once the admin listener answers.
    fn cluster(&mut self) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the node exited: {status}");
            }
            if let Some((200, body)) = get(self.admin, "/api/v1/cluster") {
                return serde_json::from_str(&body).expect("JSON");
            }
            assert!(std::time::Instant::now() < deadline, "no admin API");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready_within(&self, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Some((200, _)) = get(self.admin, "/readyz") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_rendered_pod_environment_bootstraps_on_ordinal_0_only_and_gives_each_pod_its_id() {
    if !tools_present() {
        return;
    }
    // The default values (whose shoal.toml names no file the test lacks), with front ends
    // and each pod's MQTT address.
    let objects = render(&[
        "--set",
        "frontend.enabled=true",
        "--set",
        "cluster.mqttAdvertise=$(POD_NAME).mqtt.example:1883",
    ]);
    let mut first = Pod::start(&objects, "shoal", "shoal-0", 0);
    let mut second = Pod::start(&objects, "shoal", "shoal-1", 1);
    let mut frontend = Pod::start(&objects, "shoal-frontend", "shoal-frontend-1", 1);
    // shoal-0 starts the cluster, alone, as node 1 at its stable name.
    assert!(
        first.ready_within(Duration::from_secs(30)),
        "shoal-0 bootstraps"
    );
    let view = first.cluster();
    assert_eq!(view["joined"], true, "{view}");
    assert_eq!(view["node_id"], 1, "{view}");
    assert_eq!(
        view["nodes"][0]["address"], "shoal-0.shoal-headless.mqtt.svc.cluster.local:7946",
        "{view}"
    );
    assert_eq!(
        view["nodes"][0]["mqtt"], "shoal-0.mqtt.example:1883",
        "the pod's MQTT address, its name put in: {view}"
    );
    // shoal-1 (node 2) and front end 1 (node 1001) wait to join: nobody answers them.
    for (pod, id) in [(&mut second, 2), (&mut frontend, 1001)] {
        let view = pod.cluster();
        assert_eq!(view["node_id"], id, "{view}");
        assert_eq!(view["joined"], false, "{view}");
        assert!(
            !pod.ready_within(Duration::from_secs(2)),
            "node {id} is not ready"
        );
    }
}
