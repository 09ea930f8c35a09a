//! What SUBSCRIBE costs as one client's subscriptions grow (issue 11, item 2): an
//! in-process node and one MQTT 5 client over loopback that subscribes N distinct filters,
//! one per SUBSCRIBE, 500 in flight at a time. Prints, per N, the wall time and the
//! process's CPU time for all N, and the round trip of one more SUBSCRIBE once the session
//! holds N.
//!
//!     cargo run --release -p shoal-broker --example subscribe_cost [-- 10000 50000 100000]
//!
//! `SUB_PERSISTENT=1` makes the session persistent (Session Expiry 3600): its record is
//! then written to the store whole at each SUBSCRIBE.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Raw, TestNode, pid, s};
use shoal_codec::{Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions};

const WINDOW: usize = 500;

fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn subscribe(id: u16, filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![(s(filter), SubscriptionOptions::with_qos(QoS::AtLeastOnce))],
    })
}

async fn run(n: usize, persistent: bool) {
    let node = TestNode::start_with(|raw| raw.max_subscriptions = Some(1_000_000)).await;
    let (mut client, _) = Raw::connect(node.addr(), ProtocolVersion::V5, "subscriber", |c| {
        if persistent {
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(3600);
        }
    })
    .await;
    let started = Instant::now();
    let cpu = cpu_time();
    let mut sent = 0;
    while sent < n {
        let batch = WINDOW.min(n - sent);
        for i in 0..batch {
            let id = ((sent + i) % 60_000 + 1) as u16;
            client
                .send(subscribe(
                    id,
                    &format!("site/{}/device/{}/cmd", (sent + i) % 97, sent + i),
                ))
                .await;
        }
        for _ in 0..batch {
            match client.recv_within(Duration::from_secs(120)).await {
                Some(Packet::SubAck(ack)) => assert!(!ack.reason_codes[0].is_error()),
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
        sent += batch;
    }
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu;
    let one = Instant::now();
    client.send(subscribe(60_001, "one/more")).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    let one = one.elapsed();
    println!(
        "| {n} | {} | {:.2} s | {:.2} s | {:.1} µs | {:.2} ms |",
        if persistent { "persistent" } else { "clean" },
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
        one.as_secs_f64() * 1e3,
    );
    drop(client);
    node.node.shutdown().await;
}

#[tokio::main]
async fn main() {
    let persistent = std::env::var("SUB_PERSISTENT").is_ok_and(|v| v == "1");
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10_000, 50_000, 100_000]
    } else {
        counts
    };
    println!(
        "| filters | session | wall | CPU (process) | CPU per SUBSCRIBE | one more SUBSCRIBE |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for n in counts {
        run(n, persistent).await;
    }
}
