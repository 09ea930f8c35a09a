//! What falls due at a time: delayed Wills, session expiry, retained message expiry. One
//! node-wide queue ordered by time, so the sweep looks only at what is due, never at every
//! session or retained message (a sweep of everything under the tables' locks each second
//! would grow with the node and stall connects meanwhile).
//!
//! An entry is a reminder, not the truth: when it comes due, the sweep looks at the session
//! or retained message as it is now (a client may have come back, a message been replaced)
//! and files a new entry if something is still to come. Stale entries cost one look.

use std::collections::BTreeSet;
use std::sync::Mutex;

use shoal_codec::MqttString;
use shoal_session::Timestamp;

use super::lock;

/// What is due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// A session (by subscriber id): its Will, or its end.
    Session(u64),
    /// The retained message of a topic: its expiry.
    Retained(MqttString),
}

/// The node's deadlines, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    queue: Mutex<BTreeSet<(Timestamp, Due)>>,
}

impl Deadlines {
    /// Files `due` at `at`.
    pub(crate) fn file(&self, at: Timestamp, due: Due) {
        lock(&self.queue).insert((at, due));
    }

    /// Takes what is due at `now`, earliest first, `max` at most, with the time each was
    /// filed for.
    pub(crate) fn take_due(&self, now: Timestamp, max: usize) -> Vec<(Timestamp, Due)> {
        let mut queue = lock(&self.queue);
        let mut due = Vec::new();
        while due.len() < max {
            match queue.first() {
                Some((at, _)) if *at <= now => {
                    due.push(queue.pop_first().expect("first exists"));
                }
                _ => break,
            }
        }
        due
    }

    /// How many entries are filed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.queue).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_time_order_and_only_once() {
        let deadlines = Deadlines::default();
        deadlines.file(Timestamp(30), Due::Session(3));
        deadlines.file(Timestamp(10), Due::Retained(MqttString::from_static("t")));
        deadlines.file(Timestamp(20), Due::Session(2));
        assert!(deadlines.take_due(Timestamp(9), 10).is_empty());
        assert_eq!(
            deadlines.take_due(Timestamp(20), 10),
            [
                (Timestamp(10), Due::Retained(MqttString::from_static("t"))),
                (Timestamp(20), Due::Session(2))
            ]
        );
        assert_eq!(
            deadlines.take_due(Timestamp(100), 10),
            [(Timestamp(30), Due::Session(3))]
        );
        assert_eq!(deadlines.len(), 0);
    }
}
