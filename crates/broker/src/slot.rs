//! `SessionSlot`: one session as the node holds it, shared between the connection task that
//! serves it and the tasks that deliver messages to it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_access::acl::ClientAcl;
use shoal_codec::{DisconnectReasonCode, MqttString, ReasonCode};
use shoal_session::Session;

/// A session and who is serving it.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    /// The node-local id of the session: its subscriber id in the subscription index.
    pub(crate) id: u64,
    /// The client identifier.
    pub(crate) client_id: MqttString,
    session: Mutex<Session>,
    /// Wakes the connection task (see `notify`): its flag and its waker.
    woken: AtomicBool,
    waker: atomic_waker::AtomicWaker,
    /// The number of the connection attached to the session (0: none). It stays until that
    /// connection has detached, also after another took the session over. Changes to
    /// `serving` are made under this lock.
    attached: Mutex<u32>,
    /// The number of the connection that serves the session (0: none): when it changes,
    /// the connection that served it ends (taken over).
    serving: AtomicU32,
    /// The keep-alive wheel's tick this session is filed under (0: none), see `KeepAlive`.
    pub(crate) keep_alive_tick: AtomicU64,
    /// Whether a full queue was logged for this session (it is logged once).
    pub(crate) queue_full_logged: AtomicBool,
    /// Whether deliveries are checked against the client's ACL: some subscription of the
    /// session covers topics the ACL keeps from it (a wildcard over a denied sub-topic).
    filtered: AtomicBool,
    /// Who the client is, for the ACL and bans.
    client: Mutex<ClientInfo>,
    /// Set (then the session woken) to end the attached connection, with this DISCONNECT
    /// reason (a ban, the node shutting down); 0 when none.
    kick_reason: AtomicU8,
    /// Set once another session replaced this one under its client id (a clean start):
    /// the session no longer writes to the store and no connection attaches to it. Set
    /// while the session's lock is held, so a write under that lock sees it.
    retired: AtomicBool,
    /// The earliest deadline filed for the session (`Broker::file_session_deadline`), in
    /// seconds since the Unix epoch rounded down; 0 when none.
    deadline_secs: AtomicU32,
    /// The cluster's owner epoch of the claim that holds the session (0: none, or a node
    /// alone). Another node's claim with a larger epoch takes the client id over.
    epoch: AtomicU64,
}

