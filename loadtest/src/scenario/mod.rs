//! Scenarios: groups of clients and what they do, checked and resolved into per-client plans.
//!
//! A [`ScenarioSpec`] (from TOML or a built-in) becomes a [`Scenario`]: patterns parsed,
//! measured streams numbered, receivers ("sinks") and published flows numbered, and for each
//! flow the number of sinks whose filters match its topic, which is how many deliveries each
//! of its messages should make. Flow and sink numbers depend only on the scenario, so every
//! worker process numbers them alike.

pub mod builtin;
mod placement;
mod plan;
mod spec;

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_codec::{ProtocolVersion, QoS};

pub use placement::{GroupRelation, Layout, Placement, PlacementError, Relation, layout};
pub use plan::{ClientPlan, FlowPlan, PublisherPlan};
pub use spec::{GroupSpec, MessageSpec, PublishSpec, ScenarioSpec, SubscribeSpec};

use crate::payload::HEADER_LEN;
use crate::topic::{self, Pattern, Vars};
use crate::units::Rate;

/// Session settings that groups inherit unless they set their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDefaults {
    /// MQTT version: 4 (3.1.1) or 5.
    pub version: u8,
    /// Clean start.
    pub clean_start: bool,
    /// MQTT 5 session expiry interval for persistent sessions, seconds.
    pub session_expiry: u32,
    /// Keep alive, seconds.
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Client identifier prefix for groups without their own pattern.
    pub client_id_prefix: String,
}

impl SessionDefaults {
    /// The protocol version.
    pub fn protocol(&self) -> anyhow::Result<ProtocolVersion> {
        match self.version {
            3 => Ok(ProtocolVersion::V3_1),
            4 => Ok(ProtocolVersion::V3_1_1),
            5 => Ok(ProtocolVersion::V5),
            v => bail!("unsupported MQTT version {v} (3 for 3.1, 4 for 3.1.1, 5)"),
        }
    }
}

/// A message with a literal payload.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) topic: Pattern,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
}

/// A resolved subscription.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) filter: Pattern,
    pub(crate) qos: QoS,
    pub(crate) share: Option<String>,
}

/// Resolved publishing of a group.
#[derive(Debug, Clone)]
pub(crate) struct Publishing {
    pub(crate) topic: Pattern,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) payload: Bytes,
    pub(crate) rate: Rate,
    pub(crate) count: Option<u64>,
    pub(crate) stream: u8,
    /// The target group, whose clients the topic is expanded for in turn.
    pub(crate) targets: Option<usize>,
    /// Flows per client: the target group's size, or 1.
    pub(crate) flows_per_client: u32,
    /// The first flow id of the group.
    pub(crate) flow_base: u32,
    /// Deliveries expected per message, per flow of the group.
    pub(crate) copies: Vec<u32>,
}

/// Who receives as one: every client alone, or the whole group as a shared subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sinks {
    /// The group does not subscribe.
    None,
    /// Client `i` is sink `base + i`.
    PerClient { base: u32 },
    /// The group's clients form one shared-subscription sink.
    Shared { id: u32 },
}

/// A resolved group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) count: u32,
    pub(crate) client_id: Pattern,
    pub(crate) clean_start: bool,
    pub(crate) session_expiry: u32,
    pub(crate) keep_alive: u16,
    pub(crate) will: Option<Message>,
    pub(crate) subscribe: Vec<Subscription>,
    pub(crate) on_connect: Vec<Message>,
    pub(crate) publish: Option<Publishing>,
    pub(crate) sinks: Sinks,
}

/// Subscription filters and the sinks holding each.
struct SinkFilters {
    exact: HashMap<String, Vec<u32>>,
    wild: Vec<(String, Vec<u32>)>,
}

impl SinkFilters {
    /// Puts the sinks whose filters match `topic` into `found` (sorted, each once).
    fn matching(&self, topic: &str, found: &mut Vec<u32>) {
        found.clear();
        if let Some(s) = self.exact.get(topic) {
            found.extend_from_slice(s);
        }
        for (filter, sinks) in &self.wild {
            if topic::matches(filter, topic) {
                found.extend_from_slice(sinks);
            }
        }
        found.sort_unstable();
        found.dedup();
    }
}

