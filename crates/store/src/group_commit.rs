//! Group commit: callers that want their writes durable share one sled flush.
//!
//! A dedicated thread runs the flushes, so the blocking fsync never runs on an async
//! executor thread. A caller registers a waiter; the thread takes every waiter registered
//! so far, flushes once, and answers them all. A caller that registers while a flush is
//! running is not answered by it (its writes may have missed it): it waits for the next
//! one, which it shares with everyone else who arrived during the running one. So the
//! number of flushes follows the fsync latency, not the number of callers: under load,
//! one flush per fsync time, each shared by all who came meanwhile.
//!
//! A flush is sled's `Db::flush` and then the syncs that sled 0.34 leaves out (see
//! `disk_sync.rs`).
//!
//! A failed flush is final: the kernel may have dropped the pages it could not write, so a
//! later flush that succeeds would not mean that earlier writes are durable. Every later
//! flush fails with the same error; the node must restart and recover from what is on disk.

use std::future::Future;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::disk_sync::DiskSync;
use crate::error::StoreError;

/// What the flush that covered a caller's writes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReceipt {
    /// The number of this flush since the store was opened, from 1.
    pub flush_id: u64,
    /// How many callers shared this flush.
    pub waiters: usize,
    /// How long sled's flush took: writing its buffers out and fsync.
    pub duration: Duration,
    /// How many bytes sled wrote out.
    pub bytes: usize,
    /// How long this caller waited, from its call to the end of the flush: the delay that
    /// an acknowledgement waiting for it sees (the flush latency histogram's sample).
    pub waited: Duration,
}

/// Counters of the flushes since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushStats {
    /// Flushes completed, failed ones included.
    pub flushes: u64,
    /// Callers answered: `waiters / flushes` is how many shared a flush on average.
    pub waiters: u64,
    /// Flushes that failed.
    pub failures: u64,
}

/// What the flush thread sends each waiter.
type Outcome = Result<Flushed, Arc<sled::Error>>;

#[derive(Debug, Clone, Copy)]
struct Flushed {
    flush_id: u64,
    waiters: usize,
    duration: Duration,
    bytes: usize,
}

#[derive(Default)]
struct State {
    /// Waiters for the next flush.
    pending: Vec<oneshot::Sender<Outcome>>,
    /// A flush is running (its waiters were taken out of `pending`).
    flushing: bool,
    /// The store is being dropped: flush what is pending, then end.
    shutdown: bool,
    /// The thread has ended: nobody will answer a new waiter.
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    flushes: AtomicU64,
    waiters: AtomicU64,
    failures: AtomicU64,
    /// Held by a test to keep a flush "running" while it registers more waiters.
    #[cfg(test)]
    gate: Mutex<()>,
}

/// The flush thread and the waiters' queue.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flush thread for `db`, whose files `disk` syncs.
    pub(crate) fn start(db: sled::Db, disk: DiskSync) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            #[cfg(test)]
            gate: Mutex::new(()),
        });
        let thread = thread::Builder::new()
            .name("shoal-store-flush".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared, &db, disk)
            })
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers a waiter now and returns the future of its flush.
    pub(crate) fn flush(
        &self,
    ) -> impl Future<Output = Result<FlushReceipt, StoreError>> + Send + 'static {
        let start = Instant::now();
        let registered = self.register();
        async move {
            let outcome = registered?.await.map_err(|_| StoreError::FlusherStopped)?;
            receipt(outcome, start)
        }
    }

    /// Registers a waiter and blocks the thread until its flush is done.
    pub(crate) fn flush_blocking(&self) -> Result<FlushReceipt, StoreError> {
        let start = Instant::now();
        let outcome = self
            .register()?
            .blocking_recv()
            .map_err(|_| StoreError::FlusherStopped)?;
        receipt(outcome, start)
    }

    pub(crate) fn stats(&self) -> FlushStats {
        FlushStats {
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            waiters: self.shared.waiters.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
        }
    }

    fn register(&self) -> Result<oneshot::Receiver<Outcome>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let mut state = lock(&self.shared.state);
        if state.stopped {
            return Err(StoreError::FlusherStopped);
        }
        state.pending.push(tx);
        // The thread waits only when nothing is pending and no flush runs; a running
        // flush looks at `pending` again when it ends.
        if state.pending.len() == 1 && !state.flushing {
            self.shared.wake.notify_one();
        }
        Ok(rx)
    }

    #[cfg(test)]
    fn is_flushing(&self) -> bool {
        lock(&self.shared.state).flushing
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread ends after answering what is pending; joining releases its handle
            // on the database (and sled's lock on the folder) before the store is gone. A
            // panic there has already answered its waiters with `FlusherStopped`.
            let _ = thread.join();
        }
    }
}

