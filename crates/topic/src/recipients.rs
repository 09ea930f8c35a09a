//! `Recipients`: who gets one message, filled by
//! [`SubscriptionIndex::match_topic`](crate::SubscriptionIndex::match_topic) into a buffer the
//! caller keeps, so that matching allocates nothing once the buffer has grown.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::ops::Range;

use ahash::RandomState;
use shoal_codec::QoS;

use crate::leaf::Leaf;
use crate::shared::SharedGroup;
use crate::subscription::Subscription;

/// The recipients of one message: each plain subscriber once, with what its matching
/// subscriptions ask for, and each matching shared group with all its members, for the caller
/// to pick one. Keep one per dispatch loop and pass it to every
/// [`match_topic`](crate::SubscriptionIndex::match_topic): it is cleared each time and keeps
/// its capacity.
pub struct Recipients<S> {
    /// The publisher, whose No Local subscriptions are skipped.
    publisher: Option<S>,
    /// Plain recipients; during matching one per matching subscription, then one per
    /// subscriber.
    plain: Vec<Delivery<S>>,
    /// How many leaves added plain recipients: below two, no subscriber can appear twice.
    plain_leaves: usize,
    /// The Subscription Identifiers of `plain`, each delivery's in one run.
    identifiers: Vec<NonZeroU32>,
    /// Aggregation scratch: each subscriber's delivery.
    slots: HashMap<S, usize, RandomState>,
    /// Aggregation scratch: (delivery, identifier) pairs.
    pairs: Vec<(usize, NonZeroU32)>,
    /// Matching shared groups, with the range of their members in `members`.
    groups: Vec<(SharedGroup, Range<usize>)>,
    /// The members of the matching groups, copied from the index.
    members: Vec<Subscription<S>>,
}

/// One plain recipient: a subscriber and what its matching subscriptions ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a, S> {
    /// The subscriber.
    pub subscriber: S,
    /// The highest maximum QoS of its matching subscriptions [MQTT-3.3.4-2]: send at the
    /// lower of this and the message's QoS.
    pub qos: QoS,
    /// Whether any matching subscription has Retain As Published.
    pub retain_as_published: bool,
    /// The Subscription Identifiers of its matching subscriptions, ascending, each once: all
    /// go into the one PUBLISH sent [MQTT-3.3.4-4].
    pub identifiers: &'a [NonZeroU32],
}

/// One matching shared group: the message goes to one of its members, which the caller
/// picks (§4.8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRecipients<'a, S> {
    /// The group: ShareName and topic filter.
    pub group: &'a SharedGroup,
    /// Its members, each with its own options and Subscription Identifier; never empty.
    /// Copied on each match: groups are few, their members small values.
    pub members: &'a [Subscription<S>],
}

/// A plain recipient while matching; its identifiers are a range of `identifiers`.
#[derive(Clone, Copy)]
struct Delivery<S> {
    subscriber: S,
    qos: QoS,
    retain_as_published: bool,
    identifiers: (usize, usize),
}

impl<S> Recipients<S> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self {
            publisher: None,
            plain: Vec::new(),
            plain_leaves: 0,
            identifiers: Vec::new(),
            slots: HashMap::default(),
            pairs: Vec::new(),
            groups: Vec::new(),
            members: Vec::new(),
        }
    }

    /// The plain subscribers that get the message, each once.
    pub fn subscribers(&self) -> impl ExactSizeIterator<Item = Recipient<'_, S>> + '_
    where
        S: Copy,
    {
        self.plain.iter().map(|d| Recipient {
            subscriber: d.subscriber,
            qos: d.qos,
            retain_as_published: d.retain_as_published,
            identifiers: &self.identifiers[d.identifiers.0..d.identifiers.1],
        })
    }

    /// The shared groups that match, each with all its members.
    pub fn shared_groups(&self) -> impl ExactSizeIterator<Item = SharedRecipients<'_, S>> + '_ {
        self.groups.iter().map(|(group, members)| SharedRecipients {
            group,
            members: &self.members[members.clone()],
        })
    }

    /// Whether nobody gets the message.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

impl<S: Copy + Eq + Hash> Recipients<S> {
    /// Starts a match for a message of `publisher`.
    pub(crate) fn begin(&mut self, publisher: Option<S>) {
        self.publisher = publisher;
        self.plain.clear();
        self.plain_leaves = 0;
        self.identifiers.clear();
        self.groups.clear();
        self.members.clear();
    }

    /// Adds the subscriptions of a leaf whose filter matches.
    pub(crate) fn add(&mut self, leaf: &Leaf<S>) {
        let plain = leaf.plain.as_slice();
        if !plain.is_empty() {
            self.plain_leaves += 1;
            for s in plain {
                // No Local: not back to the publisher [MQTT-3.8.3-3], whatever other
                // subscriptions of the publisher match.
                if s.options.no_local && Some(s.subscriber) == self.publisher {
                    continue;
                }
                let start = self.identifiers.len();
                self.identifiers.extend(s.identifier);
                self.plain.push(Delivery {
                    subscriber: s.subscriber,
                    qos: s.options.qos,
                    retain_as_published: s.options.retain_as_published,
                    identifiers: (start, self.identifiers.len()),
                });
            }
        }
        for group in &leaf.groups {
            let start = self.members.len();
            self.members.extend_from_slice(group.members.as_slice());
            self.groups
                .push((group.group.clone(), start..self.members.len()));
        }
    }

    /// Ends a match: merges the deliveries of a subscriber that several filters match into
    /// one, with the highest QoS and all identifiers [MQTT-3.3.4-2], [MQTT-3.3.4-4].
    pub(crate) fn finish(&mut self) {
        // Within one leaf each subscriber is there once: nothing to merge.
        if self.plain_leaves < 2 {
            return;
        }
        self.slots.clear();
        self.pairs.clear();
        let mut merged = 0;
        for i in 0..self.plain.len() {
            let d = self.plain[i];
            let slot = match self.slots.entry(d.subscriber) {
                Entry::Occupied(e) => {
                    let kept = &mut self.plain[*e.get()];
                    kept.qos = kept.qos.max(d.qos);
                    kept.retain_as_published |= d.retain_as_published;
                    *e.get()
                }
                Entry::Vacant(e) => {
                    e.insert(merged);
                    self.plain[merged] = d;
                    merged += 1;
                    merged - 1
                }
            };
            let identifiers = &self.identifiers[d.identifiers.0..d.identifiers.1];
            self.pairs.extend(identifiers.iter().map(|&id| (slot, id)));
        }
        self.plain.truncate(merged);
        // Sorted by delivery, then identifier: one run per delivery, ascending, no repeat.
        self.pairs.sort_unstable();
        self.pairs.dedup();
        self.identifiers.clear();
        let mut pairs = self.pairs.iter().peekable();
        for (slot, d) in self.plain.iter_mut().enumerate() {
            let start = self.identifiers.len();
            while let Some(&(_, id)) = pairs.next_if(|(s, _)| *s == slot) {
                self.identifiers.push(id);
            }
            d.identifiers = (start, self.identifiers.len());
        }
    }
}

impl<S> Default for Recipients<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Copy + fmt::Debug> fmt::Debug for Recipients<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipients")
            .field("subscribers", &self.subscribers().collect::<Vec<_>>())
            .field("shared_groups", &self.shared_groups().collect::<Vec<_>>())
            .finish()
    }
}
