//! $SYS topics, as Mosquitto publishes them, every `sys_interval`; and the gauges sampled
//! for Prometheus at the same time. $SYS messages are retained in memory only, and a $SYS
//! topic no one subscribed to is only retained, not dispatched (nor counted as dropped).
//!
//! `$SYS/broker/load/{messages,bytes}/{received,sent}/{1min,5min,15min}` are Mosquitto's
//! load figures: exponentially weighted moving averages of the rate per minute.

use std::sync::Arc;

use bytes::Bytes;
use shoal_codec::{MqttString, PublishProperties, QoS};
use shoal_session::Message;
use shoal_topic::Recipients;

use crate::broker::Broker;
use crate::metrics as m;
use crate::stats::Stats;

/// Publishes $SYS every interval until shutdown.
pub(crate) async fn run(broker: Arc<Broker>, interval: std::time::Duration) {
    let mut shutdown = broker.shutdown.subscribe();
    let mut ticker = tokio::time::interval(interval);
    let mut recipients = Recipients::new();
    let mut load = Load::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {
                let stats = &broker.stats;
                load.handle_sample(
                    broker.clock.uptime().as_secs_f64(),
                    [
                        Stats::total(&stats.messages_received),
                        Stats::total(&stats.messages_sent),
                        Stats::get(&stats.bytes_received),
                        Stats::get(&stats.bytes_sent),
                    ],
                );
                publish(&broker, &load, &mut recipients);
            }
        }
    }
}

/// Updates the sampled gauges.
pub(crate) fn sample(broker: &Broker) -> crate::broker::Census {
    let census = broker.census();
    broker.stats.export();
    metrics::gauge!(m::SESSIONS).set(census.sessions as f64);
    metrics::gauge!(m::SUBSCRIPTIONS).set(census.subscriptions as f64);
    metrics::gauge!(m::RETAINED_MESSAGES).set(census.retained as f64);
    metrics::gauge!(m::QUEUED_MESSAGES).set(census.queued as f64);
    if let Some(cluster) = broker.cluster() {
        let status = cluster.status();
        let down = status.nodes.iter().filter(|n| n.down).count();
        metrics::gauge!(m::CLUSTER_NODES, "state" => "up").set((status.nodes.len() - down) as f64);
        metrics::gauge!(m::CLUSTER_NODES, "state" => "down").set(down as f64);
        metrics::gauge!(m::CLUSTER_LEASE).set(if status.lease { 1.0 } else { 0.0 });
        metrics::counter!(m::SESSION_WRITES_SKIPPED).absolute(cluster.session_writes_skipped());
        for group in status.groups {
            let leads = group.leader == status.node_id;
            let lag = group.last_log.saturating_sub(group.applied);
            metrics::gauge!(m::RAFT_LEADER, "group" => group.group.clone()).set(if leads {
                1.0
            } else {
                0.0
            });
            metrics::gauge!(m::RAFT_COMMIT_LAG, "group" => group.group).set(lag as f64);
        }
    }
    census
}

fn publish(broker: &Arc<Broker>, load: &Load, recipients: &mut Recipients<u64>) {
    let census = sample(broker);
    let stats = &broker.stats;
    let mut values: Vec<(String, String)> = vec![
        (
            "$SYS/broker/version",
            format!("shoal {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.clock.uptime().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            Stats::get(&stats.connected).to_string(),
        ),
        ("$SYS/broker/clients/total", census.sessions.to_string()),
        (
            "$SYS/broker/messages/received",
            Stats::total(&stats.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            Stats::total(&stats.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            Stats::get(&stats.bytes_received).to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            Stats::get(&stats.bytes_sent).to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            census.subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            census.retained.to_string(),
        ),
        (
            "$SYS/broker/store messages/count",
            census.queued.to_string(),
        ),
    ]
    .into_iter()
    .map(|(topic, value)| (topic.to_string(), value))
    .collect();
    values.extend(load.topics());
    let now = broker.now();
    for (topic, value) in values {
        let Ok(topic) = MqttString::try_from(topic.as_str()) else {
            continue;
        };
        let message = Arc::new(Message {
            topic,
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            received_at: now,
        });
        // Kept in memory only: $SYS values are rebuilt at start.
        broker.retain(&message);
        crate::broker::read(&broker.index).match_topic(&message.topic, None, recipients);
        if recipients.is_empty() {
            continue;
        }
        let plain = Arc::new(Message {
            retain: false,
            ..(*message).clone()
        });
        let _ = broker.dispatch(&plain, None, recipients, None, None);
    }
}

/// The averaging windows of the load topics, with their names.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];
/// The load topics' quantities, in the order of [`Load::handle_sample`]'s totals.
const QUANTITIES: [&str; 4] = [
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
];

/// Mosquitto's `$SYS/broker/load/...`: per quantity and window, an exponentially weighted
/// moving average of the rate per minute. Sans-IO: time and totals come in.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// The previous sample: when (seconds since start) and the totals then.
    last: Option<(f64, [u64; 4])>,
    /// The averages, per quantity and window (per minute).
    averages: [[f64; 3]; 4],
}

impl Load {
    /// Takes the totals at `now` (seconds): each average moves towards the rate since the
    /// previous sample, by `1 - exp(-elapsed / window)`.
    pub(crate) fn handle_sample(&mut self, now: f64, totals: [u64; 4]) {
        if let Some((then, before)) = self.last {
            let elapsed = now - then;
            if elapsed <= 0.0 {
                return;
            }
            for (q, averages) in self.averages.iter_mut().enumerate() {
                let per_minute = totals[q].saturating_sub(before[q]) as f64 * 60.0 / elapsed;
                for (w, (_, window)) in WINDOWS.iter().enumerate() {
                    let keep = (-elapsed / window).exp();
                    averages[w] = per_minute + keep * (averages[w] - per_minute);
                }
            }
        }
        self.last = Some((now, totals));
    }

    /// The topics and their values (two decimals, as Mosquitto prints them).
    pub(crate) fn topics(&self) -> Vec<(String, String)> {
        let mut topics = Vec::with_capacity(12);
        for (q, quantity) in QUANTITIES.iter().enumerate() {
            for (w, (window, _)) in WINDOWS.iter().enumerate() {
                topics.push((
                    format!("$SYS/broker/load/{quantity}/{window}"),
                    format!("{:.2}", self.averages[q][w]),
                ));
            }
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_converges_to_its_per_minute_value_faster_in_short_windows() {
        let mut load = Load::default();
        load.handle_sample(0.0, [0; 4]);
        // 10 messages a second received, nothing else, sampled every 10 s for 2 minutes.
        for i in 1..=12u64 {
            load.handle_sample(i as f64 * 10.0, [i * 100, 0, i * 1000, 0]);
        }
        let [one, five, fifteen] = load.averages[0];
        assert!((one - 600.0).abs() < 600.0 * 0.15, "1min {one}");
        assert!(five < one && fifteen < five, "{one} {five} {fifteen}");
        assert_eq!(load.averages[1], [0.0; 3]);
        let topics = load.topics();
        assert_eq!(topics.len(), 12);
        assert_eq!(topics[0].0, "$SYS/broker/load/messages/received/1min");
        assert_eq!(topics[9].0, "$SYS/broker/load/bytes/sent/1min");
        assert_eq!(topics[9].1, "0.00");
    }

    #[test]
    fn the_first_sample_sets_no_rate() {
        let mut load = Load::default();
        load.handle_sample(5.0, [1_000_000, 0, 0, 0]);
        assert_eq!(load.averages[0], [0.0; 3]);
    }
}
