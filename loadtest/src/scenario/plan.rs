//! Per-client plans: the packets one client sends and the flows it publishes, built when the
//! client is started so that 100,000 clients cost memory only as they connect.

use std::net::IpAddr;

use anyhow::Context;
use bytes::Bytes;
use shoal_codec::{
    Connect, LastWill, MqttString, PacketId, ProtocolVersion, Publish, QoS, QosPid, Subscribe,
    SubscribeProperties, SubscriptionOptions, WillProperties,
};

use crate::scenario::{Scenario, Sinks};
use crate::units::Rate;

/// One published flow: a topic, its id, and how many deliveries each message should make.
#[derive(Debug, Clone)]
pub struct FlowPlan {
    /// The flow id carried in the payload header.
    pub id: u32,
    /// The PUBLISH template (topic, QoS, retain, payload template).
    pub publish: Publish,
    /// Sinks whose filters match the topic.
    pub copies: u32,
}

/// What a publishing client sends.
#[derive(Debug, Clone)]
pub struct PublisherPlan {
    /// Its flows, published round robin.
    pub flows: Vec<FlowPlan>,
    /// QoS.
    pub qos: QoS,
    /// Rate.
    pub rate: Rate,
    /// Messages to send in all (over every flow), if bounded by count.
    pub count: Option<u64>,
    /// The stream id.
    pub stream: u8,
    /// Payload size.
    pub size: usize,
    /// Where in its interval this publisher's schedule starts (0 to 1), so that a thousand
    /// devices publishing every second spread over the second instead of bursting together.
    pub offset: f64,
}

/// Everything one client does.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Group index.
    pub group: usize,
    /// Index in the group.
    pub index: u32,
    /// The CONNECT to send.
    pub connect: Connect,
    /// The SUBSCRIBE to send after CONNACK, if any.
    pub subscribe: Option<Subscribe>,
    /// Messages to publish once subscribed.
    pub on_connect: Vec<Publish>,
    /// The sink id of what this client receives.
    pub sink: Option<u32>,
    /// Measured publishing.
    pub publisher: Option<PublisherPlan>,
    /// Local address to connect from.
    pub source: Option<IpAddr>,
    /// The position of the broker to connect to, in the run's broker list (`-b` = 0): set
    /// by the engine from the run's [`Layout`](crate::scenario::Layout), 0 until then.
    pub broker: usize,
}

fn string(s: String, what: &str) -> anyhow::Result<MqttString> {
    let text = s.clone();
    MqttString::try_from(s).with_context(|| format!("{what} {text:?} is not a valid MQTT string"))
}

fn publish(topic: MqttString, qos: QoS, retain: bool, payload: Bytes) -> Publish {
    let mut p = Publish::new(topic, payload);
    p.retain = retain;
    // The packet id is set per message; this only fixes the QoS.
    p.qos_pid = QosPid::from_parts(qos, PacketId::new(1).expect("1 is not 0"));
    p
}

