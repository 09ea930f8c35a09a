//! Model-based test of the retained-message index: random inserts and removals over a small
//! alphabet of levels, then every answer of the index is checked against a naive model that
//! keeps a flat map of topics and matches each with the reference `matches`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use shoal_topic::{RetainedIndex, matches};

#[derive(Debug, Clone)]
enum Op {
    Insert { topic: String, value: u32 },
    Remove { topic: String },
}

/// Topic names: empty levels, and `$` ones, which matter only first.
fn topic() -> impl Strategy<Value = String> {
    let first = prop::sample::select(vec!["a", "b", "", "$SYS", "$x"]);
    let level = prop::sample::select(vec!["a", "b", "", "$x"]);
    (first, prop::collection::vec(level, 0..4)).prop_map(|(first, rest)| {
        let mut levels = vec![first];
        levels.extend(rest);
        levels.join("/")
    })
}

/// Topic filters over the same levels, with `+` anywhere and `#` now and then last.
fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "+", "$SYS", "$x"]);
    (prop::collection::vec(level, 0..5), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash || levels.is_empty() {
            levels.push("#");
        }
        levels.join("/")
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (topic(), any::<u32>()).prop_map(|(topic, value)| Op::Insert { topic, value }),
        2 => topic().prop_map(|topic| Op::Remove { topic }),
    ]
}

/// The model: the value of each topic.
type Model = BTreeMap<String, u32>;

/// What the rules say `filter` finds.
fn expected(model: &Model, filter: &str) -> Vec<(String, u32)> {
    model
        .iter()
        .filter(|(topic, _)| matches(filter, topic))
        .map(|(topic, &value)| (topic.clone(), value))
        .collect()
}

/// What the index says `filter` finds, sorted; the values alone must agree.
fn found(index: &RetainedIndex<u32>, filter: &str) -> Vec<(String, u32)> {
    let mut named = Vec::new();
    index.for_each_match(filter, |topic, &value| {
        named.push((topic.to_owned(), value))
    });
    named.sort_unstable();
    let mut values = Vec::new();
    index.for_each_match_value(filter, |&value| values.push(value));
    values.sort_unstable();
    let mut named_values: Vec<u32> = named.iter().map(|(_, value)| *value).collect();
    named_values.sort_unstable();
    assert_eq!(values, named_values, "values of {filter:?}");
    named
}

/// The trie nodes the model's topics need: one per distinct non-empty prefix of levels.
fn nodes(model: &Model) -> usize {
    let mut prefixes = BTreeSet::new();
    for topic in model.keys() {
        let mut end = 0;
        for level in topic.split('/') {
            end += level.len();
            prefixes.insert(&topic[..end]);
            end += 1;
        }
    }
    prefixes.len()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_retained_index_answers_as_the_model(
        ops in prop::collection::vec(op(), 0..80),
        filters in prop::collection::vec(filter(), 1..10),
        expired in any::<u32>(),
    ) {
        let mut index = RetainedIndex::new();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Insert { topic, value } => {
                    prop_assert_eq!(index.insert(&topic, value), model.insert(topic, value));
                }
                Op::Remove { topic } => {
                    prop_assert_eq!(index.remove(&topic), model.remove(&topic), "{:?}", topic);
                }
            }
            prop_assert_eq!(index.len(), model.len());
            prop_assert_eq!(index.node_count(), nodes(&model));
        }
        for (topic, value) in &model {
            prop_assert_eq!(index.get(topic), Some(value));
        }
        for filter in &filters {
            prop_assert_eq!(found(&index, filter), expected(&model, filter), "filter {:?}", filter);
        }

        // An expiry sweep: the values below a random bound go.
        let removed = index.retain(|topic, &value| {
            assert_eq!(model.get(topic), Some(&value), "{topic:?}");
            value >= expired
        });
        let before = model.len();
        model.retain(|_, value| *value >= expired);
        prop_assert_eq!(removed, before - model.len());
        prop_assert_eq!((index.len(), index.node_count()), (model.len(), nodes(&model)));
        for filter in &filters {
            prop_assert_eq!(found(&index, filter), expected(&model, filter), "filter {:?}", filter);
        }

        // Removing everything leaves nothing behind.
        for topic in model.keys() {
            prop_assert!(index.remove(topic).is_some());
        }
        prop_assert_eq!((index.len(), index.node_count()), (0, 0));
    }
}
