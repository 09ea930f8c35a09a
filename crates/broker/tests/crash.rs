//! Promises about crashes, tested by crashing: the real `shoal` binary is killed with
//! SIGKILL in the middle of traffic, restarted on the same data folder, and clients that
//! reconnect (persistent sessions, clean start 0) are checked against what the broker
//! acknowledged: nothing acknowledged lost, no QoS 2 message delivered twice, per-publisher
//! order kept. `benches/crash_qos2.sh` runs the same scenario many times.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use shoal_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;
/// Messages each publisher sends in all.
const PER_PUBLISHER: u32 = 300;

/// A minimal MQTT 5 client with a persistent session that survives its connection: it
/// reconnects with clean start 0 and completes the QoS 2 flows it had in flight, as the
/// specification asks of a client (§4.4).
struct Client {
    id: String,
    stream: Option<TcpStream>,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            stream: None,
            decoder: Decoder::with_version(V5, u32::MAX),
            buf: BytesMut::new(),
        }
    }

    /// Connects (again) until the broker answers; returns Session Present.
    async fn connect(&mut self, addr: &Mutex<SocketAddr>) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: no broker to reconnect to",
                self.id
            );
            let target = *addr.lock().expect("lock");
            if let Ok(stream) = TcpStream::connect(target).await {
                self.stream = Some(stream);
                self.buf.clear();
                self.decoder = Decoder::with_version(V5, u32::MAX);
                let mut connect = Connect::new(V5, s(&self.id));
                connect.clean_start = false;
                connect.properties.session_expiry_interval = Some(3600);
                if self.send(Packet::Connect(Box::new(connect))).await
                    && let Some(Packet::ConnAck(ack)) = self.recv().await
                    && ack.reason_code == ConnectReasonCode::Success
                {
                    return ack.session_present;
                }
            }
            self.stream = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a packet; false if the connection is gone.
    async fn send(&mut self, packet: Packet) -> bool {
        let mut out = BytesMut::new();
        packet.encode(V5, &mut out).expect("encodes");
        match &mut self.stream {
            Some(stream) => stream.write_all(&out).await.is_ok(),
            None => false,
        }
    }

    /// The next packet; `None` when the connection is gone (or silent for 10 s).
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.buf).ok()? {
                return Some(packet);
            }
            let stream = self.stream.as_mut()?;
            match tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
}

/// What the clients saw: per publisher, the sequence numbers the broker acknowledged
/// (PUBREC); per subscriber and publisher, the sequence numbers delivered, in order.
#[derive(Default)]
struct Ledger {
    acked: HashMap<u32, Vec<u32>>,
    delivered: HashMap<(u32, u32), Vec<u32>>,
}

