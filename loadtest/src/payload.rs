//! The header every measured message carries at the front of its payload, so that a
//! receiver can tell which flow a message belongs to, its place in that flow, and when it
//! was sent.
//!
//! Layout (24 bytes, big endian), followed by filler up to the payload size:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | magic `sL` |
//! | 2 | stream: which measured stream (e.g. telemetry, commands) |
//! | 3 | reserved, 0 |
//! | 4..8 | flow: one publisher writing to one topic |
//! | 8..16 | sequence number in the flow, from 0 |
//! | 16..24 | send time: `CLOCK_MONOTONIC` nanoseconds, shared by every process of a machine |

use bytes::{Bytes, BytesMut};

/// The size of the header; the smallest payload that can be measured.
pub const HEADER_LEN: usize = 24;

const MAGIC: [u8; 2] = *b"sL";

/// The header of a measured message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The stream (index into the scenario's stream names).
    pub stream: u8,
    /// The flow: one publisher writing to one topic.
    pub flow: u32,
    /// The sequence number of the message in its flow.
    pub seq: u64,
    /// When the message was encoded, in monotonic-clock nanoseconds ([`now_ns`]).
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`HEADER_LEN`]: payload sizes are checked when the scenario
    /// is built.
    pub fn write(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = self.stream;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.flow.to_be_bytes());
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads the header at the front of a received payload; `None` if the payload is not one
    /// of ours (too short, or without the magic).
    pub fn read(payload: &[u8]) -> Option<Self> {
        let head = payload.get(..HEADER_LEN)?;
        if head[0..2] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| {
            let mut b = [0; 4];
            b.copy_from_slice(&head[at..at + 4]);
            u32::from_be_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(Self {
            stream: head[2],
            flow: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

/// A payload template of `size` bytes: room for the header, then printable filler. Messages
/// share it (a `Bytes` clone is a reference count) and the header is stamped into the
/// encoded packet, never into the template.
pub fn template(size: usize) -> Bytes {
    let mut buf = BytesMut::zeroed(size.max(HEADER_LEN));
    for (i, byte) in buf.iter_mut().enumerate().skip(HEADER_LEN) {
        *byte = b'a' + (i % 26) as u8;
    }
    buf.freeze()
}

/// The monotonic clock in nanoseconds. `CLOCK_MONOTONIC` is one clock for the whole machine,
/// so a publisher in one worker process and a subscriber in another measure against the
/// same origin.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_foreign_payloads_are_refused() {
        let header = Header {
            stream: 2,
            flow: 70_000,
            seq: 1 << 40,
            sent_ns: now_ns(),
        };
        let mut payload = template(64).to_vec();
        header.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(header));
        assert_eq!(Header::read(b"online"), None);
        assert_eq!(Header::read(&[0u8; 64]), None);
        assert_eq!(template(10).len(), HEADER_LEN);
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
