//! shoal-loadtest: a load generator for MQTT brokers, any broker, built on shoal-codec alone.
//!
//! It opens many client connections (one tokio task each), drives them through scenario
//! shapes (`conn`, `pub`, `sub`, `pairs`, `fanin`, `fanout`, `fleet`, or groups from a TOML
//! file), and measures what arrives: every measured message carries a header (stream, flow,
//! sequence number, send time) so that loss, duplicates and end-to-end latency are exact per
//! flow. Runs can spread over worker processes, and results become JSON, CSV and HTML.
//!
//! What it never does: depend on any shoal crate but the codec, or talk to anything but
//! the brokers it is given (`-b`, `--more-brokers`: several processes or cluster nodes).
//!
//! Main types: [`scenario::Scenario`] (groups and per-client plans), [`client::run_client`]
//! (one connection's driver), [`stats::Collector`] (totals), [`run::execute`] (the phases of
//! a run), [`report::RunResult`] (what a run leaves behind).

pub mod cli;
pub mod client;
pub mod limits;
pub mod payload;
pub mod probe;
pub mod procstat;
pub mod progress;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod topic;
pub mod transport;
pub mod units;
pub mod worker;
