//! `shoal cluster`: a cluster from the command line.
//!
//! ```text
//! shoal cluster local [--nodes N] [--data-dir DIR] [--mqtt-port P] [--admin-port P]
//!                     [--cluster-port P] [-- NODE FLAGS...]
//! shoal cluster status [--admin http://HOST:PORT] [--token TOKEN] [--json]
//! shoal cluster join [--admin http://HOST:PORT] [--token TOKEN] SEED...
//! shoal cluster leave [--admin http://HOST:PORT] [--token TOKEN]
//! shoal cluster forget [--admin http://HOST:PORT] [--token TOKEN] NODE_ID
//! ```
//!
//! `local` runs N nodes of this same binary on loopback as one cluster (node 1 starts it,
//! the others join through it) and supervises them: their output prefixed with their name,
//! a table of their addresses once every one answers `/readyz`, SIGTERM and SIGINT passed
//! on (SIGHUP too, which reloads), and an end as soon as one of them dies.
//!
//! `status` prints a node's view of the cluster (`GET /api/v1/cluster`) as tables; `join`
//! makes a node that waits (started with `cluster_listen` and no seeds, discovery or
//! bootstrap) join a cluster through the seeds given (`POST /api/v1/cluster/join`); `leave`
//! makes a node leave its cluster for good (`POST /api/v1/cluster/leave`); `forget` removes
//! a node declared down (dead for good) through a live one (`DELETE /api/v1/nodes/ID`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ctl;

