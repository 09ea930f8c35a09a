//! The node's clock: monotonic, anchored to wall time at start, so that timestamps that are
//! persisted keep their meaning across a restart.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shoal_session::Timestamp;

/// A monotonic clock that reads as milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    /// A clock anchored to the wall time now.
    pub fn new() -> Self {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.start_unix_ms + self.start.elapsed().as_millis() as u64)
    }

    /// The `Instant` of a timestamp, for timers.
    pub fn instant(&self, at: Timestamp) -> Instant {
        let ms = at.as_millis().saturating_sub(self.start_unix_ms);
        self.start + std::time::Duration::from_millis(ms)
    }

    /// Time since the clock started.
    pub fn uptime(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
