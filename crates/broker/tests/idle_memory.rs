//! What an idle connection costs the broker's heap: a guard on the budget that keeps its
//! resident memory under Mosquitto's + 1 KiB (issue 3; BENCHMARKS.md measures the RSS).
//! The clients live in this process, so each connection also counts the client socket's
//! registration (256 bytes).

#[path = "common/idle.rs"]
mod idle;

use std::time::Duration;

#[global_allocator]
static ALLOCATOR: idle::Counting = idle::Counting;

const CLIENTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_stays_within_its_heap_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = idle::node(dir.path()).await;
    let addr = node.mqtt_addr();
    let mut clients = Vec::with_capacity(CLIENTS + CLIENTS / 10);
    // Warm up: maps and pools reach their working size before measuring.
    for i in 0..CLIENTS / 10 {
        clients.push(idle::open(addr, &format!("warm-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, _) = idle::snapshot();
    for i in 0..CLIENTS {
        clients.push(idle::open(addr, &format!("client-{i:06}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, _) = idle::snapshot();
    let per_connection = (after - before) / CLIENTS as isize;
    // Release builds held about 1,810 bytes (1,550 on the broker's side) before a node
    // alone became a cluster of one; the client id's entry in the cluster-wide registry
    // (its owner in the route group's state, in the group's tree and log in sled's cache)
    // adds about 150-250 bytes. Debug builds lay futures out larger; since sessions are
    // replicated (the CONNECT future holds the claim and take-up steps) a debug build
    // measured 2,857 once; with the session's pointer to its QoS 2 dedup tags (8 bytes),
    // 2,971 in a fresh-clone CI run (the registry's share in sled's cache varies by run).
    let budget = if cfg!(debug_assertions) { 3_050 } else { 2_250 };
    assert!(
        per_connection <= budget,
        "an idle connection holds {per_connection} bytes of heap (budget {budget})"
    );
    drop(clients);
    node.shutdown().await;
}
