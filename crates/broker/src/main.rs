//! The `shoal` binary: one node. Reads the configuration, installs the allocator, the log
//! subscriber and the metrics exporter, runs until SIGTERM or SIGINT (SIGHUP reloads the
//! password file, the ACL and TLS certificates), then shuts down in order.
//!
//! `shoal passwd add|remove|list FILE [USER]` manages a password file instead,
//! `shoal ctl ...` talks to a running node's admin API, and `shoal cluster local|status`
//! runs a cluster of nodes on this machine or shows a node's view of its cluster.
//!
//! Exit status: 0 stopped in order, 1 failed while running, 2 configuration refused, 3 the
//! node cannot start here (an address in use, the data folder locked). An error is printed
//! once, as one line: each error's message already names its cause.

use std::io::IsTerminal;

use anyhow::Context;
use shoal_broker::{Config, Node};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("passwd") => std::process::exit(shoal_access::password::passwd_command(&args[2..])),
        Some("ctl") => std::process::exit(shoal_broker::ctl::command(&args[2..])),
        Some("cluster") => std::process::exit(shoal_broker::cluster_cmd::command(&args[2..])),
        _ => {}
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shoal: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    if let Err(e) = run(config) {
        let status = e
            .downcast_ref::<shoal_broker::StartError>()
            .map_or(1, shoal_broker::StartError::exit_status);
        // `{:#}`: the message and its causes on one line, each said once (our errors
        // already carry their source's text, so the chain is not printed again).
        eprintln!("shoal: {}", one_line(&e));
        std::process::exit(status);
    }
}

/// The error's message, then each cause whose text it does not already contain.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn run(config: Config) -> anyhow::Result<()> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shoal")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // The handlers go in before the node starts: a SIGTERM that arrives while it starts,
        // once clients may already be connected, must still stop it in order.
        let mut signals = Signals::install()?;
        // A node of a cluster may wait long to join: SIGTERM or SIGINT meanwhile ends it
        // at once (it has no client yet to drain).
        let node = tokio::select! {
            node = Node::start(config, Some(prometheus)) => node?,
            signal = signals.stop() => {
                tracing::info!("{signal} while starting: stopped");
                return Ok(());
            }
        };
        serve_until_signal(&node, signals).await?;
        node.shutdown().await;
        Ok(())
    })
}

/// The signals the node obeys.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
        })
    }
}

impl Signals {
    /// The next SIGTERM or SIGINT: its name.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs until SIGTERM or SIGINT; reloads on SIGHUP.
async fn serve_until_signal(node: &Node, signals: Signals) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT"); return Ok(()); }
            _ = hup.recv() => { tracing::info!("SIGHUP: reloading"); node.reload(); }
            _ = node.stop_requested() => { tracing::info!("left the cluster"); return Ok(()); }
        }
    }
}
