//! `SubscriptionIndex`: the subscriptions of a node's sessions, in a trie of topic levels.

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;

use shoal_codec::SubscriptionOptions;

use crate::error::InsertError;
use crate::node::Node;
use crate::recipients::Recipients;
use crate::shared::FilterKind;
use crate::subscription::Subscription;

/// The most levels a topic filter may have in the index. Insert, remove, match and drop walk
/// the trie recursively, one stack frame per level: the limit keeps that within a few hundred
/// kilobytes on any thread. Topic names are not limited (the walk follows the trie, not the
/// topic), and real filters are far shorter: brokers commonly cap them at 128 levels.
pub const MAX_FILTER_LEVELS: usize = 1024;

/// What [`SubscriptionIndex::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insertion<S> {
    /// A new subscription. `first` when no other subscriber had this filter (for a shared
    /// one, this group): the node's route for it appears.
    New {
        /// Whether it is the filter's first subscription.
        first: bool,
    },
    /// The subscriber had a subscription to this same filter: replaced [MQTT-3.8.4-3].
    Replaced {
        /// The subscription replaced.
        previous: Subscription<S>,
    },
}

/// What [`SubscriptionIndex::remove`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed<S> {
    /// The subscription removed.
    pub subscription: Subscription<S>,
    /// Whether it was the filter's last (for a shared one, the group's last member): the
    /// node's route for it goes.
    pub last: bool,
}

/// The subscriptions of one broker node, by topic filter, and the one question asked of them
/// on each PUBLISH: who gets a message on this topic.
///
/// `S` identifies a subscriber: the session's id, a small integer. A subscriber has at most
/// one subscription per filter (`a/+` and `$share/g/a/+` are different filters).
///
/// The trie has one node per topic filter level; `+` children and `#` leaves are kept apart
/// from the literal children, so matching a topic of `n` levels looks up at most `n` levels
/// per wildcard branch that exists, without allocating. Nodes left empty by a removal are
/// freed at once.
pub struct SubscriptionIndex<S> {
    root: Node<S>,
    /// Nodes below the root.
    nodes: usize,
    subscriptions: usize,
    filters: usize,
}

impl<S> SubscriptionIndex<S> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            nodes: 0,
            subscriptions: 0,
            filters: 0,
        }
    }

    /// How many subscriptions, plain and shared.
    pub fn len(&self) -> usize {
        self.subscriptions
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// How many distinct filters have a subscription: each plain topic filter, and each shared
    /// group (`$share/{ShareName}/{filter}`), counts once.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// How many trie nodes, the root apart: 0 when the index is empty.
    pub fn node_count(&self) -> usize {
        self.nodes
    }
}

impl<S: Copy + Eq + Hash> SubscriptionIndex<S> {
    /// Subscribes `subscriber` to `filter`, plain or `$share/{ShareName}/{filter}`, or replaces
    /// its subscription to that same filter [MQTT-3.8.4-3].
    pub fn insert(
        &mut self,
        subscriber: S,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<NonZeroU32>,
    ) -> Result<Insertion<S>, InsertError> {
        let kind = FilterKind::parse(filter)?;
        let topic_filter = kind.topic_filter();
        let levels = topic_filter.bytes().filter(|&b| b == b'/').count() + 1;
        if levels > MAX_FILTER_LEVELS {
            return Err(InsertError::TooManyLevels { levels });
        }
        let subscription = Subscription {
            subscriber,
            options,
            identifier,
        };
        let shared = kind.share_name().map(|share_name| (share_name, filter));
        let leaf = self.root.leaf_or_insert(topic_filter, &mut self.nodes);
        let insertion = leaf.upsert(subscription, shared);
        if let Insertion::New { first } = insertion {
            self.subscriptions += 1;
            self.filters += usize::from(first);
        }
        Ok(insertion)
    }

    /// Unsubscribes `subscriber` from `filter`; `None` if it was not subscribed (or the filter
    /// is invalid). Nodes left empty are freed.
    pub fn remove(&mut self, subscriber: S, filter: &str) -> Option<Removed<S>> {
        let kind = FilterKind::parse(filter).ok()?;
        let mut pruned = 0;
        let removed = self.root.remove(
            Some(kind.topic_filter()),
            subscriber,
            kind.share_name(),
            &mut pruned,
        )?;
        self.nodes -= pruned;
        self.subscriptions -= 1;
        self.filters -= usize::from(removed.last);
        Some(removed)
    }

