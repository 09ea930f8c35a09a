//! `FilterIndex`: where each of a session's subscriptions sits in its record, by filter, so
//! that a SUBSCRIBE or UNSUBSCRIBE costs the same whatever the number the session holds.

use std::collections::HashMap;

use shoal_codec::MqttString;

use crate::record::SubscriptionRecord;

/// Up to this many subscriptions a scan is cheaper than a map (and most sessions hold a
/// few): the map is built past it, and costs an idle session one pointer until then.
const SCAN: usize = 8;

/// The position of each subscription in `SessionRecord::subscriptions`, by filter, once a
/// session holds more than `SCAN` of them. Filters are chosen by clients: the map keeps
/// std's randomly seeded hasher.
/// Boxed: a `HashMap` with its random state is 48 bytes in every session, a box is 8.
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
pub(crate) struct FilterIndex(Option<Box<HashMap<MqttString, usize>>>);

impl FilterIndex {
    /// The position of the subscription to `filter` in `subs`.
    pub(crate) fn position(&self, subs: &[SubscriptionRecord], filter: &str) -> Option<usize> {
        match &self.0 {
            Some(map) => map.get(filter).copied(),
            None => subs.iter().position(|s| s.filter.as_str() == filter),
        }
    }

    /// Adds `record` to `subs`, or replaces the subscription with its filter
    /// [MQTT-3.8.4-3].
    pub(crate) fn upsert(
        &mut self,
        subs: &mut Vec<SubscriptionRecord>,
        record: SubscriptionRecord,
    ) {
        if let Some(pos) = self.position(subs, &record.filter) {
            subs[pos] = record;
            return;
        }
        if let Some(map) = &mut self.0 {
            map.insert(record.filter.clone(), subs.len());
        }
        subs.push(record);
        if self.0.is_none() && subs.len() > SCAN {
            self.rebuild(subs);
        }
    }

    /// Removes the subscription to `filter` from `subs` (the last one takes its place);
    /// returns whether there was one.
    pub(crate) fn remove(&mut self, subs: &mut Vec<SubscriptionRecord>, filter: &str) -> bool {
        let Some(pos) = self.position(subs, filter) else {
            return false;
        };
        subs.swap_remove(pos);
        if let Some(map) = &mut self.0 {
            map.remove(filter);
            if let Some(moved) = subs.get(pos) {
                map.insert(moved.filter.clone(), pos);
            }
        }
        true
    }

    /// Indexes `subs` anew (a restored session), or drops the map for a few.
    pub(crate) fn rebuild(&mut self, subs: &[SubscriptionRecord]) {
        self.0 = (subs.len() > SCAN).then(|| {
            Box::new(
                subs.iter()
                    .enumerate()
                    .map(|(i, s)| (s.filter.clone(), i))
                    .collect(),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use shoal_codec::{QoS, SubscriptionOptions};

    use super::*;

    fn sub(filter: &str) -> SubscriptionRecord {
        SubscriptionRecord {
            filter: MqttString::try_from(filter).expect("valid"),
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            identifier: None,
        }
    }

    #[test]
    fn positions_stay_right_through_adds_replacements_and_removals() {
        let mut index = FilterIndex::default();
        let mut subs = Vec::new();
        for i in 0..40 {
            index.upsert(&mut subs, sub(&format!("f/{i}")));
        }
        index.upsert(&mut subs, sub("f/3"));
        assert_eq!(subs.len(), 40);
        for i in (0..40).step_by(3) {
            assert!(index.remove(&mut subs, &format!("f/{i}")));
        }
        assert!(!index.remove(&mut subs, "f/0"));
        for i in 0..40 {
            let found = index.position(&subs, &format!("f/{i}"));
            match i % 3 {
                0 => assert_eq!(found, None),
                _ => assert_eq!(subs[found.expect("kept")].filter.as_str(), format!("f/{i}")),
            }
        }
    }
}
