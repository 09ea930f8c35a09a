//! The broker's side of the cluster: what it asks of the cluster (routes, forwarding,
//! claims, retained messages) and what the cluster asks of it ([`BrokerHost`]: delivering
//! forwarded publications, closing a connection taken over on another node, keeping the
//! retained messages the Raft groups apply).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_cluster::{BoxFuture, Cluster, Forwarded, Host};
use shoal_codec::{DisconnectReasonCode, QoS};
use shoal_session::Message;
use shoal_topic::Recipients;
use tokio::sync::oneshot;

use super::{Broker, write};
use crate::metrics as m;

/// Something a read's acknowledgements wait for beyond the store's flush: a forwarded
/// publication's acceptance by a peer, a replicated retained message, a new route usable
/// everywhere. `true` when it held.
pub(crate) type Pending = oneshot::Receiver<bool>;

/// A pending wait that has failed already.
pub(crate) fn failed() -> Pending {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(false);
    rx
}

/// How long a node back in touch with its cluster may take to apply what was committed
/// while it was away before it serves (it tries again at the next look otherwise).
const SYNC_BEFORE_SERVING: Duration = Duration::from_secs(10);

impl Broker {
    /// This node's part of the cluster (`None`: a node alone).
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.cluster.get()
    }

    /// The cluster, for an operator's change that goes through it; an error to answer
    /// while the node is still entering it.
    pub(crate) fn joined_cluster(&self) -> Result<&Cluster, String> {
        self.cluster()
            .ok_or_else(|| "this node is still entering its cluster: try again".to_owned())
    }

    /// This node's part of the cluster once opened, before it has joined (`None`: a node
    /// alone, or not opened yet).
    pub(crate) fn entering(&self) -> Option<&Cluster> {
        self.entering.get()
    }

    /// The cluster is open: the node enters it (and may wait for `cluster/join`).
    pub(crate) fn set_entering(&self, cluster: Cluster) {
        let _ = self.entering.set(cluster);
    }

    /// Joins the cluster: from now on, routes, forwarding and claims go through it.
    pub(crate) fn set_cluster(&self, cluster: Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// Whether this node is cut off from its cluster (or has not joined yet): it serves no
    /// client.
    pub(crate) fn is_isolated(&self) -> bool {
        self.isolated.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Serves clients from now on if the membership lease holds already (a node that has
    /// just entered its cluster): `/readyz` does not wait for `watch_lease`'s first look.
    pub(crate) fn serve_if_in_touch(&self, cluster: &Cluster) {
        if cluster.lease_holds() && !cluster.declared_down() {
            self.isolated
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// Follows the cluster's membership lease until shutdown: when it lapses, every client
    /// is disconnected (MQTT 5: DISCONNECT 0x9C, Use another server, naming another node
    /// as this node's copy of meta knows them; with none known, 0x89, Server busy) and new
    /// ones are refused; when it holds again, the node serves again.
    pub(crate) async fn watch_lease(self: Arc<Self>, cluster: Cluster) {
        let mut shutdown = self.shutdown.subscribe();
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            // A node of a larger cluster whose store failed (a full disk) or whose Raft
            // group stopped cannot follow the route index: it would answer 0x10 for a
            // subscription it never learnt of (SUBACK's promise), so it stops serving
            // until restarted. (A node alone keeps serving: its index is its own.)
            let failed = (self.is_store_broken() || cluster.stopped_group().is_some())
                && cluster.has_peers();
            // A node declared down (and back, before it is declared up again) is passed
            // by route barriers: a route committed meanwhile may not be applied here yet.
            let mut down = cluster.declared_down();
            let mut holds = !failed && cluster.lease_holds() && !down;
            if holds && self.is_isolated() {
                // Back in touch (or just entered): first apply what every group committed
                // meanwhile, so that a route confirmed while this node was away, and its
                // own declaration as down, are known here before it serves.
                let synced = tokio::time::timeout(SYNC_BEFORE_SERVING, cluster.sync_groups());
                if !matches!(synced.await, Ok(Ok(()))) {
                    continue;
                }
                down = cluster.declared_down();
                holds = !down && cluster.lease_holds();
            }
            let was_isolated = self
                .isolated
                .swap(!holds, std::sync::atomic::Ordering::AcqRel);
            if holds && was_isolated {
                tracing::info!("in touch with the cluster's majority: serving clients");
            } else if !holds && !was_isolated {
                if failed {
                    tracing::error!(
                        "the store or a Raft group failed: disconnecting every client and refusing new ones; restart the node once its disk has room"
                    );
                } else if down {
                    tracing::warn!(
                        "declared down by the cluster: disconnecting every client until it is declared up again"
                    );
                } else {
                    metrics::counter!(m::CLUSTER_LEASE_LOST).increment(1);
                    tracing::warn!(
                        "cut off from the cluster's majority (membership lease lapsed): disconnecting every client until it is back"
                    );
                }
                self.send_elsewhere(&cluster, DisconnectReasonCode::ServerBusy, true);
            }
        }
    }

    /// Disconnects every client to send it to another node: MQTT 5 clients get
    /// DISCONNECT 0x9C (Use another server) with the Server Reference of another node that
    /// is up (round robin over those that recorded `mqtt_advertise`), or `fallback` when
    /// none is known; MQTT 3.1.1 clients are closed. The Will of a client sent elsewhere
    /// is published if `publish_will`.
    fn send_elsewhere(
        &self,
        cluster: &Cluster,
        fallback: DisconnectReasonCode,
        publish_will: bool,
    ) {
        for slot in self.slots() {
            if slot.connected_as().is_none() {
                continue;
            }
            match cluster.server_reference() {
                Some(server) => slot.redirect(&server, publish_will),
                None => slot.kick(fallback),
            }
        }
    }

    /// Leaves the cluster (`POST /api/v1/cluster/leave`): serves no client any more,
    /// disconnects every client (MQTT 5: DISCONNECT 0x9C, Use another server, naming
    /// another node; with none known, 0x8B, Server shutting down), has the other nodes
    /// remove it from every group, then asks the process to stop.
    pub(crate) async fn leave_cluster(&self) -> Result<(), String> {
        let Some(cluster) = self.cluster() else {
            return Err("this node is not part of a cluster".to_owned());
        };
        self.isolated
            .store(true, std::sync::atomic::Ordering::Release);
        self.send_elsewhere(cluster, DisconnectReasonCode::ServerShuttingDown, false);
        let result = cluster.leave().await.map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                tracing::info!("left the cluster: stopping");
                self.stop.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "leaving the cluster failed; still not serving clients")
            }
        }
        result
    }

    /// Drains this node of a cluster before it stops (SIGTERM), the listeners stopped
    /// already: hands every Raft leadership it holds to another node (for at most
    /// `within`), then disconnects every client to send it elsewhere (MQTT 5: DISCONNECT
    /// 0x9C, Use another server, naming another node; with none known, 0x8B, Server
    /// shutting down; 3.1.1: closed). Wills are not published: the node comes back with
    /// its sessions. The caller waits for the connections to close, then calls
    /// `Cluster::depart`.
    pub(crate) async fn drain(&self, cluster: &Cluster, within: Duration) {
        let started = std::time::Instant::now();
        let kept = cluster.hand_off_all(within).await;
        if kept.is_empty() {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "draining: this node leads no Raft group any more"
            );
        } else {
            let kept: Vec<String> = kept.iter().map(ToString::to_string).collect();
            tracing::warn!(groups = ?kept, "draining: these Raft leaderships could not be handed over; they move by election once the node is gone");
        }
        self.send_elsewhere(cluster, DisconnectReasonCode::ServerShuttingDown, false);
    }

    /// Removes the subscriptions of `subscriber` to `filters` from the index; a filter that
    /// loses its last local subscriber loses this node's route.
    pub(crate) fn unsubscribe<'a>(
        &self,
        subscriber: u64,
        filters: impl IntoIterator<Item = &'a str>,
    ) {
        let mut index = write(&self.index);
        for filter in filters {
            if let Some(removed) = index.remove(subscriber, filter)
                && removed.last
                && let Some(cluster) = self.cluster()
            {
                cluster.route_remove(filter);
            }
        }
    }

    /// Every filter with a local subscriber (the node's routes, as they must be).
    pub(crate) fn local_filters(&self) -> BTreeSet<String> {
        let mut filters = BTreeSet::new();
        for slot in self.slots() {
            let session = slot.lock();
            filters.extend(session.subscriptions().iter().map(|s| s.filter.to_string()));
        }
        filters
    }

    /// Forwards `message` to the other nodes with matching subscribers; returns how many
    /// nodes it went to, the shared groups whose delivery falls elsewhere, and, for QoS 1
    /// and 2, what the acknowledgement waits for.
    pub(crate) fn forward(
        &self,
        message: &Message,
        tag: Option<u64>,
        waits: &mut Vec<Pending>,
    ) -> (usize, Vec<String>) {
        let Some(cluster) = self.cluster() else {
            return (0, Vec::new());
        };
        // $SYS topics are each node's own; clients cannot publish under `$`.
        if message.topic.starts_with('$') || !cluster.has_routes() {
            return (0, Vec::new());
        }
        let targets = cluster.targets(&message.topic);
        let acknowledge = message.qos != QoS::AtMostOnce;
        let nodes = targets.nodes.len();
        if nodes > 0 {
            let qos = match message.qos {
                QoS::AtMostOnce => "0",
                QoS::AtLeastOnce => "1",
                QoS::ExactlyOnce => "2",
            };
            metrics::counter!(m::CLUSTER_FORWARDED, "qos" => qos).increment(nodes as u64);
        }
        if nodes == 0 {
            return (0, targets.elsewhere);
        }
        let encoded = match Cluster::encode(message) {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::warn!(error = %e, "a publication could not be encoded for forwarding");
                if acknowledge {
                    waits.push(failed());
                }
                return (nodes, targets.elsewhere);
            }
        };
        for (node, shared) in targets.nodes {
            match cluster.forward(node, &encoded, shared, tag, acknowledge) {
                Ok(Some(wait)) => waits.push(wait),
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!(m::MESSAGES_DROPPED, "cause" => "forward_backlog")
                        .increment(1);
                    tracing::debug!(error = %e, "a publication could not be forwarded");
                    if acknowledge {
                        waits.push(failed());
                    }
                }
            }
        }
        (nodes, targets.elsewhere)
    }

    /// Keeps a retained message the cluster applied (or clears it): memory only, the Raft
    /// group is its store.
    fn retained_changed(&self, topic: &str, message: Option<Message>) {
        match message {
            Some(message) => {
                self.retain(&Arc::new(message));
            }
            None => {
                write(&self.retained).remove(topic);
            }
        }
    }

    /// Closes the local connection of `client_id` claimed with an epoch before `epoch`
    /// (taken over on another node), waits for it to let go, and ends its session here:
    /// the client's session now lives where it connected.
    async fn kick_claimed(self: Arc<Self>, client_id: String, epoch: u64) -> bool {
        let Some(slot) = self.session(&client_id) else {
            return false;
        };
        if slot.epoch() >= epoch {
            return false;
        }
        let attached = slot.is_attached();
        if attached {
            slot.kick(DisconnectReasonCode::SessionTakenOver);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let detached = self.detached.notified();
                tokio::pin!(detached);
                detached.as_mut().enable();
                if !slot.is_attached() {
                    break;
                }
                if tokio::time::timeout_at(deadline, detached).await.is_err() {
                    tracing::warn!(
                        client_id,
                        "a connection taken over by another node did not let go in time"
                    );
                    break;
                }
            }
        }
        // A persistent session stays (offline) until the new owner fences it in the session
        // group (`session_fenced`): its routes keep publications coming meanwhile.
        if !slot.lock().is_persistent() {
            self.end_claimed(&slot);
        }
        attached
    }

    /// Sends messages from another node to this node's sessions (now); the future
    /// answers, per message, whether what it queued is durable.
    fn deliver_forwarded(
        self: Arc<Self>,
        messages: Vec<Forwarded>,
    ) -> impl Future<Output = Vec<bool>> + Send + 'static {
        let mut recipients = Recipients::new();
        let mut all = super::Receipts::default();
        let mut results = Vec::with_capacity(messages.len());
        for forwarded in messages {
            let receipts = self.dispatch_forwarded(
                &Arc::new(forwarded.message),
                &forwarded.shared,
                forwarded.tag,
                &mut recipients,
            );
            all = all.and(receipts);
            results.push(receipts);
        }
        async move {
            // One wait for the whole batch; a message whose own writes failed fails alone.
            let durable = all.is_empty() || self.durable(all).await;
            if durable {
                return results.into_iter().map(|r| !r.failed).collect();
            }
            let mut answers = Vec::with_capacity(results.len());
            for receipts in results {
                answers.push(receipts.is_empty() || self.durable(receipts).await);
            }
            answers
        }
    }
}

