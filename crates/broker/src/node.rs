//! `Node`: a running broker: its listeners and background tasks, and its orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use shoal_store::{Store, StoreConfig, StoreError};
use tokio::task::JoinSet;

use crate::auth::Hooks;
use crate::broker::Broker;
use crate::config::Config;
use crate::{admin, listener, sys};

/// How often expired sessions and messages are swept.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or loaded.
    #[error("store in {path}: {source}")]
    Store {
        /// The data folder.
        path: std::path::PathBuf,
        /// The store's error.
        source: StoreError,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    broker: Arc<Broker>,
    mqtt_addr: SocketAddr,
    admin_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Node {
    /// Opens the store, restores the state, binds the listeners and starts serving.
    /// `prometheus` renders `/metrics` (the binary installs the recorder; tests may not).
    pub async fn start(
        config: Config,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        Self::start_with(config, prometheus, Hooks::default()).await
    }

    /// `start`, with extensions (enhanced authentication methods).
    pub async fn start_with(
        config: Config,
        prometheus: Option<PrometheusHandle>,
        hooks: Hooks,
    ) -> Result<Self, StartError> {
        let path = config.data_dir.clone();
        let store =
            Store::open(&path, StoreConfig::default()).map_err(|source| StartError::Store {
                path: path.clone(),
                source,
            })?;
        let broker = Broker::new(config, store, hooks)
            .map_err(|source| StartError::Store { path, source })?;
        let config = broker.config().clone();
        let bind = |addr, what| {
            listener::bind(addr).map_err(|source| StartError::Bind { addr, what, source })
        };
        let mqtt = bind(config.listen, "mqtt")?;
        let admin = bind(config.admin_listen, "admin")?;
        let mqtt_addr = mqtt.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            what: "mqtt",
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            what: "admin",
            source,
        })?;
        let ready = Arc::new(AtomicBool::new(true));
        let mut tasks = JoinSet::new();
        tasks.spawn(listener::run(Arc::clone(&broker), mqtt));
        tasks.spawn(admin::run(Arc::clone(&broker), admin, prometheus, ready));
        if let Some(interval) = config.sys_interval {
            tasks.spawn(sys::run(Arc::clone(&broker), interval));
        }
        let sweeper = Arc::clone(&broker);
        tasks.spawn(async move {
            let mut shutdown = sweeper.shutdown.subscribe();
            let mut ticker = tokio::time::interval(EXPIRY_SWEEP);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = ticker.tick() => sweeper.expire(),
                }
            }
        });
        tracing::info!(%mqtt_addr, %admin_addr, data_dir = %config.data_dir.display(), "shoal is up");
        Ok(Self {
            broker,
            mqtt_addr,
            admin_addr,
            tasks,
        })
    }

    /// The address the MQTT listener is bound to.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The address the admin HTTP listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The node's shared state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, tells every client the server is shutting down (MQTT 5: DISCONNECT
    /// 0x8B), waits for connections to close (at most a few seconds), flushes the store.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        let _ = self.broker.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while crate::stats::Stats::get(&self.broker.stats.connected) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.tasks.shutdown().await;
        if let Err(e) = self.broker.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        tracing::info!("stopped");
    }
}