    /// Unsubscribes `subscriber` from each of `filters`, as when its session ends; returns how
    /// many subscriptions it had among them. The index keeps no list of a subscriber's
    /// filters: the session has it.
    pub fn remove_all<I>(&mut self, subscriber: S, filters: I) -> usize
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        filters
            .into_iter()
            .filter(|filter| self.remove(subscriber, filter.as_ref()).is_some())
            .count()
    }

    /// Fills `out` with the recipients of a message published on `topic` by `publisher`
    /// (`None` for a message of the broker itself, or a Will):
    /// - each plain subscriber once, however many of its filters match, with the highest QoS
    ///   and every Subscription Identifier of its matching subscriptions, and Retain As
    ///   Published if any of them has it; No Local subscriptions of the publisher itself are
    ///   left out first;
    /// - each matching shared group with all its members, whatever their No Local.
    ///
    /// `topic` must be a valid topic name ([`validate_topic_name`]); an invalid one gives an
    /// unspecified answer, never a panic. Allocates nothing once `out` has grown to the
    /// largest match.
    ///
    /// [`validate_topic_name`]: crate::validate_topic_name
    pub fn match_topic(&self, topic: &str, publisher: Option<S>, out: &mut Recipients<S>) {
        out.begin(publisher);
        self.root.collect_root(topic, out);
        out.finish();
    }
}