/// The flush thread.
fn run(shared: &Shared, db: &sled::Db, mut disk: DiskSync) {
    let _stopped = StopGuard(shared);
    let mut failed: Option<Arc<sled::Error>> = None;
    loop {
        let batch = {
            let mut state = lock(&shared.state);
            while state.pending.is_empty() {
                if state.shutdown {
                    return;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.flushing = true;
            mem::take(&mut state.pending)
        };
        #[cfg(test)]
        drop(lock(&shared.gate));

        let start = Instant::now();
        let result = match &failed {
            Some(error) => Err(Arc::clone(error)),
            None => disk.flush(db).map(|(bytes, _)| bytes).map_err(Arc::new),
        };
        let duration = start.elapsed();
        let flush_id = shared.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        shared
            .waiters
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let outcome = match result {
            Ok(bytes) => Ok(Flushed {
                flush_id,
                waiters: batch.len(),
                duration,
                bytes,
            }),
            Err(error) => {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                failed = Some(Arc::clone(&error));
                Err(error)
            }
        };
        for waiter in batch {
            // A waiter that stopped waiting (its future dropped) needs no answer.
            let _ = waiter.send(outcome.clone());
        }
        lock(&shared.state).flushing = false;
    }
}

/// Marks the thread stopped when it ends, also by a panic, and drops the pending waiters
/// so that they get `FlusherStopped` instead of waiting forever.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.stopped = true;
        state.flushing = false;
        state.pending.clear();
    }
}

fn receipt(outcome: Outcome, start: Instant) -> Result<FlushReceipt, StoreError> {
    let flushed = outcome.map_err(StoreError::Flush)?;
    Ok(FlushReceipt {
        flush_id: flushed.flush_id,
        waiters: flushed.waiters,
        duration: flushed.duration,
        bytes: flushed.bytes,
        waited: start.elapsed(),
    })
}

/// Locks a mutex whose data stays consistent even if a holder panicked (it only holds
/// plain fields that every holder leaves valid).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> (tempfile::TempDir, GroupCommit) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .expect("opens");
        let disk = DiskSync::open(dir.path()).expect("sled's files");
        let commit = GroupCommit::start(db, disk).expect("starts");
        (dir, commit)
    }

    /// Waits for a condition, polling; never sleeps a fixed time and hopes.
    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    #[test]
    fn a_caller_arriving_during_a_flush_waits_for_the_next_one() {
        let (_dir, commit) = start();
        let gate = lock(&commit.shared.gate);

        // The first flush starts, and stops at the gate before it calls sled.
        let first = commit.register().expect("registers");
        wait_until("the first flush to start", || commit.is_flushing());

        // These arrive while it runs: they must not be answered by it.
        let late: Vec<_> = (0..3)
            .map(|_| commit.register().expect("registers"))
            .collect();
        drop(gate);

        let first = first.blocking_recv().expect("answered").expect("flushed");
        assert_eq!((first.flush_id, first.waiters), (1, 1));
        for rx in late {
            let next = rx.blocking_recv().expect("answered").expect("flushed");
            assert_eq!(
                (next.flush_id, next.waiters),
                (2, 3),
                "the three share the next flush"
            );
        }
        assert_eq!(
            commit.stats(),
            FlushStats {
                flushes: 2,
                waiters: 4,
                failures: 0
            }
        );
    }

    #[test]
    fn two_hundred_waiters_arriving_during_a_flush_share_one_next_flush() {
        let (_dir, commit) = start();
        let gate = lock(&commit.shared.gate);
        let first = commit.register().expect("registers");
        wait_until("the first flush to start", || commit.is_flushing());

        let late: Vec<_> = thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..25).map(|_| commit.register()).collect::<Vec<_>>()))
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("registers"))
                .collect()
        });
        drop(gate);

        assert!(matches!(first.blocking_recv(), Ok(Ok(f)) if f.waiters == 1));
        for rx in late {
            let next = rx.expect("registered").blocking_recv().expect("answered");
            assert!(matches!(next, Ok(f) if f.flush_id == 2 && f.waiters == 200));
        }
        assert_eq!(commit.stats().flushes, 2);
    }

    #[test]
    #[cfg(unix)]
    fn a_failed_flush_fails_every_later_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .expect("opens");
        // fsync of a character device fails (EINVAL): a stand-in for an IO error.
        let log = std::fs::File::open("/dev/null").expect("/dev/null");
        let commit = GroupCommit::start(db, DiskSync::with_log(dir.path(), log)).expect("starts");
        assert!(matches!(commit.flush_blocking(), Err(StoreError::Flush(_))));
        assert!(
            matches!(commit.flush_blocking(), Err(StoreError::Flush(_))),
            "a failure is final"
        );
        assert_eq!(
            commit.stats(),
            FlushStats {
                flushes: 2,
                waiters: 2,
                failures: 2
            }
        );
    }

    #[test]
    fn dropping_answers_the_pending_waiters_first() {
        let (_dir, commit) = start();
        let gate = lock(&commit.shared.gate);
        let first = commit.register().expect("registers");
        wait_until("the first flush to start", || commit.is_flushing());
        let second = commit.register().expect("registers");
        drop(gate);
        drop(commit);
        assert!(matches!(first.blocking_recv(), Ok(Ok(_))));
        assert!(matches!(second.blocking_recv(), Ok(Ok(f)) if f.flush_id == 2));
    }

    #[test]
    fn a_stopped_flusher_refuses_waiters_instead_of_hanging() {
        let (_dir, mut commit) = start();
        // End the thread as a panic would: its guard marks it stopped.
        lock(&commit.shared.state).shutdown = true;
        commit.shared.wake.notify_one();
        if let Some(thread) = commit.thread.take() {
            thread.join().expect("the thread ends cleanly");
        }
        assert!(matches!(commit.register(), Err(StoreError::FlusherStopped)));
        assert!(matches!(
            commit.flush_blocking(),
            Err(StoreError::FlusherStopped)
        ));
    }
}
