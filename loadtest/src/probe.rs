//! The brokers' versions, for the report: MQTT has no version field (CONNACK carries none,
//! not even in MQTT 5), but Mosquitto and shoal keep a retained `$SYS/broker/version`. Before
//! the run's clients connect, one short connection per broker subscribes to it, takes the
//! retained value if one comes, and disconnects. Brokers without it (or that refuse the
//! connection or the subscription) report no version; the run goes on either way.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use shoal_codec::{
    Connect, Decoder, Disconnect, DisconnectReasonCode, MqttString, Packet, PacketId, QoS,
    ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::run::RunConfig;
use crate::transport::{BoxedIo, Connector};

/// The topic Mosquitto and shoal keep their version in, retained.
pub const VERSION_TOPIC: &str = "$SYS/broker/version";
/// The longest a probe may take: connect, CONNACK, SUBACK and the retained message.
const PROBE_LIMIT: Duration = Duration::from_secs(2);
/// How long the retained message may take once the subscription is acknowledged.
const RETAINED_WAIT: Duration = Duration::from_millis(300);
/// The longest version text kept.
const MAX_VERSION_LEN: usize = 200;

/// The version of every broker of `config`, in the order of its brokers (`None`: unknown).
/// The probes run at once, each within two seconds.
pub async fn broker_versions(config: &RunConfig) -> Vec<Option<String>> {
    let count = config.brokers.count();
    let Ok(connector) = Connector::new(&config.brokers, &config.tls).await else {
        return vec![None; count];
    };
    let (Ok(version), Ok(client_id)) = (
        config.session.protocol(),
        MqttString::try_from(format!("{}-version", config.session.client_id_prefix)),
    ) else {
        return vec![None; count];
    };
    let mut connect = Connect::new(version, client_id);
    connect.keep_alive = 10;
    if let Some(user) = &config.session.username {
        connect.username = MqttString::try_from(user.as_str()).ok();
    }
    connect.password = config.session.password.clone().map(Into::into);
    let (connector, connect) = (Arc::new(connector), Arc::new(connect));
    let source = config.source_ips.first().copied();
    let tasks: Vec<_> = (0..count)
        .map(|broker| {
            let (connector, connect) = (connector.clone(), connect.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + PROBE_LIMIT;
                let io = timeout_at(deadline, connector.connect(broker, source))
                    .await
                    .ok()?
                    .ok()?;
                probe(io, &connect, deadline).await
            })
        })
        .collect();
    let mut versions = Vec::with_capacity(count);
    for task in tasks {
        versions.push(task.await.ok().flatten());
    }
    versions
}

