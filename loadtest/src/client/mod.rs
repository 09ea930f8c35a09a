//! The client: one tokio task per connection, driving the MQTT protocol over the codec.
//!
//! [`run_client`] connects (through the ramp), runs the [`connection::Connection`] event
//! loop until the run stops it, reconnects if asked to, and at the end hands its
//! statistics and flow records to the collector.

mod connection;
pub mod error;
pub mod inflight;
pub mod publisher;
pub mod receiver;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::debug;

pub use error::ClientError;
pub use shared::{ClientOptions, Phase, Progress, Ramp, Shared};

use crate::client::connection::Connection;
use crate::client::inflight::Inflight;
use crate::client::publisher::Publisher;
use crate::client::receiver::Receiver;
use crate::record::{ClientRecord, ClientRecorder};
use crate::scenario::ClientPlan;
use crate::stats::ClientStats;

/// What a client keeps across reconnections.
pub(crate) struct ClientState {
    pub(crate) stats: ClientStats,
    pub(crate) receiver: Receiver,
    pub(crate) publisher: Option<Publisher>,
    pub(crate) inflight: Inflight,
    /// QoS 2 packet ids received and not yet released: part of the session, so kept across
    /// reconnections that resume it (a repeated PUBLISH with one of them is a legal
    /// retransmission, not a new message) [MQTT-4.3.3-10].
    pub(crate) incoming_qos2: Vec<u16>,
    /// What `--record` keeps.
    pub(crate) recorder: Option<ClientRecorder>,
    /// Whether this client has connected before.
    pub(crate) connected_before: bool,
    /// Whether this publisher has told the controller that its count is sent.
    done_reported: bool,
}

impl ClientState {
    /// Tells the controller once that this publisher has sent its whole count, after
    /// handing its counts to the collector: once no publisher is left, the drain may end as
    /// soon as the deliveries it sees match the messages it sees sent, so the last messages
    /// must not wait for the next periodic flush to be seen.
    pub(crate) fn report_done(&mut self, shared: &Shared) {
        if !self.done_reported && self.publisher.as_ref().is_some_and(Publisher::done) {
            self.done_reported = true;
            shared
                .collector
                .flush(&mut self.stats, std::time::Instant::now());
            shared.progress.bump(&shared.progress.publishing, false);
        }
    }
}

/// Runs one client from its first connection to the end of the run.
pub async fn run_client(mut plan: ClientPlan, shared: Arc<Shared>) {
    let streams = shared.collector.lock().streams.len();
    let mut state = ClientState {
        stats: ClientStats::new(streams),
        receiver: Receiver::new(),
        publisher: plan.publisher.clone().map(Publisher::new),
        inflight: Inflight::new(),
        incoming_qos2: Vec::new(),
        recorder: shared
            .records
            .as_ref()
            .map(|_| ClientRecorder::new(plan.publisher.as_ref().map_or(0, |p| p.flows.len()))),
        connected_before: false,
        done_reported: plan.publisher.is_none(),
    };
    let mut phase_rx = shared.phase.clone();
    let mut first = true;
    loop {
        if *phase_rx.borrow() >= Phase::Stopping {
            break;
        }
        let permit = if first {
            shared.ramp.turn().await
        } else {
            shared.ramp.slot().await
        };
        shared.collector.attempt();
        // Boxed for the same reason as the transport handshake inside it.
        let result = Box::pin(Connection::establish(&plan, &shared, &mut state)).await;
        drop(permit);
        if first {
            first = false;
            if result.is_ok() {
                shared.progress.bump(&shared.progress.ready, true);
            }
            shared.progress.bump(&shared.progress.settled, true);
        }
        match result {
            Ok(mut conn) => match conn.run(&mut state, &shared, &mut phase_rx).await {
                Ok(()) => {
                    shared.collector.closed();
                    break;
                }
                Err(e) => {
                    debug!(client = %plan.connect.client_id, error = %e, "connection lost");
                    shared.collector.lost(&e.key());
                }
            },
            Err(e) => {
                debug!(client = %plan.connect.client_id, error = %e, "connection failed");
                shared.collector.connect_failed(&e.key());
            }
        }
        let Some(delay) = shared.options.reconnect else {
            break;
        };
        if shared.options.failover {
            plan.broker = (plan.broker + 1) % shared.connector.count().max(1);
        }
        let resume_at = Instant::now() + delay;
        loop {
            if *phase_rx.borrow_and_update() >= Phase::Draining {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(resume_at) => break,
                changed = phase_rx.changed() => if changed.is_err() { break },
            }
        }
        if *phase_rx.borrow() >= Phase::Draining {
            break;
        }
    }
    shared
        .collector
        .flush(&mut state.stats, std::time::Instant::now());
    if let Some(p) = &state.publisher {
        p.finish(&shared.collector);
    }
    if !state.done_reported {
        shared.progress.bump(&shared.progress.publishing, false);
    }
    state.receiver.finish(plan.sink, &shared.collector);
    if let (Some(records), Some(recorder)) = (&shared.records, state.recorder.take()) {
        let record = ClientRecord {
            group: plan.group,
            client: plan.connect.client_id.to_string(),
            sink: plan.sink,
            flows: state
                .publisher
                .as_ref()
                .map(Publisher::sent_per_flow)
                .unwrap_or_default(),
            recorder,
        };
        records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
    }
    shared.progress.alive.fetch_sub(1, Ordering::AcqRel);
    shared.progress.changed.notify_waiters();
}
