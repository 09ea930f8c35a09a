//! shoal-broker: a shoal node. Listeners accept connections; one task per connection
//! drives its session (shoal-session) over the socket; dispatch matches each message against
//! the subscription index (shoal-topic) and delivers it to the matching sessions; the
//! store (shoal-store) keeps persistent sessions and retained messages durable before
//! QoS 1/2 messages are acknowledged. Metrics, $SYS, and an admin HTTP endpoint make it
//! operable.
//!
//! IO lives here: sockets, tasks, timers and the clock. Protocol rules live in the sans-IO
//! crates below; this crate never decodes a field or tracks a QoS flow itself.
//!
//! Main types: [`Node`] (a running node), [`Config`] (its configuration), [`Broker`] (the
//! state its tasks share).

mod access;
mod admin;
mod api;
mod auth;
mod broker;
mod clock;
pub mod cluster_cmd;
pub mod config;
mod connection;
pub mod ctl;
mod hash_gate;
mod inspect;
mod keepalive;
mod limits;
mod listener;
pub mod metrics;
mod node;
mod slot;
mod stats;
mod sys;

pub use auth::{AuthExchange, AuthStep, EnhancedAuth, Hooks};
pub use broker::Broker;
pub use clock::Clock;
pub use config::{Config, ConfigError, RawConfig};
pub use hash_gate::HashStats;
pub use node::{Node, StartError};
