//! `Subscribers`: the subscriptions to one filter, at most one per subscriber.

use std::collections::HashMap;
use std::hash::Hash;
use std::mem;

use ahash::RandomState;

use crate::subscription::Subscription;

/// From this many subscriptions on, a list keeps an index by subscriber, so that subscribing
/// and unsubscribing stay O(1) on a filter that thousands of sessions share. Below, a linear
/// scan of a few cache lines is faster and costs no memory.
const INDEX_FROM: usize = 32;

/// The subscriptions to one filter (or of one shared group), at most one per subscriber, in a
/// contiguous list that matching copies from. The capacity grows by doubling from one and
/// shrinks as subscriptions go, so the many filters with a single subscriber cost one element.
#[derive(Debug)]
pub(crate) struct Subscribers<S> {
    list: Vec<Subscription<S>>,
    /// Position in `list` of each subscriber, once the list is long.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes in every leaf, for a rare map"
    )]
    positions: Option<Box<HashMap<S, usize, RandomState>>>,
}

impl<S> Default for Subscribers<S> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            positions: None,
        }
    }
}

impl<S: Copy + Eq + Hash> Subscribers<S> {
    /// The subscriptions, in no particular order.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[Subscription<S>] {
        &self.list
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn position(&self, subscriber: S) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&subscriber).copied(),
            None => self.list.iter().position(|s| s.subscriber == subscriber),
        }
    }

    /// Adds `subscription`, or replaces the one of the same subscriber and returns it.
    pub(crate) fn upsert(&mut self, subscription: Subscription<S>) -> Option<Subscription<S>> {
        if let Some(i) = self.position(subscription.subscriber) {
            return Some(mem::replace(&mut self.list[i], subscription));
        }
        if self.list.len() == self.list.capacity() {
            self.list.reserve_exact(self.list.len().max(1));
        }
        self.list.push(subscription);
        match &mut self.positions {
            Some(positions) => {
                positions.insert(subscription.subscriber, self.list.len() - 1);
            }
            None if self.list.len() >= INDEX_FROM => {
                let positions = self.list.iter().enumerate().map(|(i, s)| (s.subscriber, i));
                self.positions = Some(Box::new(positions.collect()));
            }
            None => {}
        }
        None
    }

    /// Removes the subscription of `subscriber` and returns it.
    pub(crate) fn remove(&mut self, subscriber: S) -> Option<Subscription<S>> {
        let i = self.position(subscriber)?;
        let removed = self.list.swap_remove(i);
        if let Some(positions) = &mut self.positions {
            positions.remove(&subscriber);
            if let Some(moved) = self.list.get(i) {
                positions.insert(moved.subscriber, i);
            }
            if self.list.len() < INDEX_FROM / 2 {
                self.positions = None;
            }
        }
        if self.list.len() <= self.list.capacity() / 4 {
            self.list.shrink_to(self.list.len() * 2);
        }
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use shoal_codec::{QoS, SubscriptionOptions};

    use super::*;

    fn sub(subscriber: u32, qos: QoS) -> Subscription<u32> {
        Subscription {
            subscriber,
            options: SubscriptionOptions::with_qos(qos),
            identifier: NonZeroU32::new(subscriber + 1),
        }
    }

    fn sorted(list: &Subscribers<u32>) -> Vec<u32> {
        let mut ids: Vec<u32> = list.as_slice().iter().map(|s| s.subscriber).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn one_subscription_per_subscriber_replaced_in_place() {
        let mut list = Subscribers::default();
        assert_eq!(list.upsert(sub(1, QoS::AtMostOnce)), None);
        assert_eq!(list.upsert(sub(2, QoS::AtMostOnce)), None);
        assert_eq!(
            list.upsert(sub(1, QoS::ExactlyOnce)),
            Some(sub(1, QoS::AtMostOnce))
        );
        assert_eq!(
            list.as_slice(),
            [sub(1, QoS::ExactlyOnce), sub(2, QoS::AtMostOnce)]
        );
        assert_eq!(list.remove(1), Some(sub(1, QoS::ExactlyOnce)));
        assert_eq!(list.remove(1), None);
        assert_eq!(list.as_slice(), [sub(2, QoS::AtMostOnce)]);
    }

    #[test]
    fn a_single_subscription_costs_one_element() {
        let mut list = Subscribers::default();
        let _ = list.upsert(sub(7, QoS::AtLeastOnce));
        assert_eq!(list.list.capacity(), 1);
        let _ = list.remove(7);
        assert_eq!(list.list.capacity(), 0);
    }

    /// Crossing the index threshold both ways keeps every position right: swap_remove moves
    /// the last subscription, and its position must follow.
    #[test]
    fn large_lists_are_indexed_and_stay_consistent() {
        let mut list = Subscribers::default();
        for n in 0..100 {
            assert_eq!(list.upsert(sub(n, QoS::AtMostOnce)), None);
        }
        assert!(list.positions.is_some());
        for n in (0..100).step_by(3) {
            assert_eq!(list.remove(n).map(|s| s.subscriber), Some(n));
        }
        for n in 0..100 {
            let expected = (n % 3 != 0).then(|| sub(n, QoS::AtMostOnce));
            assert_eq!(list.upsert(sub(n, QoS::AtLeastOnce)), expected, "{n}");
        }
        assert_eq!(sorted(&list), (0..100).collect::<Vec<_>>());
        for n in 0..95 {
            assert!(list.remove(n).is_some(), "{n}");
        }
        assert!(list.positions.is_none());
        assert_eq!(sorted(&list), [95, 96, 97, 98, 99]);
        assert_eq!(list.remove(42), None);
        assert!(list.list.capacity() <= 4 * list.list.len());
    }
}
