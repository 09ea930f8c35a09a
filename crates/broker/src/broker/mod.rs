//! `Broker`: the state of a node that its connection tasks share: sessions, the
//! subscription index, retained messages, the store, and dispatch between them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use shoal_codec::MqttString;
use shoal_session::{Session, SessionConfig, Timestamp};
use shoal_store::{Loaded, Store};
use shoal_topic::SubscriptionIndex;
use tokio::sync::watch;

use crate::access::Access;
use crate::auth::Hooks;
use crate::clock::Clock;
use crate::config::Config;
use crate::slot::{ClientIdKey, IdKey, SessionSlot, SlotTable};
use crate::stats::Stats;

/// The shared state of one node.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: Config,
    /// Extensions: enhanced authentication methods.
    pub(crate) hooks: Hooks,
    pub(crate) session_config: Arc<SessionConfig>,
    pub(crate) clock: Clock,
    pub(crate) store: Store,
    /// Sessions by client identifier.
    sessions: Mutex<SlotTable<ClientIdKey>>,
    /// Sessions by subscriber id (the ids the subscription index holds).
    by_id: RwLock<SlotTable<IdKey>>,
    pub(crate) index: RwLock<SubscriptionIndex<u64>>,
    pub(crate) retained: RwLock<retained::Retained>,
    next_id: AtomicU64,
    /// Rotates the choice of member in shared subscription groups.
    shared_cursor: AtomicUsize,
    pub(crate) stats: Stats,
    /// Becomes true when the node shuts down.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Authentication, ACL, bans.
    pub(crate) access: Access,
    /// Handshakes (TLS, WebSocket, PROXY, QUIC) allowed at once.
    pub(crate) handshakes: Arc<tokio::sync::Semaphore>,
    /// Signalled whenever a connection lets go of its session (for takeovers).
    pub(crate) detached: tokio::sync::Notify,
    /// Every connection's keep alive.
    pub(crate) keep_alive: crate::keepalive::KeepAlive,
    /// Set once a store write or flush failed (`Broker::store_failed`).
    store_broken: std::sync::atomic::AtomicBool,
    /// Delayed Wills, session and retained expiry, by time.
    deadlines: deadlines::Deadlines,
    /// This node's part of the cluster, once it has joined (never, for a node alone).
    cluster: std::sync::OnceLock<shoal_cluster::Cluster>,
    /// This node's part of the cluster from the moment it is opened, joined or not (the
    /// admin API's `cluster/join` gives it seeds while it waits).
    entering: std::sync::OnceLock<shoal_cluster::Cluster>,
    /// Set while a node of a cluster is cut off from the majority (its lease lapsed, or it
    /// has not joined yet): it serves no client.
    isolated: std::sync::atomic::AtomicBool,
    /// Notified when the node should stop by itself (it left its cluster).
    pub(crate) stop: tokio::sync::Notify,
    /// Subscriber ids that hold routes for sessions on their way to this node
    /// (`moves.rs`): a publication reaching one fails rather than be acknowledged.
    moving: RwLock<std::collections::HashSet<u64>>,
    /// Set once the persistent sessions are read back (`restore`).
    sessions_ready: std::sync::atomic::AtomicBool,
    /// Makes the dedup tags of QoS 2 messages that go to other nodes (`dedup.rs`).
    tags: dedup::Tags,
    /// The marks of recent deliveries under a tag (`dedup.rs`).
    marks: Mutex<dedup::RecentMarks>,
    /// Set while the session shards' expiry this node leads is under way (`expiry.rs`).
    expiring: Arc<std::sync::atomic::AtomicBool>,
}

mod acl;
mod bans;
mod cluster;
mod deadlines;
mod dedup;
mod dispatch;
mod expiry;
mod moves;
mod ownership;
mod persist;
mod retained;
mod will;

pub(crate) use cluster::{BrokerHost, Pending};
pub(crate) use moves::wait_all;
pub(crate) use persist::Receipts;

