//! $SYS topics, as Mosquitto publishes them, every `sys_interval`; and the gauges sampled
//! for Prometheus at the same time. $SYS messages are retained in memory only.

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
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => publish(&broker, &mut recipients),
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
    census
}

fn publish(broker: &Arc<Broker>, recipients: &mut Recipients<u64>) {
    let census = sample(broker);
    let stats = &broker.stats;
    let loads = load_averages();
    let values: Vec<(&str, String)> = vec![
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
        ("$SYS/broker/load/1min", loads.0),
        ("$SYS/broker/load/5min", loads.1),
        ("$SYS/broker/load/15min", loads.2),
    ];
    let now = broker.now();
    for (topic, value) in values {
        let Ok(topic) = MqttString::try_from(topic) else {
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
        let _ = broker.retain(&message, false);
        let plain = Arc::new(Message {
            retain: false,
            ..(*message).clone()
        });
        let _ = broker.dispatch(&plain, None, recipients, None);
    }
}

/// The system's load averages (1, 5, 15 minutes), from /proc/loadavg where there is one.
fn load_averages() -> (String, String, String) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(str::to_string);
    (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    )
}
