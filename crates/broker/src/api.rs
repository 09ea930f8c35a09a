//! The admin REST API, `/api/v1` (JSON), served by the admin listener behind the admin
//! token. Lists are paged (`?page=1&limit=100`, pages from 1, at most 10,000 a page) and
//! answer `{"data": [...], "meta": {"page", "limit", "count"}}`.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /api/v1/status` | this node: version, uptime, counts; the cluster |
//! | `GET /api/v1/cluster` (also `/cluster`) | the cluster as this node sees it: members (cluster address, MQTT address if recorded, down or not), each Raft group's leader, this node's role, term, last log, applied, snapshot and purged index, snapshots installed since start, voters and learners; `joined` false while the node is still joining, with `seeds` it tries, `last_error`, and `waiting` true when it has none and waits for `POST /api/v1/cluster/join` |
//! | `POST /api/v1/cluster/join` | body `{"seeds": ["host:port", ...]}`: a node that is not a member yet (one started with `cluster_listen` and no seeds, discovery or bootstrap waits for this) joins through these seeds, replacing any it was trying: 200 once it is a member (within 30 s), 202 while it still tries (`last_error` says why), 409 with why for a node that is a member already, has cluster state on disk, bootstraps, or runs alone |
//! | `POST /api/v1/cluster/leave` | this node leaves its cluster: clients disconnected (MQTT 5: 0x9C with the Server Reference of another node that is up and recorded `mqtt_advertise`, else 0x8B), removed from every group with its routes, then the process stops: 200, or 409 with why |
//! | `GET /api/v1/nodes` | the nodes of the cluster (this one, for a node alone) |
//! | `GET /api/v1/clients` | sessions, connected or not, by client id |
//! | `GET /api/v1/clients/{id}` | one session with its subscriptions |
//! | `DELETE /api/v1/clients/{id}` | disconnects the client (MQTT 5: DISCONNECT 0x98): 204, or 404 when not connected |
//! | `GET /api/v1/subscriptions` | every subscription, by client id |
//! | `GET /api/v1/routes` | topic filters with subscribers, and the nodes that hold them |
//! | `GET /api/v1/retained` | retained messages, by topic (without payloads) |
//! | `GET /api/v1/retained/{topic}` | one, with its payload (UTF-8 text, or hex) |
//! | `DELETE /api/v1/retained/{topic}` | clears it (durably): 204, or 404 |
//! | `GET`, `POST /api/v1/bans`; `DELETE /api/v1/bans/{target}` | bans, as `/bans` |
//!
//! Path segments are percent-encoded (`sensors%2F7%2Ftemp`). The same bans are served under
//! the older `/bans` path.

use std::sync::Arc;

use serde_json::{Value, json};
use shoal_access::ban::{Ban, BanTarget};
use shoal_codec::{DisconnectReasonCode, MqttString, PublishProperties, QoS};
use shoal_session::Message;

use crate::broker::Broker;
use crate::inspect;

