//! Sessions that move between nodes. A persistent session lives in the session group
//! (every replica's store holds it); the node that holds its client's connection, or
//! held it last, serves it from memory. When the client connects to another node, that
//! node takes the session up from its own store:
//!
//! 1. Before claiming the client id, it subscribes a placeholder to the filters its
//!    store says the session has, so that its routes exist before the old node lets go.
//!    A publication that reaches the placeholder fails (PUBACK 0x80): it is not
//!    acknowledged until a session holds it.
//! 2. It claims the client id (the old node closes the connection, 0x8E, and keeps the
//!    session, offline, for now).
//! 3. It fences the session in the session group with its new epoch: from then on the
//!    old node's writes are refused, and the old node, applying the fence, lets the
//!    session go (memory only: the group keeps it).
//! 4. It reads the session from its store, which has applied everything up to the fence,
//!    subscribes it, and drops the placeholder.
//!
//! Also here: what a node does with the sessions it read back at start once it knows
//! who owns them, and the fence of another node's takeover.

use std::sync::Arc;

use shoal_cluster::{Cluster, Owner};
use shoal_codec::MqttString;
use shoal_store::WriteBatch;

use super::{Broker, Pending, lock, read, write};
use crate::slot::SessionSlot;

/// The subscriptions held for a session on its way here (step 1).
#[derive(Debug, Default)]
pub(crate) struct Placeholder {
    id: u64,
    filters: Vec<MqttString>,
}

impl Broker {
    /// Step 1: subscribes a placeholder to the filters of `client_id`'s session as this
    /// node's store has it, if the session is held by another node (as far as this node
    /// knows) or by none; returns the waits for the routes it added.
    pub(crate) fn hold_routes(
        &self,
        cluster: &Cluster,
        client_id: &MqttString,
    ) -> (Placeholder, Vec<Pending>) {
        let mut placeholder = Placeholder::default();
        let held_here = self.session(client_id).is_some()
            && cluster
                .owner(client_id)
                .is_none_or(|o| o.node == cluster.id());
        if held_here {
            return (placeholder, Vec::new());
        }
        let Ok(loaded) = self.store.load_session(client_id) else {
            return (placeholder, Vec::new());
        };
        let Some(record) = loaded.records.into_iter().next() else {
            return (placeholder, Vec::new());
        };
        placeholder.id = self.next_subscriber_id();
        write(&self.moving).insert(placeholder.id);
        let mut waits = Vec::new();
        {
            let mut index = write(&self.index);
            for sub in &record.subscriptions {
                match index.insert(placeholder.id, &sub.filter, sub.options, sub.identifier) {
                    Ok(shoal_topic::Insertion::New { first: true }) => {
                        waits.push(cluster.route_add(&sub.filter));
                    }
                    Ok(_) => waits.extend(cluster.route_pending(&sub.filter)),
                    Err(_) => continue,
                }
                placeholder.filters.push(sub.filter.clone());
            }
        }
        (placeholder, waits)
    }

    /// Drops a placeholder (step 4, or the CONNECT failed).
    pub(crate) fn drop_placeholder(&self, placeholder: Placeholder) {
        if placeholder.id == 0 {
            return;
        }
        self.unsubscribe(
            placeholder.id,
            placeholder.filters.iter().map(|f| f.as_str()),
        );
        write(&self.moving).remove(&placeholder.id);
    }

    /// Whether `subscriber` is a placeholder of a session on its way here.
    pub(crate) fn is_moving(&self, subscriber: u64) -> bool {
        read(&self.moving).contains(&subscriber)
    }

