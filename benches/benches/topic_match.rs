//! The subscription index at fleet scale: 1,000,000 subscriptions, then the time of one match
//! for a few representative topics, the throughput of subscribe and unsubscribe, and the
//! memory of the index in bytes per subscription, measured by a counting global allocator.
//!
//! The fleet: 1,000 sites of 700 devices, device numbers unique across sites.
//! - 70%: 700,000 exact filters `site/{s}/device/{n}/telemetry`, one per device;
//! - 20%: 100,000 `site/{s}/device/+/{metric}` (`telemetry`, `status` and 98 more per site),
//!   99,984 `site/+/device/{n}/status` (the first devices), and a backend consuming all
//!   telemetry through one shared group of 16 members, `$share/ingest/site/+/device/+/telemetry`;
//! - 10%: 99,000 `site/{s}/device/{n}/#`, held by the same session as the device's exact filter
//!   (so those publishes go through aggregation), and 1,000 `site/{s}/#`.
//!
//! Run: `cargo bench -p shoal-benches --bench topic_match`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shoal_codec::{QoS, SubscriptionOptions};
use shoal_topic::{Recipients, SubscriptionIndex};

#[global_allocator]
static GLOBAL: shoal_benches::CountingAlloc = shoal_benches::CountingAlloc;

const SITES: u32 = 1_000;
const DEVICES_PER_SITE: u32 = 700;
const DEVICES: u32 = SITES * DEVICES_PER_SITE;
const METRICS_PER_SITE: u32 = 100;
const INGEST_MEMBERS: u32 = 16;
const STATUS_WATCHED: u32 = 100_000 - INGEST_MEMBERS;
const DEVICE_WILDCARDS: u32 = 99_000;
/// Sessions above the devices' numbers, for the wildcard subscriptions of backend services.
const BACKEND: u32 = 1 << 24;

/// Subscriptions added and removed per batch in the churn benchmarks.
const CHURN: u32 = 10_000;

fn site(device: u32) -> u32 {
    device / DEVICES_PER_SITE
}

/// Calls `f(subscriber, filter)` for each subscription of the fleet, formatting each filter
/// into one reused buffer so that nothing but the index stays allocated.
fn for_each_subscription(mut f: impl FnMut(u32, &str)) {
    let mut filter = String::with_capacity(64);
    let mut emit = |subscriber: u32, args: std::fmt::Arguments<'_>| {
        filter.clear();
        let _ = filter.write_fmt(args);
        f(subscriber, &filter);
    };
    for n in 0..DEVICES {
        emit(n, format_args!("site/{}/device/{n}/telemetry", site(n)));
    }
    for s in 0..SITES {
        let backend = BACKEND + s * METRICS_PER_SITE;
        emit(backend, format_args!("site/{s}/device/+/telemetry"));
        emit(backend + 1, format_args!("site/{s}/device/+/status"));
        for k in 2..METRICS_PER_SITE {
            emit(backend + k, format_args!("site/{s}/device/+/m{k}"));
        }
    }
    for n in 0..STATUS_WATCHED {
        emit(2 * BACKEND + n, format_args!("site/+/device/{n}/status"));
    }
    for member in 0..INGEST_MEMBERS {
        emit(
            4 * BACKEND + member,
            format_args!("$share/ingest/site/+/device/+/telemetry"),
        );
    }
    for n in 0..DEVICE_WILDCARDS {
        emit(n, format_args!("site/{}/device/{n}/#", site(n)));
    }
    for s in 0..SITES {
        emit(3 * BACKEND + s, format_args!("site/{s}/#"));
    }
}

/// The resident set of the process in bytes (Linux), which includes the allocator's overhead.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn subscribe(index: &mut SubscriptionIndex<u32>, subscriber: u32, filter: &str) {
    let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
    if let Err(e) = index.insert(subscriber, filter, options, None) {
        panic!("{filter:?}: {e}");
    }
}