impl Broker {
    /// A node with this configuration over an open store (its sessions are read back by
    /// `restore` once it is in its cluster).
    pub(crate) fn new(
        config: Config,
        store: Store,
        hooks: Hooks,
        access: Access,
        clock: Clock,
    ) -> Result<Arc<Self>, shoal_store::StoreError> {
        let session_config = Arc::new(config.session.clone());
        let (shutdown, _) = watch::channel(false);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(config.max_handshakes));
        let broker = Arc::new(Self {
            config,
            hooks,
            session_config,
            clock,
            access,
            handshakes,
            detached: tokio::sync::Notify::new(),
            keep_alive: Default::default(),
            store_broken: Default::default(),
            deadlines: Default::default(),
            cluster: std::sync::OnceLock::new(),
            entering: std::sync::OnceLock::new(),
            // Until the node has entered its cluster (even a cluster of one).
            isolated: std::sync::atomic::AtomicBool::new(true),
            stop: tokio::sync::Notify::new(),
            moving: RwLock::default(),
            store,
            sessions: Mutex::default(),
            by_id: RwLock::default(),
            index: RwLock::new(SubscriptionIndex::new()),
            retained: RwLock::default(),
            next_id: AtomicU64::new(1),
            shared_cursor: AtomicUsize::new(0),
            stats: Stats::default(),
            shutdown,
            sessions_ready: std::sync::atomic::AtomicBool::new(false),
            tags: Default::default(),
            expiring: Default::default(),
            marks: Mutex::default(),
        });
        Ok(broker)
    }

    /// Reads the persistent sessions back from the store, once the node is in its cluster
    /// and its store holds every session write committed before (`Cluster::sync_groups`):
    /// read earlier, a session would miss the writes the session group applies again at
    /// start. Forwarded publications are refused until then (`sessions_ready`).
    pub(crate) fn restore(self: &Arc<Self>) -> Result<(), shoal_store::StoreError> {
        let now = self.clock.now();
        // Retained messages come from their Raft groups, as the cluster applies them (those
        // the store still holds from before are moved there: `migrate_retained`).
        for mut record in loaded(self.store.load_sessions()?, "session") {
            let queue = loaded(self.store.load_queue(&record.client_id)?, "queued message");
            // A session that was connected when the node stopped lost its connection
            // abnormally now: its Will is due after its delay, as if it had just dropped.
            if record.disconnected_at.is_none() {
                record.disconnected_at = Some(now);
            }
            let session = self.restored(record, queue)?;
            let slot = self.insert_slot(session);
            let session = slot.lock();
            for sub in session.subscriptions() {
                let _ =
                    write(&self.index).insert(slot.id, &sub.filter, sub.options, sub.identifier);
            }
            self.file_session_deadline(&slot, &session);
        }
        let sessions = lock(&self.sessions).len();
        tracing::info!(
            sessions,
            retained = read(&self.retained).len(),
            "state restored"
        );
        Ok(())
    }

    /// A session as the store kept it, with the dedup tags of its QoS 2 receipts.
    pub(crate) fn restored(
        &self,
        record: shoal_session::SessionRecord,
        queue: Vec<(u64, shoal_session::OutboundMessage)>,
    ) -> Result<Session, shoal_store::StoreError> {
        let tags = self.store.load_tags(&record.client_id)?;
        let mut session = Session::restore(record, queue, Arc::clone(&self.session_config));
        for (packet_id, tag) in tags {
            session.set_qos2_tag(packet_id, tag.tag);
        }
        Ok(session)
    }

    /// The sessions are read back and settled: forwarded publications are taken from now on.
    pub(crate) fn set_sessions_ready(&self) {
        self.sessions_ready.store(true, Ordering::Release);
    }

    /// Whether the sessions are read back (see `restore`).
    pub(crate) fn sessions_ready(&self) -> bool {
        self.sessions_ready.load(Ordering::Acquire)
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A slot for `session`, with a new subscriber id; not yet in the tables.
    fn new_slot(&self, session: Session) -> Arc<SessionSlot> {
        Arc::new(SessionSlot::new(self.next_subscriber_id(), session))
    }

    /// A new subscriber id.
    fn next_subscriber_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts a restored session in the tables.
    fn insert_slot(&self, session: Session) -> Arc<SessionSlot> {
        let slot = self.new_slot(session);
        lock(&self.sessions).insert(Arc::clone(&slot));
        write(&self.by_id).insert(Arc::clone(&slot));
        slot
    }

    /// The session of `client_id`, if the node has one.
    pub(crate) fn session(&self, client_id: &str) -> Option<Arc<SessionSlot>> {
        lock(&self.sessions).get(client_id).cloned()
    }

    /// Ends a session that the client id table no longer lists (see `ownership.rs`, the
    /// only callers): its subscriptions leave the index, its subscriber id is forgotten,
    /// and its state leaves the store. Called under the table's lock, so that removing the
    /// stored state orders before any write of a session that takes the client id next.
    fn discard_unlisted(&self, slot: &Arc<SessionSlot>) {
        let (filters, stored) = {
            let session = slot.lock();
            let filters: Vec<MqttString> = session
                .subscriptions()
                .iter()
                .map(|s| s.filter.clone())
                .collect();
            (filters, session.is_persistent())
        };
        self.unsubscribe(slot.id, filters.iter().map(|f| f.as_str()));
        write(&self.by_id).remove(slot);
        if stored {
            // Through the session group, as the session's own writes (after them).
            let mut batch = shoal_store::WriteBatch::new();
            batch.remove_session(&slot.client_id);
            batch.fence(&slot.client_id, slot.epoch());
            let _ = self.apply(&batch, false);
        }
    }

    /// The session with this subscriber id, if it still exists.
    pub(crate) fn slot_by_id(&self, id: u64) -> Option<Arc<SessionSlot>> {
        read(&self.by_id).get(&id).cloned()
    }

    /// Every session, as a snapshot (the map's lock is not held while they are visited).
    pub(crate) fn slots(&self) -> Vec<Arc<SessionSlot>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// Asks every attached connection to end with `reason`.
    pub(crate) fn kick_all(&self, reason: shoal_codec::DisconnectReasonCode) {
        for slot in self.slots() {
            if slot.connected_as().is_some() {
                slot.kick(reason);
            }
        }
    }

    /// Ends the connections a new ban covers (DISCONNECT 0x98, administrative action).
    pub(crate) fn kick_banned(&self, ban: &shoal_access::ban::Ban) {
        let mut only = shoal_access::ban::Bans::new();
        only.add(ban.clone());
        let now = self.access.now();
        for slot in self.slots() {
            let Some((username, addr)) = slot.connected_as() else {
                continue;
            };
            if only
                .check(now, &slot.client_id, username.as_deref(), addr)
                .is_some()
            {
                slot.kick(shoal_codec::DisconnectReasonCode::AdministrativeAction);
            }
        }
    }

    /// Sessions held, subscriptions, retained messages, queued messages: for metrics and
    /// $SYS.
    pub(crate) fn census(&self) -> Census {
        // A snapshot: no session is locked under the table's lock.
        let sessions = self.slots();
        let queued = sessions.iter().map(|s| s.lock().queued()).sum();
        Census {
            sessions: sessions.len(),
            subscriptions: read(&self.index).len(),
            retained: read(&self.retained).len(),
            queued,
        }
    }
}

/// Counts of what the node holds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Census {
    pub(crate) sessions: usize,
    pub(crate) subscriptions: usize,
    pub(crate) retained: usize,
    pub(crate) queued: usize,
}

/// The records a load read; corrupt ones are logged and left in the store (an operator
/// must look at them), not allowed to stop the node.
fn loaded<T>(loaded: Loaded<T>, what: &str) -> Vec<T> {
    for corrupt in &loaded.corrupt {
        tracing::error!(what, record = ?corrupt, "a stored record does not decode; left aside");
    }
    loaded.records
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
