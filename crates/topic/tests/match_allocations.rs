//! Matching allocates nothing once the caller's buffer has grown: checked with a global
//! allocator that counts the allocations of the thread that asks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_codec::{QoS, SubscriptionOptions};
use shoal_topic::{Recipients, SubscriptionIndex};

/// `System`, counting the allocations made on threads that turned counting on.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without destructor: reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc` is the one `System::alloc` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn matching_with_a_warm_buffer_does_not_allocate() {
    let mut index = SubscriptionIndex::new();
    let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
    let no_local = SubscriptionOptions {
        no_local: true,
        ..options
    };
    let subscriptions = [
        (1, "site/1/device/7/telemetry", options),
        (1, "site/1/device/7/#", options),
        (2, "site/+/device/+/telemetry", no_local),
        (3, "site/1/#", options),
        (4, "#", options),
        (5, "$SYS/#", options),
        (6, "$share/ingest/site/+/device/+/telemetry", options),
        (7, "$share/ingest/site/+/device/+/telemetry", options),
        (
            8,
            "site/1/device/a-device-name-longer-than-inline/x",
            options,
        ),
    ];
    for (n, (subscriber, filter, options)) in (1..).zip(subscriptions) {
        let inserted = index.insert(subscriber, filter, options, NonZeroU32::new(n));
        assert!(inserted.is_ok(), "{filter}: {inserted:?}");
    }
    // Many children too: lookups in the hash maps.
    for n in 0..100 {
        let inserted = index.insert(
            100 + n,
            &format!("site/1/device/{n}/telemetry"),
            options,
            None,
        );
        assert!(inserted.is_ok());
    }
    let topics = [
        "site/1/device/7/telemetry",
        "site/1/device/50/telemetry",
        "site/2/device/7/status",
        "site/1/device/a-device-name-longer-than-inline/x",
        "$SYS/broker/load",
        "nothing/here",
    ];

    let mut out = Recipients::new();
    for topic in topics {
        index.match_topic(topic, Some(2), &mut out);
    }
    let mut delivered = 0;
    let made = allocations(|| {
        for topic in topics {
            index.match_topic(topic, Some(2), &mut out);
            delivered += out.subscribers().len() + out.shared_groups().len();
        }
    });
    assert_eq!(made, 0);
    // The matches did find recipients, through merging, No Local, groups and `$` topics:
    // plain subscribers and groups, topic by topic.
    assert_eq!(delivered, (4 + 1) + (3 + 1) + 1 + 3 + 1 + 1);
}
