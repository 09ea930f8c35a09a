//! The per-client publish rate.

use std::pin::Pin;
use std::time::Duration;

/// The per-client publish rate: token buckets of packets and bytes, each holding one
/// second's worth. When one runs dry the connection stops reading until it has refilled,
/// so TCP pushes back on the client instead of the broker dropping its messages.
pub(super) struct Throttle {
    packets: Option<Bucket>,
    bytes: Option<Bucket>,
    /// While reading is paused: when it resumes.
    pub(super) resume: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Throttle {
    pub(super) fn new(limits: &crate::config::ClientLimits) -> Option<Self> {
        let packets = limits.publish_rate.map(|r| Bucket::new(f64::from(r)));
        let bytes = limits.publish_bytes_rate.map(|r| Bucket::new(r as f64));
        (packets.is_some() || bytes.is_some()).then_some(Self {
            packets,
            bytes,
            resume: None,
        })
    }

    /// How many PUBLISH packets may be handled now (at least one when not paused).
    pub(super) fn allowance(&mut self, now: tokio::time::Instant) -> usize {
        match &mut self.packets {
            Some(bucket) => bucket.available(now).max(0.0) as usize,
            None => usize::MAX,
        }
    }

    /// Accounts for `published` PUBLISH packets and `bytes` read; pauses reading until both
    /// buckets allow at least one more packet.
    pub(super) fn take(&mut self, now: tokio::time::Instant, published: usize, bytes: usize) {
        let wait = [
            self.packets.as_mut().map(|b| b.take(now, published as f64)),
            self.bytes.as_mut().map(|b| b.take(now, bytes as f64)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
        if !wait.is_zero() {
            self.resume = Some(Box::pin(tokio::time::sleep_until(now + wait)));
        }
    }
}

pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    pub(super) fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate,
            at: tokio::time::Instant::now(),
        }
    }

    /// The tokens there are now.
    pub(super) fn available(&mut self, now: tokio::time::Instant) -> f64 {
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        self.tokens
    }

    /// Takes `n` tokens (going into debt if need be); returns how long until the bucket
    /// holds a whole token again.
    pub(super) fn take(&mut self, now: tokio::time::Instant, n: f64) -> Duration {
        self.available(now);
        self.tokens -= n;
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}
