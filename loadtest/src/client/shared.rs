//! What every connection of a run shares: the phase, the connection ramp, options, the
//! collector and the progress counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};
use tokio::time::Instant;

use crate::stats::Collector;
use crate::transport::Connector;

/// Where the run is. Clients publish only while `Running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Clients connect and subscribe.
    Connecting,
    /// Publishers publish.
    Running,
    /// Publishing has stopped; in-flight messages and acknowledgements arrive.
    Draining,
    /// Clients disconnect.
    Stopping,
}

/// Connection timing and limits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Transport, CONNACK and SUBACK must complete within this.
    pub connect_timeout: Duration,
    /// Most QoS 1/2 publications in flight per client (lowered to the broker's Receive
    /// Maximum).
    pub inflight: u16,
    /// Reconnect after this delay when a connection ends early (`None`: do not).
    pub reconnect: Option<Duration>,
    /// Reconnect to the next broker of the run's list rather than the same one.
    pub failover: bool,
    /// Largest packet accepted from the broker.
    pub max_packet_size: u32,
    /// How often a connection hands its statistics to the collector.
    pub flush_every: Duration,
}

/// Paces connection attempts: at most `rate` new connections a second, and at most
/// `concurrency` handshakes at once.
#[derive(Debug)]
pub struct Ramp {
    start: Instant,
    interval: Option<Duration>,
    next: AtomicU64,
    handshakes: Semaphore,
}

impl Ramp {
    /// A ramp starting now.
    pub fn new(rate: Option<f64>, concurrency: usize) -> Self {
        Self {
            start: Instant::now(),
            interval: rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: AtomicU64::new(0),
            handshakes: Semaphore::new(concurrency.max(1)),
        }
    }

    /// Waits for this client's turn in the ramp, then for a handshake slot.
    pub async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(interval) = self.interval {
            let at = self.start + interval.mul_f64(n as f64);
            tokio::time::sleep_until(at).await;
        }
        self.slot().await
    }

    /// Waits for a handshake slot only (reconnections).
    pub async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.handshakes.acquire().await.ok()
    }
}

/// Counters the controller waits on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Clients that finished their first connection attempt, successful or not.
    pub settled: AtomicU64,
    /// Clients whose first attempt succeeded.
    pub ready: AtomicU64,
    /// Publishers that have not yet sent their whole count.
    pub publishing: AtomicU64,
    /// Client tasks still running.
    pub alive: AtomicU64,
    /// Woken whenever one of the counters changes.
    pub changed: Notify,
}

impl Progress {
    /// Adds one to `counter` and wakes the controller.
    pub fn bump(&self, counter: &AtomicU64, up: bool) {
        if up {
            counter.fetch_add(1, Ordering::AcqRel);
        } else {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
    }
}

/// The state shared by every client task of a run.
pub struct Shared {
    /// Opens transport connections.
    pub connector: Connector,
    /// Totals.
    pub collector: Collector,
    /// The current phase.
    pub phase: watch::Receiver<Phase>,
    /// The connection ramp.
    pub ramp: Ramp,
    /// Options.
    pub options: ClientOptions,
    /// Progress counters.
    pub progress: Progress,
    /// With `--record`: every finished client's record.
    pub records: Option<std::sync::Mutex<Vec<crate::record::ClientRecord>>>,
}