/// An answer: the status line and the body.
pub(crate) type Answer = (&'static str, String);

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// Answers one API request (`path` with its query; `body` read already).
pub(crate) async fn handle(broker: &Broker, method: &str, target: &str, body: &[u8]) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.trim_end_matches('/');
    let rest = path
        .strip_prefix("/api/v1")
        .unwrap_or(path)
        .trim_start_matches('/');
    let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let tail = match percent_decode(tail) {
        Some(tail) => tail,
        None => return bad("bad percent-encoding"),
    };
    let legacy = !path.starts_with("/api/v1");
    if legacy && head != "bans" && head != "cluster" {
        return not_found();
    }
    match (method, head, tail.as_str()) {
        ("GET", "status", "") => ok(status(broker)),
        ("GET", "cluster", "") => ok(cluster(broker)),
        ("POST", "cluster", "join") => join_cluster(broker, body).await,
        ("POST", "cluster", "leave") => match broker.leave_cluster().await {
            Ok(()) => ("200 OK", "{\"left\":true}".to_owned()),
            Err(e) => ("409 Conflict", format!("{e}\n")),
        },
        ("DELETE", "nodes", id) if !id.is_empty() => {
            let Ok(node) = id.parse::<u64>() else {
                return bad("a node id is a number");
            };
            let Some(cluster) = broker.cluster() else {
                return (
                    "409 Conflict",
                    "this node is not part of a cluster\n".to_owned(),
                );
            };
            match cluster.forget(node).await {
                Ok(()) => ("204 No Content", String::new()),
                Err(e) => ("409 Conflict", format!("{e}\n")),
            }
        }
        ("GET", "nodes", "") => match broker.cluster() {
            Some(cluster) => ok(json!({ "data": cluster.status().nodes })),
            None => ok(json!({ "data": [node(broker)] })),
        },
        ("GET", "clients", "") => {
            let slots = inspect::sorted_slots(broker);
            ok(page(query, &slots, |slot| inspect::client(slot, false)))
        }
        ("GET", "clients", id) => match broker.session(id) {
            Some(slot) => ok(inspect::client(&slot, true)),
            None => not_found(),
        },
        ("DELETE", "clients", id) if !id.is_empty() => match broker.session(id) {
            Some(slot) if slot.connected_as().is_some() => {
                tracing::info!(client_id = id, "disconnected by an operator");
                slot.kick(DisconnectReasonCode::AdministrativeAction);
                ("204 No Content", String::new())
            }
            _ => not_found(),
        },
        ("GET", "subscriptions", "") => {
            let all = subscriptions(broker);
            ok(page(query, &all, Value::clone))
        }
        ("GET", "routes", "") => {
            let mut filters: Vec<String> = subscriptions(broker)
                .iter()
                .filter_map(|s| s["filter"].as_str().map(str::to_string))
                .collect();
            filters.sort();
            filters.dedup();
            let name = node_name();
            ok(page(
                query,
                &filters,
                |f| json!({ "filter": f, "nodes": [name] }),
            ))
        }
        ("GET", "retained", "") => {
            let all = inspect::retained(broker);
            ok(page(query, &all, |m| inspect::message(m, false)))
        }
        ("GET", "retained", topic) => match inspect::retained_one(broker, topic) {
            Some(message) => ok(inspect::message(&message, true)),
            None => not_found(),
        },
        ("DELETE", "retained", topic) if !topic.is_empty() => clear_retained(broker, topic).await,
        ("GET", "bans", "") => ("200 OK", crate::access::bans_json(&broker.access.bans())),
        ("POST", "bans", "") => add_ban(broker, body).await,
        ("DELETE", "bans", target) if !target.is_empty() => lift_ban(broker, target).await,
        (
            _,
            "status" | "cluster" | "nodes" | "clients" | "subscriptions" | "routes" | "retained"
            | "bans",
            _,
        ) => ("405 Method Not Allowed", "method not allowed here\n".into()),
        _ => not_found(),
    }
}

fn ok(value: Value) -> Answer {
    ("200 OK", value.to_string())
}

fn bad(why: &str) -> Answer {
    ("400 Bad Request", format!("{why}\n"))
}

fn not_found() -> Answer {
    ("404 Not Found", "not found\n".into())
}

/// One page of `items`, by the query's `page` and `limit`.
fn page<T>(query: &str, items: &[T], view: impl Fn(&T) -> Value) -> Value {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let page = param("page").unwrap_or(1).max(1);
    let limit = param("limit").unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let data: Vec<Value> = items
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(view)
        .collect();
    json!({ "data": data, "meta": { "page": page, "limit": limit, "count": items.len() } })
}

fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn node(broker: &Broker) -> Value {
    json!({
        "name": node_name(),
        "version": env!("CARGO_PKG_VERSION"),
        "status": if *broker.shutdown.borrow() { "stopping" } else { "running" },
        "uptime_seconds": broker.clock.uptime().as_secs(),
        "connections": crate::stats::Stats::get(&broker.stats.connected),
    })
}

