//! Rough numbers for the store's design choices, on the machine at hand:
//! `cargo run --release -p shoal-store --example measure`.
//!
//! - the cost of a write: `enqueue` one by one, a `WriteBatch`, and sled's own `Batch`;
//! - a delivery state change as a small separate entry, against rewriting the message;
//! - group commit: flushes per second and callers per flush as concurrency grows.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_codec::{MqttString, PacketId, PublishProperties, QoS};
use shoal_session::{Message, OutboundMessage, OutboundState, Timestamp};
use shoal_store::{Store, StoreConfig, WriteBatch};

const N: u64 = 20_000;
const PAYLOAD: usize = 1024;

fn client(i: u64) -> MqttString {
    MqttString::try_from(format!("client-{}", i % 100)).expect("valid")
}

fn outbound() -> OutboundMessage {
    OutboundMessage {
        message: Arc::new(Message {
            topic: MqttString::from_static("plant/line-4/press/temperature"),
            payload: Bytes::from(vec![7u8; PAYLOAD]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: Some(Timestamp(u64::MAX / 2)),
            received_at: Timestamp(1),
        }),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![NonZeroU32::MIN],
        state: OutboundState::Queued,
    }
}

fn per_op(start: Instant, n: u64) -> String {
    format!(
        "{:.2} µs/op",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreConfig::default())?;
    let out = outbound();
    println!("{N} writes of a {PAYLOAD}-byte message, 100 clients:");

    let start = Instant::now();
    for i in 0..N {
        store.enqueue(&client(i), i, &out)?;
    }
    println!("  enqueue one by one        {}", per_op(start, N));
    store.flush_blocking()?;

    let start = Instant::now();
    for chunk in (N..2 * N).collect::<Vec<_>>().chunks(100) {
        let mut batch = WriteBatch::new();
        for &i in chunk {
            batch.enqueue(&client(i), i, &out)?;
        }
        store.apply(&batch)?;
    }
    println!("  WriteBatch of 100         {}", per_op(start, N));
    store.flush_blocking()?;

    // sled's Batch, for comparison (no expiry index, keys precomputed by hand).
    let db = sled::Config::new()
        .path(dir.path().join("raw"))
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("queues")?;
    let value = vec![0u8; PAYLOAD + 60];
    let start = Instant::now();
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let mut batch = sled::Batch::default();
        for &i in chunk {
            batch.insert(&i.to_be_bytes(), &value[..]);
        }
        tree.apply_batch(batch)?;
    }
    println!("  raw sled Batch of 100     {}", per_op(start, N));
    let start = Instant::now();
    for i in N..2 * N {
        tree.insert(i.to_be_bytes(), &value[..])?;
    }
    println!("  raw sled insert           {}", per_op(start, N));

    println!("delivery state change of {N} queued messages:");
    let id = PacketId::new(1).ok_or("packet id")?;
    let disk = store.size_on_disk()?;
    let start = Instant::now();
    for i in 0..N {
        store.set_outbound_state(&client(i), i, OutboundState::Sent(id))?;
    }
    let elapsed = per_op(start, N);
    store.flush_blocking()?;
    let grown = store.size_on_disk()?.saturating_sub(disk);
    println!(
        "  set_outbound_state        {elapsed}, log grew {} bytes/op",
        grown / N
    );
    let mut sent = outbound();
    sent.state = OutboundState::Sent(id);
    let disk = store.size_on_disk()?;
    let start = Instant::now();
    for i in 0..N {
        store.enqueue(&client(i), i, &sent)?;
    }
    let elapsed = per_op(start, N);
    store.flush_blocking()?;
    let grown = store.size_on_disk()?.saturating_sub(disk);
    println!(
        "  rewrite with enqueue      {elapsed}, log grew {} bytes/op",
        grown / N
    );

    println!("remove_outbound (an acknowledgement):");
    let start = Instant::now();
    for i in 0..N {
        store.remove_outbound(&client(i), i)?;
    }
    println!("  remove_outbound           {}", per_op(start, N));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    println!("group commit, each task: enqueue then flush().await, for 2 s:");
    for tasks in [1u64, 8, 64, 512] {
        runtime.block_on(group_commit(&store, tasks))?;
    }
    Ok(())
}

async fn group_commit(store: &Store, tasks: u64) -> Result<(), Box<dyn std::error::Error>> {
    let before = store.flush_stats();
    let until = Instant::now() + Duration::from_secs(2);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let out = outbound();
                let mut waits = Vec::new();
                let mut seq = 1_000_000 + t * 1_000_000;
                while Instant::now() < until {
                    store.enqueue(&client(t), seq, &out)?;
                    seq += 1;
                    waits.push(store.flush().await?.waited);
                }
                Ok::<_, shoal_store::StoreError>(waits)
            })
        })
        .collect();
    let mut waits = Vec::new();
    for h in handles {
        waits.extend(h.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = store.flush_stats();
    let flushes = after.flushes - before.flushes;
    waits.sort();
    let pct = |p: f64| waits[((waits.len() - 1) as f64 * p) as usize];
    println!(
        "  {tasks:>4} tasks: {:>7.0} acks/s, {:>5.0} flushes/s, {:>6.1} waiters/flush, wait p50 {:?} p99 {:?}",
        waits.len() as f64 / secs,
        flushes as f64 / secs,
        (after.waiters - before.waiters) as f64 / flushes as f64,
        pct(0.5),
        pct(0.99),
    );
    Ok(())
}