fn build() -> SubscriptionIndex<u32> {
    let before = shoal_benches::live_bytes();
    let resident_before = resident_bytes();
    let start = Instant::now();
    let mut index = SubscriptionIndex::new();
    for_each_subscription(|subscriber, filter| subscribe(&mut index, subscriber, filter));
    let elapsed = start.elapsed();
    let bytes = shoal_benches::live_bytes() - before;
    let len = index.len();
    println!(
        "index: {len} subscriptions, {} filters, {} nodes, built in {elapsed:.2?} ({:.0} ns/insert)",
        index.filter_count(),
        index.node_count(),
        elapsed.as_nanos() as f64 / len as f64,
    );
    println!(
        "index memory: {:.1} MiB live, {:.1} bytes/subscription (requested bytes; the allocator's \
         own overhead comes on top)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / len as f64,
    );
    if let (Some(before), Some(after)) = (resident_before, resident_bytes()) {
        println!(
            "resident set grew by {:.1} MiB, {:.1} bytes/subscription (system allocator included)",
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
            after.saturating_sub(before) as f64 / len as f64,
        );
    }
    index
}

/// Removes every subscription and reports what memory is left: the empty root only.
fn tear_down(mut index: SubscriptionIndex<u32>) {
    let before = shoal_benches::live_bytes();
    let start = Instant::now();
    let mut removed = 0;
    for_each_subscription(|subscriber, filter| {
        removed += usize::from(index.remove(subscriber, filter).is_some())
    });
    let elapsed = start.elapsed();
    let freed = before - shoal_benches::live_bytes();
    println!(
        "removed {removed} in {elapsed:.2?} ({:.0} ns/remove): {:.1} MiB freed, {} nodes, {} filters left",
        elapsed.as_nanos() as f64 / removed as f64,
        freed as f64 / (1024.0 * 1024.0),
        index.node_count(),
        index.filter_count(),
    );
}

fn bench_match(c: &mut Criterion, index: &SubscriptionIndex<u32>) {
    let mut group = c.benchmark_group("match");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let topics = [
        // Exact + device `#` (same session: merged) + `+` + site `#`, and the shared group.
        ("telemetry_overlap", "site/17/device/11923/telemetry"),
        // Exact + `+` + site `#`, and the shared group: no merge.
        ("telemetry", "site/900/device/630123/telemetry"),
        // `site/+/device/n/status` + `site/s/device/+/status` + device `#` + site `#`.
        ("status", "site/5/device/3500/status"),
        // Only the site `#`.
        ("unsubscribed_metric", "site/900/device/630123/other"),
        // No first level matches.
        ("miss", "factory/1/line/2"),
        // `$` topic: the root wildcards are skipped.
        ("dollar_sys", "$SYS/broker/load"),
    ];
    let mut out = Recipients::new();
    for (name, topic) in topics {
        index.match_topic(topic, None, &mut out);
        let members: usize = out.shared_groups().map(|g| g.members.len()).sum();
        println!(
            "match {topic}: {} subscribers, {} shared groups ({members} members)",
            out.subscribers().len(),
            out.shared_groups().len(),
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                index.match_topic(black_box(topic), None, &mut out);
                black_box(out.subscribers().len())
            })
        });
    }
    group.finish();
}

/// Filters of `CHURN` new devices: new branches of the trie, created and pruned.
fn churn_filters() -> Vec<String> {
    (DEVICES..DEVICES + CHURN)
        .map(|n| format!("site/{}/device/{n}/telemetry", site(n)))
        .collect()
}

fn subscribe_churn(index: &mut SubscriptionIndex<u32>, filters: &[String]) {
    for (subscriber, filter) in (DEVICES..).zip(filters) {
        subscribe(index, subscriber, filter);
    }
}

fn unsubscribe_churn(index: &mut SubscriptionIndex<u32>, filters: &[String]) {
    for (subscriber, filter) in (DEVICES..).zip(filters) {
        black_box(index.remove(subscriber, filter));
    }
}

fn bench_churn(c: &mut Criterion, index: &mut SubscriptionIndex<u32>) {
    let filters = churn_filters();
    let mut group = c.benchmark_group("churn");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(u64::from(CHURN)));
    group.bench_function("insert", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                subscribe_churn(index, &filters);
                timed += start.elapsed();
                unsubscribe_churn(index, &filters);
            }
            timed
        })
    });
    group.bench_function("remove", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                subscribe_churn(index, &filters);
                let start = Instant::now();
                unsubscribe_churn(index, &filters);
                timed += start.elapsed();
            }
            timed
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut index = build();
    bench_match(&mut c, &index);
    bench_churn(&mut c, &mut index);
    tear_down(index);
    c.final_summary();
}