/// The broker as the cluster's host. Holds the broker weakly: the cluster lives inside it.
pub(crate) struct BrokerHost(pub(crate) Weak<Broker>);

impl Host for BrokerHost {
    fn deliver(&self, messages: Vec<Forwarded>) -> BoxFuture<Vec<bool>> {
        let n = messages.len();
        match self.0.upgrade() {
            // Not before its persistent sessions are read back: a copy for one of them
            // would find no subscriber and be accepted.
            Some(broker) if broker.sessions_ready() => Box::pin(broker.deliver_forwarded(messages)),
            _ => Box::pin(std::future::ready(vec![false; n])),
        }
    }

    fn kick(&self, client_id: String, epoch: u64) -> BoxFuture<bool> {
        let broker = self.0.upgrade();
        Box::pin(async move {
            match broker {
                Some(broker) => broker.kick_claimed(client_id, epoch).await,
                None => false,
            }
        })
    }

    fn retained_changed(&self, topic: &str, message: Option<Message>) {
        if let Some(broker) = self.0.upgrade() {
            broker.retained_changed(topic, message);
        }
    }

    fn ban_changed(&self, target: &str, ban: Option<&shoal_cluster::BanRecord>) {
        if let Some(broker) = self.0.upgrade() {
            broker.ban_changed(target, ban);
        }
    }

    fn adopt_sessions(&self, node: shoal_cluster::RaftNodeId) -> BoxFuture<()> {
        let broker = self.0.upgrade();
        Box::pin(async move {
            if let Some(broker) = broker {
                broker.adopt_sessions_of(node).await;
            }
        })
    }

    fn session_fenced(&self, client_id: &str, epoch: u64) {
        if let Some(broker) = self.0.upgrade() {
            broker.session_fenced(client_id, epoch);
        }
    }

    fn forward_accepted(&self, latency: Duration) {
        metrics::histogram!(m::CLUSTER_FORWARD_SECONDS).record(latency.as_secs_f64());
    }
}
