//! The outgoing QoS 1/2 window: packet identifiers in use, in send order, and what each one
//! waits for.

use std::collections::VecDeque;

/// What an outgoing publication waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1: PUBACK.
    PubAck,
    /// QoS 2: PUBREC.
    PubRec,
    /// QoS 2: PUBCOMP (PUBREL sent).
    PubComp,
}

/// One publication in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Its packet identifier.
    pub pid: u16,
    /// What it waits for.
    pub stage: Stage,
    /// Index of its flow in the publisher's flows.
    pub flow: u32,
    /// Its sequence number, to re-send it after a reconnection.
    pub seq: u64,
}

/// Publications in flight, oldest first. Acknowledgements arrive in order in practice
/// [MQTT-4.6.0-2], so completion is O(1); the window is small (the broker's Receive
/// Maximum, at most `--inflight`), so a linear search is cheap when they do not.
#[derive(Debug, Default)]
pub struct Inflight {
    queue: VecDeque<Pending>,
    next: u16,
}

impl Inflight {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many publications are in flight.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A free packet identifier; the caller checked that the window has room, so one exists.
    pub fn allocate(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1).max(1);
            let candidate = self.next;
            if !self.queue.iter().any(|p| p.pid == candidate) {
                return candidate;
            }
        }
    }

    /// Adds a publication.
    pub fn push(&mut self, pending: Pending) {
        self.queue.push_back(pending);
    }

    /// Finds the publication `pid` waiting for `stage`.
    pub fn find(&mut self, pid: u16, stage: Stage) -> Option<&mut Pending> {
        self.queue
            .iter_mut()
            .find(|p| p.pid == pid && p.stage == stage)
    }

    /// Completes the publication `pid` waiting for `stage`; whether it was there.
    pub fn complete(&mut self, pid: u16, stage: Stage) -> bool {
        if self
            .queue
            .front()
            .is_some_and(|p| p.pid == pid && p.stage == stage)
        {
            self.queue.pop_front();
            return true;
        }
        match self
            .queue
            .iter()
            .position(|p| p.pid == pid && p.stage == stage)
        {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Every publication in flight, oldest first (to re-send after reconnecting).
    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.queue.iter()
    }

    /// Forgets every publication (the session is gone).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_free_ids_and_skips_zero_and_ids_in_use() {
        let mut w = Inflight::new();
        w.next = u16::MAX - 1;
        let a = w.allocate();
        w.push(Pending {
            pid: a,
            stage: Stage::PubAck,
            flow: 0,
            seq: 0,
        });
        assert_eq!(a, u16::MAX);
        assert_eq!(w.allocate(), 1, "0 is never a packet id");
        w.next = u16::MAX - 1;
        assert_eq!(w.allocate(), 1, "in use ids are skipped");
        assert!(w.complete(u16::MAX, Stage::PubAck));
        assert!(!w.complete(u16::MAX, Stage::PubAck));
        assert!(w.is_empty());
    }
}
