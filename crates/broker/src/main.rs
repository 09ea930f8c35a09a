//! The `shoal` binary: one node. Reads the configuration, installs the allocator, the log
//! subscriber and the metrics exporter, runs until SIGTERM or SIGINT (SIGHUP reloads the
//! password file, the ACL and TLS certificates), then shuts down in order.
//!
//! `shoal passwd add|remove|list FILE [USER]` manages a password file instead.

use anyhow::Context;
use shoal_broker::{Config, Node};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("passwd") {
        std::process::exit(shoal_access::password::passwd_command(&args[2..]));
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
        .init();
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
        let signals = Signals::install()?;
        let node = Node::start(config, Some(prometheus)).await?;
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
        }
    }
}