impl<S> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for SubscriptionIndex<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("subscriptions", &self.subscriptions)
            .field("filters", &self.filters)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use shoal_codec::{QoS, RetainHandling};

    use super::*;
    use crate::error::TopicError;

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions::with_qos(qos)
    }

    fn id(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    fn subscribe(index: &mut SubscriptionIndex<u32>, subscriber: u32, filter: &str) {
        let inserted = index.insert(subscriber, filter, options(QoS::AtMostOnce), None);
        assert!(
            matches!(inserted, Ok(Insertion::New { .. })),
            "{filter:?}: {inserted:?}"
        );
    }

    /// The plain subscribers of a match, sorted, as (subscriber, qos, identifiers, retain as
    /// published).
    fn plain(
        index: &SubscriptionIndex<u32>,
        topic: &str,
        publisher: Option<u32>,
    ) -> Vec<(u32, QoS, Vec<u32>, bool)> {
        let mut out = Recipients::new();
        index.match_topic(topic, publisher, &mut out);
        let mut found: Vec<_> = out
            .subscribers()
            .map(|r| {
                let ids = r.identifiers.iter().map(|id| id.get()).collect();
                (r.subscriber, r.qos, ids, r.retain_as_published)
            })
            .collect();
        found.sort_unstable_by_key(|f| f.0);
        found
    }

    fn subscribers(index: &SubscriptionIndex<u32>, topic: &str) -> Vec<u32> {
        plain(index, topic, None).into_iter().map(|f| f.0).collect()
    }

    /// The examples of §4.7, through the trie.
    #[test]
    fn matches_the_examples_of_the_specification() {
        let filters = [
            "sport/tennis/player1/#",
            "sport/#",
            "sport/tennis/+",
            "sport/+",
            "+",
            "+/+",
            "/+",
            "#",
            "$SYS/#",
            "+/monitor/Clients",
            "$SYS/monitor/+",
            "a//b",
        ];
        let mut index = SubscriptionIndex::new();
        for (n, filter) in (0..).zip(filters) {
            subscribe(&mut index, n, filter);
        }
        let expect = |topic: &str, names: &[&str]| {
            let mut expected: Vec<u32> = names
                .iter()
                .map(|name| {
                    (0..)
                        .zip(filters)
                        .find(|(_, f)| f == name)
                        .map_or(u32::MAX, |(n, _)| n)
                })
                .collect();
            expected.sort_unstable();
            assert_eq!(subscribers(&index, topic), expected, "{topic:?}");
        };
        expect(
            "sport/tennis/player1",
            &["sport/tennis/player1/#", "sport/#", "sport/tennis/+", "#"],
        );
        expect(
            "sport/tennis/player1/ranking",
            &["sport/tennis/player1/#", "sport/#", "#"],
        );
        expect("sport", &["sport/#", "+", "#"]);
        expect("sport/", &["sport/#", "sport/+", "+/+", "#"]);
        expect("/finance", &["+/+", "/+", "#"]);
        expect("$SYS/monitor/Clients", &["$SYS/#", "$SYS/monitor/+"]);
        expect("$SYS", &["$SYS/#"]);
        expect("a//b", &["a//b", "#"]);
        expect("a/b", &["+/+", "#"]);
    }

    #[test]
    fn a_subscriber_gets_one_delivery_with_the_highest_qos_and_all_identifiers() {
        let mut index = SubscriptionIndex::new();
        let rap = SubscriptionOptions {
            retain_as_published: true,
            ..options(QoS::AtMostOnce)
        };
        let _ = index.insert(1, "a/+", options(QoS::AtLeastOnce), id(9));
        let _ = index.insert(1, "a/#", rap, id(3));
        let _ = index.insert(1, "#", options(QoS::AtMostOnce), id(9));
        let _ = index.insert(1, "a/b", options(QoS::ExactlyOnce), None);
        let _ = index.insert(2, "a/b", options(QoS::AtMostOnce), id(5));
        assert_eq!(
            plain(&index, "a/b", None),
            [
                (1, QoS::ExactlyOnce, vec![3, 9], true),
                (2, QoS::AtMostOnce, vec![5], false)
            ]
        );
        // Fewer filters match: the same subscriber, less aggregated.
        assert_eq!(
            plain(&index, "a", None),
            [(1, QoS::AtMostOnce, vec![3, 9], true)]
        );
        assert_eq!(
            plain(&index, "x", None),
            [(1, QoS::AtMostOnce, vec![9], false)]
        );
    }

    #[test]
    fn no_local_skips_only_the_publishers_own_no_local_subscriptions() {
        let mut index = SubscriptionIndex::new();
        let no_local = SubscriptionOptions {
            no_local: true,
            ..options(QoS::ExactlyOnce)
        };
        let _ = index.insert(1, "a/b", no_local, id(1));
        let _ = index.insert(1, "a/+", options(QoS::AtMostOnce), id(2));
        let _ = index.insert(2, "a/b", no_local, id(3));
        // The publisher still gets the message through its other subscription, without the
        // No Local one's QoS and identifier.
        assert_eq!(
            plain(&index, "a/b", Some(1)),
            [
                (1, QoS::AtMostOnce, vec![2], false),
                (2, QoS::ExactlyOnce, vec![3], false)
            ]
        );
        assert_eq!(
            plain(&index, "a/b", Some(2)),
            [(1, QoS::ExactlyOnce, vec![1, 2], false)]
        );
        assert_eq!(plain(&index, "a/b", None).len(), 2);
        assert_eq!(
            plain(&index, "a/c", Some(1)),
            [(1, QoS::AtMostOnce, vec![2], false)]
        );
    }

    #[test]
    fn shared_groups_are_reported_with_all_their_members() {
        let mut index = SubscriptionIndex::new();
        let no_local = SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtLeastOnce)
        };
        let _ = index.insert(1, "$share/g/a/+", no_local, id(7));
        let _ = index.insert(2, "$share/g/a/+", options(QoS::ExactlyOnce), None);
        // Same ShareName, another filter: another group.
        let _ = index.insert(3, "$share/g/a/#", options(QoS::AtMostOnce), None);
        let _ = index.insert(4, "$share/h/a/+", options(QoS::AtMostOnce), None);
        // A plain subscription to the same filter is separate from the groups.
        let _ = index.insert(1, "a/+", options(QoS::AtMostOnce), None);
        assert_eq!(index.filter_count(), 4);

        let mut out = Recipients::new();
        index.match_topic("a/b", Some(1), &mut out);
        assert_eq!(
            out.subscribers().map(|r| r.subscriber).collect::<Vec<_>>(),
            [1]
        );
        let mut groups: Vec<_> = out
            .shared_groups()
            .map(|g| {
                let mut members: Vec<_> = g
                    .members
                    .iter()
                    .map(|m| (m.subscriber, m.options.qos, m.identifier))
                    .collect();
                members.sort_unstable();
                (
                    g.group.as_str(),
                    g.group.share_name(),
                    g.group.filter(),
                    members,
                )
            })
            .collect();
        groups.sort_unstable();
        assert_eq!(
            groups,
            [
                ("$share/g/a/#", "g", "a/#", vec![(3, QoS::AtMostOnce, None)]),
                // No Local does not apply to shared subscriptions: member 1 is there.
                (
                    "$share/g/a/+",
                    "g",
                    "a/+",
                    vec![(1, QoS::AtLeastOnce, id(7)), (2, QoS::ExactlyOnce, None)]
                ),
                ("$share/h/a/+", "h", "a/+", vec![(4, QoS::AtMostOnce, None)]),
            ]
        );

        index.match_topic("a", None, &mut out);
        assert_eq!(out.subscribers().len(), 0);
        let groups: Vec<_> = out.shared_groups().map(|g| g.group.as_str()).collect();
        assert_eq!(groups, ["$share/g/a/#"]);

        // The last member leaving ends the group.
        assert_eq!(index.remove(2, "$share/g/a/+").map(|r| r.last), Some(false));
        assert_eq!(index.remove(1, "$share/g/a/+").map(|r| r.last), Some(true));
        assert_eq!(index.remove(1, "$share/g/a/+"), None);
        index.match_topic("a/b", None, &mut out);
        let groups: Vec<_> = out.shared_groups().map(|g| g.group.as_str()).collect();
        assert_eq!(groups.len(), 2);
        assert!(!groups.contains(&"$share/g/a/+"));
    }

    #[test]
    fn shared_wildcards_do_not_match_dollar_topics() {
        let mut index = SubscriptionIndex::new();
        subscribe(&mut index, 1, "$share/g/#");
        subscribe(&mut index, 2, "$share/g/$SYS/#");
        let mut out = Recipients::new();
        index.match_topic("$SYS/load", None, &mut out);
        let groups: Vec<_> = out.shared_groups().map(|g| g.group.as_str()).collect();
        assert_eq!(groups, ["$share/g/$SYS/#"]);
    }

    #[test]
    fn subscribing_again_replaces_the_subscription() {
        let mut index = SubscriptionIndex::new();
        let first = SubscriptionOptions {
            retain_handling: RetainHandling::DoNotSend,
            ..options(QoS::ExactlyOnce)
        };
        assert_eq!(
            index.insert(1, "a/+", first, id(1)),
            Ok(Insertion::New { first: true })
        );
        assert_eq!(
            index.insert(2, "a/+", first, None),
            Ok(Insertion::New { first: false })
        );
        let previous = Subscription {
            subscriber: 1,
            options: first,
            identifier: id(1),
        };
        assert_eq!(
            index.insert(1, "a/+", options(QoS::AtMostOnce), None),
            Ok(Insertion::Replaced { previous })
        );
        assert_eq!((index.len(), index.filter_count()), (2, 1));
        assert_eq!(
            plain(&index, "a/b", None),
            [
                (1, QoS::AtMostOnce, vec![], false),
                (2, QoS::ExactlyOnce, vec![], false)
            ]
        );
        // Shared: replaced within its group.
        assert_eq!(
            index.insert(1, "$share/g/a/+", first, None),
            Ok(Insertion::New { first: true })
        );
        assert!(matches!(
            index.insert(1, "$share/g/a/+", first, id(4)),
            Ok(Insertion::Replaced { .. })
        ));
        assert_eq!((index.len(), index.filter_count()), (3, 2));
    }

    #[test]
    fn invalid_filters_are_refused() {
        let mut index = SubscriptionIndex::<u32>::new();
        let qos0 = options(QoS::AtMostOnce);
        assert_eq!(
            index.insert(1, "a/#/b", qos0, None),
            Err(InsertError::InvalidFilter(
                TopicError::MisplacedMultiLevelWildcard { offset: 2 }
            ))
        );
        assert_eq!(
            index.insert(1, "$share/g", qos0, None),
            Err(InsertError::InvalidFilter(TopicError::MissingSharedFilter))
        );
        let deep = vec!["a"; MAX_FILTER_LEVELS + 1].join("/");
        assert_eq!(
            index.insert(1, &deep, qos0, None),
            Err(InsertError::TooManyLevels {
                levels: MAX_FILTER_LEVELS + 1
            })
        );
        assert_eq!((index.len(), index.node_count()), (0, 0));
        assert_eq!(index.remove(1, "a/#/b"), None);
    }

    /// The deepest filter allowed is inserted, matched, removed and dropped on a thread with
    /// a small stack: the recursion stays bounded.
    #[test]
    fn the_deepest_filter_fits_a_small_stack() {
        let run = || {
            let mut index = SubscriptionIndex::new();
            let deep = vec!["+"; MAX_FILTER_LEVELS].join("/");
            let topic = vec!["a"; MAX_FILTER_LEVELS].join("/");
            subscribe(&mut index, 1, &deep);
            subscribe(&mut index, 2, &vec!["a"; MAX_FILTER_LEVELS].join("/"));
            let found = subscribers(&index, &topic);
            assert_eq!(index.remove(2, &deep), None);
            assert!(index.remove(1, &deep).is_some());
            found
        };
        let found = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(run)
            .map(|t| t.join());
        assert!(matches!(found, Ok(Ok(ref f)) if f == &[1, 2]), "{found:?}");
    }

    #[test]
    fn removing_everything_frees_every_node() {
        let filters = [
            "a/b/c",
            "a/b",
            "a/+/c",
            "a/#",
            "#",
            "+",
            "+/+/#",
            "/",
            "//",
            "a//",
            "$SYS/#",
            "$share/g/a/b",
            "$share/g/#",
            "$share/h/a/b",
        ];
        let mut index = SubscriptionIndex::new();
        for (n, filter) in (1..).zip(filters) {
            for subscriber in 0..3 {
                let _ = index.insert(subscriber, filter, options(QoS::AtMostOnce), id(n));
            }
        }
        // Many children, to go through a map and back.
        for n in 0..50 {
            subscribe(&mut index, 9, &format!("wide/{n}/x"));
        }
        assert_eq!(index.node_count(), index.root.count_descendants());
        assert_eq!(
            (index.len(), index.filter_count()),
            (3 * filters.len() + 50, filters.len() + 50)
        );

        for n in 0..50 {
            assert_eq!(
                index.remove(9, &format!("wide/{n}/x")).map(|r| r.last),
                Some(true)
            );
            assert_eq!(index.node_count(), index.root.count_descendants());
        }
        for subscriber in 0..3 {
            assert_eq!(
                index.remove_all(subscriber, filters.iter().rev()),
                filters.len()
            );
            assert_eq!(index.node_count(), index.root.count_descendants());
        }
        assert_eq!(index.remove_all(0, filters), 0);
        assert_eq!(
            (index.len(), index.filter_count(), index.node_count()),
            (0, 0, 0)
        );
        assert_eq!(index.root.count_descendants(), 0);
        assert!(index.is_empty());
        assert!(subscribers(&index, "a/b/c").is_empty());
    }

    #[test]
    fn removing_one_branch_keeps_the_others() {
        let mut index = SubscriptionIndex::new();
        subscribe(&mut index, 1, "a/b/c/d");
        subscribe(&mut index, 2, "a/b");
        assert_eq!(index.node_count(), 4);
        assert!(index.remove(1, "a/b/c/d").is_some());
        // `c` and `d` go, `a/b` stays.
        assert_eq!(index.node_count(), 2);
        assert_eq!(subscribers(&index, "a/b"), [2]);
        // Removing what is not there changes nothing.
        assert_eq!(index.remove(2, "a/b/c"), None);
        assert_eq!(index.remove(3, "a/b"), None);
        assert_eq!(index.remove(2, "a/+"), None);
        assert_eq!(index.node_count(), 2);
    }

    #[test]
    fn the_index_and_its_buffer_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SubscriptionIndex<u32>>();
        send_sync::<Recipients<u32>>();
    }

    #[test]
    fn a_warm_buffer_is_reused() {
        let mut index = SubscriptionIndex::new();
        for subscriber in 0..100 {
            let _ = index.insert(subscriber, "a/+", options(QoS::AtMostOnce), id(1));
            let _ = index.insert(subscriber, "a/#", options(QoS::AtLeastOnce), id(2));
        }
        let mut out = Recipients::new();
        index.match_topic("a/b", None, &mut out);
        assert_eq!(out.subscribers().len(), 100);
        assert!(
            out.subscribers()
                .all(|r| r.qos == QoS::AtLeastOnce && r.identifiers.len() == 2)
        );
        index.match_topic("b", None, &mut out);
        assert!(out.is_empty());
    }
}