const USAGE: &str = "usage: shoal cluster COMMAND
commands:
  local [--nodes N] [--data-dir DIR] [--mqtt-port P] [--admin-port P] [--cluster-port P]
        [-- NODE FLAGS...]
      runs N nodes (default 3) of this binary on 127.0.0.1 as one cluster, until SIGTERM
      or SIGINT (Ctrl-C): node K listens for MQTT on P+K-1 (default 1883), for the admin
      API on 18083+K-1, for other nodes on 7946+K-1, keeps its data in DIR/nodeK (default
      ./data/cluster); node 1 starts the cluster, the others join it. NODE FLAGS go to every
      node (e.g. -- --log warn --max-qos 1). Exits 1 if a node dies.
  status [--admin http://HOST:PORT] [--token TOKEN] [--json]
      a node's view of the cluster: the members and every Raft group (--json: as the API
      gives it). --admin defaults to $SHOAL_CTL_ADMIN, else http://127.0.0.1:18083;
      --token to $SHOAL_ADMIN_TOKEN.
  join [--admin http://HOST:PORT] [--token TOKEN] SEED...
      the node at --admin joins a cluster through SEED (host:port of a member's cluster
      listener; several may be given, or separated by commas). For a node started with
      cluster_listen and neither seeds, discovery nor bootstrap: it waits, not serving
      (/readyz 503), until told this. Also replaces the seeds of a node still trying
      wrong ones. Waits up to 30 s for the node to be a member; exits 1 if it is still
      trying then (it goes on), or if the node is a member already.
  leave [--admin http://HOST:PORT] [--token TOKEN]
      the node at --admin leaves its cluster for good: its clients are told to go elsewhere
      (MQTT 5: DISCONNECT 0x9C naming another node's mqtt_advertise address, or 0x8B
      when no node has one), it is removed from every Raft group with its routes, and
      its process stops. Delete its data folder before reusing it.
  forget [--admin http://HOST:PORT] [--token TOKEN] NODE_ID
      the node at --admin removes node NODE_ID, declared down (a machine lost for good, a
      pod scaled away), from the cluster: its routes, its record, its vote in every Raft
      group (a learner that is up takes it). Refused (exit 1) for a node that is up: make
      it leave instead.";

/// Runs `shoal cluster ARGS`: the exit status.
pub fn command(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("local") => local(&args[1..]),
        Some("status") => status(&args[1..]),
        Some("join") => join(&args[1..]),
        Some("leave") => leave(&args[1..]),
        Some("forget") => forget(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("shoal cluster: unknown command {other:?}\n{USAGE}");
            2
        }
        None => {
            eprintln!("{USAGE}");
            2
        }
    }
}

/// The next argument, as the value of `flag`.
fn value<'a>(args: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
    args.next()
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn port(text: &str, flag: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{flag} {text:?} is not a port (1 to 65535)")),
    }
}

// ---------------------------------------------------------------------------------------
// The commands that talk to a node's admin API

/// The arguments of a command that talks to a node's admin API.
#[derive(Debug)]
struct AdminArgs {
    /// `--admin`: the node's admin URL.
    admin: String,
    /// `--token`: the admin token.
    token: Option<String>,
    /// `--json` (`status` only).
    json: bool,
    /// The other arguments (`join`'s seeds).
    rest: Vec<String>,
}

/// The arguments of `command`: `--admin`, `--token`, for `status` `--json`, for `join`
/// the seeds. Prints the usage and returns `Err` when they are wrong.
fn admin_args(args: &[String], command: &str) -> Result<AdminArgs, ()> {
    let mut parsed = AdminArgs {
        admin: std::env::var("SHOAL_CTL_ADMIN").unwrap_or_else(|_| "http://127.0.0.1:18083".into()),
        token: std::env::var("SHOAL_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        json: false,
        rest: Vec::new(),
    };
    let mut it = args.iter();
    let result: Result<(), String> = (|| {
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--admin" => parsed.admin = value(&mut it, "--admin")?,
                "--token" => parsed.token = Some(value(&mut it, "--token")?),
                "--json" if command == "status" => parsed.json = true,
                other if matches!(command, "join" | "forget") && !other.starts_with('-') => {
                    parsed.rest.push(other.to_owned());
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(parsed),
        Err(e) => {
            eprintln!("shoal cluster {command}: {e}\n{USAGE}");
            Err(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// shoal cluster join

fn join(args: &[String]) -> i32 {
    let Ok(parsed) = admin_args(args, "join") else {
        return 2;
    };
    let seeds: Vec<&str> = parsed
        .rest
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if seeds.is_empty() {
        eprintln!("shoal cluster join: name at least one SEED (host:port)\n{USAGE}");
        return 2;
    }
    let admin = &parsed.admin;
    let path = "/api/v1/cluster/join";
    let body = serde_json::json!({ "seeds": seeds }).to_string();
    match ctl::request(
        admin,
        parsed.token.as_deref(),
        "POST",
        path,
        Some(&body),
        Duration::from_secs(60),
    ) {
        Ok((200, answer)) => {
            let view: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
            println!(
                "node {} at {admin} joined the cluster through {}",
                view["node_id"],
                seeds.join(", ")
            );
            0
        }
        Ok((202, answer)) => {
            let view: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
            eprintln!(
                "shoal cluster join: the node at {admin} has not joined yet; it goes on trying {} (last failure: {})",
                seeds.join(", "),
                view["last_error"].as_str().unwrap_or("none yet")
            );
            1
        }
        Ok((code, answer)) => {
            eprintln!(
                "shoal cluster join: POST {path}: HTTP {code}: {}",
                answer.trim_end()
            );
            1
        }
        Err(e) => {
            eprintln!("shoal cluster join: {e}");
            2
        }
    }
}

// ---------------------------------------------------------------------------------------
// shoal cluster leave

fn leave(args: &[String]) -> i32 {
    let Ok(AdminArgs { admin, token, .. }) = admin_args(args, "leave") else {
        return 2;
    };
    let path = "/api/v1/cluster/leave";
    match ctl::request(
        &admin,
        token.as_deref(),
        "POST",
        path,
        Some(""),
        Duration::from_secs(120),
    ) {
        Ok((200, _)) => {
            println!("the node at {admin} left its cluster and is stopping");
            0
        }
        Ok((code, body)) => {
            eprintln!(
                "shoal cluster leave: POST {path}: HTTP {code}: {}",
                body.trim_end()
            );
            1
        }
        Err(e) => {
            eprintln!("shoal cluster leave: {e}");
            2
        }
    }
}

// ---------------------------------------------------------------------------------------
// shoal cluster forget

fn forget(args: &[String]) -> i32 {
    let Ok(AdminArgs {
        admin, token, rest, ..
    }) = admin_args(args, "forget")
    else {
        return 2;
    };
    let [id] = rest.as_slice() else {
        eprintln!("shoal cluster forget: one node id, please\n{USAGE}");
        return 2;
    };
    if id.parse::<u64>().is_err() {
        eprintln!("shoal cluster forget: {id:?} is not a node id (a number)");
        return 2;
    }
    let path = format!("/api/v1/nodes/{id}");
    match ctl::request(
        &admin,
        token.as_deref(),
        "DELETE",
        &path,
        None,
        Duration::from_secs(120),
    ) {
        Ok((204 | 200, _)) => {
            println!("node {id} is no member any more");
            0
        }
        Ok((code, body)) => {
            eprintln!(
                "shoal cluster forget: DELETE {path}: HTTP {code}: {}",
                body.trim_end()
            );
            1
        }
        Err(e) => {
            eprintln!("shoal cluster forget: {e}");
            2
        }
    }
}

// ---------------------------------------------------------------------------------------
// shoal cluster status

fn status(args: &[String]) -> i32 {
    let Ok(AdminArgs {
        admin, token, json, ..
    }) = admin_args(args, "status")
    else {
        return 2;
    };
    let path = "/api/v1/cluster";
    let (code, body) = match ctl::request(
        &admin,
        token.as_deref(),
        "GET",
        path,
        None,
        Duration::from_secs(30),
    ) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("shoal cluster status: {e}");
            return 2;
        }
    };
    if code != 200 {
        eprintln!(
            "shoal cluster status: GET {path}: HTTP {code}: {}",
            body.trim_end()
        );
        return 1;
    }
    let view: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("shoal cluster status: GET {path}: not JSON ({e}): {body}");
            return 1;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_else(|_| body.clone())
        );
    } else {
        print!("{}", render_status(&view));
    }
    0
}

/// A node's view of the cluster (`GET /api/v1/cluster`) as text: a summary line, the
/// members, the groups.
fn render_status(view: &Value) -> String {
    if view["enabled"] != true {
        // A node of a version before a node alone was a cluster of one.
        return "not in a cluster: this node runs alone (no cluster_listen, seeds or discovery)\n"
            .to_owned();
    }
    let me = view["node_id"].as_u64().unwrap_or(0);
    if view["waiting"] == true {
        return format!(
            "node {me} is in no cluster yet and waits to be told one: shoal cluster join --admin URL SEED... (/readyz answers 503 until it has joined)\n"
        );
    }
    if view["joined"] == false {
        let seeds: Vec<&str> = view["seeds"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = format!(
            "node {me} has not joined its cluster yet (it keeps trying its seeds {}; /readyz answers 503 until it has)\n",
            seeds.join(", ")
        );
        if let Some(last) = view["last_error"].as_str() {
            out.push_str(&format!("last failure: {last}\n"));
        }
        return out;
    }
    let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
    let groups = view["groups"].as_array().cloned().unwrap_or_default();
    let down = nodes.iter().filter(|n| n["down"] == true).count();
    let leaderless = groups
        .iter()
        .filter(|g| g["leader"].as_u64().unwrap_or(0) == 0)
        .count();
    let mut out = String::new();
    if view["alone"] == true {
        out.push_str(&format!(
            "node {me} runs alone: a cluster of one with no cluster listener (restarted with cluster_listen, other nodes can join it)\n"
        ));
    }
    out += &format!(
        "node {me}'s view: {} member(s), {down} down; {} group(s), {}; {} routed filter(s)\n\n",
        nodes.len(),
        groups.len(),
        if leaderless == 0 {
            "each with a leader".to_owned()
        } else {
            format!("{leaderless} WITHOUT a leader")
        },
        view["routes"].as_u64().unwrap_or(0),
    );
    let yes_no = |v: &Value| if *v == true { "yes" } else { "no" }.to_owned();
    let mut members = vec![row(&["NODE", "ADDRESS", "MQTT", "ROLE", "DOWN"])];
    for n in &nodes {
        let id = n["id"].as_u64().unwrap_or(0);
        members.push(vec![
            if id == me {
                format!("{id} (this)")
            } else {
                id.to_string()
            },
            n["address"].as_str().unwrap_or("").to_owned(),
            n["mqtt"].as_str().unwrap_or("-").to_owned(),
            if n["frontend"] == true {
                "frontend"
            } else {
                "full"
            }
            .to_owned(),
            yes_no(&n["down"]),
        ]);
    }
    out.push_str(&table(&members));
    out.push('\n');
    let ids = |v: &Value| {
        let list: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.join(",")
        }
    };
    let number = |v: &Value| v.as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string());
    let mut rows = vec![row(&[
        "GROUP", "LEADER", "ROLE", "TERM", "LAST LOG", "APPLIED", "VOTERS", "LEARNERS",
    ])];
    for g in &groups {
        rows.push(vec![
            g["group"].as_str().unwrap_or("?").to_owned(),
            match g["leader"].as_u64() {
                Some(0) | None => "none".to_owned(),
                Some(leader) => leader.to_string(),
            },
            g["role"].as_str().unwrap_or("?").to_owned(),
            number(&g["term"]),
            number(&g["last_log"]),
            number(&g["applied"]),
            ids(&g["voters"]),
            ids(&g["learners"]),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Rows as left-aligned columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// shoal cluster local

/// What `shoal cluster local` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalOptions {
    nodes: u16,
    data_dir: PathBuf,
    mqtt_port: u16,
    admin_port: u16,
    cluster_port: u16,
    /// Flags given to every node.
    node_flags: Vec<String>,
}

impl LocalOptions {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            nodes: 3,
            data_dir: PathBuf::from("data/cluster"),
            mqtt_port: 1883,
            admin_port: 18083,
            cluster_port: 7946,
            node_flags: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--nodes" => {
                    let text = value(&mut it, "--nodes")?;
                    options.nodes = match text.parse::<u16>() {
                        Ok(n @ 1..=99) => n,
                        _ => return Err(format!("--nodes {text:?} is not between 1 and 99")),
                    };
                }
                "--data-dir" => options.data_dir = PathBuf::from(value(&mut it, "--data-dir")?),
                "--mqtt-port" => options.mqtt_port = port(&value(&mut it, arg)?, arg)?,
                "--admin-port" => options.admin_port = port(&value(&mut it, arg)?, arg)?,
                "--cluster-port" => options.cluster_port = port(&value(&mut it, arg)?, arg)?,
                "--" => {
                    options.node_flags = it.by_ref().cloned().collect();
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        for (flag, base) in [
            ("--mqtt-port", options.mqtt_port),
            ("--admin-port", options.admin_port),
            ("--cluster-port", options.cluster_port),
        ] {
            if u32::from(base) + u32::from(options.nodes) - 1 > 65535 {
                return Err(format!(
                    "{flag} {base}: {} nodes need ports up to {}",
                    options.nodes,
                    u32::from(base) + u32::from(options.nodes) - 1
                ));
            }
        }
        Ok(options)
    }

    /// Node `k`'s (1-based) addresses, data folder and flags.
    fn node(&self, k: u16) -> LocalNode {
        let at = |base: u16| format!("127.0.0.1:{}", base + k - 1);
        let mut flags = vec![
            "--node-id".to_owned(),
            k.to_string(),
            "--listen".to_owned(),
            at(self.mqtt_port),
            "--admin-listen".to_owned(),
            at(self.admin_port),
            "--cluster-listen".to_owned(),
            at(self.cluster_port),
            "--data-dir".to_owned(),
            self.data_dir.join(format!("node{k}")).display().to_string(),
        ];
        if k == 1 {
            // Node 1 bootstraps: with no state it starts the cluster, with its data it
            // rejoins it.
            flags.extend(["--bootstrap".to_owned(), "true".to_owned()]);
        } else {
            // The others join through node 1 (or, restarted, rejoin as themselves).
            flags.extend([
                "--seeds".to_owned(),
                format!("127.0.0.1:{}", self.cluster_port),
            ]);
        }
        flags.extend(self.node_flags.iter().cloned());
        LocalNode {
            id: k,
            mqtt: at(self.mqtt_port),
            admin: format!("http://{}", at(self.admin_port)),
            cluster: at(self.cluster_port),
            data_dir: self.data_dir.join(format!("node{k}")),
            flags,
        }
    }
}

/// One node of a local cluster.
#[derive(Debug, Clone)]
struct LocalNode {
    id: u16,
    mqtt: String,
    admin: String,
    cluster: String,
    data_dir: PathBuf,
    flags: Vec<String>,
}

/// The cluster keys `cluster local` sets, or must not let through from the environment
/// (a `SHOAL_SEEDS` there would stop node 1 from starting the cluster).
const CLUSTER_VARIABLES: [&str; 11] = [
    "SHOAL_NODE_ID",
    "SHOAL_LISTEN",
    "SHOAL_ADMIN_LISTEN",
    "SHOAL_CLUSTER_LISTEN",
    "SHOAL_CLUSTER_ADVERTISE",
    "SHOAL_SEEDS",
    "SHOAL_DISCOVERY",
    "SHOAL_BOOTSTRAP",
    "SHOAL_BOOTSTRAP_HOST",
    "SHOAL_ROLE",
    "SHOAL_DATA_DIR",
];

/// How long the nodes get to stop after SIGTERM before SIGKILL: shoal's drain (5 s) and
/// flush with room to spare.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How often the children and the signals are looked at.
const TICK: Duration = Duration::from_millis(100);

/// The last SIGTERM, SIGINT or SIGHUP received (0: none since the last look).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNAL.store(signal, Ordering::SeqCst);
}

fn install_signal_handlers() -> std::io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a plain sigaction with a handler that only stores to an atomic; the
        // struct is zeroed (no flags, empty mask) before the handler is set.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn take_signal() -> Option<i32> {
    match SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}

/// A running node: its process.
struct Running {
    node: LocalNode,
    child: Child,
    exited: Option<ExitStatus>,
    /// The threads copying its output: done once it exited (and its pipes closed).
    copiers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn signal(&self, signal: i32) {
        if self.exited.is_none() {
            // SAFETY: kill(2) on the pid of a child this process spawned and has not yet
            // reaped (`exited` is None), so the pid is still its.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Whether it has exited (reaping it if so).
    fn poll(&mut self) -> bool {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited.is_some()
    }
}

fn local(args: &[String]) -> i32 {
    if args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help" || a == "help")
    {
        println!("{USAGE}");
        return 0;
    }
    let options = match LocalOptions::parse(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("shoal cluster local: {e}\n{USAGE}");
            return 2;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("shoal cluster local: cannot find this binary to start the nodes: {e}");
            return 1;
        }
    };
    if let Err(e) = install_signal_handlers() {
        eprintln!("shoal cluster local: installing the signal handlers: {e}");
        return 1;
    }
    let mut nodes: Vec<Running> = Vec::new();
    for k in 1..=options.nodes {
        let node = options.node(k);
        match spawn(&exe, &node) {
            Ok((child, copiers)) => {
                say(&format!(
                    "started node {k} (pid {}): MQTT {}, admin {}, cluster {}, data {}",
                    child.id(),
                    node.mqtt,
                    node.admin,
                    node.cluster,
                    node.data_dir.display()
                ));
                nodes.push(Running {
                    node,
                    child,
                    exited: None,
                    copiers,
                });
            }
            Err(e) => {
                say(&format!("cannot start node {k}: {e}"));
                stop(&mut nodes, libc::SIGTERM);
                return 1;
            }
        }
    }
    supervise(&mut nodes)
}

/// Prints a line of this supervisor's own (not a node's), to stderr.
fn say(text: &str) {
    eprintln!("shoal cluster: {text}");
}

/// Starts one node, its output copied to ours line by line behind `nodeK | `.
fn spawn(
    exe: &std::path::Path,
    node: &LocalNode,
) -> std::io::Result<(Child, Vec<std::thread::JoinHandle<()>>)> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(&node.data_dir)?;
    let mut command = Command::new(exe);
    command
        .args(&node.flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the terminal reaches this supervisor only,
        // which passes it on once (and waits for the nodes).
        .process_group(0);
    for variable in CLUSTER_VARIABLES {
        command.env_remove(variable);
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid before the fork; in the child only async-signal-safe calls
        // (prctl, getppid, _exit).
        let parent = unsafe { libc::getpid() };
        unsafe {
            command.pre_exec(move || {
                // The node gets SIGTERM if this supervisor dies, even by SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn()?;
    let name = format!("node{}", node.id);
    let mut copiers = Vec::new();
    if let Some(out) = child.stdout.take() {
        copiers.push(copy_lines(out, name.clone(), false));
    }
    if let Some(err) = child.stderr.take() {
        copiers.push(copy_lines(err, name, true));
    }
    Ok((child, copiers))
}

/// Copies `from`'s lines to our stdout (or stderr), each behind `name | `.
fn copy_lines(
    from: impl std::io::Read + Send + 'static,
    name: String,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(from);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let text = format!("{name} | {}\n", line.trim_end_matches('\r'));
            // A closed stdout (the reader of our output went away) is no reason to stop
            // draining the node's pipe: it would block on a full pipe otherwise.
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(text.as_bytes())
            } else {
                std::io::stdout().lock().write_all(text.as_bytes())
            };
        }
    })
}

/// Whether `node` answers `/readyz` with 200.
fn ready(node: &LocalNode) -> bool {
    matches!(
        ctl::request(
            &node.admin,
            None,
            "GET",
            "/readyz",
            None,
            Duration::from_secs(1)
        ),
        Ok((200, _))
    )
}

/// Until a signal to stop or a node's death: announces the cluster once every node is
/// ready. The exit status.
fn supervise(nodes: &mut [Running]) -> i32 {
    let mut announced = false;
    let mut last_check = Instant::now() - Duration::from_secs(1);
    loop {
        match take_signal() {
            Some(libc::SIGHUP) => {
                say("SIGHUP: passed on to every node (reload)");
                for node in nodes.iter() {
                    node.signal(libc::SIGHUP);
                }
            }
            Some(signal) => {
                say(&format!("{}: stopping every node", signal_name(signal)));
                return stop(nodes, signal);
            }
            None => {}
        }
        for i in 0..nodes.len() {
            if nodes[i].poll() {
                let status = nodes[i].exited.expect("polled");
                say(&format!(
                    "node {} exited ({}): stopping the others",
                    nodes[i].node.id,
                    describe(status)
                ));
                stop(nodes, libc::SIGTERM);
                return 1;
            }
        }
        if !announced && last_check.elapsed() >= Duration::from_millis(250) {
            last_check = Instant::now();
            if nodes.iter().all(|n| ready(&n.node)) {
                announced = true;
                print_table(nodes);
            }
        }
        std::thread::sleep(TICK);
    }
}

/// The table of nodes, on stdout, once every one is ready.
fn print_table(nodes: &[Running]) {
    let mut rows = vec![row(&["NODE", "PID", "MQTT", "ADMIN", "CLUSTER", "DATA"])];
    for n in nodes {
        rows.push(vec![
            n.node.id.to_string(),
            n.child.id().to_string(),
            n.node.mqtt.clone(),
            n.node.admin.clone(),
            n.node.cluster.clone(),
            n.node.data_dir.display().to_string(),
        ]);
    }
    let text = format!(
        "shoal cluster: {} node(s) ready\n{}shoal cluster: status: shoal cluster status --admin {}; stop: Ctrl-C (or SIGTERM to pid {})\n",
        nodes.len(),
        table(&rows),
        nodes[0].node.admin,
        std::process::id()
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Sends `signal` to every running node and waits for them: SIGKILL for those still
/// running after `STOP_GRACE`, or at once on a second SIGTERM or SIGINT. 0 if every node
/// stopped in order, else 1.
fn stop(nodes: &mut [Running], signal: i32) -> i32 {
    for node in nodes.iter() {
        node.signal(signal);
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let mut running = 0;
        for node in nodes.iter_mut() {
            if !node.poll() {
                running += 1;
            }
        }
        if running == 0 {
            break;
        }
        let again = matches!(take_signal(), Some(libc::SIGTERM | libc::SIGINT));
        if again || Instant::now() >= deadline {
            say(&format!(
                "{running} node(s) still running{}: SIGKILL",
                if again {
                    " and asked again"
                } else {
                    " after the grace period"
                }
            ));
            for node in nodes.iter() {
                node.signal(libc::SIGKILL);
            }
            for node in nodes.iter_mut() {
                if node.exited.is_none() {
                    node.exited = node.child.wait().ok();
                }
            }
            break;
        }
        std::thread::sleep(TICK);
    }
    // Their last lines, before ours.
    for node in nodes.iter_mut() {
        for copier in node.copiers.drain(..) {
            let _ = copier.join();
        }
    }
    let mut code = 0;
    for node in nodes.iter() {
        match node.exited {
            Some(status) if status.success() => {}
            Some(status) => {
                say(&format!("node {}: {}", node.node.id, describe(status)));
                code = 1;
            }
            None => code = 1,
        }
    }
    if code == 0 {
        say("every node stopped");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn local_nodes_get_consecutive_ports_and_node_1_is_every_other_nodes_seed() {
        let options = LocalOptions::parse(&args(
            "--nodes 3 --mqtt-port 2000 --data-dir d -- --log warn",
        ))
        .expect("valid");
        let first = options.node(1);
        assert!(!first.flags.contains(&"--seeds".to_owned()), "{first:?}");
        assert!(
            first.flags.join(" ").contains("--bootstrap true"),
            "node 1 starts the cluster explicitly: {first:?}"
        );
        let third = options.node(3);
        assert_eq!(third.mqtt, "127.0.0.1:2002");
        assert_eq!(third.admin, "http://127.0.0.1:18085");
        assert_eq!(third.cluster, "127.0.0.1:7948");
        assert_eq!(third.data_dir, PathBuf::from("d/node3"));
        let flags = third.flags.join(" ");
        assert!(flags.contains("--node-id 3 "), "{flags}");
        assert!(flags.contains("--seeds 127.0.0.1:7946"), "{flags}");
        assert!(flags.ends_with("--log warn"), "{flags}");
        let defaults = LocalOptions::parse(&[]).expect("valid");
        assert_eq!(defaults.nodes, 3);
        assert_eq!(
            defaults.node(1).data_dir,
            PathBuf::from("data/cluster/node1")
        );
        for bad in [
            "--nodes 0",
            "--nodes x",
            "--mqtt-port 65535 --nodes 2",
            "--bogus",
        ] {
            assert!(LocalOptions::parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_tables_show_members_and_groups() {
        let view = serde_json::json!({
            "enabled": true, "node_id": 2, "routes": 4,
            "nodes": [
                {"id": 1, "address": "a:7946", "frontend": false, "down": false,
                 "mqtt": "m1:1883"},
                {"id": 2, "address": "b:7946", "frontend": false, "down": true},
                {"id": 3, "address": "c:7946", "frontend": true, "down": false},
            ],
            "groups": [
                {"group": "meta", "leader": 1, "role": "follower", "term": 3, "last_log": 9,
                 "applied": 9, "voters": [1, 2], "learners": [3]},
                {"group": "routes/0", "leader": 0, "role": "candidate", "term": 4,
                 "last_log": 5, "applied": 5, "voters": [1, 2], "learners": []},
            ],
        });
        let text = render_status(&view);
        assert!(text.starts_with("node 2's view: 3 member(s), 1 down; 2 group(s), 1 WITHOUT a leader; 4 routed filter(s)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "1         a:7946   m1:1883  full      no",
            "2 (this)  b:7946   -        full      yes",
            "3         c:7946   -        frontend  no",
            "meta      1       follower   3     9         9        1,2     3",
            "routes/0  none    candidate  4     5         5        1,2     -",
        ] {
            assert!(lines.contains(&line), "{line:?} in\n{text}");
        }
        let old = render_status(&serde_json::json!({"enabled": false, "nodes": ["x"]}));
        assert!(old.starts_with("not in a cluster"), "{old}");
        let mut alone = view.clone();
        alone["alone"] = serde_json::json!(true);
        let alone = render_status(&alone);
        assert!(alone.starts_with("node 2 runs alone"), "{alone}");
        assert!(alone.contains("node 2's view: 3 member(s)"), "{alone}");
        let joining = render_status(&serde_json::json!({"enabled": true, "joined": false,
            "node_id": 4, "nodes": [], "groups": [], "routes": 0}));
        assert!(joining.starts_with("node 4 has not joined"), "{joining}");
        let waiting = render_status(&serde_json::json!({"enabled": true, "joined": false,
            "waiting": true, "node_id": 5, "seeds": [], "nodes": [], "groups": []}));
        assert!(waiting.contains("shoal cluster join"), "{waiting}");
        let trying = render_status(&serde_json::json!({"enabled": true, "joined": false,
            "waiting": false, "node_id": 5, "seeds": ["a:1"], "last_error": "a:1: refused"}));
        assert!(
            trying.contains("a:1") && trying.contains("last failure: a:1: refused"),
            "{trying}"
        );
    }
}