    /// Steps 3 and 4, after the claim of `client_id` with `epoch` whose previous owner was
    /// `previous`: if the session was held elsewhere (or by nobody, while this node's
    /// store has it), fences it and reads it from the store (with `clean_start`, removes
    /// it instead). Returns the route waits of the session read, or why it failed. A
    /// session taken up `offline` (its client is not connecting) gets its deadlines: its
    /// Will and its end.
    pub(crate) async fn take_up(
        &self,
        cluster: &Cluster,
        client_id: &MqttString,
        clean_start: bool,
        epoch: u64,
        previous: Option<Owner>,
        offline: bool,
    ) -> Result<Vec<Pending>, String> {
        let me = cluster.id();
        let local = self.session(client_id);
        let moved = match previous {
            Some(previous) => previous.node != me,
            None => local.is_none() && self.stores_session(client_id),
        };
        if !moved {
            return Ok(Vec::new());
        }
        if let Some(stale) = local {
            // Held here under an older claim: another node has served it since.
            self.forget(&stale);
        }
        cluster
            .fence_session(client_id, epoch)
            .await
            .map_err(|e| e.to_string())?;
        if clean_start {
            if self.stores_session(client_id) {
                let mut batch = WriteBatch::new();
                batch.remove_session(client_id);
                batch.fence(client_id, epoch);
                let _ = self.apply(&batch, false);
            }
            return Ok(Vec::new());
        }
        let record = self
            .store
            .load_session(client_id)
            .map_err(|e| e.to_string())?;
        let Some(mut record) = super::loaded(record, "session").into_iter().next() else {
            return Ok(Vec::new());
        };
        let queue = self
            .store
            .load_queue(client_id)
            .map_err(|e| e.to_string())?;
        let queue = super::loaded(queue, "queued message");
        if record.disconnected_at.is_none() {
            record.disconnected_at = Some(self.now());
        }
        let session = self.restored(record, queue).map_err(|e| e.to_string())?;
        let slot = self.new_slot(session);
        slot.set_epoch(epoch);
        let mut waits = Vec::new();
        {
            let mut sessions = lock(&self.sessions);
            if sessions.get(client_id).is_some() {
                // A CONNECT here took the client id meanwhile: it has the session.
                return Ok(Vec::new());
            }
            sessions.insert(Arc::clone(&slot));
            write(&self.by_id).insert(Arc::clone(&slot));
            let session = slot.lock();
            let mut index = write(&self.index);
            for sub in session.subscriptions() {
                match index.insert(slot.id, &sub.filter, sub.options, sub.identifier) {
                    Ok(shoal_topic::Insertion::New { first: true }) => {
                        waits.push(cluster.route_add(&sub.filter));
                    }
                    Ok(_) => waits.extend(cluster.route_pending(&sub.filter)),
                    Err(_) => {}
                }
            }
            if offline {
                self.file_session_deadline(&slot, &session);
            }
        }
        tracing::debug!(%client_id, epoch, "took up a session another node held");
        Ok(waits)
    }

    /// `node` was declared down (this node leads meta): takes up every persistent session
    /// it owned, from this node's replica of the session group, before its routes are
    /// removed: their routes, queues and QoS 2 state, and their Wills, published here
    /// after their delay (once: the record says so through the group). Clean sessions of
    /// the dead node end with it.
    pub(crate) async fn adopt_sessions_of(self: Arc<Self>, node: shoal_cluster::RaftNodeId) {
        let Some(cluster) = self.cluster().cloned() else {
            return;
        };
        let started = std::time::Instant::now();
        let stored: Vec<MqttString> = cluster
            .owned_by(node)
            .into_iter()
            .filter_map(|c| MqttString::try_from(c).ok())
            .filter(|c| self.stores_session(c))
            .collect();
        let timeout = self.config.cluster.route_timeout;
        let mut adopted = 0usize;
        for chunk in stored.chunks(256) {
            let mut takeups = tokio::task::JoinSet::new();
            for client_id in chunk {
                let (broker, cluster, client_id) =
                    (Arc::clone(&self), cluster.clone(), client_id.clone());
                takeups.spawn(async move {
                    let epoch = match cluster.adopt_from(&client_id, Some(node)).await {
                        Ok(Some(epoch)) => epoch,
                        // Its client connected elsewhere meanwhile: that node has it.
                        Ok(None) => return false,
                        Err(e) => {
                            tracing::warn!(%client_id, error = %e, "a session of a dead node could not be claimed");
                            return false;
                        }
                    };
                    let dead = Some(Owner { node, epoch: 0 });
                    match broker
                        .take_up(&cluster, &client_id, false, epoch, dead, true)
                        .await
                    {
                        Ok(routes) => wait_all(routes, timeout).await,
                        Err(e) => {
                            tracing::warn!(%client_id, error = %e, "a session of a dead node could not be taken up");
                            false
                        }
                    }
                });
            }
            while let Some(done) = takeups.join_next().await {
                adopted += usize::from(done.unwrap_or(false));
            }
        }
        tracing::info!(
            node,
            sessions = stored.len(),
            adopted,
            ms = started.elapsed().as_millis() as u64,
            "took up the persistent sessions of a node declared down"
        );
    }

