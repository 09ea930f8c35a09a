//! `Node`: a running broker: its listeners and background tasks, and its orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use shoal_store::{Store, StoreConfig, StoreError};
use tokio::task::JoinSet;

use crate::access::Access;
use crate::auth::Hooks;
use crate::broker::Broker;
use crate::clock::Clock;
use crate::config::Config;
use crate::hash_gate::HashStats;
use crate::listener::Listener;
use crate::{admin, listener, sys};

/// How often expired sessions and messages are swept.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long it waits for them when the store failed: every client was sent away at the
/// failure, and what is still open waits on a write that will not come.
const BROKEN_STORE_GRACE: Duration = Duration::from_secs(1);
/// How long a node of a cluster spends handing its Raft leaderships over when it stops.
const HANDOFF_GRACE: Duration = Duration::from_secs(5);
/// How long a node of a cluster waits, when it stops, for the routes of the clients that
/// left to be removed everywhere.
const DEPART_GRACE: Duration = Duration::from_secs(5);

/// Why a node could not start. [`StartError::exit_status`] is the process's exit status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another process (another shoal) holds the data folder's lock.
    #[error("another shoal is using {} (lock held): stop it, or give this node its own data_dir", path.display())]
    Locked {
        /// The data folder.
        path: std::path::PathBuf,
    },
    /// The store could not be opened or loaded.
    #[error("store in {path}: {source}")]
    Store {
        /// The data folder.
        path: std::path::PathBuf,
        /// The store's error.
        source: StoreError,
    },
    /// The retained messages of an older data folder could not be moved into their Raft
    /// groups.
    #[error("moving the retained messages into their Raft groups: {message}")]
    Migrate {
        /// Why.
        message: String,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The node could not join (or start) its cluster.
    #[error("cluster: {source}")]
    Cluster {
        /// Why.
        source: shoal_cluster::ClusterError,
    },
    /// A listener's TLS files, the password file or the ACL cannot be used.
    #[error("{what}: {reason}")]
    Access {
        /// Which listener or file.
        what: String,
        /// Why.
        reason: String,
    },
}

impl StartError {
    /// The exit status the binary ends with (documented in `shoal --help`): 2 for a
    /// configuration to fix (a file it names cannot be used), 3 for a node that cannot run
    /// here (an address in use, the data folder locked or unusable).
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::Access { .. } => 2,
            Self::Locked { .. }
            | Self::Store { .. }
            | Self::Bind { .. }
            | Self::Cluster { .. }
            | Self::Migrate { .. } => 3,
        }
    }

    fn store(path: std::path::PathBuf, source: StoreError) -> Self {
        // sled reports a held lock as an IO error with this text (and EWOULDBLOCK).
        if source.to_string().contains("could not acquire lock") {
            Self::Locked { path }
        } else {
            Self::Store { path, source }
        }
    }
}

/// How often the password file, the ACL and TLS files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// The longest the keep-alive wheel sleeps.
const KEEP_ALIVE_MAX_WAIT: Duration = Duration::from_secs(1);

