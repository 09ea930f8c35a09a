//! The retained-message index at fleet scale: 100,000 retained messages, one per device
//! (`site/{s}/device/{d}/status`, 100 sites of 1,000 devices, device numbers per site), then
//! the time of the filters a SUBSCRIBE brings, from one exact topic to `#` (every message:
//! the cost per match), and the memory of the index in bytes per message, measured by a
//! counting global allocator.
//!
//! Run: `cargo bench -p shoal-benches --bench retained`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shoal_topic::RetainedIndex;

#[global_allocator]
static GLOBAL: shoal_benches::CountingAlloc = shoal_benches::CountingAlloc;

const SITES: u32 = 100;
const DEVICES_PER_SITE: u32 = 1_000;

/// What the broker would keep per retained message: shared, never cloned by the index.
type Message = Arc<[u8]>;

/// Calls `f(topic)` for each retained topic of the fleet, formatting each into one reused
/// buffer so that nothing but the index stays allocated.
fn for_each_topic(mut f: impl FnMut(&str)) {
    let mut topic = String::with_capacity(64);
    for s in 0..SITES {
        for d in 0..DEVICES_PER_SITE {
            topic.clear();
            let _ = write!(topic, "site/{s}/device/{d}/status");
            f(&topic);
        }
    }
}

fn build(message: &Message) -> RetainedIndex<Message> {
    let before = shoal_benches::live_bytes();
    let start = Instant::now();
    let mut index = RetainedIndex::new();
    for_each_topic(|topic| {
        index.insert(topic, Arc::clone(message));
    });
    let elapsed = start.elapsed();
    let bytes = shoal_benches::live_bytes() - before;
    let len = index.len();
    println!(
        "retained: {len} messages, {} nodes, built in {elapsed:.2?} ({:.0} ns/insert)",
        index.node_count(),
        elapsed.as_nanos() as f64 / len as f64,
    );
    println!(
        "retained memory: {:.1} MiB live, {:.1} bytes/message (the index alone: the messages \
         are shared; requested bytes, the allocator's own overhead comes on top)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / len as f64,
    );
    index
}

/// Removes every message and reports what memory is left: the empty root only.
fn tear_down(mut index: RetainedIndex<Message>) {
    let before = shoal_benches::live_bytes();
    let start = Instant::now();
    let mut removed = 0;
    for_each_topic(|topic| removed += usize::from(index.remove(topic).is_some()));
    let elapsed = start.elapsed();
    let freed = before - shoal_benches::live_bytes();
    println!(
        "removed {removed} in {elapsed:.2?} ({:.0} ns/remove): {:.1} MiB freed, {} nodes left",
        elapsed.as_nanos() as f64 / removed as f64,
        freed as f64 / (1024.0 * 1024.0),
        index.node_count(),
    );
}

fn bench_filters(c: &mut Criterion, index: &RetainedIndex<Message>) {
    let filters = [
        ("exact", "site/7/device/42/status"),
        ("site_devices_plus", "site/7/device/+/status"),
        ("device_across_sites_plus", "site/+/device/42/status"),
        ("site_hash", "site/7/#"),
        ("all_hash", "#"),
        // A first level that is not there.
        ("miss", "factory/+/line/#"),
        // Fans out over the 100 sites, then finds no such device.
        ("miss_after_plus", "site/+/device/5000/status"),
    ];
    // The reference for `exact`: the same topic through `get`.
    c.bench_function("retained/get", |b| {
        b.iter(|| index.get(black_box("site/7/device/42/status")).is_some())
    });
    for (name, filter) in filters {
        let mut matched = 0u64;
        index.for_each_match_value(filter, |_| matched += 1);
        println!("filter {filter}: {matched} matches");
        let mut group = c.benchmark_group(format!("retained/{name}"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(matched.max(1)));
        group.bench_function("values", |b| {
            b.iter(|| {
                let mut n = 0u32;
                index.for_each_match_value(black_box(filter), |message| {
                    black_box(message);
                    n += 1;
                });
                n
            })
        });
        group.bench_function("with_topics", |b| {
            b.iter(|| {
                let mut n = 0u32;
                index.for_each_match(black_box(filter), |topic, message| {
                    black_box((topic, message));
                    n += 1;
                });
                n
            })
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let message: Message = Arc::from(&b"online"[..]);
    let index = build(&message);
    bench_filters(&mut c, &index);
    tear_down(index);
    c.final_summary();
}
