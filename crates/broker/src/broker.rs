//! `Broker`: the state of a node that its connection tasks share: sessions, the
//! subscription index, retained messages, the store, and dispatch between them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use shoal_codec::{MqttString, QoS};
use shoal_session::{Change, Delivery, Message, Session, SessionConfig, Timestamp, WillRecord};
use shoal_store::{Loaded, Store, WriteBatch};
use shoal_topic::{Recipients, RetainedIndex, SubscriptionIndex};
use tokio::sync::watch;

use crate::access::Access;
use crate::auth::Hooks;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics as m;
use crate::slot::{ClientIdKey, IdKey, SessionSlot, SlotTable};
use crate::stats::Stats;
use shoal_access::acl::{ClientAcl, SubscribeDecision};

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
    pub(crate) retained: RwLock<RetainedIndex<Arc<Message>>>,
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
}

/// Most store expiry-index entries looked at per sweep.
const EXPIRY_BATCH: usize = 10_000;

/// What a dispatch needs before its publisher may be acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Dispatched {
    /// Something was written to the store: flush before acknowledging.
    pub(crate) needs_flush: bool,
    /// How many sessions the message went to.
    pub(crate) recipients: usize,
}

impl Broker {
    /// A node with this configuration over an open store: loads the persistent sessions,
    /// their queues and the retained messages back.
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
            store,
            sessions: Mutex::default(),
            by_id: RwLock::default(),
            index: RwLock::new(SubscriptionIndex::new()),
            retained: RwLock::new(RetainedIndex::new()),
            next_id: AtomicU64::new(1),
            shared_cursor: AtomicUsize::new(0),
            stats: Stats::default(),
            shutdown,
        });
        broker.restore()?;
        Ok(broker)
    }

    fn restore(self: &Arc<Self>) -> Result<(), shoal_store::StoreError> {
        let now = self.clock.now();
        for message in loaded(self.store.load_retained()?, "retained message") {
            let message = Arc::new(message);
            write(&self.retained).insert(&message.topic, message.clone());
        }
        for mut record in loaded(self.store.load_sessions()?, "session") {
            let queue = loaded(self.store.load_queue(&record.client_id)?, "queued message");
            // A session that was connected when the node stopped lost its connection
            // abnormally: its Will is due.
            let crashed = record.disconnected_at.is_none();
            if crashed {
                record.disconnected_at = Some(now);
            }
            let session = Session::restore(record, queue, Arc::clone(&self.session_config));
            let slot = self.insert_slot(session);
            let mut session = slot.lock();
            for sub in session.subscriptions().to_vec() {
                let _ =
                    write(&self.index).insert(slot.id, &sub.filter, sub.options, sub.identifier);
            }
            let will = if crashed {
                session.record().will.as_deref().cloned()
            } else {
                None
            };
            if let Some(will) = will {
                session.set_will(None);
                drop(session);
                self.schedule_will(&slot, will);
            }
        }
        let sessions = lock(&self.sessions).len();
        tracing::info!(
            sessions,
            retained = read(&self.retained).len(),
            "state restored"
        );
        Ok(())
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn insert_slot(&self, session: Session) -> Arc<SessionSlot> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(SessionSlot::new(id, session));
        lock(&self.sessions).insert(Arc::clone(&slot));
        write(&self.by_id).insert(Arc::clone(&slot));
        slot
    }

    /// The session of `client_id`, if the node has one.
    pub(crate) fn session(&self, client_id: &str) -> Option<Arc<SessionSlot>> {
        lock(&self.sessions).get(client_id).cloned()
    }

    /// A fresh session for `client_id`, replacing (and discarding) any session it had.
    pub(crate) fn new_session(&self, client_id: MqttString) -> Arc<SessionSlot> {
        if let Some(old) = self.session(&client_id) {
            self.discard(&old);
        }
        self.insert_slot(Session::new(client_id, Arc::clone(&self.session_config)))
    }

    /// Removes a session: its subscriptions leave the index and its state leaves the store.
    pub(crate) fn discard(&self, slot: &Arc<SessionSlot>) {
        let (filters, stored) = {
            let session = slot.lock();
            let filters: Vec<MqttString> = session
                .subscriptions()
                .iter()
                .map(|s| s.filter.clone())
                .collect();
            (filters, session.is_persistent())
        };
        write(&self.index).remove_all(slot.id, filters.iter().map(|f| f.as_str()));
        lock(&self.sessions).remove(slot);
        write(&self.by_id).remove(slot);
        if stored && let Err(e) = self.store.remove_session(&slot.client_id) {
            tracing::error!(client_id = %slot.client_id, error = %e, "removing a session from the store failed");
        }
    }

    /// Writes the changes a session logged to the store. Returns whether anything was
    /// written (so a flush is due before what caused it is acknowledged).
    pub(crate) fn persist(&self, client_id: &MqttString, session: &mut Session) -> bool {
        let mut batch = WriteBatch::new();
        while let Some(change) = session.poll_change() {
            let encoded = match change {
                Change::Record(record) => batch.put_session(&record).map(|_| ()),
                Change::Enqueued { seq, message } => {
                    batch.enqueue(client_id, seq, &message).map(|_| ())
                }
                Change::State { seq, state } => {
                    batch.set_outbound_state(client_id, seq, state);
                    Ok(())
                }
                Change::Removed { seq } => {
                    batch.remove_outbound(client_id, seq);
                    Ok(())
                }
                Change::Discarded => {
                    batch.remove_session(client_id);
                    Ok(())
                }
            };
            if let Err(e) = encoded {
                tracing::error!(%client_id, error = %e, "session state cannot be encoded for the store");
            }
        }
        if batch.is_empty() {
            return false;
        }
        if let Err(e) = self.store.apply(&batch) {
            // The store is failing: acknowledged messages would not be durable.
            tracing::error!(%client_id, error = %e, "writing session state to the store failed");
        }
        true
    }

    /// Sends a message to every session that subscribed to its topic, and keeps it if it
    /// is retained. `publisher` is the publishing session (for No Local).
    pub(crate) fn dispatch(
        &self,
        message: &Arc<Message>,
        publisher: Option<u64>,
        recipients: &mut Recipients<u64>,
    ) -> Dispatched {
        let now = self.now();
        let mut out = Dispatched::default();
        if message.retain {
            out.needs_flush |= self.retain(message, true);
        }
        read(&self.index).match_topic(&message.topic, publisher, recipients);
        let by_id = read(&self.by_id);
        for recipient in recipients.subscribers() {
            let Some(slot) = by_id.get(&recipient.subscriber) else {
                continue;
            };
            if !slot.may_receive(&message.topic) {
                continue;
            }
            let retain = message.retain && recipient.retain_as_published;
            out.needs_flush |= self.deliver(
                slot,
                now,
                message,
                recipient.qos,
                retain,
                recipient.identifiers.to_vec(),
            );
            out.recipients += 1;
        }
        for group in recipients.shared_groups() {
            let members = group.members;
            if members.is_empty() {
                continue;
            }
            let start = self.shared_cursor.fetch_add(1, Ordering::Relaxed);
            // Prefer a connected member; an offline one queues it (persistent sessions).
            // Members the ACL keeps from this topic are passed over.
            let allowed = |m: &&shoal_topic::Subscription<u64>| {
                by_id
                    .get(&m.subscriber)
                    .is_some_and(|s| s.may_receive(&message.topic))
            };
            let mut candidates = (0..members.len())
                .map(|i| &members[(start + i) % members.len()])
                .filter(allowed);
            let Some(first) = candidates.next() else {
                continue;
            };
            let pick = std::iter::once(first)
                .chain(candidates)
                .find(|m| {
                    by_id
                        .get(&m.subscriber)
                        .is_some_and(|s| s.lock().is_connected())
                })
                .unwrap_or(first);
            let Some(slot) = by_id.get(&pick.subscriber) else {
                continue;
            };
            let ids = pick.identifier.into_iter().collect();
            let retain = message.retain && pick.options.retain_as_published;
            out.needs_flush |= self.deliver(slot, now, message, pick.options.qos, retain, ids);
            out.recipients += 1;
        }
        if out.recipients == 0 {
            metrics::counter!(m::MESSAGES_DROPPED, "cause" => "no_subscribers").increment(1);
        }
        out
    }

    /// Gives one session a message; wakes its connection. Returns whether the store was
    /// written.
    pub(crate) fn deliver(
        &self,
        slot: &SessionSlot,
        now: Timestamp,
        message: &Arc<Message>,
        qos: QoS,
        retain: bool,
        ids: Vec<std::num::NonZeroU32>,
    ) -> bool {
        let mut session = slot.lock();
        let delivery = session.deliver(now, Arc::clone(message), qos, retain, ids);
        let wrote = self.persist(&slot.client_id, &mut session);
        let connected = session.is_connected();
        if delivery != Delivery::Queued {
            self.count_drops(slot, &mut session);
        }
        drop(session);
        if connected {
            slot.notify();
        }
        wrote
    }

    /// Counts the drops a session reports, and logs them once per session.
    /// Judges a session's subscriptions under `acl`: when one reaches topics the ACL keeps
    /// from the client, deliveries to the session are checked from now on, and queued
    /// messages it may not receive are dropped (and the drop persisted).
    pub(crate) fn judge_subscriptions(
        &self,
        slot: &SessionSlot,
        session: &mut Session,
        acl: &ClientAcl,
    ) {
        let restricted = session.subscriptions().iter().any(|sub| {
            let inner = match shoal_topic::FilterKind::parse(&sub.filter) {
                Ok(shoal_topic::FilterKind::Plain(f)) => f,
                Ok(shoal_topic::FilterKind::Shared { filter, .. }) => filter,
                Err(_) => return true,
            };
            acl.subscribe(inner) != SubscribeDecision::Allow
        });
        slot.filter_with(restricted.then(|| acl.clone()));
        if restricted {
            let dropped = session.retain_queued(|m| acl.may_receive(&m.topic));
            if dropped > 0 {
                metrics::counter!(m::ACL_DENIED, "action" => "deliver").increment(dropped as u64);
                self.persist(&slot.client_id, session);
            }
        }
    }

    /// The ACL changed: every session whose client's identity is known is judged again
    /// under the new rules (the others are at their next connection).
    pub(crate) fn reapply_acl(&self) {
        for slot in self.slots() {
            let Some(username) = slot.acl_username() else {
                continue;
            };
            let (_, acl) = self.access.client_acl(username.as_deref(), &slot.client_id);
            let mut session = slot.lock();
            self.judge_subscriptions(&slot, &mut session, &acl);
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

    pub(crate) fn count_drops(&self, slot: &SessionSlot, session: &mut Session) {
        let drops = session.take_drops();
        for (cause, n) in [
            ("queue_full", drops.queue_full),
            ("expired", drops.expired),
            ("too_large", drops.too_large),
            ("qos0_offline", drops.qos0_offline),
        ] {
            if n > 0 {
                metrics::counter!(m::MESSAGES_DROPPED, "cause" => cause).increment(u64::from(n));
            }
        }
        if drops.queue_full > 0 && !slot.queue_full_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(client_id = %session.client_id(), "session queue full: dropping new messages (logged once per session)");
        }
    }

    /// Keeps (or with an empty payload, clears) the retained message of a topic. Returns
    /// whether the store was written.
    pub(crate) fn retain(&self, message: &Arc<Message>, persist: bool) -> bool {
        let topic = message.topic.as_str();
        let result = if message.payload.is_empty() {
            let removed = write(&self.retained).remove(topic).is_some();
            if removed && persist {
                Some(self.store.remove_retained(&message.topic).map(|_| ()))
            } else {
                None
            }
        } else {
            // Kept for long: its own allocation, not its packet's read buffer.
            let kept = Arc::new(message.detached());
            let stored = persist.then(|| self.store.put_retained(&kept));
            write(&self.retained).insert(topic, kept);
            stored
        };
        match result {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::error!(topic, error = %e, "writing a retained message to the store failed");
                true
            }
            None => false,
        }
    }

    /// Retained messages whose topics match `filter` (a plain filter), unexpired at `now`.
    pub(crate) fn retained_for(&self, filter: &str, now: Timestamp) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        read(&self.retained).for_each_match_value(filter, |message| {
            if !message.is_expired(now) {
                found.push(Arc::clone(message));
            }
        });
        found
    }

    /// Publishes a Will now, or after its delay unless the session is resumed before.
    pub(crate) fn schedule_will(self: &Arc<Self>, slot: &Arc<SessionSlot>, will: WillRecord) {
        let generation = slot.cancel_will();
        if will.delay == 0 {
            self.publish_will(will);
            return;
        }
        let broker = Arc::clone(self);
        let slot = Arc::clone(slot);
        let delay = std::time::Duration::from_secs(u64::from(will.delay));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if slot.will_generation.load(Ordering::SeqCst) == generation {
                broker.publish_will(will);
            }
        });
    }

    fn publish_will(&self, will: WillRecord) {
        let mut message = will.message;
        let now = self.now();
        message.expires_at = message
            .properties
            .message_expiry_interval
            .take()
            .map(|s| now.plus_secs(s));
        message.received_at = now;
        metrics::counter!(m::WILLS_PUBLISHED).increment(1);
        let mut recipients = Recipients::new();
        let _ = self.dispatch(&Arc::new(message), None, &mut recipients);
        // A Will is best effort at the moment it is published; flush in the background.
        let store = self.store.clone();
        tokio::spawn(async move {
            let _ = store.flush().await;
        });
    }

    /// Removes sessions whose expiry passed, and expired messages from the store.
    pub(crate) fn expire(self: &Arc<Self>) {
        let now = self.now();
        let expired: Vec<Arc<SessionSlot>> = lock(&self.sessions)
            .values()
            .filter(|slot| {
                let session = slot.lock();
                !session.is_connected() && session.record().expires_at().is_some_and(|at| at <= now)
            })
            .cloned()
            .collect();
        for slot in expired {
            // The Will is due at the latest when the session ends (§3.1.3.2.2).
            let will = slot.lock().record().will.as_deref().cloned();
            if let Some(will) = will {
                slot.cancel_will();
                self.publish_will(will);
            }
            self.discard(&slot);
            metrics::counter!(m::SESSIONS_EXPIRED).increment(1);
            tracing::debug!(client_id = %slot.client_id, "session expired");
        }
        let mut gone = Vec::new();
        write(&self.retained).retain(|_, message| {
            let expired = message.is_expired(now);
            if expired {
                gone.push(message.topic.clone());
            }
            !expired
        });
        for topic in gone {
            let _ = self.store.remove_retained(&topic);
        }
        match self.store.remove_expired(now, EXPIRY_BATCH) {
            Ok(report) if !report.corrupt.is_empty() => {
                tracing::error!(
                    corrupt = report.corrupt.len(),
                    "corrupt records met while expiring"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "removing expired state from the store failed"),
        }
    }

    /// Sessions held, subscriptions, retained messages, queued messages: for metrics and
    /// $SYS.
    pub(crate) fn census(&self) -> Census {
        let sessions = lock(&self.sessions);
        let queued = sessions.values().map(|s| s.lock().queued()).sum();
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