/// A running node.
#[derive(Debug)]
pub struct Node {
    broker: Arc<Broker>,
    listeners: Vec<(Arc<Listener>, SocketAddr)>,
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
        let clock = Clock::new();
        let access = Access::load(&config, clock).map_err(|reason| StartError::Access {
            what: "access control".into(),
            reason,
        })?;
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let what = format!(
                "listener {:?} ({} on {})",
                listener.name,
                listener.kind.label(),
                listener.bind
            );
            let listener =
                Listener::new(listener.clone()).map_err(|reason| StartError::Access {
                    what: what.clone(),
                    reason,
                })?;
            let bound = listener::bind(&listener).map_err(|source| StartError::Bind {
                addr: listener.config.bind,
                what: what.clone(),
                source,
            })?;
            let addr = bound.local_addr().map_err(|source| StartError::Bind {
                addr: listener.config.bind,
                what,
                source,
            })?;
            listeners.push((listener, bound, addr));
        }
        let admin = listener::bind_tcp(config.admin_listen).map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            what: "admin".into(),
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            what: "admin".into(),
            source,
        })?;
        let store = Store::open(&path, StoreConfig::default())
            .map_err(|source| StartError::store(path.clone(), source))?;
        let broker = Broker::new(config, store, hooks, access, clock)
            .map_err(|source| StartError::Store { path, source })?;
        let config = broker.config().clone();
        // A node of a cluster is ready once it has joined (the admin listener answers
        // /healthz meanwhile, and /readyz 503).
        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let mut running = Vec::new();
        tasks.spawn(admin::run(
            Arc::clone(&broker),
            admin,
            prometheus,
            Arc::clone(&ready),
        ));
        {
            let settings = &config.cluster;
            let host = Arc::new(crate::broker::BrokerHost(Arc::downgrade(&broker)));
            let cluster = shoal_cluster::Cluster::open(settings.node.clone(), &broker.store, host)
                .await
                .map_err(|source| StartError::Cluster { source })?;
            // Meanwhile the admin API shows how it enters, and `cluster/join` gives it seeds.
            broker.set_entering(cluster.clone());
            cluster
                .enter()
                .await
                .map_err(|source| StartError::Cluster { source })?;
            tracing::info!(
                node = cluster.id(),
                alone = settings.is_alone(),
                "joined the cluster"
            );
            broker
                .migrate_retained(&cluster)
                .await
                .map_err(|e| StartError::Migrate {
                    message: e.to_string(),
                })?;
            broker
                .migrate_bans(&cluster)
                .await
                .map_err(|e| StartError::Migrate {
                    message: e.to_string(),
                })?;
            // The persistent sessions, read back once the store holds every session write
            // committed before (and the route index every route); those another node
            // holds now are let go.
            cluster
                .sync_groups()
                .await
                .map_err(|source| StartError::Cluster { source })?;
            broker.restore().map_err(|source| StartError::Store {
                path: config.data_dir.clone(),
                source,
            })?;
            broker.settle_sessions(&cluster).await;
            broker.set_sessions_ready();
            // This node's routes are those of its sessions (persistent ones read back).
            let _ = cluster.reconcile_routes(&broker.local_filters());
            broker.set_cluster(cluster.clone());
            broker.serve_if_in_touch(&cluster);
            tasks.spawn(Arc::clone(&broker).watch_lease(cluster));
            ready.store(true, std::sync::atomic::Ordering::Release);
        }
        for (listener, bound, addr) in listeners {
            tracing::info!(listener = %listener.config.name, kind = listener.config.kind.label(), %addr, "listening");
            tasks.spawn(listener::run(
                Arc::clone(&broker),
                Arc::clone(&listener),
                bound,
            ));
            running.push((listener, addr));
        }
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
                    _ = ticker.tick() => {
                        sweeper.expire();
                        sweeper.access.sweep();
                    }
                }
            }
        });
        let wheel = Arc::clone(&broker);
        tasks.spawn(async move {
            let mut shutdown = wheel.shutdown.subscribe();
            loop {
                let now = wheel.now();
                wheel.keep_alive.run_due(&wheel, now);
                // Sessions are filed at least 1.5 s ahead (keep alive 1 s), so a second's
                // sleep with nothing due misses none.
                let wait = wheel
                    .keep_alive
                    .next_due()
                    .map_or(KEEP_ALIVE_MAX_WAIT, |at| {
                        Duration::from_millis(at.as_millis().saturating_sub(now.as_millis()))
                            .min(KEEP_ALIVE_MAX_WAIT)
                    });
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
        let watcher = Arc::clone(&broker);
        let watched: Vec<Arc<Listener>> = running.iter().map(|(l, _)| Arc::clone(l)).collect();
        tasks.spawn(async move {
            let mut shutdown = watcher.shutdown.subscribe();
            let mut ticker = tokio::time::interval(RELOAD_CHECK);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = ticker.tick() => reload(&watcher, &watched, false),
                }
            }
        });
        tracing::info!(%admin_addr, data_dir = %config.data_dir.display(), "shoal is up");
        Ok(Self {
            broker,
            listeners: running,
            admin_addr,
            tasks,
        })
    }

    /// The address of the first MQTT listener (the plain TCP one, when there is one).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// The address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(l, _)| l.config.name == name)
            .map(|(_, addr)| *addr)
    }

    /// Reloads the password file, the ACL and every listener's TLS files now (SIGHUP).
    pub fn reload(&self) {
        let listeners: Vec<Arc<Listener>> =
            self.listeners.iter().map(|(l, _)| Arc::clone(l)).collect();
        reload(&self.broker, &listeners, true);
    }

    /// The address the admin HTTP listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The password hashes the node has computed (tests, and the `/metrics` counter
    /// `shoal_auth_hashes_total`).
    pub fn hash_stats(&self) -> HashStats {
        self.broker.access.hash_stats()
    }

    /// The node's shared state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Resolves when the node asks to be stopped by itself (it left its cluster).
    pub async fn stop_requested(&self) {
        self.broker.stop.notified().await;
    }

    /// Stops accepting, tells every client the server is shutting down (MQTT 5: DISCONNECT
    /// 0x8B), waits for connections to close (at most a few seconds), flushes the store.
    ///
    /// A node of a cluster drains first (it stays a member, and comes back with its
    /// data): it hands its Raft leaderships over, sends its MQTT 5 clients to another node
    /// (DISCONNECT 0x9C with a Server Reference, when one is known), and once they are
    /// gone waits until the routes of its clean sessions are removed everywhere (those of
    /// its persistent sessions stay: see `shoal_cluster`'s `drain.rs`). Each step is
    /// bounded (`HANDOFF_GRACE`, `SHUTDOWN_GRACE`, `DEPART_GRACE`).
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        // The listeners stop accepting; a CONNECT in progress is refused.
        let _ = self.broker.shutdown.send(true);
        match self.broker.cluster() {
            Some(cluster) => self.broker.drain(cluster, HANDOFF_GRACE).await,
            None => self
                .broker
                .kick_all(shoal_codec::DisconnectReasonCode::ServerShuttingDown),
        }
        let grace = if self.broker.store.is_broken() {
            BROKEN_STORE_GRACE
        } else {
            SHUTDOWN_GRACE
        };
        let deadline = tokio::time::Instant::now() + grace;
        while crate::stats::Stats::get(&self.broker.stats.connected) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let open = crate::stats::Stats::get(&self.broker.stats.connected);
        if open > 0 {
            tracing::warn!(
                open,
                waited_ms = grace.as_millis() as u64,
                "shutting down with connections still open"
            );
        }
        if let Some(cluster) = self.broker.cluster()
            && tokio::time::timeout(DEPART_GRACE, cluster.depart())
                .await
                .is_err()
        {
            tracing::warn!(
                "draining: the routes of the clients that left were not all removed in time; publishers elsewhere may get 0x80 for them until the failure timeout"
            );
        }
        self.tasks.shutdown().await;
        for (listener, _) in &self.listeners {
            listener.close_quic().await;
        }
        // Bounded: a node whose disk failed must still stop.
        if let Some(cluster) = self.broker.cluster()
            && tokio::time::timeout(SHUTDOWN_GRACE, cluster.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("the Raft groups did not stop in time");
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.broker.store.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final store flush failed"),
            Err(_) => tracing::error!("the final store flush did not finish in time"),
        }
        tracing::info!("stopped");
        if self.broker.store.is_broken() {
            // sled flushes when its last handle drops, and after a failed write that
            // flush can hang for ever: a broken store is left to the process's exit
            // (what was acknowledged is durable already; nothing else is owed).
            std::mem::forget(self);
        }
    }
}

/// Reloads what changed (everything, with `force`).
fn reload(broker: &Broker, listeners: &[Arc<Listener>], force: bool) {
    if broker.access.reload(force) {
        broker.reapply_acl();
    }
    for listener in listeners {
        listener.reload_tls(force);
    }
}
