//! The node's bound on password hashing: at most `auth_max_concurrent_hashes` PBKDF2
//! verifications run at once (each on a blocking thread), at most `auth_hash_queue` wait
//! for a slot, and any more are refused at once. A guessing flood then costs the node a
//! fixed number of cores however many connections it opens, and a login's wait for a slot
//! is bounded by the queue's length.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics as m;

/// What the node has hashed: read by tests and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashStats {
    /// Verifications that ran on a blocking thread (a PBKDF2 derivation each) since start.
    pub hashes: u64,
    /// Verifications running now.
    pub in_flight: usize,
    /// The most that ever ran at once.
    pub peak_in_flight: usize,
}

/// Slots for hashing, and the queue in front of them.
#[derive(Debug)]
pub(crate) struct HashGate {
    slots: Arc<Semaphore>,
    queue: usize,
    waiting: AtomicUsize,
    hashes: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

/// Takes a place in the queue back when its waiter is done or gone (a connection that
/// closes while waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashGate {
    pub(crate) fn new(slots: usize, queue: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            queue,
            waiting: AtomicUsize::new(0),
            hashes: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `work` (a hash) on a blocking thread once a slot is free; `None` at once when
    /// every slot is taken and the queue is full. The slot is held until `work` ends, even
    /// if the caller stops waiting for it.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        let permit = self.enter().await?;
        self.hashes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::AUTH_HASHES).increment(1);
        let in_flight = Arc::clone(&self.in_flight);
        let peak = Arc::clone(&self.peak);
        Some(
            tokio::task::spawn_blocking(move || {
                let _permit: OwnedSemaphorePermit = permit;
                let now = in_flight.fetch_add(1, Ordering::AcqRel) + 1;
                peak.fetch_max(now, Ordering::AcqRel);
                let out = work();
                in_flight.fetch_sub(1, Ordering::AcqRel);
                out
            })
            .await,
        )
    }

    async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _waiting = Waiting(&self.waiting);
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    pub(crate) fn stats(&self) -> HashStats {
        HashStats {
            hashes: self.hashes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Acquire),
            peak_in_flight: self.peak.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_slots_run_and_past_the_queue_callers_are_refused_at_once() {
        let gate = Arc::new(HashGate::new(2, 3));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let gate = Arc::clone(&gate);
            let hold = Arc::clone(&hold);
            tasks.push(tokio::spawn(async move {
                gate.run(move || {
                    let _ = hold.lock().expect("not poisoned").recv();
                })
                .await
                .is_some()
            }));
        }
        // Two run, three wait: the sixth is refused without waiting.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (gate.stats().in_flight < 2 || gate.waiting.load(Ordering::Acquire) < 3)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(gate.run(|| ()).await.is_none(), "queue full: refused");
        for _ in 0..5 {
            release.send(()).expect("a worker waits");
        }
        for task in tasks {
            assert!(task.await.expect("task"), "queued callers get their turn");
        }
        let stats = gate.stats();
        assert_eq!(stats.hashes, 5);
        assert_eq!(stats.peak_in_flight, 2);
        assert_eq!(stats.in_flight, 0);
    }
}
