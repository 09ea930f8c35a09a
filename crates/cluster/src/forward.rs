//! Forwarding: one long-lived gRPC stream per peer carries the publications for the
//! peer's subscribers, in batches; the peer answers each batch once what it queued is
//! durable. A bounded queue in front of each stream is the flow control: when it is full,
//! a publication is refused (counted), never buffered without bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::node::Inner;
use crate::proto::{ForwardBatch, Publication};
use crate::type_config::RaftNodeId;

/// How many publications wait for one peer's stream at most.
pub(crate) const QUEUE: usize = 16_384;
/// How many publications one batch carries at most.
const BATCH: usize = 512;

/// What a forwarded publication's acknowledgement waits for: `true` once the peer has it
/// durably queued for its subscribers.
pub type ForwardWait = oneshot::Receiver<bool>;

pub(crate) struct Outgoing {
    pub(crate) message: Bytes,
    pub(crate) shared: Vec<String>,
    /// The dedup tag of a QoS 2 message (`Forwarded::tag`).
    pub(crate) tag: Option<u64>,
    pub(crate) ack: Option<oneshot::Sender<bool>>,
    /// When it was queued here: the forwarding latency runs from then to the acceptance.
    pub(crate) queued: Instant,
}

/// The sending side of the stream to one peer.
#[derive(Clone)]
pub(crate) struct Forwarder {
    pub(crate) tx: mpsc::Sender<Outgoing>,
}

impl Forwarder {
    /// Starts the stream task to `peer`.
    pub(crate) fn start(inner: &Arc<Inner>, peer: RaftNodeId) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(Arc::downgrade(inner), peer, rx));
        Self { tx }
    }
}

/// Keeps a stream to `peer` open while there is something to send, reconnecting after a
/// failure; publications in flight on a broken stream are answered `false`.
async fn run(inner: std::sync::Weak<Inner>, peer: RaftNodeId, mut rx: mpsc::Receiver<Outgoing>) {
    let mut backlog: Option<Outgoing> = None;
    loop {
        let first = match backlog.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Some(node) = inner.upgrade() else { return };
        let Some(mut client) = node.client_of(peer) else {
            let _ = first.ack.map(|a| a.send(false));
            fail_queued(&mut rx);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let host = Arc::clone(&node.host);
        drop(node);
        let (batch_tx, batch_rx) = mpsc::channel::<ForwardBatch>(4);
        let outbound = futures_util::stream::unfold(batch_rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        let pending: Arc<std::sync::Mutex<Waiting>> = Arc::default();
        let mut seq: u64 = 0;
        let add = |item: Outgoing, batch: &mut ForwardBatch, seq: &mut u64| {
            *seq += 1;
            let acknowledge = item.ack.is_some();
            if let Some(ack) = item.ack {
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*seq, (ack, item.queued));
            }
            batch.publications.push(Publication {
                seq: *seq,
                message: item.message,
                acknowledge,
                shared: item.shared,
                tag: item.tag.unwrap_or(0),
            });
        };
        let mut batch = ForwardBatch::default();
        add(first, &mut batch, &mut seq);
        let _ = batch_tx.send(batch).await;
        let call = client.forward(outbound);
        let mut replies = match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                tracing::debug!(peer, %status, "the forwarding stream to a peer failed to open");
                fail_all(&pending);
                fail_queued(&mut rx);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                tracing::debug!(peer, "the forwarding stream to a peer did not open in time");
                fail_all(&pending);
                fail_queued(&mut rx);
                continue;
            }
        };
        let acks = {
            let pending = Arc::clone(&pending);
            tokio::spawn(async move {
                while let Ok(Some(ack)) = replies.message().await {
                    let failed: std::collections::HashSet<u64> = ack.failed.into_iter().collect();
                    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                    let rest = pending.split_off(&(ack.up_to + 1));
                    let answered = std::mem::replace(&mut *pending, rest);
                    drop(pending);
                    for (seq, (waiter, queued)) in answered {
                        let accepted = !failed.contains(&seq);
                        if accepted {
                            host.forward_accepted(queued.elapsed());
                        }
                        let _ = waiter.send(accepted);
                    }
                }
            })
        };
        // Send batches until the stream breaks.
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = batch_tx.closed() => None,
            };
            let Some(item) = item else { break };
            if acks.is_finished() {
                backlog = Some(item);
                break;
            }
            let mut batch = ForwardBatch::default();
            add(item, &mut batch, &mut seq);
            while batch.publications.len() < BATCH {
                match rx.try_recv() {
                    Ok(item) => add(item, &mut batch, &mut seq),
                    Err(_) => break,
                }
            }
            if batch_tx.send(batch).await.is_err() {
                break;
            }
        }
        acks.abort();
        fail_all(&pending);
        if rx.is_closed() && backlog.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The publications sent and not yet answered, by sequence number: who waits, and since
/// when.
type Waiting = BTreeMap<u64, (oneshot::Sender<bool>, Instant)>;

/// Answers `false` to every publication queued for a peer the stream cannot reach (its
/// process gone, or cut off): at once, not one per attempt to reach it, so that their
/// publishers' acknowledgements (0x80) do not wait behind each other meanwhile.
fn fail_queued(rx: &mut mpsc::Receiver<Outgoing>) {
    while let Ok(item) = rx.try_recv() {
        if let Some(ack) = item.ack {
            let _ = ack.send(false);
        }
    }
}

fn fail_all(pending: &std::sync::Mutex<Waiting>) {
    let drained = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, (waiter, _)) in drained {
        let _ = waiter.send(false);
    }
}