/// CONNECT, SUBSCRIBE to [`VERSION_TOPIC`], the retained value if it comes, DISCONNECT.
async fn probe(mut io: BoxedIo, connect: &Connect, deadline: Instant) -> Option<String> {
    let version = connect.protocol;
    let mut session = Session {
        decoder: Decoder::with_version(version, 64 * 1024),
        rbuf: BytesMut::new(),
        deadline,
    };
    let mut wbuf = BytesMut::new();
    Packet::Connect(Box::new(connect.clone()))
        .encode(version, &mut wbuf)
        .ok()?;
    timeout_at(deadline, io.write_all(&wbuf)).await.ok()?.ok()?;
    match session.next(&mut io).await? {
        Packet::ConnAck(c) if !c.reason_code.is_error() => {}
        _ => return None,
    }
    wbuf.clear();
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).expect("1 is not 0"),
        properties: SubscribeProperties::default(),
        filters: vec![(
            MqttString::try_from(VERSION_TOPIC).ok()?,
            SubscriptionOptions::with_qos(QoS::AtMostOnce),
        )],
    };
    Packet::Subscribe(subscribe)
        .encode(version, &mut wbuf)
        .ok()?;
    timeout_at(deadline, io.write_all(&wbuf)).await.ok()?.ok()?;
    let mut found = None;
    loop {
        match session.next(&mut io).await {
            Some(Packet::SubAck(s)) => {
                if s.reason_codes.iter().any(|c| c.is_error()) {
                    break;
                }
                session.deadline = session.deadline.min(Instant::now() + RETAINED_WAIT);
            }
            Some(Packet::Publish(p)) if p.topic.as_str() == VERSION_TOPIC => {
                let text = String::from_utf8_lossy(&p.payload);
                let text = text.trim();
                if !text.is_empty() {
                    found = Some(text.chars().take(MAX_VERSION_LEN).collect());
                }
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    wbuf.clear();
    if Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
        .encode(version, &mut wbuf)
        .is_ok()
    {
        let close = Instant::now() + Duration::from_millis(200);
        let _ = timeout_at(close, io.write_all(&wbuf)).await;
        let _ = timeout_at(close, io.shutdown()).await;
    }
    found
}

/// The read side of a probe.
struct Session {
    decoder: Decoder,
    rbuf: BytesMut,
    deadline: Instant,
}

impl Session {
    /// The next packet, or `None` on a timeout, an error or the end of the stream.
    async fn next(&mut self, io: &mut BoxedIo) -> Option<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.rbuf).ok()? {
                return Some(packet);
            }
            self.rbuf.reserve(4096);
            let n = timeout_at(self.deadline, io.read_buf(&mut self.rbuf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_codec::{
        AckProperties, ConnAck, ConnectReasonCode, ProtocolVersion, Publish, SubAck,
        SubAckReasonCode,
    };

    use super::*;
    use crate::scenario::{Placement, SessionDefaults, builtin};
    use crate::transport::{BrokerUrl, Brokers, TlsOptions};
    use crate::units::Span;

    fn config(urls: &[String]) -> RunConfig {
        let urls: Vec<BrokerUrl> = urls.iter().map(|u| u.parse().expect("valid")).collect();
        RunConfig {
            scenario: builtin::conn(1),
            session: SessionDefaults {
                version: 5,
                clean_start: true,
                session_expiry: 0,
                keep_alive: 60,
                username: None,
                password: None,
                client_id_prefix: "lt".to_owned(),
            },
            brokers: Brokers::new(urls[0].clone(), urls[1..].iter().cloned()).expect("ok"),
            placement: Placement::Spread,
            tls: TlsOptions::default(),
            duration: None,
            timeout: Span(Duration::from_secs(10)),
            ramp: None,
            connect_concurrency: 1,
            connect_timeout: Span(Duration::from_secs(1)),
            inflight: 1,
            reconnect: None,
            failover: false,
            drain: Span(Duration::from_secs(1)),
            source_ips: Vec::new(),
            max_packet_size: 1 << 20,
            workers: 1,
            slot: None,
            record: None,
        }
    }

    /// A fake broker on a free loopback port for one connection: CONNACK, SUBACK, then the
    /// retained version if it has one. Returns its URL.
    async fn fake_broker(version: Option<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let v5 = ProtocolVersion::V5;
            let mut decoder = Decoder::with_version(v5, 1 << 16);
            let mut rbuf = BytesMut::new();
            loop {
                let packet = loop {
                    if let Some(p) = decoder.decode(&mut rbuf).expect("valid") {
                        break p;
                    }
                    if socket.read_buf(&mut rbuf).await.expect("read") == 0 {
                        return;
                    }
                };
                let mut out = BytesMut::new();
                match packet {
                    Packet::Connect(c) => {
                        assert_eq!(c.client_id.as_str(), "lt-version");
                        let ack = ConnAck::new(ConnectReasonCode::Success, false);
                        Packet::ConnAck(Box::new(ack)).encode(v5, &mut out)
                    }
                    Packet::Subscribe(s) => {
                        assert_eq!(s.filters[0].0.as_str(), VERSION_TOPIC);
                        let ack = SubAck {
                            packet_id: s.packet_id,
                            properties: AckProperties::default(),
                            reason_codes: vec![SubAckReasonCode::GrantedQos0],
                        };
                        Packet::SubAck(ack).encode(v5, &mut out).expect("encode");
                        match version {
                            Some(v) => {
                                let topic = MqttString::try_from(VERSION_TOPIC).expect("valid");
                                let mut p = Publish::new(topic, v.as_bytes().to_vec().into());
                                p.retain = true;
                                Packet::Publish(p).encode(v5, &mut out)
                            }
                            None => Ok(()),
                        }
                    }
                    _ => return,
                }
                .expect("encode");
                socket.write_all(&out).await.expect("write");
            }
        });
        format!("mqtt://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn reads_each_brokers_retained_version_and_waits_little_without_one() {
        let with = fake_broker(Some("fakebroker 1.2.3\n")).await;
        let without = fake_broker(None).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!(
                "mqtt://127.0.0.1:{}",
                l.local_addr().expect("address").port()
            )
        };
        let started = std::time::Instant::now();
        let versions = broker_versions(&config(&[with, without, closed])).await;
        assert_eq!(versions, [Some("fakebroker 1.2.3".to_owned()), None, None]);
        // The one without a version cost the short wait after its SUBACK, not the limit.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
}
