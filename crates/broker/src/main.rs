//! The `shoal` binary: one node. Reads the configuration, installs the allocator, the log
//! subscriber and the metrics exporter, runs until SIGTERM or SIGINT, then shuts down in
//! order.

use anyhow::Context;
use shoal_broker::{Config, Node};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
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
        let node = Node::start(config, Some(prometheus)).await?;
        wait_for_signal().await?;
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        r = tokio::signal::ctrl_c() => { r.context("SIGINT handler")?; tracing::info!("SIGINT"); }
    }
    Ok(())
}