impl Scenario {
    /// The plan of client `index` of group `group`.
    pub fn plan(
        &self,
        group: usize,
        index: u32,
        source: Option<IpAddr>,
    ) -> anyhow::Result<ClientPlan> {
        let g = &self.groups[group];
        let vars = self.vars(group, index);
        let client_id = string(g.client_id.expand(vars), "client id")?;
        let mut connect = Connect::new(self.version, client_id);
        connect.clean_start = g.clean_start;
        connect.keep_alive = g.keep_alive;
        if self.version == ProtocolVersion::V5 && !g.clean_start {
            connect.properties.session_expiry_interval = Some(g.session_expiry);
        }
        if let Some(user) = &self.username {
            connect.username = Some(string(user.clone(), "user name")?);
        }
        connect.password = self.password.clone();
        if let Some(w) = &g.will {
            connect.will = Some(LastWill {
                topic: string(w.topic.expand(vars), "will topic")?,
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
                properties: WillProperties::default(),
            });
        }
        let subscribe = if g.subscribe.is_empty() {
            None
        } else {
            let filters = g
                .subscribe
                .iter()
                .map(|s| {
                    let filter = s.filter.expand(vars);
                    let filter = match &s.share {
                        Some(share) => format!("$share/{share}/{filter}"),
                        None => filter,
                    };
                    Ok((
                        string(filter, "topic filter")?,
                        SubscriptionOptions::with_qos(s.qos),
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(Subscribe {
                packet_id: PacketId::new(1).expect("1 is not 0"),
                properties: SubscribeProperties::default(),
                filters,
            })
        };
        let on_connect = g
            .on_connect
            .iter()
            .map(|m| {
                Ok(publish(
                    string(m.topic.expand(vars), "topic")?,
                    m.qos,
                    m.retain,
                    m.payload.clone(),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sink = match g.sinks {
            Sinks::None => None,
            Sinks::PerClient { base } => Some(base + index),
            Sinks::Shared { id } => Some(id),
        };
        let publisher = match &g.publish {
            None => None,
            Some(p) => {
                let mut flows = Vec::with_capacity(p.flows_per_client as usize);
                for t in 0..p.flows_per_client {
                    let k = index * p.flows_per_client + t;
                    let topic = self.flow_topic(group, index, t).unwrap_or_default();
                    flows.push(FlowPlan {
                        id: p.flow_base + k,
                        publish: publish(
                            string(topic, "topic")?,
                            p.qos,
                            p.retain,
                            p.payload.clone(),
                        ),
                        copies: p.copies.get(k as usize).copied().unwrap_or(0),
                    });
                }
                Some(PublisherPlan {
                    flows,
                    qos: p.qos,
                    rate: p.rate,
                    count: p.count,
                    stream: p.stream,
                    size: p.payload.len(),
                    // The golden ratio spreads consecutive indexes evenly over the interval.
                    offset: (f64::from(index) * 0.618_033_988_749_895).fract(),
                })
            }
        };
        Ok(ClientPlan {
            group,
            index,
            connect,
            subscribe,
            on_connect,
            sink,
            publisher,
            source,
            broker: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::builtin::{self, Fleet, Publishing};
    use crate::scenario::{GroupRelation, Placement, PlacementError, Relation, SessionDefaults};
    use crate::units::Span;

    fn defaults() -> SessionDefaults {
        SessionDefaults {
            version: 5,
            clean_start: true,
            session_expiry: 0,
            keep_alive: 60,
            username: None,
            password: None,
            client_id_prefix: "lt".to_owned(),
        }
    }

    fn publishing() -> Publishing {
        Publishing {
            qos: 1,
            size: 64,
            rate: Rate::PerSecond(10.0),
            count: None,
            retain: false,
        }
    }

    #[test]
    fn pairs_pair_each_publisher_with_one_subscriber() {
        let spec = builtin::pairs(3, "lt/pairs/%i", &publishing());
        let s = Scenario::build(&spec, &defaults()).expect("valid");
        let p = s.plan(1, 2, None).expect("plan");
        assert_eq!(p.connect.client_id.as_str(), "lt-pub-2");
        let publisher = p.publisher.expect("publishes");
        assert_eq!(publisher.flows.len(), 1);
        assert_eq!(publisher.flows[0].publish.topic.as_str(), "lt/pairs/2");
        assert_eq!(publisher.flows[0].copies, 1);
        let sub = s.plan(0, 2, None).expect("plan");
        assert_eq!(sub.sink, Some(2));
        assert_eq!(
            sub.subscribe.expect("subscribes").filters[0].0.as_str(),
            "lt/pairs/2"
        );
    }

    #[test]
    fn a_shared_group_is_one_sink_and_fanout_counts_every_subscriber() {
        let spec = builtin::fanin(10, 3, Some("g"), "lt/fanin", &publishing());
        let s = Scenario::build(&spec, &defaults()).expect("valid");
        assert_eq!(s.plan(0, 0, None).expect("plan").sink, Some(0));
        assert_eq!(s.plan(0, 2, None).expect("plan").sink, Some(0));
        let p = s
            .plan(1, 7, None)
            .expect("plan")
            .publisher
            .expect("publishes");
        assert_eq!(p.flows[0].copies, 1);
        let spec = builtin::fanout(5, 1, "lt/fanout", &publishing());
        let s = Scenario::build(&spec, &defaults()).expect("valid");
        let p = s
            .plan(1, 0, None)
            .expect("plan")
            .publisher
            .expect("publishes");
        assert_eq!(p.flows[0].copies, 5);
    }

    #[test]
    fn fleet_commands_target_each_device() {
        let spec = builtin::fleet(&Fleet {
            devices: 4,
            sites: 2,
            interval: Span(std::time::Duration::from_secs(1)),
            qos: 1,
            size: 64,
            backends: 2,
            command_rate: 1.0,
            command_qos: 1,
        });
        let s = Scenario::build(&spec, &defaults()).expect("valid");
        assert_eq!(s.streams, ["telemetry", "command"]);
        let device = s.plan(1, 3, None).expect("plan");
        assert_eq!(
            device.connect.will.as_ref().map(|w| w.topic.as_str()),
            Some("fleet/1/3/status")
        );
        let t = device.publisher.expect("publishes");
        assert_eq!(t.flows[0].publish.topic.as_str(), "fleet/1/3/telemetry");
        assert_eq!(t.flows[0].copies, 1, "the backend group counts once");
        let c = s
            .plan(2, 0, None)
            .expect("plan")
            .publisher
            .expect("publishes");
        assert_eq!(c.flows.len(), 4);
        assert_eq!(c.flows[3].publish.topic.as_str(), "fleet/1/3/cmd");
        assert_eq!(c.flows[3].copies, 1);
        assert_eq!(
            s.describe_flow(c.flows[3].id),
            Some(("lt-commander-0".to_owned(), "fleet/1/3/cmd".to_owned()))
        );
    }

    /// Per group, the broker of each client under `placement` over `brokers` brokers.
    fn brokers(
        spec: &crate::scenario::ScenarioSpec,
        placement: Placement,
        n: usize,
    ) -> Vec<Vec<usize>> {
        let s = Scenario::build(spec, &defaults()).expect("valid");
        let layout = s.layout(placement, n).expect("placed");
        s.groups()
            .enumerate()
            .map(|(g, (_, count))| (0..count).map(|i| layout.broker(g, i)).collect())
            .collect()
    }

    #[test]
    fn the_builtins_relations_decide_the_cross_placement() {
        // pairs: groups [sub, pub]; publisher i on i mod n, its subscriber on the next.
        let pairs = builtin::pairs(4, "lt/pairs/%i", &publishing());
        let s = Scenario::build(&pairs, &defaults()).expect("valid");
        assert_eq!(
            s.relations,
            [GroupRelation {
                from: 1,
                to: 0,
                relation: Relation::ByIndex
            }]
        );
        assert_eq!(
            brokers(&pairs, Placement::Cross, 3),
            [vec![1, 2, 0, 1], vec![0, 1, 2, 0]]
        );
        assert_eq!(
            brokers(&pairs, Placement::Spread, 3),
            [vec![0, 1, 2, 0], vec![0, 1, 2, 0]]
        );
        // fanin: every publisher reaches the one subscriber (a wildcard): the halves.
        let fanin = builtin::fanin(5, 1, None, "lt/fanin", &publishing());
        assert_eq!(
            brokers(&fanin, Placement::Cross, 2),
            [vec![1], vec![0, 0, 0, 0, 0]]
        );
        // fanin to a shared group of 2, over 4 brokers.
        let shared = builtin::fanin(5, 2, Some("g"), "lt/fanin", &publishing());
        assert_eq!(
            brokers(&shared, Placement::Cross, 4),
            [vec![2, 3], vec![0, 1, 0, 1, 0]]
        );
        // fanout: one publisher to every subscriber.
        let fanout = builtin::fanout(4, 1, "lt/fanout", &publishing());
        assert_eq!(
            brokers(&fanout, Placement::Cross, 3),
            [vec![1, 2, 1, 2], vec![0]]
        );
        // fleet: devices opposite the backends and the command sender.
        let fleet = builtin::fleet(&Fleet {
            devices: 4,
            sites: 2,
            interval: Span(std::time::Duration::from_secs(1)),
            qos: 1,
            size: 64,
            backends: 2,
            command_rate: 1.0,
            command_qos: 1,
        });
        assert_eq!(
            brokers(&fleet, Placement::Cross, 2),
            [vec![1, 1], vec![0, 0, 0, 0], vec![1]]
        );
        // pub alone: nothing received, nothing to cross.
        let alone = builtin::publishers(2, "lt/%i", &publishing());
        let s = Scenario::build(&alone, &defaults()).expect("valid");
        assert_eq!(
            s.layout(Placement::Cross, 2),
            Err(PlacementError::NothingToCross)
        );
    }

    #[test]
    fn refuses_bad_scenarios() {
        let mut spec = builtin::pairs(2, "lt/%i", &publishing());
        spec.groups[1].publish.as_mut().expect("publishes").size = 10;
        assert!(Scenario::build(&spec, &defaults()).is_err());
        let spec = builtin::pairs(2, "lt/%q", &publishing());
        assert!(Scenario::build(&spec, &defaults()).is_err());
        let text = "name = \"x\"\n[[group]]\nname = \"a\"\ncount = 1\nbogus = 1\n";
        assert!(Scenario::parse_toml(text).is_err());
    }
}
