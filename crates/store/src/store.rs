//! `Store`: the handle on a node's sled database, its trees, and the flush that makes
//! writes durable. The operations on each kind of record are in `sessions.rs`, `queue.rs`,
//! `retained.rs` and `expiry.rs`; batches in `batch.rs`.

use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::StoreConfig;
use crate::disk_sync::DiskSync;
use crate::error::StoreError;
use crate::group_commit::{FlushReceipt, FlushStats, GroupCommit};

/// Tree of the sessions, by client id.
pub(crate) const SESSIONS: &str = "sessions";
/// Tree of the queued messages, by client id and sequence number.
pub(crate) const QUEUES: &str = "queues";
/// Tree of the retained messages, by topic.
pub(crate) const RETAINED: &str = "retained";
/// Tree of the expiry index, by time.
pub(crate) const EXPIRY: &str = "expiry";
/// Tree of the dedup marks of tagged QoS 2 messages, by tag and recipient (`marks.rs`).
pub(crate) const MARKS: &str = "marks";

/// Locks that serialize the writes to one key: a session with its queue (by client id),
/// or a retained topic. Keys share a lock by hash; collisions only cost a little waiting.
const STRIPES: usize = 64;

/// A node's store: sessions, their outbound queues, retained messages. Cheap to clone (a
/// reference count) and shared by every task of the node.
///
/// Writes are in memory until [`flush`](Self::flush): nothing written is durable before a
/// flush that started after it has returned.
///
/// Each write keeps the expiry index of its record in step, and the writes to one client
/// (its session and queue) or one retained topic are serialized inside the store, so
/// concurrent callers cannot leave the index behind. Writes are fast in-memory operations
/// (sled's); only the flush waits for the disk.
///
/// Dropping the last handle answers the pending flushes and waits for the flush thread to
/// end: at most one flush.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) sessions: sled::Tree,
    pub(crate) queues: sled::Tree,
    pub(crate) retained: sled::Tree,
    pub(crate) expiry: sled::Tree,
    pub(crate) marks: sled::Tree,
    stripes: [Mutex<()>; STRIPES],
    commit: GroupCommit,
    db: sled::Db,
    /// Set once a write failed (`Store::fail`).
    broken: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (or creates) the store in the folder `path`. Blocking (sled recovers its log
    /// here): call it before serving, or from a blocking task.
    ///
    /// Fails if sled cannot open the folder, for one because another process (or another
    /// `Store` in this one) still holds it after [`StoreConfig::lock_timeout`].
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self, StoreError> {
        let sled_config = sled::Config::new()
            .path(path.as_ref())
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(
                config
                    .background_flush
                    .map(|every| u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1)),
            );
        let deadline = Instant::now().checked_add(config.lock_timeout);
        let db = loop {
            match sled_config.open() {
                Err(e) if is_lock_conflict(&e) && deadline.is_none_or(|d| Instant::now() < d) => {
                    thread::sleep(Duration::from_millis(5));
                }
                result => break result?,
            }
        };
        let disk = DiskSync::open(path.as_ref()).map_err(StoreError::Sync)?;
        let commit = GroupCommit::start(db.clone(), disk)?;
        Ok(Self {
            inner: Arc::new(Inner {
                sessions: db.open_tree(SESSIONS)?,
                queues: db.open_tree(QUEUES)?,
                retained: db.open_tree(RETAINED)?,
                expiry: db.open_tree(EXPIRY)?,
                marks: db.open_tree(MARKS)?,
                stripes: std::array::from_fn(|_| Mutex::new(())),
                commit,
                db,
                broken: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Makes everything written before this call durable: every write that returned
    /// before `flush` was called, by any task or thread.
    ///
    /// The waiter is registered when `flush` is called, not when the future is first
    /// polled. Callers share flushes (group commit): one that comes while a flush runs
    /// waits for the next one, together with all others that came meanwhile. The fsync
    /// runs on the store's flush thread, never on the caller's.
    ///
    /// The future does not borrow the store; dropping it does not cancel the flush. Once a
    /// flush has failed, every later one fails with the same error ([`StoreError::Flush`]).
    pub fn flush(&self) -> impl Future<Output = Result<FlushReceipt, StoreError>> + Send + 'static {
        let flush = (!self.is_broken()).then(|| self.inner.commit.flush());
        async move {
            match flush {
                Some(flush) => flush.await,
                None => Err(StoreError::Broken),
            }
        }
    }

    /// Records that a write failed: sled 0.34 may hang on the next write or flush after
    /// an IO error (a full disk wedges its log buffers), so from now on every write and
    /// flush of this store (the Raft groups' too) fails at once with
    /// [`StoreError::Broken`], and the node can still answer and stop.
    pub fn fail(&self) {
        self.inner
            .broken
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a write failed since the store was opened ([`fail`](Self::fail)).
    pub fn is_broken(&self) -> bool {
        self.inner.broken.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `Ok` unless the store is broken.
    pub fn writable(&self) -> Result<(), StoreError> {
        match self.is_broken() {
            true => Err(StoreError::Broken),
            false => Ok(()),
        }
    }

    /// [`flush`](Self::flush) for a caller outside an async runtime: blocks the thread.
    ///
    /// # Panics
    /// If called from within an asynchronous execution context (tokio refuses to block
    /// there); use `flush().await` there.
    pub fn flush_blocking(&self) -> Result<FlushReceipt, StoreError> {
        self.inner.commit.flush_blocking()
    }

    /// Opens (or creates) a tree of another crate in this node's database, so that its
    /// writes share this store's flushes: [`flush`](Self::flush) makes them durable too.
    /// shoal-cluster keeps each Raft group's log and state machine in trees named
    /// `raft/<group>/...`. The store's own trees are not handed out.
    ///
    /// # Panics
    /// If `name` is one of the store's own trees (a programming error, not an input).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        assert!(
            ![SESSIONS, QUEUES, RETAINED, EXPIRY].contains(&name),
            "tree {name:?} belongs to the store"
        );
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Counters of the flushes since the store was opened.
    pub fn flush_stats(&self) -> FlushStats {
        self.inner.commit.stats()
    }

    /// The size of the database files, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Locks the stripe of `key` (a client id or a topic).
    pub(crate) fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let stripe = (hasher.finish() % STRIPES as u64) as usize;
        self.inner.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether sled failed to open because the folder's lock is held. sled 0.34 says so only
/// in the message of an IO error.
fn is_lock_conflict(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().starts_with("could not acquire lock"))
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("flushes", &self.flush_stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_shared_across_threads() {
        fn is_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        is_send_sync_clone::<Store>();
    }

    #[test]
    fn a_folder_opens_once_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("opens");
        let impatient = StoreConfig {
            lock_timeout: Duration::ZERO,
            ..StoreConfig::default()
        };
        match Store::open(dir.path(), impatient) {
            Err(StoreError::Sled(e)) => assert!(is_lock_conflict(&e), "{e}"),
            other => panic!("opened twice: {other:?}"),
        }
        drop(store);
        Store::open(dir.path(), StoreConfig::default()).expect("opens again once closed");
    }
}