impl SessionSlot {
    pub(crate) fn new(id: u64, session: Session) -> Self {
        Self {
            id,
            client_id: session.client_id().clone(),
            session: Mutex::new(session),
            woken: AtomicBool::new(false),
            waker: atomic_waker::AtomicWaker::new(),
            attached: Mutex::new(0),
            serving: AtomicU32::new(0),
            keep_alive_tick: AtomicU64::new(0),
            queue_full_logged: AtomicBool::new(false),
            filtered: AtomicBool::new(false),
            client: Mutex::new(ClientInfo::default()),
            kick_reason: AtomicU8::new(0),
            retired: AtomicBool::new(false),
            deadline_secs: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// The cluster's owner epoch of the claim that holds the session (0: none).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records the cluster's owner epoch of a claim that holds the session. Never goes
    /// back: two CONNECTs on this node may finish their claims in either order, and the
    /// session's writes carry the newest (the session group refuses older ones).
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Records who is connected now (`None`: nobody).
    pub(crate) fn set_connected_as(&self, who: Option<(Option<String>, IpAddr)>) {
        self.kick_reason.store(0, Ordering::Release);
        let mut client = crate::broker::lock(&self.client);
        client.redirect = None;
        match who {
            Some((username, addr)) => {
                client.username = username.map(String::into_boxed_str);
                client.addr = Some(addr);
            }
            None => client.addr = None,
        }
    }

    /// Who is connected now.
    pub(crate) fn connected_as(&self) -> Option<(Option<String>, IpAddr)> {
        let client = crate::broker::lock(&self.client);
        let addr = client.addr?;
        Some((client.username.as_deref().map(str::to_owned), addr))
    }

    /// Asks the attached connection to end with 0x9C (Use another server), naming
    /// `server` (MQTT 5: the Server Reference); the Will is published if `publish_will`.
    pub(crate) fn redirect(&self, server: &str, publish_will: bool) {
        crate::broker::lock(&self.client).redirect = Some((server.into(), publish_will));
        self.kick(DisconnectReasonCode::UseAnotherServer);
    }

    /// Where a kick with 0x9C sends the client, and whether its Will is due (taken).
    pub(crate) fn take_redirect(&self) -> Option<(Box<str>, bool)> {
        crate::broker::lock(&self.client).redirect.take()
    }

    /// Asks the attached connection to end with `reason` (a ban, a shutdown).
    pub(crate) fn kick(&self, reason: DisconnectReasonCode) {
        self.kick_reason.store(reason.into(), Ordering::Release);
        self.notify();
    }

    /// Hands the session to the connection numbered `attachment` (0: to none): the
    /// connection serving it is woken and sees that it was taken over. Called only under the
    /// node's session table lock (`Broker::claim`), which orders every change of owner.
    pub(crate) fn hand_over(&self, attachment: u32) {
        {
            let _attached = crate::broker::lock(&self.attached);
            self.serving.store(attachment, Ordering::Release);
        }
        self.notify();
    }

    /// Attaches the connection numbered `attachment` once no other connection is attached
    /// (at once with `force`). `Lost` when the session was handed to another connection
    /// meanwhile, or retired: the caller must not touch it.
    pub(crate) fn try_attach(&self, attachment: u32, force: bool) -> Attach {
        let mut attached = crate::broker::lock(&self.attached);
        if self.serving.load(Ordering::Acquire) != attachment
            || self.retired.load(Ordering::Acquire)
        {
            return Attach::Lost;
        }
        if *attached != 0 && !force {
            return Attach::Wait;
        }
        *attached = attachment;
        Attach::Attached
    }

    /// Whether a connection is attached (it may have been told to end and not yet let go).
    pub(crate) fn is_attached(&self) -> bool {
        *crate::broker::lock(&self.attached) != 0
    }

    /// Whether no connection serves or holds the session (nobody claimed it).
    pub(crate) fn is_free(&self) -> bool {
        let attached = crate::broker::lock(&self.attached);
        *attached == 0 && self.serving.load(Ordering::Acquire) == 0
    }

    /// Retires the session: another replaced it under its client id. It writes nothing to
    /// the store from now on, and the connection serving it ends (taken over). Takes the
    /// session's lock, so no write of it is under way once this returns.
    pub(crate) fn retire(&self) {
        {
            let _session = self.lock();
            self.retired.store(true, Ordering::Release);
        }
        self.hand_over(0);
    }

    /// Whether a deadline at `at` must be filed: none is, or only a later one. Records it.
    pub(crate) fn file_deadline(&self, at: shoal_session::Timestamp) -> bool {
        let secs = u32::try_from(at.as_millis() / 1000)
            .unwrap_or(u32::MAX)
            .max(1);
        let filed = self.deadline_secs.load(Ordering::Acquire);
        if filed != 0 && filed <= secs {
            return false;
        }
        self.deadline_secs.store(secs, Ordering::Release);
        true
    }

    /// The deadline filed for `at` came due: none is filed any more (unless an earlier one
    /// replaced it).
    pub(crate) fn deadline_taken(&self, at: shoal_session::Timestamp) {
        let secs = u32::try_from(at.as_millis() / 1000)
            .unwrap_or(u32::MAX)
            .max(1);
        let _ = self
            .deadline_secs
            .compare_exchange(secs, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the session was retired (see `retire`).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Detaches the connection numbered `attachment`; returns whether it still served the
    /// session (it was not taken over).
    pub(crate) fn detach(&self, attachment: u32) -> bool {
        let mut attached = crate::broker::lock(&self.attached);
        if *attached == attachment {
            *attached = 0;
        }
        let ours = self.serving.load(Ordering::Acquire) == attachment;
        if ours {
            self.serving.store(0, Ordering::Release);
        }
        ours
    }

    /// Why the connection numbered `attachment` must end, if it must: it no longer serves
    /// the session (taken over), or it was asked to (a ban, a shutdown; the request is
    /// cleared).
    pub(crate) fn kicked(&self, attachment: u32) -> Option<DisconnectReasonCode> {
        if self.serving.load(Ordering::Acquire) != attachment {
            return Some(DisconnectReasonCode::SessionTakenOver);
        }
        if self.kick_reason.load(Ordering::Acquire) == 0 {
            return None;
        }
        DisconnectReasonCode::from_u8(self.kick_reason.swap(0, Ordering::AcqRel))
    }

    /// Records who the session's client was authorized as (`None`: no ACL applies).
    pub(crate) fn set_acl_username(&self, username: Option<Option<String>>) {
        let mut client = crate::broker::lock(&self.client);
        client.under_acl = username.is_some();
        if let Some(username) = username {
            client.username = username.map(String::into_boxed_str);
        }
    }

    /// The username that created the session, once known (`Some(None)`: anonymous).
    pub(crate) fn owner(&self) -> Option<Option<String>> {
        let client = crate::broker::lock(&self.client);
        client
            .owner
            .as_ref()
            .map(|owner| owner.as_deref().map(str::to_owned))
    }

    /// Records the username that created the session (or claims one whose creator is not
    /// known).
    pub(crate) fn set_owner(&self, username: Option<&str>) {
        crate::broker::lock(&self.client).owner = Some(username.map(Box::from));
    }

    /// Who the session's client was last authorized as, if an ACL applies to it.
    pub(crate) fn acl_username(&self) -> Option<Option<String>> {
        let client = crate::broker::lock(&self.client);
        client
            .under_acl
            .then(|| client.username.as_deref().map(str::to_owned))
    }

    /// Whether a message on `topic` may be delivered to this session (the ACL's read
    /// rules, for sessions whose subscriptions reach past them).
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        if !self.filtered.load(Ordering::Acquire) {
            return true;
        }
        crate::broker::lock(&self.client)
            .acl
            .as_ref()
            .is_none_or(|acl| acl.may_receive(topic))
    }

    /// Checks deliveries against `acl` from now on (`None`: stops checking).
    pub(crate) fn filter_with(&self, acl: Option<ClientAcl>) {
        let mut client = crate::broker::lock(&self.client);
        self.filtered.store(acl.is_some(), Ordering::Release);
        client.acl = acl;
    }

    /// The session, locked. Never held across an `.await` or while locking another session.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves a session in an unknown state; the
        // process-wide panic policy (abort) means this is never observed poisoned.
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the connection task, now or at its next wait: the session has something to
    /// send, or the connection must look at `kicked`. A wake-up with a permit (as
    /// `tokio::sync::Notify` has for one waiter), made of a flag and an `AtomicWaker`:
    /// waiting registers the task's waker without a lock and leaves nothing to clean up.
    pub(crate) fn notify(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready when `notify` has been called since the last time it was ready; otherwise
    /// registers the task to be woken by the next `notify`.
    pub(crate) fn poll_notified(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notification between the check and the registration found no waker to wake.
        if self.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }
}

/// What `SessionSlot::try_attach` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attach {
    /// The connection is attached.
    Attached,
    /// Another connection is still attached: wait until it lets go.
    Wait,
    /// The session went to another connection, or was retired.
    Lost,
}

/// Who a session's client is, for the ACL and bans.
#[derive(Debug, Default)]
struct ClientInfo {
    /// The client's ACL, when deliveries are filtered.
    acl: Option<ClientAcl>,
    /// The username the client last connected as.
    username: Option<Box<str>>,
    /// Whether an ACL applies to the client (then it is compiled again for `username` when
    /// the rules are reloaded, also while the session is offline).
    under_acl: bool,
    /// The address of the connection attached now, for bans made while it is connected.
    addr: Option<IpAddr>,
    /// The username that created the session (`Some(None)`: an anonymous client), for
    /// `bind_client_id_to_username`; `None` while unknown (restored after a restart).
    owner: Option<Option<Box<str>>>,
    /// Where the attached connection is sent by its kick with 0x9C (Use another server):
    /// the Server Reference, and whether the Will is due.
    redirect: Option<(Box<str>, bool)>,
}

/// Sessions by a key of their own (client identifier, subscriber id), held as a table of
/// slots: 8 bytes an entry, where a map would also hold a copy of the key.
#[derive(Debug, Default)]
pub(crate) struct SlotTable<K: SlotKey> {
    table: hashbrown::HashTable<Arc<SessionSlot>>,
    hasher: K,
}

/// What a `SlotTable` is keyed by.
pub(crate) trait SlotKey: Default {
    /// The key as looked up.
    type Key: ?Sized + PartialEq;
    /// The key of a slot.
    fn key(slot: &SessionSlot) -> &Self::Key;
    /// The key's hash.
    fn hash(&self, key: &Self::Key) -> u64;
}

/// Keyed by client identifier, hashed with a random state (client identifiers are chosen
/// by clients).
#[derive(Debug, Default)]
pub(crate) struct ClientIdKey(std::hash::RandomState);

impl SlotKey for ClientIdKey {
    type Key = str;

    fn key(slot: &SessionSlot) -> &str {
        slot.client_id.as_str()
    }

    fn hash(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.0, key)
    }
}

/// Keyed by subscriber id (the node numbers sessions in order: a multiply spreads them).
#[derive(Debug, Default)]
pub(crate) struct IdKey;

impl SlotKey for IdKey {
    type Key = u64;

    fn key(slot: &SessionSlot) -> &u64 {
        &slot.id
    }

    fn hash(&self, key: &u64) -> u64 {
        key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl<K: SlotKey> SlotTable<K> {
    /// The slot with this key.
    pub(crate) fn get(&self, key: &K::Key) -> Option<&Arc<SessionSlot>> {
        self.table
            .find(self.hasher.hash(key), |slot| K::key(slot) == key)
    }

    /// Adds a slot; returns the one it replaces (with the same key).
    pub(crate) fn insert(&mut self, slot: Arc<SessionSlot>) -> Option<Arc<SessionSlot>> {
        let Self { table, hasher } = self;
        let key = K::key(&slot);
        let entry = table.entry(
            hasher.hash(key),
            |other| K::key(other) == key,
            |other| hasher.hash(K::key(other)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                Some(std::mem::replace(occupied.get_mut(), slot))
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(slot);
                None
            }
        }
    }

    /// Removes this very slot, if the table holds it (and not another with its key).
    pub(crate) fn remove(&mut self, slot: &Arc<SessionSlot>) {
        let key = K::key(slot);
        if let Ok(found) = self
            .table
            .find_entry(self.hasher.hash(key), |other| Arc::ptr_eq(other, slot))
        {
            found.remove();
        }
    }

    /// How many slots there are.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every slot.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<SessionSlot>> {
        self.table.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_session::{SessionConfig, Timestamp};

    #[test]
    fn a_session_files_one_deadline_until_it_comes_due() {
        let session = Session::new(
            MqttString::from_static("c"),
            Arc::new(SessionConfig::default()),
        );
        let slot = SessionSlot::new(1, session);
        assert!(slot.file_deadline(Timestamp(60_000)));
        // A reconnecting client's later deadlines are covered by the earlier one.
        assert!(!slot.file_deadline(Timestamp(120_000)));
        assert!(!slot.file_deadline(Timestamp(60_000)));
        // An earlier one is filed.
        assert!(slot.file_deadline(Timestamp(30_000)));
        // Once it came due, the next is filed again.
        slot.deadline_taken(Timestamp(30_000));
        assert!(slot.file_deadline(Timestamp(120_000)));
    }
}
