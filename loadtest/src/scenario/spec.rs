//! What a scenario says, as written in a TOML file (`scenario FILE`) or produced by a
//! built-in scenario: groups of clients and their behaviour.

use serde::{Deserialize, Serialize};

use crate::units::{Rate, Span};

/// A scenario: groups of clients.
///
/// ```toml
/// name = "fleet"
/// sites = 10
/// duration = "30s"
///
/// [[group]]
/// name = "devices"
/// count = 1000
/// will = { topic = "fleet/%s/%i/status", payload = "offline", qos = 1, retain = true }
/// on_connect = [{ topic = "fleet/%s/%i/status", payload = "online", qos = 1, retain = true }]
/// subscribe = [{ filter = "fleet/%s/%i/cmd", qos = 1 }]
/// publish = { topic = "fleet/%s/%i/telemetry", qos = 1, interval = "1s", stream = "telemetry" }
///
/// [[group]]
/// name = "backend"
/// count = 2
/// subscribe = [{ filter = "fleet/+/+/telemetry", share = "backend", qos = 1 }]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// The name shown in reports.
    pub name: String,
    /// How many sites `%s` cycles through (`site = index % sites`); default 1.
    #[serde(default = "one")]
    pub sites: u32,
    /// How long publishers run, unless the command line says otherwise.
    #[serde(default)]
    pub duration: Option<Span>,
    /// The groups, connected in order.
    #[serde(rename = "group")]
    pub groups: Vec<GroupSpec>,
}

fn one() -> u32 {
    1
}

/// A group of identical clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The group name (`%g`); unique in the scenario.
    pub name: String,
    /// How many clients.
    pub count: u32,
    /// Client identifier pattern; default `{prefix}-%g-%i`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Clean start; default from the command line (`--persistent` turns it off).
    #[serde(default)]
    pub clean_start: Option<bool>,
    /// MQTT 5 session expiry interval, seconds; default from the command line.
    #[serde(default)]
    pub session_expiry: Option<u32>,
    /// Keep alive, seconds; default from the command line.
    #[serde(default)]
    pub keep_alive: Option<u16>,
    /// The Last Will.
    #[serde(default)]
    pub will: Option<MessageSpec>,
    /// Subscriptions made right after CONNACK.
    #[serde(default)]
    pub subscribe: Vec<SubscribeSpec>,
    /// Messages published once after subscribing (e.g. a retained "online" status).
    #[serde(default)]
    pub on_connect: Vec<MessageSpec>,
    /// Measured publishing while the run lasts.
    #[serde(default)]
    pub publish: Option<PublishSpec>,
}

/// One message with a literal payload (Will, on-connect status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSpec {
    /// Topic pattern.
    pub topic: String,
    /// Payload text.
    #[serde(default)]
    pub payload: String,
    /// QoS 0, 1 or 2.
    #[serde(default)]
    pub qos: u8,
    /// Retained.
    #[serde(default)]
    pub retain: bool,
}

/// One subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeSpec {
    /// Topic filter pattern.
    pub filter: String,
    /// Maximum QoS.
    #[serde(default)]
    pub qos: u8,
    /// Shared-subscription group name: the filter becomes `$share/{share}/{filter}` and the
    /// group's members count as one receiver.
    #[serde(default)]
    pub share: Option<String>,
}

/// Measured publishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// Topic pattern. With `targets`, it is expanded for each client of the target group
    /// (`%i` and `%s` are the target's).
    pub topic: String,
    /// QoS 0, 1 or 2.
    #[serde(default)]
    pub qos: u8,
    /// Retained.
    #[serde(default)]
    pub retain: bool,
    /// Payload size in bytes (at least 24, the measurement header).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Messages per second per client, or `max`.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// One message per interval (instead of `rate`).
    #[serde(default)]
    pub interval: Option<Span>,
    /// Messages per client; without it the run's duration bounds publishing.
    #[serde(default)]
    pub count: Option<u64>,
    /// The measured stream these messages belong to (latency and loss are reported per
    /// stream).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Publish to each client of this group in turn (commands to devices).
    #[serde(default)]
    pub targets: Option<String>,
}

fn default_size() -> usize {
    64
}

fn default_stream() -> String {
    "data".to_owned()
}

impl PublishSpec {
    /// The publishing rate per client.
    pub fn rate(&self) -> Rate {
        match (self.rate, self.interval) {
            (Some(rate), _) => rate,
            (None, Some(interval)) => Rate::every(interval.0),
            (None, None) => Rate::Max,
        }
    }
}
