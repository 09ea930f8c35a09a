//! The built-in scenarios, written as [`ScenarioSpec`]s: `conn`, `pub`, `sub`, `pairs`,
//! `fanin`, `fanout` and `fleet`.

use crate::scenario::spec::{GroupSpec, MessageSpec, PublishSpec, ScenarioSpec, SubscribeSpec};
use crate::units::{Rate, Span};

/// What every publishing built-in shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Publishing {
    /// QoS of publications and subscriptions.
    pub qos: u8,
    /// Payload size.
    pub size: usize,
    /// Per-publisher rate.
    pub rate: Rate,
    /// Messages per publisher.
    pub count: Option<u64>,
    /// Retained publications.
    pub retain: bool,
}

fn group(name: &str, count: u32) -> GroupSpec {
    GroupSpec {
        name: name.to_owned(),
        count,
        client_id: None,
        clean_start: None,
        session_expiry: None,
        keep_alive: None,
        will: None,
        subscribe: Vec::new(),
        on_connect: Vec::new(),
        publish: None,
    }
}

fn publish(topic: &str, p: &Publishing, stream: &str) -> PublishSpec {
    PublishSpec {
        topic: topic.to_owned(),
        qos: p.qos,
        retain: p.retain,
        size: p.size,
        rate: Some(p.rate),
        interval: None,
        count: p.count,
        stream: stream.to_owned(),
        targets: None,
    }
}

fn subscribe(filter: &str, qos: u8, share: Option<&str>) -> SubscribeSpec {
    SubscribeSpec {
        filter: filter.to_owned(),
        qos,
        share: share.map(str::to_owned),
    }
}

fn scenario(name: &str, groups: Vec<GroupSpec>) -> ScenarioSpec {
    ScenarioSpec {
        name: name.to_owned(),
        sites: 1,
        duration: None,
        groups,
    }
}

/// `conn`: `n` clients that connect and stay idle.
pub fn conn(n: u32) -> ScenarioSpec {
    scenario("conn", vec![group("conn", n)])
}

/// `pub`: `n` publishers on `topic`.
pub fn publishers(n: u32, topic: &str, p: &Publishing) -> ScenarioSpec {
    let mut g = group("pub", n);
    g.publish = Some(publish(topic, p, "data"));
    scenario("pub", vec![g])
}

/// `sub`: `n` subscribers to `filters`, in a shared group if `share` is given.
pub fn subscribers(n: u32, filters: &[String], qos: u8, share: Option<&str>) -> ScenarioSpec {
    let mut g = group("sub", n);
    g.subscribe = filters.iter().map(|f| subscribe(f, qos, share)).collect();
    scenario("sub", vec![g])
}

/// `pairs`: `n` publisher/subscriber pairs, one topic each.
pub fn pairs(n: u32, topic: &str, p: &Publishing) -> ScenarioSpec {
    let mut sub = group("sub", n);
    sub.subscribe = vec![subscribe(topic, p.qos, None)];
    let mut publ = group("pub", n);
    publ.publish = Some(publish(topic, p, "data"));
    scenario("pairs", vec![sub, publ])
}

/// `fanin`: `publishers` publishers (topic `{prefix}/%i`) into `subscribers` subscribers of
/// `{prefix}/+`, which form one shared group if `share` is given.
pub fn fanin(
    publishers: u32,
    subscribers: u32,
    share: Option<&str>,
    prefix: &str,
    p: &Publishing,
) -> ScenarioSpec {
    let mut sub = group("sub", subscribers);
    sub.subscribe = vec![subscribe(&format!("{prefix}/+"), p.qos, share)];
    let mut publ = group("pub", publishers);
    publ.publish = Some(publish(&format!("{prefix}/%i"), p, "data"));
    scenario("fanin", vec![sub, publ])
}

/// `fanout`: `publishers` publishers on `topic`, each message to all `subscribers`.
pub fn fanout(subscribers: u32, publishers: u32, topic: &str, p: &Publishing) -> ScenarioSpec {
    let mut sub = group("sub", subscribers);
    sub.subscribe = vec![subscribe(topic, p.qos, None)];
    let mut publ = group("pub", publishers);
    publ.publish = Some(publish(topic, p, "data"));
    scenario("fanout", vec![sub, publ])
}

/// The industrial fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// Devices.
    pub devices: u32,
    /// Sites the devices are spread over.
    pub sites: u32,
    /// Telemetry interval per device.
    pub interval: Span,
    /// Telemetry QoS (0 or 1 in practice).
    pub qos: u8,
    /// Telemetry payload size.
    pub size: usize,
    /// Backend consumers in the shared group `backend`.
    pub backends: u32,
    /// Commands per second, sent round robin to the devices (0: no command sender).
    pub command_rate: f64,
    /// Command QoS.
    pub command_qos: u8,
}

/// `fleet`: devices publish telemetry to `fleet/{site}/{device}/telemetry`, announce a
/// retained `online` status with a Last Will `offline`, and receive commands on
/// `fleet/{site}/{device}/cmd`; backend consumers share `$share/backend/fleet/+/+/telemetry`;
/// one command sender addresses the devices in turn.
pub fn fleet(f: &Fleet) -> ScenarioSpec {
    let status = "fleet/%s/%i/status";
    let mut backend = group("backend", f.backends);
    backend.subscribe = vec![subscribe("fleet/+/+/telemetry", f.qos, Some("backend"))];
    let mut devices = group("device", f.devices);
    devices.will = Some(MessageSpec {
        topic: status.to_owned(),
        payload: "offline".to_owned(),
        qos: 1,
        retain: true,
    });
    devices.on_connect = vec![MessageSpec {
        topic: status.to_owned(),
        payload: "online".to_owned(),
        qos: 1,
        retain: true,
    }];
    devices.subscribe = vec![subscribe("fleet/%s/%i/cmd", f.command_qos, None)];
    devices.publish = Some(PublishSpec {
        topic: "fleet/%s/%i/telemetry".to_owned(),
        qos: f.qos,
        retain: false,
        size: f.size,
        rate: None,
        interval: Some(f.interval),
        count: None,
        stream: "telemetry".to_owned(),
        targets: None,
    });
    let mut groups = vec![backend, devices];
    if f.command_rate > 0.0 {
        let mut commander = group("commander", 1);
        commander.publish = Some(PublishSpec {
            topic: "fleet/%s/%i/cmd".to_owned(),
            qos: f.command_qos,
            retain: false,
            size: 64,
            rate: Some(Rate::PerSecond(f.command_rate)),
            interval: None,
            count: None,
            stream: "command".to_owned(),
            targets: Some("device".to_owned()),
        });
        groups.push(commander);
    }
    ScenarioSpec {
        name: "fleet".to_owned(),
        sites: f.sites.max(1),
        duration: None,
        groups,
    }
}