/// A checked, numbered scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The name.
    pub name: String,
    /// Measured stream names, by stream id.
    pub streams: Vec<String>,
    pub(crate) sites: u32,
    pub(crate) groups: Vec<Group>,
    pub(crate) version: ProtocolVersion,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Bytes>,
    /// Which group receives which group's measured messages, found with the copies.
    pub(crate) relations: Vec<GroupRelation>,
}

fn qos(value: u8, what: &str) -> anyhow::Result<QoS> {
    QoS::from_bits(value).with_context(|| format!("{what}: QoS {value} is not 0, 1 or 2"))
}

fn pattern(text: &str, what: &str) -> anyhow::Result<Pattern> {
    Pattern::parse(text).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn message(spec: &MessageSpec, what: &str) -> anyhow::Result<Message> {
    Ok(Message {
        topic: pattern(&spec.topic, what)?,
        payload: Bytes::copy_from_slice(spec.payload.as_bytes()),
        qos: qos(spec.qos, what)?,
        retain: spec.retain,
    })
}

impl Scenario {
    /// Checks a spec and resolves it.
    pub fn build(spec: &ScenarioSpec, defaults: &SessionDefaults) -> anyhow::Result<Self> {
        ensure!(!spec.groups.is_empty(), "the scenario has no group");
        ensure!(spec.sites > 0, "sites must be at least 1");
        let version = defaults.protocol()?;
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, g) in spec.groups.iter().enumerate() {
            ensure!(
                names.insert(g.name.as_str(), i).is_none(),
                "two groups are named {:?}",
                g.name
            );
        }
        let mut streams: Vec<String> = Vec::new();
        let mut groups = Vec::with_capacity(spec.groups.len());
        let (mut next_sink, mut next_flow) = (0u64, 0u64);
        for g in &spec.groups {
            let what = |field: &str| format!("group {:?}, {field}", g.name);
            let default_id = format!("{}-%g-%i", defaults.client_id_prefix);
            let client_id = pattern(
                g.client_id.as_deref().unwrap_or(&default_id),
                &what("client_id"),
            )?;
            ensure!(
                g.count <= 1 || client_id.per_client(),
                "{}: {} clients need %i in their client id",
                what("client_id"),
                g.count
            );
            let subscribe = g
                .subscribe
                .iter()
                .map(|s| {
                    Ok(Subscription {
                        filter: pattern(&s.filter, &what("subscribe"))?,
                        qos: qos(s.qos, &what("subscribe"))?,
                        share: s.share.clone(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let sinks = if subscribe.is_empty() || g.count == 0 {
                Sinks::None
            } else if subscribe.iter().any(|s| s.share.is_some()) {
                next_sink += 1;
                Sinks::Shared {
                    id: (next_sink - 1) as u32,
                }
            } else {
                next_sink += u64::from(g.count);
                Sinks::PerClient {
                    base: (next_sink - u64::from(g.count)) as u32,
                }
            };
            ensure!(next_sink <= u64::from(u32::MAX), "too many subscribers");
            let publish = match &g.publish {
                None => None,
                Some(p) => {
                    ensure!(
                        p.size >= HEADER_LEN,
                        "{}: payload size {} is below the {HEADER_LEN}-byte measurement header",
                        what("publish"),
                        p.size
                    );
                    let stream = match streams.iter().position(|s| *s == p.stream) {
                        Some(i) => i,
                        None => {
                            streams.push(p.stream.clone());
                            streams.len() - 1
                        }
                    };
                    ensure!(stream < 256, "more than 256 streams");
                    let targets = match &p.targets {
                        None => None,
                        Some(t) => Some(*names.get(t.as_str()).with_context(|| {
                            format!("{}: no group named {t:?} to target", what("publish"))
                        })?),
                    };
                    let flows_per_client = match targets {
                        Some(t) => spec.groups[t].count.max(1),
                        None => 1,
                    };
                    let flows = u64::from(g.count) * u64::from(flows_per_client);
                    let flow_base = next_flow;
                    next_flow += flows;
                    ensure!(next_flow <= u64::from(u32::MAX), "too many flows");
                    Some(Publishing {
                        topic: pattern(&p.topic, &what("publish"))?,
                        qos: qos(p.qos, &what("publish"))?,
                        retain: p.retain,
                        payload: crate::payload::template(p.size),
                        rate: p.rate(),
                        count: p.count,
                        stream: stream as u8,
                        targets,
                        flows_per_client,
                        flow_base: flow_base as u32,
                        copies: Vec::new(),
                    })
                }
            };
            groups.push(Group {
                name: g.name.clone(),
                count: g.count,
                client_id,
                clean_start: g.clean_start.unwrap_or(defaults.clean_start),
                session_expiry: g.session_expiry.unwrap_or(defaults.session_expiry),
                keep_alive: g.keep_alive.unwrap_or(defaults.keep_alive),
                will: g
                    .will
                    .as_ref()
                    .map(|w| message(w, &what("will")))
                    .transpose()?,
                subscribe,
                on_connect: g
                    .on_connect
                    .iter()
                    .map(|m| message(m, &what("on_connect")))
                    .collect::<anyhow::Result<_>>()?,
                publish,
                sinks,
            });
        }
        if streams.is_empty() {
            streams.push("data".to_owned());
        }
        let mut scenario = Self {
            name: spec.name.clone(),
            streams,
            sites: spec.sites,
            groups,
            version,
            username: defaults.username.clone(),
            password: defaults.password.clone().map(Bytes::from),
            relations: Vec::new(),
        };
        scenario.count_copies();
        // Every pattern must give valid MQTT strings: try the first client of each group.
        for g in 0..scenario.groups.len() {
            if scenario.groups[g].count > 0 {
                scenario.plan(g, 0, None)?;
            }
        }
        Ok(scenario)
    }

    /// Reads a TOML scenario file's text.
    pub fn parse_toml(text: &str) -> anyhow::Result<ScenarioSpec> {
        Ok(toml::from_str(text)?)
    }

    pub(crate) fn vars(&self, group: usize, index: u32) -> Vars<'_> {
        Vars {
            index,
            site: index % self.sites,
            group: &self.groups[group].name,
        }
    }

    /// The topic of flow `t` of client `index` of publishing group `group`.
    pub(crate) fn flow_topic(&self, group: usize, index: u32, t: u32) -> Option<String> {
        let p = self.groups[group].publish.as_ref()?;
        Some(match p.targets {
            Some(target) => p.topic.expand(self.vars(target, t)),
            None => p.topic.expand(self.vars(group, index)),
        })
    }

    /// The sinks of every subscription filter: exact filters by name, wildcard filters in a
    /// list.
    fn sink_filters(&self) -> SinkFilters {
        let mut exact: HashMap<String, Vec<u32>> = HashMap::new();
        let mut wild: HashMap<String, Vec<u32>> = HashMap::new();
        for (g, group) in self.groups.iter().enumerate() {
            for i in 0..group.count {
                let sink = match group.sinks {
                    Sinks::None => break,
                    Sinks::PerClient { base } => base + i,
                    Sinks::Shared { id } => id,
                };
                for s in &group.subscribe {
                    let filter = s.filter.expand(self.vars(g, i));
                    let filter = topic::split_shared(&filter)
                        .map(|(_, f)| f.to_owned())
                        .unwrap_or(filter);
                    let map = if filter.contains(['+', '#']) {
                        &mut wild
                    } else {
                        &mut exact
                    };
                    let sinks = map.entry(filter).or_default();
                    if sinks.last() != Some(&sink) {
                        sinks.push(sink);
                    }
                }
                if matches!(group.sinks, Sinks::Shared { .. })
                    && !group.subscribe.iter().any(|s| s.filter.per_client())
                {
                    break;
                }
            }
        }
        SinkFilters {
            exact,
            wild: wild.into_iter().collect(),
        }
    }

    /// Every flow's id and the sinks whose filters match its topic, in flow order.
    pub(crate) fn flow_sinks(&self) -> Vec<(u32, Vec<u32>)> {
        let filters = self.sink_filters();
        let mut out = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let Some(p) = &group.publish else { continue };
            for i in 0..group.count {
                for t in 0..p.flows_per_client {
                    let topic = self.flow_topic(g, i, t).unwrap_or_default();
                    let mut found = Vec::new();
                    filters.matching(&topic, &mut found);
                    out.push((p.flow_base + i * p.flows_per_client + t, found));
                }
            }
        }
        out
    }

    /// The highest QoS group `group` subscribes with, and whether it is a shared group.
    pub(crate) fn sink_qos(&self, group: usize) -> (QoS, bool) {
        let g = &self.groups[group];
        let qos = g
            .subscribe
            .iter()
            .map(|s| s.qos)
            .max()
            .unwrap_or(QoS::AtMostOnce);
        (qos, matches!(g.sinks, Sinks::Shared { .. }))
    }

    /// The QoS of group `group`'s measured publications.
    pub(crate) fn publish_qos(&self, group: usize) -> Option<QoS> {
        self.groups[group].publish.as_ref().map(|p| p.qos)
    }

    /// For every flow, how many sinks have a filter matching its topic; and which group
    /// receives which group's messages, and how ([`Relation`]).
    fn count_copies(&mut self) {
        let filters = self.sink_filters();
        // The receiving groups by first sink id: (first sink, group, one sink per client).
        let owners: Vec<(u32, usize, bool)> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, group)| match group.sinks {
                Sinks::None => None,
                Sinks::PerClient { base } => Some((base, g, true)),
                Sinks::Shared { id } => Some((id, g, false)),
            })
            .collect();
        let owner = |sink: u32| owners[owners.partition_point(|o| o.0 <= sink) - 1];
        let mut relations: BTreeMap<(usize, usize), Relation> = BTreeMap::new();
        let mut found: Vec<u32> = Vec::new();
        for g in 0..self.groups.len() {
            let Some(p) = &self.groups[g].publish else {
                continue;
            };
            let mut copies =
                Vec::with_capacity((self.groups[g].count * p.flows_per_client) as usize);
            for i in 0..self.groups[g].count {
                for t in 0..p.flows_per_client {
                    let topic = self.flow_topic(g, i, t).unwrap_or_default();
                    filters.matching(&topic, &mut found);
                    copies.push(found.len() as u32);
                    for &sink in &found {
                        let (first, to, per_client) = owner(sink);
                        let by_index = per_client
                            && sink - first == i
                            && p.flows_per_client == 1
                            && self.groups[to].count == self.groups[g].count;
                        let relation = relations.entry((g, to)).or_insert(Relation::ByIndex);
                        if !by_index {
                            *relation = Relation::Broad;
                        }
                    }
                }
            }
            if let Some(p) = &mut self.groups[g].publish {
                p.copies = copies;
            }
        }
        self.relations = relations
            .into_iter()
            .map(|((from, to), relation)| GroupRelation { from, to, relation })
            .collect();
    }

    /// Which broker each client connects to, among `brokers` brokers (see [`layout`]).
    pub fn layout(&self, placement: Placement, brokers: usize) -> Result<Layout, PlacementError> {
        let sizes: Vec<(&str, u32)> = self.groups().collect();
        layout(placement, brokers, &sizes, &self.relations)
    }

    /// Groups and their sizes, in connection order.
    pub fn groups(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.groups.iter().map(|g| (g.name.as_str(), g.count))
    }

    /// How many clients in all.
    pub fn total_clients(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }

    /// Whether any group publishes measured messages.
    pub fn has_publishers(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.publish.is_some() && g.count > 0)
    }

    /// Whether every publisher has a message count, so publishing ends by itself.
    pub fn publishing_is_counted(&self) -> bool {
        self.groups
            .iter()
            .filter_map(|g| g.publish.as_ref())
            .all(|p| p.count.is_some())
    }

    /// The publisher and topic of a flow id, for reports.
    pub fn describe_flow(&self, flow: u32) -> Option<(String, String)> {
        for (g, group) in self.groups.iter().enumerate() {
            let Some(p) = &group.publish else { continue };
            let n = group.count * p.flows_per_client;
            if flow >= p.flow_base && flow < p.flow_base + n {
                let k = flow - p.flow_base;
                let (i, t) = (k / p.flows_per_client, k % p.flows_per_client);
                let client = group.client_id.expand(self.vars(g, i));
                return Some((client, self.flow_topic(g, i, t)?));
            }
        }
        None
    }
}
