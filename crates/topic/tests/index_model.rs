//! Model-based test of the subscription index: random subscribes and unsubscribes over a small
//! alphabet of levels, then every answer of the index is checked against a naive model that
//! keeps a flat map of subscriptions and matches each with the reference `matches`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use shoal_codec::{QoS, RetainHandling, SubscriptionOptions};
use shoal_topic::{
    FilterKind, InsertError, Insertion, Recipients, Subscription, SubscriptionIndex, matches,
};

#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        subscriber: u32,
        filter: String,
        options: SubscriptionOptions,
        identifier: Option<NonZeroU32>,
    },
    Unsubscribe {
        subscriber: u32,
        filter: String,
    },
}

/// Filter levels: empty ones, `$` ones (which matter only first in a topic), and `+`; now and
/// then an invalid filter (`""`, `$share/g/`), which must change nothing.
fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "+", "$SYS", "$x"]);
    let plain =
        (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        });
    let share_name = prop::option::weighted(0.3, prop::sample::select(vec!["g", "h"]));
    (share_name, plain).prop_map(|(share_name, filter)| match share_name {
        Some(name) => format!("$share/{name}/{filter}"),
        None => filter,
    })
}

fn topic() -> impl Strategy<Value = String> {
    let first = prop::sample::select(vec!["a", "b", "", "$SYS", "$x"]);
    let level = prop::sample::select(vec!["a", "b", "", "$x"]);
    (first, prop::collection::vec(level, 0..4)).prop_map(|(first, rest)| {
        let mut levels = vec![first];
        levels.extend(rest);
        levels.join("/")
    })
}

fn options() -> impl Strategy<Value = SubscriptionOptions> {
    let qos = prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
    (qos, any::<bool>(), any::<bool>()).prop_map(|(qos, no_local, retain_as_published)| {
        SubscriptionOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling: RetainHandling::SendOnSubscribe,
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    let subscriber = 0..4u32;
    let identifier = prop::option::of(1..4u32).prop_map(|id| id.and_then(NonZeroU32::new));
    prop_oneof![
        3 => (subscriber.clone(), filter(), options(), identifier).prop_map(|(subscriber, filter, options, identifier)| {
            Op::Subscribe { subscriber, filter, options, identifier }
        }),
        2 => (subscriber, filter()).prop_map(|(subscriber, filter)| Op::Unsubscribe { subscriber, filter }),
    ]
}

/// The model: every live subscription by (subscriber, filter as sent).
type Model = HashMap<(u32, String), Subscription<u32>>;

/// A plain recipient: QoS, identifiers, retain as published.
type Plain = BTreeMap<u32, (QoS, Vec<u32>, bool)>;
/// A shared group (its whole filter) and its members.
type Shared = BTreeMap<String, Vec<(u32, QoS, Option<NonZeroU32>)>>;

/// What the rules say a message on `topic` from `publisher` goes to.
fn expected(model: &Model, topic: &str, publisher: Option<u32>) -> (Plain, Shared) {
    let mut plain: BTreeMap<u32, (QoS, BTreeSet<u32>, bool)> = BTreeMap::new();
    let mut shared = Shared::new();
    for ((subscriber, filter), s) in model {
        let Ok(kind) = FilterKind::parse(filter) else {
            continue;
        };
        if !matches(kind.topic_filter(), topic) {
            continue;
        }
        match kind {
            FilterKind::Plain(_) => {
                if s.options.no_local && Some(*subscriber) == publisher {
                    continue;
                }
                let entry =
                    plain
                        .entry(*subscriber)
                        .or_insert((QoS::AtMostOnce, BTreeSet::new(), false));
                entry.0 = entry.0.max(s.options.qos);
                entry.1.extend(s.identifier.map(NonZeroU32::get));
                entry.2 |= s.options.retain_as_published;
            }
            FilterKind::Shared { .. } => {
                let members = shared.entry(filter.clone()).or_default();
                members.push((*subscriber, s.options.qos, s.identifier));
                members.sort_unstable();
            }
        }
    }
    let plain = plain
        .into_iter()
        .map(|(s, (qos, ids, rap))| (s, (qos, ids.into_iter().collect(), rap)))
        .collect();
    (plain, shared)
}

/// What the index says.
fn found(out: &Recipients<u32>) -> (Plain, Shared) {
    let mut plain = Plain::new();
    for r in out.subscribers() {
        let ids = r.identifiers.iter().map(|id| id.get()).collect();
        let previous = plain.insert(r.subscriber, (r.qos, ids, r.retain_as_published));
        assert!(
            previous.is_none(),
            "subscriber {} reported twice",
            r.subscriber
        );
    }
    let mut shared = Shared::new();
    for g in out.shared_groups() {
        assert!(!g.members.is_empty(), "group {} without members", g.group);
        let mut members: Vec<_> = g
            .members
            .iter()
            .map(|m| (m.subscriber, m.options.qos, m.identifier))
            .collect();
        members.sort_unstable();
        let previous = shared.insert(g.group.as_str().to_owned(), members);
        assert!(previous.is_none(), "group {} reported twice", g.group);
    }
    (plain, shared)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_index_answers_as_the_model(
        ops in prop::collection::vec(op(), 0..80),
        topics in prop::collection::vec(topic(), 1..10),
        publisher in prop::option::of(0..4u32),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Subscribe { subscriber, filter, options, identifier } => {
                    let subscription = Subscription { subscriber, options, identifier };
                    let first = !model.keys().any(|(_, f)| *f == filter);
                    let expected = match FilterKind::parse(&filter) {
                        Err(e) => Err(InsertError::InvalidFilter(e)),
                        Ok(_) => match model.insert((subscriber, filter.clone()), subscription) {
                            Some(previous) => Ok(Insertion::Replaced { previous }),
                            None => Ok(Insertion::New { first }),
                        },
                    };
                    prop_assert_eq!(index.insert(subscriber, &filter, options, identifier), expected);
                }
                Op::Unsubscribe { subscriber, filter } => {
                    let removed = model.remove(&(subscriber, filter.clone()));
                    let last = !model.keys().any(|(_, f)| *f == filter);
                    let index_removed = index.remove(subscriber, &filter);
                    prop_assert_eq!(index_removed.map(|r| r.subscription), removed);
                    prop_assert_eq!(index_removed.map(|r| r.last), removed.map(|_| last));
                }
            }
        }
        let filters: BTreeSet<&str> = model.keys().map(|(_, f)| f.as_str()).collect();
        prop_assert_eq!(index.len(), model.len());
        prop_assert_eq!(index.filter_count(), filters.len());

        let mut out = Recipients::new();
        for topic in &topics {
            index.match_topic(topic, publisher, &mut out);
            prop_assert_eq!(found(&out), expected(&model, topic, publisher), "topic {:?}", topic);
        }

        // Unsubscribing everything leaves nothing behind.
        for subscriber in 0..4 {
            let filters: Vec<String> = model.keys().filter(|(s, _)| *s == subscriber).map(|(_, f)| f.clone()).collect();
            prop_assert_eq!(index.remove_all(subscriber, &filters), filters.len());
        }
        prop_assert_eq!((index.len(), index.filter_count(), index.node_count()), (0, 0, 0));
    }
}
