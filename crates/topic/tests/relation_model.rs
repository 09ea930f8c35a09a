//! Model-based test of `filter_covers` and `filters_intersect`: random filters over a small
//! alphabet of levels, and a model that enumerates every topic name up to a bounded depth and
//! asks the reference `matches` which of them each filter matches.
//!
//! Why a finite enumeration decides the question exactly. Filters use the level values
//! `a`, `b`, the empty level and `$s`, plus `+` and `#`, and have at most `MAX_FILTER_LEVELS`
//! levels, the `#` included. Whether a name matches a filter depends on each level only
//! through which of the filter's literals it equals, and, for the first level, on whether it
//! starts with `$`. So the level values fall into classes that no filter tells apart: each
//! literal on its own, every other value not starting with `$` (stood for by `z`, which no
//! filter names), and every other value starting with `$`, which can only matter as a first
//! level, where it matches no filter at all (a literal first level differs from it, a wildcard
//! one refuses it [MQTT-4.7.2-1]) and so cannot tell two filters apart. As for depth, a name
//! longer than every filter is matched only through a `#`, which looks at the levels before
//! it: a name of `MAX_FILTER_LEVELS + 1` levels stands for all longer ones. Every name thus
//! has a stand-in among the enumerated ones, matched by the same filters, and "every name of
//! `inner` is one of `outer`" and "some name is matched by both" hold of all names exactly
//! when they hold of the enumerated ones. The one sequence of levels that is no name, a single
//! empty level (the empty string [MQTT-4.7.3-1]), is left out, as the functions leave it out.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use shoal_topic::{filter_covers, filters_intersect, matches, validate_topic_filter};

/// The most levels of a generated filter, its `#` included.
const MAX_FILTER_LEVELS: usize = 4;

/// The literal level values of filters; topic names use them and `z`.
const LITERALS: [&str; 4] = ["a", "b", "", "$s"];

/// Every topic name of 1 to `MAX_FILTER_LEVELS + 1` levels over `LITERALS` and `z`.
fn topics() -> &'static [String] {
    static TOPICS: OnceLock<Vec<String>> = OnceLock::new();
    TOPICS.get_or_init(|| {
        let values: Vec<&str> = LITERALS.iter().copied().chain(["z"]).collect();
        let mut all = Vec::new();
        let mut layer: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        for _ in 0..MAX_FILTER_LEVELS {
            all.extend(layer.iter().cloned());
            layer = layer
                .iter()
                .flat_map(|prefix| values.iter().map(move |v| format!("{prefix}/{v}")))
                .collect();
        }
        all.extend(layer);
        // A single empty level is the empty string, which is no topic name [MQTT-4.7.3-1].
        all.retain(|topic| !topic.is_empty());
        all
    })
}

/// Valid topic filters: up to three levels of literals and `+`, then often a `#`.
fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$s", "+", "+"]);
    (
        prop::collection::vec(level, 0..MAX_FILTER_LEVELS),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            // A lone empty level is the empty string, which is no filter.
            if hash || levels.is_empty() || levels == [""] {
                levels.push("#");
            }
            levels.join("/")
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn covers_and_intersect_agree_with_the_names_the_filters_match(
        a in filter(),
        b in filter(),
    ) {
        prop_assert!(validate_topic_filter(&a).is_ok(), "{:?}", a);
        prop_assert!(validate_topic_filter(&b).is_ok(), "{:?}", b);
        let of_a: Vec<bool> = topics().iter().map(|t| matches(&a, t)).collect();
        let of_b: Vec<bool> = topics().iter().map(|t| matches(&b, t)).collect();
        // Every filter matches some name, so that covering implies intersecting.
        prop_assert!(of_a.contains(&true), "{:?} matches nothing", a);

        let a_covers_b = of_a.iter().zip(&of_b).all(|(&in_a, &in_b)| in_a || !in_b);
        let b_covers_a = of_a.iter().zip(&of_b).all(|(&in_a, &in_b)| in_b || !in_a);
        let shared = of_a.iter().zip(&of_b).any(|(&in_a, &in_b)| in_a && in_b);
        prop_assert_eq!(filter_covers(&a, &b), a_covers_b, "{:?} covers {:?}", a, b);
        prop_assert_eq!(filter_covers(&b, &a), b_covers_a, "{:?} covers {:?}", b, a);
        prop_assert_eq!(filters_intersect(&a, &b), shared, "{:?} and {:?}", a, b);
        prop_assert_eq!(filters_intersect(&b, &a), shared, "{:?} and {:?}", b, a);
        prop_assert!(filter_covers(&a, &a));
    }
}