fn status(broker: &Broker) -> Value {
    let census = broker.census();
    let mut view = node(broker);
    view["sessions"] = json!(census.sessions);
    view["subscriptions"] = json!(census.subscriptions);
    view["retained"] = json!(census.retained);
    view["queued"] = json!(census.queued);
    view["cluster"] = cluster(broker);
    view
}

/// The cluster as this node sees it: members, and each Raft group's leader, term and
/// indexes; a node still joining (`joined` false) or alone (`alone`: a cluster of one
/// that no other node can join) says so.
fn cluster(broker: &Broker) -> Value {
    let settings = &broker.config().cluster;
    match broker.cluster() {
        Some(cluster) => {
            let mut view = serde_json::to_value(cluster.status()).unwrap_or(Value::Null);
            view["enabled"] = json!(true);
            view["joined"] = json!(true);
            view["alone"] = json!(settings.is_alone());
            view
        }
        None => {
            let mut view = json!({
                "enabled": true,
                "joined": false,
                "alone": settings.is_alone(),
                "node_id": settings.node.node_id,
                "nodes": [],
                "groups": [],
                "routes": 0,
                "waiting": false,
                "seeds": settings.node.seeds,
                "last_error": null,
            });
            if let Some(entry) = broker.entering().map(shoal_cluster::Cluster::entry) {
                view["waiting"] = json!(entry.waiting);
                view["seeds"] = json!(entry.seeds);
                view["last_error"] = json!(entry.last_error);
            }
            view
        }
    }
}

/// How long `POST /api/v1/cluster/join` waits for the node to become a member before it
/// answers 202 (the node goes on trying the seeds).
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    seeds: Vec<String>,
}

/// `POST /api/v1/cluster/join {"seeds": ["host:port", ...]}`: gives a node that is not a
/// member yet the seeds to join through (replacing those it tries), then waits for it to
/// join: 200 once it is a member, 202 if it is still trying, 409 if it takes no seeds.
async fn join_cluster(broker: &Broker, body: &[u8]) -> Answer {
    let seeds = match serde_json::from_slice::<JoinBody>(body) {
        Ok(JoinBody { seeds }) => seeds,
        Err(e) => {
            return bad(&format!(
                "expected {{\"seeds\": [\"host:port\", ...]}}: {e}"
            ));
        }
    };
    let seeds: Vec<String> = seeds.iter().map(|s| s.trim().to_owned()).collect();
    if let Some(why) = seeds
        .iter()
        .find_map(|s| crate::config::check_seed(s).err())
    {
        return bad(&why);
    }
    if broker.config().cluster.is_alone() {
        return (
            "409 Conflict",
            "this node runs alone (no cluster listener): restart it with cluster_listen for other nodes to join it, or, with a data folder of its own and no seeds, discovery or bootstrap, to join a cluster with shoal cluster join\n".into(),
        );
    }
    if let Some(cluster) = broker.cluster() {
        let why = shoal_cluster::JoinRefused::Member { node: cluster.id() };
        return ("409 Conflict", format!("{why}\n"));
    }
    let Some(cluster) = broker.entering() else {
        return (
            "503 Service Unavailable",
            "this node is still opening its cluster state: try again\n".into(),
        );
    };
    if let Err(why) = cluster.join_through(seeds) {
        return ("409 Conflict", format!("{why}\n"));
    }
    let joined = cluster.wait_joined(JOIN_WAIT).await;
    let entry = cluster.entry();
    let view = json!({
        "joined": joined,
        "node_id": cluster.id(),
        "seeds": entry.seeds,
        "last_error": entry.last_error,
    });
    if joined {
        ok(view)
    } else {
        ("202 Accepted", view.to_string())
    }
}

/// Every subscription, by client id then filter.
fn subscriptions(broker: &Broker) -> Vec<Value> {
    let mut all = Vec::new();
    for slot in inspect::sorted_slots(broker) {
        let session = slot.lock();
        for s in &session.record().subscriptions {
            all.push(inspect::subscription(&slot, s));
        }
    }
    all
}

