//! The Helm chart (helm/shoal) through the real `helm`: lint, render with the default
//! values and with every optional feature on (`ci/all-features-values.yaml`), and
//! assertions over the rendered manifests: the probes, the PDB, the discovery name, the
//! drain against the grace period, the security context, the ports. The default values'
//! `shoal.toml` is started by the real binary.
//!
//! helm (deploy/tools/install-helm.sh) and PyYAML (to read the manifests) are required under
//! CI (`CI=true`); elsewhere a test without them says so and passes.

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

/// shoal's own drain on SIGTERM, from `src/node.rs` (`SHUTDOWN_GRACE`).
fn shoal_shutdown_grace() -> u64 {
    let source = include_str!("../src/node.rs");
    let line = source
        .lines()
        .find(|l| l.starts_with("const SHUTDOWN_GRACE"))
        .expect("SHUTDOWN_GRACE in node.rs");
    let secs = line
        .split("from_secs(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("SHUTDOWN_GRACE is Duration::from_secs(N)");
    secs.parse().expect("seconds")
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
    let sts = named(&objects, "StatefulSet", "shoal");
    let args = &sts["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        !args.to_string().contains("--discovery"),
        "no cluster flags while the cluster is pending: {args}"
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
    let frontend = named(&objects, "Deployment", "shoal-frontend");
    assert_eq!(drain_problems(frontend), Vec::<String>::new());
    assert_eq!(
        client["spec"]["selector"]["app.kubernetes.io/component"], "frontend",
        "clients go to the front ends when there are some"
    );
    let sts = named(&objects, "StatefulSet", "shoal");
    let pod = &sts["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains("dns:shoal-headless.mqtt.svc.cluster.local:7946"),
        "the discovery flag names the headless Service: {args}"
    );
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
