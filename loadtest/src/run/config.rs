//! The resolved configuration of a run: what every process of it (the parent and its
//! workers) needs, serialised to hand it to worker processes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::scenario::{Placement, ScenarioSpec, SessionDefaults};
use crate::transport::{Brokers, TlsOptions};
use crate::units::Span;

/// Which share of the clients a worker process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlot {
    /// This worker's index.
    pub index: usize,
    /// How many workers.
    pub count: usize,
}

/// A run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The scenario.
    pub scenario: ScenarioSpec,
    /// Session defaults (version, clean start, credentials).
    pub session: SessionDefaults,
    /// The brokers (`-b` first), clients spread over them by `placement`.
    pub brokers: Brokers,
    /// Which broker each client connects to.
    #[serde(default)]
    pub placement: Placement,
    /// TLS settings.
    pub tls: TlsOptions,
    /// How long publishers run.
    pub duration: Option<Span>,
    /// Hard limit on the whole run.
    pub timeout: Span,
    /// New connections per second (all processes together); `None`: as fast as possible.
    pub ramp: Option<f64>,
    /// Handshakes in progress at once, per process.
    pub connect_concurrency: usize,
    /// Limit on transport connect + CONNACK + SUBACK.
    pub connect_timeout: Span,
    /// Most QoS 1/2 publications in flight per client.
    pub inflight: u16,
    /// Reconnect after this delay when a connection is lost.
    pub reconnect: Option<Span>,
    /// Reconnect to the next broker of the list (`--failover`).
    #[serde(default)]
    pub failover: bool,
    /// Longest wait for in-flight messages after publishing stops.
    pub drain: Span,
    /// Local addresses to connect from, round robin.
    pub source_ips: Vec<IpAddr>,
    /// Largest packet accepted from the broker.
    pub max_packet_size: u32,
    /// Worker processes (1: run in this process).
    pub workers: usize,
    /// Set in a worker process: its share.
    pub slot: Option<WorkerSlot>,
    /// Write what was acknowledged and delivered here (`--record`; one process only).
    #[serde(default)]
    pub record: Option<std::path::PathBuf>,
}