/// Clears a retained message as an empty retained PUBLISH would, and waits for the flush.
async fn clear_retained(broker: &Broker, topic: &str) -> Answer {
    if inspect::retained_one(broker, topic).is_none() {
        return not_found();
    }
    let Ok(name) = MqttString::try_from(topic) else {
        return bad("not a topic name");
    };
    let empty = Arc::new(Message {
        topic: name,
        payload: bytes::Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: PublishProperties::default(),
        expires_at: None,
        received_at: broker.now(),
    });
    // A $SYS topic is kept in memory only; any other is cleared through its Raft group,
    // on every node.
    if topic.starts_with('$') {
        broker.retain(&empty);
    } else {
        let cluster = match broker.joined_cluster() {
            Ok(cluster) => cluster,
            Err(e) => return ("503 Service Unavailable", format!("{e}\n")),
        };
        if let Err(e) = cluster.retain(topic, None).await {
            return ("503 Service Unavailable", format!("{e}\n"));
        }
    }
    tracing::info!(topic, "retained message cleared by an operator");
    ("204 No Content", String::new())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    target: String,
    seconds: Option<u64>,
    reason: Option<String>,
}

async fn add_ban(broker: &Broker, body: &[u8]) -> Answer {
    let new: NewBan = match serde_json::from_slice(body) {
        Ok(new) => new,
        Err(e) => return bad(&format!("bad ban: {e}")),
    };
    let target: BanTarget = match new.target.parse() {
        Ok(target) => target,
        Err(e) => return bad(&format!("bad target: {e}")),
    };
    let now = broker.access.now();
    let ban = Ban {
        target,
        until: new
            .seconds
            .map(|s| now.saturating_add(s.saturating_mul(1000))),
        reason: new.reason.unwrap_or_else(|| "banned by an operator".into()),
        created: now,
    };
    let (target, until, reason) = (ban.target.to_string(), ban.until, ban.reason.clone());
    // Every node enforces it (and kicks its matching clients) as it applies it.
    if let Err(e) = broker.ban(ban).await {
        return ("503 Service Unavailable", format!("{e}\n"));
    }
    tracing::info!(%target, ?until, %reason, "ban added");
    ("201 Created", "banned\n".into())
}

async fn lift_ban(broker: &Broker, target: &str) -> Answer {
    let target: BanTarget = match target.parse() {
        Ok(target) => target,
        Err(e) => return bad(&format!("bad target: {e}")),
    };
    match broker.unban(&target).await {
        Ok(true) => {
            tracing::info!(%target, "ban lifted");
            ("204 No Content", String::new())
        }
        Ok(false) => ("404 Not Found", "no such ban\n".into()),
        Err(e) => ("503 Service Unavailable", format!("{e}\n")),
    }
}

/// `%XX` decoding of a path segment.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_count_from_one_and_clamp_the_limit() {
        let items: Vec<u32> = (0..250).collect();
        let first = page("", &items, |i| json!(i));
        assert_eq!(first["data"].as_array().map(Vec::len), Some(100));
        assert_eq!(first["meta"]["count"], 250);
        let third = page("page=3&limit=100", &items, |i| json!(i));
        assert_eq!(third["data"], json!((200..250).collect::<Vec<u32>>()));
        let big = page("limit=999999", &items, |i| json!(i));
        assert_eq!(big["meta"]["limit"], MAX_LIMIT);
        let past = page("page=9", &items, |i| json!(i));
        assert_eq!(past["data"], json!([]));
    }

    #[test]
    fn percent_decoding_takes_slashes_and_refuses_broken_escapes() {
        assert_eq!(percent_decode("a%2Fb%2F%23").as_deref(), Some("a/b/#"));
        assert_eq!(
            percent_decode("net:10.0.0.0%2F8").as_deref(),
            Some("net:10.0.0.0/8")
        );
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
