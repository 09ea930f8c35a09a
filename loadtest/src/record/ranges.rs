//! A set of sequence numbers kept as disjoint half-open ranges: what was acknowledged on a
//! flow, or what a receiver has seen. In-order arrival keeps it at one range.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `start..end`, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set from `(start, end)` pairs (any order, overlaps merged).
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Self {
        let mut set = Self::new();
        for &(start, end) in pairs {
            set.insert_range(start, end);
        }
        set
    }

    /// Adds `seq`.
    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq.saturating_add(1));
    }

    /// Adds `start..end`, merging with the ranges it touches.
    pub fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            if e >= end {
                return;
            }
            start = s;
            self.ranges.remove(&s);
        }
        // Ranges starting inside `start..=end` are swallowed.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| seq < e)
    }

    /// How many numbers of `start..end` are in the set.
    pub fn count_in(&self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let mut n = 0;
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        for (&s, &e) in self.ranges.range(first..end) {
            let (a, b) = (s.max(start), e.min(end));
            if a < b {
                n += b - a;
            }
        }
        n
    }

    /// The ranges of `self` that are not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Self::new();
        for (&s, &e) in &self.ranges {
            let mut at = s;
            let first = other
                .ranges
                .range(..=s)
                .next_back()
                .map_or(s, |(&os, _)| os);
            for (&os, &oe) in other.ranges.range(first..e) {
                if oe <= at {
                    continue;
                }
                if os > at {
                    out.insert_range(at, os.min(e));
                }
                at = at.max(oe);
                if at >= e {
                    break;
                }
            }
            if at < e {
                out.insert_range(at, e);
            }
        }
        out
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The highest number in the set.
    pub fn max(&self) -> Option<u64> {
        self.ranges.iter().next_back().map(|(_, &e)| e - 1)
    }

    /// The ranges, in order, as `(start, end)`.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(&s, &e)| (s, e)).collect()
    }

    /// How many ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_adjacent_and_overlapping_ranges() {
        let mut set = RangeSet::new();
        for seq in [0, 1, 2, 5, 6, 4, 10] {
            set.insert(seq);
        }
        assert_eq!(set.pairs(), vec![(0, 3), (4, 7), (10, 11)]);
        set.insert(3);
        assert_eq!(set.pairs(), vec![(0, 7), (10, 11)]);
        set.insert_range(8, 20);
        assert_eq!(set.pairs(), vec![(0, 7), (8, 20)]);
        set.insert_range(2, 9);
        assert_eq!(set.pairs(), vec![(0, 20)]);
        assert_eq!(set.len(), 20);
        assert!(set.contains(19) && !set.contains(20));
    }

    #[test]
    fn difference_and_counts() {
        let a = RangeSet::from_pairs(&[(0, 100)]);
        let b = RangeSet::from_pairs(&[(10, 20), (30, 40), (95, 200)]);
        assert_eq!(a.difference(&b).pairs(), vec![(0, 10), (20, 30), (40, 95)]);
        assert_eq!(b.difference(&a).pairs(), vec![(100, 200)]);
        assert_eq!(b.count_in(15, 35), 10);
        assert_eq!(a.difference(&a).len(), 0);
        assert_eq!(b.max(), Some(199));
    }
}