    /// Whether this node's store holds a session of `client_id`.
    fn stores_session(&self, client_id: &MqttString) -> bool {
        // A record that does not decode counts too: reading it is `load_session`'s job.
        self.store.has_session(client_id).unwrap_or(false)
    }

    /// Lets go of a session another node serves now: memory only (the session group
    /// keeps it). A connection still attached is closed (0x8E).
    pub(crate) fn forget(&self, slot: &Arc<SessionSlot>) {
        {
            let mut sessions = lock(&self.sessions);
            let listed = sessions
                .get(&slot.client_id)
                .is_some_and(|listed| Arc::ptr_eq(listed, slot));
            slot.retire();
            if listed {
                sessions.remove(slot);
            }
        }
        if slot.is_attached() {
            slot.kick(shoal_codec::DisconnectReasonCode::SessionTakenOver);
        }
        let filters: Vec<MqttString> = slot
            .lock()
            .subscriptions()
            .iter()
            .map(|s| s.filter.clone())
            .collect();
        self.unsubscribe(slot.id, filters.iter().map(|f| f.as_str()));
        write(&self.by_id).remove(slot);
    }

    /// Another node fenced `client_id`'s session with `epoch` (it took the session up):
    /// a session held here under an older claim is let go.
    pub(crate) fn session_fenced(&self, client_id: &str, epoch: u64) {
        let Some(slot) = self.session(client_id) else {
            return;
        };
        // 0: read back at start and not settled yet (`settle_sessions` decides).
        let held = slot.epoch();
        if held != 0 && held < epoch {
            tracing::debug!(client_id, epoch, "a session moved to another node");
            self.forget(&slot);
        }
    }

    /// Once the node is in its cluster: keeps the sessions read back at start that the
    /// registry says this node owns (with their epoch), adopts those nobody owns (claims
    /// proposed a few hundred at a time, so that they share Raft entries), and lets go of
    /// those another node owns now.
    pub(crate) async fn settle_sessions(&self, cluster: &Cluster) {
        let me = cluster.id();
        let (mut kept, mut gone) = (0usize, 0usize);
        let mut unowned = Vec::new();
        for slot in self.slots() {
            let fence = cluster.session_fence(&slot.client_id);
            match cluster.owner(&slot.client_id) {
                Some(owner) if owner.node == me && owner.epoch >= fence => {
                    slot.set_epoch(owner.epoch);
                    kept += 1;
                }
                Some(_) => {
                    self.forget(&slot);
                    gone += 1;
                }
                None => unowned.push(slot),
            }
        }
        let mut adoptions = Vec::with_capacity(unowned.len());
        for chunk in unowned.chunks(256) {
            let mut claims = tokio::task::JoinSet::new();
            for slot in chunk {
                let (cluster, slot) = (cluster.clone(), Arc::clone(slot));
                claims.spawn(async move {
                    let adopted = cluster.adopt(&slot.client_id).await;
                    (slot, adopted)
                });
            }
            while let Some(done) = claims.join_next().await {
                if let Ok(done) = done {
                    adoptions.push(done);
                }
            }
        }
        let mut adopted = 0usize;
        for (slot, result) in adoptions {
            match result {
                Ok(Some(epoch)) => {
                    slot.set_epoch(epoch);
                    adopted += 1;
                }
                Ok(None) => {
                    self.forget(&slot);
                    gone += 1;
                }
                Err(e) => {
                    tracing::warn!(client_id = %slot.client_id, error = %e, "a session nobody owns could not be taken up; left to a later connect");
                    self.forget(&slot);
                    gone += 1;
                }
            }
        }
        tracing::info!(
            kept,
            adopted,
            elsewhere = gone,
            "sessions read back: held here, or left to the node that holds them"
        );
    }
}

/// Waits for every one of `waits` (at most `timeout` in all); returns whether all held.
pub(crate) async fn wait_all(waits: Vec<Pending>, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut all = true;
    for wait in waits {
        all &= matches!(tokio::time::timeout_at(deadline, wait).await, Ok(Ok(true)));
    }
    all
}
