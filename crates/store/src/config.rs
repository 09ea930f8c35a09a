//! `StoreConfig`: how the store opens sled.

use std::time::Duration;

/// How the store opens its sled database. The defaults suit a broker node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes of sled's page cache. Default 128 MiB (sled's own default is 1 GiB).
    ///
    /// The broker keeps live state in its own memory and reads the store back only at
    /// start, so the cache mostly holds the pages being written. Larger: faster start and
    /// faster expiry scans over a large store. Smaller: less memory for the node.
    pub cache_capacity: u64,
    /// How often sled flushes in the background on its own. Default `None`: never.
    ///
    /// Acknowledged data never depends on it: acknowledgements wait for
    /// [`Store::flush`](crate::Store::flush). A background flush only bounds how much of
    /// what was never acknowledged (QoS 0 state, sessions between flushes) a crash loses, at
    /// the cost of fsyncs that nobody waits for; sled's own default is 500 ms.
    pub background_flush: Option<Duration>,
    /// How long [`Store::open`](crate::Store::open) waits for sled's lock on the folder.
    /// Default 1 s.
    ///
    /// sled releases the lock a little after the last handle of a closed store is dropped
    /// (its IO threads let go of the file last), so a store reopened at once in the same
    /// process may find it still held. Another process that holds the folder makes `open`
    /// fail after this time.
    pub lock_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity: 128 * 1024 * 1024,
            background_flush: None,
            lock_timeout: Duration::from_secs(1),
        }
    }
}
