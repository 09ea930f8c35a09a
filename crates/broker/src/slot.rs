//! `SessionSlot`: one session as the node holds it, shared between the connection task that
//! serves it and the tasks that deliver messages to it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use shoal_access::acl::ClientAcl;
use shoal_codec::{DisconnectReasonCode, MqttString, ReasonCode};
use shoal_session::Session;
use tokio::sync::oneshot;

/// How a connection task is asked to let go of its session.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// Tells the connection to end, with this reason.
    pub(crate) kick: oneshot::Sender<DisconnectReasonCode>,
    /// Completes when the connection has detached from the session.
    pub(crate) detached: oneshot::Receiver<()>,
}

/// A session and who is serving it.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    /// The node-local id of the session: its subscriber id in the subscription index.
    pub(crate) id: u64,
    /// The client identifier.
    pub(crate) client_id: MqttString,
    session: Mutex<Session>,
    /// Wakes the connection task when the session has something to send.
    pub(crate) wake: Wake,
    /// The connection attached now, if any.
    pub(crate) attachment: Mutex<Option<Attachment>>,
    /// Bumped whenever a Will is scheduled or cancelled for this session.
    pub(crate) will_generation: AtomicU64,
    /// Whether a full queue was logged for this session (it is logged once).
    pub(crate) queue_full_logged: AtomicBool,
    /// Whether deliveries are checked against `acl`: some subscription of the session
    /// covers topics the ACL keeps from it (a wildcard over a denied sub-topic).
    filtered: AtomicBool,
    /// The client's ACL, when `filtered`.
    acl: Mutex<Option<ClientAcl>>,
    /// The username the client was last authorized as, once a connection attached under an
    /// ACL: the ACL is compiled again for it when the rules are reloaded.
    acl_username: Mutex<Option<Option<String>>>,
    /// The username and address of the connection attached now, for bans made while it is
    /// connected.
    connected_as: Mutex<Option<(Option<String>, IpAddr)>>,
    /// Set (then the session woken) to end the attached connection, with this DISCONNECT
    /// reason (a ban, the node shutting down); 0 when none.
    kick_reason: AtomicU8,
}

impl SessionSlot {
    pub(crate) fn new(id: u64, session: Session) -> Self {
        Self {
            id,
            client_id: session.client_id().clone(),
            session: Mutex::new(session),
            wake: Wake::default(),
            attachment: Mutex::new(None),
            will_generation: AtomicU64::new(0),
            queue_full_logged: AtomicBool::new(false),
            filtered: AtomicBool::new(false),
            acl: Mutex::new(None),
            acl_username: Mutex::new(None),
            connected_as: Mutex::new(None),
            kick_reason: AtomicU8::new(0),
        }
    }

    /// Records who is connected now (`None`: nobody).
    pub(crate) fn set_connected_as(&self, who: Option<(Option<String>, IpAddr)>) {
        self.kick_reason.store(0, Ordering::Release);
        *crate::broker::lock(&self.connected_as) = who;
    }

    /// Who is connected now.
    pub(crate) fn connected_as(&self) -> Option<(Option<String>, IpAddr)> {
        crate::broker::lock(&self.connected_as).clone()
    }

    /// Asks the attached connection to end with `reason` (a ban, a shutdown).
    pub(crate) fn kick(&self, reason: DisconnectReasonCode) {
        self.kick_reason.store(reason.into(), Ordering::Release);
        self.wake.notify_one();
    }

    /// Why the attached connection was asked to end, if it was; clears the request.
    pub(crate) fn take_kick(&self) -> Option<DisconnectReasonCode> {
        if self.kick_reason.load(Ordering::Acquire) == 0 {
            return None;
        }
        DisconnectReasonCode::from_u8(self.kick_reason.swap(0, Ordering::AcqRel))
    }

    /// Records who the session's client was authorized as (`None`: no ACL applies).
    pub(crate) fn set_acl_username(&self, username: Option<Option<String>>) {
        *crate::broker::lock(&self.acl_username) = username;
    }

    /// Who the session's client was last authorized as, if known.
    pub(crate) fn acl_username(&self) -> Option<Option<String>> {
        crate::broker::lock(&self.acl_username).clone()
    }

    /// Whether a message on `topic` may be delivered to this session (the ACL's read
    /// rules, for sessions whose subscriptions reach past them).
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        if !self.filtered.load(Ordering::Acquire) {
            return true;
        }
        crate::broker::lock(&self.acl)
            .as_ref()
            .is_none_or(|acl| acl.may_receive(topic))
    }

    /// Checks deliveries against `acl` from now on (`None`: stops checking).
    pub(crate) fn filter_with(&self, acl: Option<ClientAcl>) {
        let mut current = crate::broker::lock(&self.acl);
        self.filtered.store(acl.is_some(), Ordering::Release);
        *current = acl;
    }

    /// The session, locked. Never held across an `.await` or while locking another session.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves a session in an unknown state; the
        // process-wide panic policy (abort) means this is never observed poisoned.
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cancels a pending Will (the client came back, or the Will was published).
    pub(crate) fn cancel_will(&self) -> u64 {
        self.will_generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A wake-up for one connection task, with a permit: `notify_one` before the task waits
/// makes its next wait return at once (as `tokio::sync::Notify` does for one waiter). It is
/// a flag and an `AtomicWaker`: waiting registers the task's waker without a lock, and a
/// wait that ends or is dropped leaves nothing to clean up, which matters because the
/// connection's `select!` creates a new wait on every turn.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl Wake {
    /// Wakes the task (now, or at its next wait).
    pub(crate) fn notify_one(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes when `notify_one` has been called since the last wait completed.
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

/// The future of [`Wake::notified`].
#[derive(Debug)]
pub(crate) struct Notified<'a>(&'a Wake);

impl Future for Notified<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let wake = self.0;
        if wake.pending.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        wake.waker.register(cx.waker());
        // A notification between the check and the registration found no waker to wake.
        if wake.pending.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }
}
