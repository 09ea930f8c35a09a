//! Durability: concurrent callers share flushes (group commit), and what a flush
//! acknowledged survives `kill -9` of the process that wrote it.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::thread;

use shoal_codec::MqttString;
use shoal_session::{OutboundMessage, OutboundState};
use shoal_store::Store;

use util::{id, message, open, outbound, pid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waiters_share_far_fewer_flushes() {
    const WAITERS: u64 = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let writers: Vec<_> = (0..WAITERS)
        .map(|seq| {
            let store = store.clone();
            tokio::spawn(async move {
                let client = id(&format!("c{}", seq % 10));
                store
                    .enqueue(&client, seq, &util::queued("c", seq, None))
                    .expect("enqueue");
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("the task ends");
    }
    // The callers arrive together: each registers when it calls `flush`, and awaits in a
    // task of its own. (How many share a flush when arrivals spread out depends on the
    // fsync time; `group_commit.rs` tests the rule itself with a flush held open.)
    let waiters: Vec<_> = (0..WAITERS).map(|_| tokio::spawn(store.flush())).collect();
    let mut receipts = Vec::new();
    for waiter in waiters {
        receipts.push(waiter.await.expect("the task ends").expect("flush"));
    }

    let stats = store.flush_stats();
    eprintln!(
        "{WAITERS} waiters, {} flushes, {:.1} waiters per flush",
        stats.flushes,
        stats.waiters as f64 / stats.flushes as f64
    );
    assert_eq!(stats.waiters, WAITERS);
    assert!(stats.flushes <= WAITERS / 10, "{stats:?}");
    assert!(
        receipts
            .iter()
            .all(|r| r.waiters >= 1 && r.flush_id <= stats.flushes)
    );
    // Every waiter of one flush got the same receipt, apart from its own wait.
    for r in &receipts {
        let sharing = receipts.iter().filter(|o| o.flush_id == r.flush_id).count();
        assert_eq!(sharing, r.waiters);
    }
}

#[tokio::test]
async fn a_flush_future_registers_when_it_is_made_and_needs_no_borrow() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    let flush = store.flush();
    drop(store);
    // The store is gone, yet the flush it registered was run before its thread ended.
    let receipt = flush.await.expect("flushed");
    assert_eq!((receipt.flush_id, receipt.waiters), (1, 1));
}

/// Set in the environment of the writer child: the store folder.
const WRITER_ENV: &str = "SHOAL_STORE_CRASH_WRITER";
const WRITER_THREADS: u64 = 4;
const ACKS: usize = 300;

/// The record `n` of the crash test: a queued QoS 1 message whose payload names it; every
/// third one has been sent (its state was changed before the flush).
fn record(n: u64) -> OutboundMessage {
    let payload = format!("record {n} ").repeat(1 + (n % 40) as usize);
    let state = if n.is_multiple_of(3) {
        OutboundState::Sent(pid((n % 60_000) as u16 + 1))
    } else {
        OutboundState::Queued
    };
    outbound(message("crash/test", payload.as_bytes(), None), state)
}

fn writer_client(n: u64) -> MqttString {
    id(&format!("writer-{}", n % WRITER_THREADS))
}

/// The child's side: not a test unless the parent started it.
#[test]
fn crash_writer() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let store = open(path.as_ref());
    let writers: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || write_forever(&store, t))
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
}

fn write_forever(store: &Store, thread: u64) {
    for n in (thread..).step_by(WRITER_THREADS as usize) {
        let client = writer_client(n);
        let mut queued = record(n);
        let state = queued.state;
        queued.state = OutboundState::Queued;
        store.enqueue(&client, n, &queued).expect("enqueue");
        if state != OutboundState::Queued {
            store
                .set_outbound_state(&client, n, state)
                .expect("set state");
        }
        store.flush_blocking().expect("flush");
        // Acknowledged only now that the flush has returned.
        println!("ack {n}");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_writer", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the writer starts");
    let stdout = child.stdout.take().expect("piped");

    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads the child's output");
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u64>().expect("a record number"));
            if acked.len() == ACKS {
                break;
            }
        }
    }
    // SIGKILL, while the writers are in the middle of writes and flushes.
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(acked.len(), ACKS, "the writer stopped early");

    let store = open(dir.path());
    let mut found = std::collections::HashMap::new();
    for t in 0..WRITER_THREADS {
        let loaded = store.load_queue(&writer_client(t)).expect("load");
        assert!(loaded.corrupt.is_empty(), "{:?}", loaded.corrupt);
        found.extend(loaded.records);
    }
    for n in &acked {
        let got = found
            .get(n)
            .unwrap_or_else(|| panic!("acknowledged record {n} is lost"));
        assert_eq!(got, &record(*n), "acknowledged record {n} is not intact");
    }
    eprintln!(
        "{} records acknowledged, {} found after kill -9",
        acked.len(),
        found.len()
    );
}