/// A publisher: QoS 2 messages carrying (publisher, seq), one at a time, each flow
/// completed across reconnects (an unacknowledged PUBLISH is resent with DUP and the same
/// identifier; after PUBREC, PUBREL is resent until PUBCOMP).
async fn publish(n: u32, addr: Arc<Mutex<SocketAddr>>, ledger: Arc<Mutex<Ledger>>) {
    let mut client = Client::new(&format!("crash-pub-{n}"));
    client.connect(&addr).await;
    let topic = format!("chk/p{n}");
    for seq in 1..=PER_PUBLISHER {
        let id = pid((seq % 60_000) as u16 + 1);
        let mut payload = n.to_be_bytes().to_vec();
        payload.extend_from_slice(&seq.to_be_bytes());
        let mut released = false;
        let mut dup = false;
        loop {
            let packet = if released {
                Packet::PubRel(PubRel::new(id))
            } else {
                let mut p = Publish::new(s(&topic), payload.clone().into());
                p.qos_pid = QosPid::ExactlyOnce(id);
                p.dup = dup;
                Packet::Publish(p)
            };
            let mut done = false;
            if client.send(packet).await {
                while let Some(answer) = client.recv().await {
                    match answer {
                        Packet::PubRec(rec) if rec.packet_id == id && !released => {
                            assert!(!rec.reason_code.is_error(), "PUBREC {:?}", rec.reason_code);
                            ledger
                                .lock()
                                .expect("lock")
                                .acked
                                .entry(n)
                                .or_default()
                                .push(seq);
                            released = true;
                            if !client.send(Packet::PubRel(PubRel::new(id))).await {
                                break;
                            }
                        }
                        Packet::PubComp(comp) if comp.packet_id == id && released => {
                            done = true;
                            break;
                        }
                        _ => {}
                    }
                }
            }
            if done {
                break;
            }
            // The connection is gone: resume the session and complete the flow.
            client.connect(&addr).await;
            dup = true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A subscriber on `chk/#` at QoS 2, receiving as the specification's method B does: a
/// message is delivered to the application when first received, its identifier kept until
/// PUBREL, so a resend with DUP before PUBREL is recognised; after PUBCOMP the identifier
/// is free, and a PUBLISH with it is a new message.
async fn subscribe(
    n: u32,
    addr: Arc<Mutex<SocketAddr>>,
    ledger: Arc<Mutex<Ledger>>,
    publishers: u32,
    ready: tokio::sync::mpsc::Sender<()>,
) {
    let mut client = Client::new(&format!("crash-sub-{n}"));
    client.connect(&addr).await;
    let sub = Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(s("chk/#"), SubscriptionOptions::with_qos(QoS::ExactlyOnce))],
    };
    assert!(client.send(Packet::Subscribe(sub)).await);
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    ready.send(()).await.expect("test waits");
    let mut awaiting_rel: HashSet<PacketId> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        // Done once every message of every publisher has arrived (duplicates aside).
        let complete = {
            let ledger = ledger.lock().expect("lock");
            (0..publishers).all(|p| {
                ledger.delivered.get(&(n, p)).is_some_and(|got| {
                    got.iter().copied().collect::<HashSet<u32>>().len() as u32 == PER_PUBLISHER
                })
            })
        };
        if complete || tokio::time::Instant::now() > deadline {
            return;
        }
        match client.recv().await {
            Some(Packet::Publish(p)) => {
                let id = p.qos_pid.packet_id().expect("QoS 2");
                if awaiting_rel.insert(id) {
                    let publisher = u32::from_be_bytes(p.payload[..4].try_into().expect("4"));
                    let seq = u32::from_be_bytes(p.payload[4..8].try_into().expect("4"));
                    ledger
                        .lock()
                        .expect("lock")
                        .delivered
                        .entry((n, publisher))
                        .or_default()
                        .push(seq);
                }
                client.send(Packet::PubRec(PubRec::new(id))).await;
            }
            Some(Packet::PubRel(rel)) => {
                awaiting_rel.remove(&rel.packet_id);
                client
                    .send(Packet::PubComp(PubComp::new(rel.packet_id)))
                    .await;
            }
            Some(_) => {}
            None => {
                // Quiet for long, or the broker is gone: resume the session.
                client.connect(&addr).await;
            }
        }
    }
}

/// One run: 2 publishers and 2 subscribers, all persistent and online, QoS 2; the broker is
/// killed with SIGKILL after `kill_after` acknowledged messages and restarted 0.3 s later.
async fn qos2_run(kill_after: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Process::start(dir.path()).await;
    let addr = Arc::new(Mutex::new(broker.addr));
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let (publishers, subscribers) = (2u32, 2u32);
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(4);
    let mut tasks = Vec::new();
    for n in 0..subscribers {
        tasks.push(tokio::spawn(subscribe(
            n,
            Arc::clone(&addr),
            Arc::clone(&ledger),
            publishers,
            ready_tx.clone(),
        )));
    }
    for _ in 0..subscribers {
        ready.recv().await.expect("subscribed");
    }
    for n in 0..publishers {
        tasks.push(tokio::spawn(publish(
            n,
            Arc::clone(&addr),
            Arc::clone(&ledger),
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let acked: usize = ledger
            .lock()
            .expect("lock")
            .acked
            .values()
            .map(Vec::len)
            .sum();
        if acked >= kill_after {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "too slow: {acked} acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let dir_path = dir.path().to_owned();
    broker.kill_9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Restarted on the same port, so that the clients find it.
    let port = addr.lock().expect("lock").port();
    let broker = Process::start_on(&dir_path, port).await;
    for task in tasks {
        task.await.expect("client task");
    }
    drop(broker);
    let ledger = ledger.lock().expect("lock");
    for sub in 0..subscribers {
        for publisher in 0..publishers {
            let got = ledger
                .delivered
                .get(&(sub, publisher))
                .cloned()
                .unwrap_or_default();
            let acked = &ledger.acked[&publisher];
            let got_set: HashSet<u32> = got.iter().copied().collect();
            let lost: Vec<u32> = acked
                .iter()
                .copied()
                .filter(|s| !got_set.contains(s))
                .collect();
            assert_eq!(
                got_set.len(),
                got.len(),
                "subscriber {sub}, publisher {publisher}: QoS 2 delivered twice: {got:?}"
            );
            assert!(
                lost.is_empty(),
                "subscriber {sub}, publisher {publisher}: acknowledged and lost {lost:?}"
            );
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(
                got, sorted,
                "subscriber {sub}, publisher {publisher}: order"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_exactly_once_for_online_persistent_clients_across_kill_9() {
    // A few kill points per run of the suite; benches/crash_qos2.sh runs many more.
    let runs: usize = std::env::var("SHOAL_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for run in 0..runs {
        qos2_run(40 + run * 97 % 200).await;
    }
}
