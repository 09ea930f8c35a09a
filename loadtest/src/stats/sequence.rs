//! Per-flow sequence tracking at a receiver: which sequence numbers arrived, so that losses,
//! duplicates and reordering are counted exactly.

use std::collections::VecDeque;

/// Largest gap ahead of the contiguous prefix that a tracker accepts (64 Mi sequence
/// numbers, 8 MiB of bits): a sequence number beyond it is not from this run.
const MAX_WINDOW: u64 = 1 << 26;

/// What one received sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first time this number arrived, after a higher one had arrived already if
    /// `reordered`.
    New {
        /// Whether a higher sequence number had arrived before.
        reordered: bool,
    },
    /// It had arrived before.
    Duplicate,
    /// Implausibly far ahead: not counted.
    OutOfRange,
}

/// The sequence numbers received on one flow: a contiguous prefix (`0..base`) and a bitmap
/// of what arrived beyond it. In-order arrival keeps the bitmap at one word or two, whatever
/// the length of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTracker {
    base: u64,
    words: VecDeque<u64>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    highest: Option<u64>,
    lowest: Option<u64>,
}

impl SeqTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes the arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        let reordered = self.highest.is_some_and(|h| seq < h);
        match self.insert(seq) {
            Arrival::New { .. } if reordered => {
                self.reordered += 1;
                Arrival::New { reordered: true }
            }
            other => other,
        }
    }

    /// Marks `seq` as arrived, counting duplicates but not reordering.
    fn insert(&mut self, seq: u64) -> Arrival {
        if seq < self.base {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        let offset = seq - self.base;
        if offset >= MAX_WINDOW {
            return Arrival::OutOfRange;
        }
        let word = (offset / 64) as usize;
        let bit = 1u64 << (offset % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.words[word] |= bit;
        self.distinct += 1;
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.lowest = Some(self.lowest.map_or(seq, |l| l.min(seq)));
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += 64;
        }
        Arrival::New { reordered: false }
    }

    /// How many different sequence numbers arrived.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// How many arrivals repeated an earlier one.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// How many arrived after a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Sequence numbers missing between the lowest and the highest seen: the loss a
    /// receiver can see without knowing how many were sent.
    pub fn gaps(&self) -> u64 {
        match (self.lowest, self.highest) {
            (Some(lo), Some(hi)) => (hi - lo + 1).saturating_sub(self.distinct),
            _ => 0,
        }
    }

    /// Whether `seq` arrived.
    pub fn contains(&self, seq: u64) -> bool {
        if seq < self.base {
            return true;
        }
        let offset = seq - self.base;
        let word = (offset / 64) as usize;
        self.words
            .get(word)
            .is_some_and(|w| w & (1 << (offset % 64)) != 0)
    }

    /// Every sequence number that arrived, in order.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        // `0..base` only grows once every number below it arrived.
        let bits = self.words.iter().enumerate().flat_map(move |(w, &word)| {
            (0..64u64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| self.base + w as u64 * 64 + b)
        });
        (0..self.base).chain(bits)
    }

    /// Merges what another receiver of the same sink saw (the members of one shared
    /// subscription group): numbers both saw count as duplicates.
    pub fn union(&mut self, other: &Self) {
        for seq in other.iter() {
            self.insert(seq);
        }
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_arrivals_keep_the_bitmap_small() {
        let mut t = SeqTracker::new();
        for seq in 0..100_000 {
            assert_eq!(t.record(seq), Arrival::New { reordered: false });
        }
        assert_eq!(t.distinct(), 100_000);
        assert!(t.words.len() <= 1, "{}", t.words.len());
        assert_eq!(t.gaps(), 0);
    }

    #[test]
    fn counts_duplicates_reordering_and_gaps() {
        let mut t = SeqTracker::new();
        for seq in [0, 1, 2, 5, 4, 4, 1, 9] {
            t.record(seq);
        }
        assert_eq!(t.distinct(), 6);
        assert_eq!(t.duplicates(), 2);
        assert_eq!(t.reordered(), 1);
        assert_eq!(t.gaps(), 4, "3, 6, 7, 8 are missing");
        assert!(t.contains(4) && !t.contains(3));
        assert_eq!(t.record(u64::MAX), Arrival::OutOfRange);
    }

    #[test]
    fn union_of_shared_group_members_finds_cross_member_duplicates() {
        let mut a = SeqTracker::new();
        let mut b = SeqTracker::new();
        for seq in 0..1000 {
            if seq % 2 == 0 {
                a.record(seq)
            } else {
                b.record(seq)
            };
        }
        b.record(10); // also delivered to the other member
        a.union(&b);
        assert_eq!(a.distinct(), 1000);
        assert_eq!(a.duplicates(), 1);
        assert_eq!(a.gaps(), 0);
    }

    #[test]
    fn a_late_starting_receiver_reports_only_inner_gaps() {
        let mut t = SeqTracker::new();
        for seq in 500..600 {
            t.record(seq);
        }
        assert_eq!(t.gaps(), 0);
        let mut u = SeqTracker::new();
        u.union(&t);
        assert_eq!(u.distinct(), 100);
    }
}
