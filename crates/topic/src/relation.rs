//! How two topic filters relate through the topic names they match: whether one matches every
//! name the other does ([`filter_covers`]), and whether they match a name in common
//! ([`filters_intersect`]). Access control uses them to decide a wildcard subscription once,
//! when it is made, rather than for each message.
//!
//! Both walk the two filters level by level, without allocating. They are exact because the
//! set of level values is unbounded: against any literal level there is always another value,
//! not starting with `$`, for a `+` or a `#` to take. One name is missing from the regular
//! pattern: a single empty level would be the empty string, which is no topic name
//! [MQTT-4.7.3-1]. So `#` matches the same names as `+/#`, and `/#` the same as `/+/#`; the
//! walk takes each of the two as the latter, which matches no empty name, and is then exact.
//!
//! Names are taken as unbounded in length. Within a few bytes of the 65,535-byte limit
//! [MQTT-4.7.3-3], where the only name that tells two filters apart may be too long to exist,
//! [`filter_covers`] may answer `false` and [`filters_intersect`] `true` where the names that
//! can exist would say otherwise: the cautious side for access control.

use std::str::Split;

/// Whether the topic filter `outer` matches every topic name that the topic filter `inner`
/// matches (§4.7). `#` takes in its parent level (`a/#` covers `a`), `+` takes in an empty
/// level (`a/+` covers `a/`), and a filter that starts with a wildcard matches no topic name
/// that starts with `$` [MQTT-4.7.2-1]: `#` does not cover `$SYS/#`, `$SYS/#` covers
/// `$SYS/a`. Every filter covers itself. `#` and `+/#` cover each other, as a topic name has
/// at least one level, and so do `/#` and `/+/#`, as a single empty level would be the empty
/// string, which is no topic name [MQTT-4.7.3-1].
///
/// Both must be valid plain filters ([`validate_topic_filter`]); for a shared subscription
/// pass its [`FilterKind::topic_filter`]. Invalid input gives an unspecified answer, never a
/// panic.
///
/// [`validate_topic_filter`]: crate::validate_topic_filter
/// [`FilterKind::topic_filter`]: crate::FilterKind::topic_filter
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    // `inner` matches only `$` names, none of which a wildcard-first filter matches.
    if inner.starts_with('$') && starts_with_wildcard(outer) {
        return false;
    }
    let mut outer_levels = levels(outer);
    let mut inner_levels = levels(inner);
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            // `#` takes in whatever is left of `inner`, its parent level included: `a/#`
            // covers `a`. Both ending together: the same number of levels, each covered.
            (Some("#"), _) | (None, None) => return true,
            // `inner` goes on where `outer` cannot follow: `#` or any level past the end of
            // `outer` (`a` does not cover `a/#` nor `a/b`), or `outer` needs a level that
            // `inner`'s names lack (`a/+` does not cover `a`, nor `a/#`, which matches `a`).
            (_, Some("#")) | (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) => {}
            // A literal covers only itself: not another literal, and not `+`.
            (Some(outer_level), Some(inner_level)) => {
                if outer_level != inner_level {
                    return false;
                }
            }
        }
    }
}

/// Whether at least one topic name is matched by both topic filters `a` and `b` (§4.7):
/// `a/#` and `a` share `a`, `+/b` and `a/+` share `a/b`, but `+/x` and `$SYS/x` share
/// nothing, as a filter that starts with a wildcard matches no topic name that starts with
/// `$` [MQTT-4.7.2-1]. Nor do `+` and `/#`: the one pattern they share, a single empty level,
/// would be the empty string, which is no topic name [MQTT-4.7.3-1]. Symmetric.
///
/// Both must be valid plain filters ([`validate_topic_filter`]); for a shared subscription
/// pass its [`FilterKind::topic_filter`]. Invalid input gives an unspecified answer, never a
/// panic.
///
/// [`validate_topic_filter`]: crate::validate_topic_filter
/// [`FilterKind::topic_filter`]: crate::FilterKind::topic_filter
pub fn filters_intersect(a: &str, b: &str) -> bool {
    // One matches only `$` names, the other none of them.
    if (a.starts_with('$') && starts_with_wildcard(b))
        || (b.starts_with('$') && starts_with_wildcard(a))
    {
        return false;
    }
    let mut a_levels = levels(a);
    let mut b_levels = levels(b);
    loop {
        match (a_levels.next(), b_levels.next()) {
            // `#` takes the other's remaining levels, or none if the other has ended (the
            // parent level): the name the other spells from here on, with `+` as any value.
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(a_level), Some(b_level)) => {
                if a_level != b_level {
                    return false;
                }
            }
        }
    }
}

/// The levels of a filter, with `#` walked as `+/#` and `/#` as `/+/#`: the same topic names,
/// but none that would be a single empty level, the empty string, which is no topic name
/// [MQTT-4.7.3-1]. Without this, `+/#` would not be found to cover `#` (the parent of `#` is
/// no name at all), nor `/+/#` to cover `/#`, and `+` and `/#` would seem to share a name.
fn levels(filter: &str) -> Split<'_, char> {
    match filter {
        "#" => "+/#",
        "/#" => "/+/#",
        _ => filter,
    }
    .split('/')
}

/// Whether a filter's first level is a wildcard, which keeps it from matching `$` names.
fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matches;

    #[test]
    fn covers_follows_the_levels() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/b", "a/+", false),
            ("a/b", "a/c", false),
            ("+/+", "a/+", true),
            ("a/+", "+/+", false),
            ("a/#", "a/b/c", true),
            ("a/#", "a/+/#", true),
            ("a/+/#", "a/#", false),
            ("a/b/#", "a/#", false),
            ("+", "a/b", false),
            ("a/b", "a", false),
            ("a", "a/b", false),
            // Empty levels are levels, and `+` takes them.
            ("a/+", "a/", true),
            ("+/+", "/", true),
            ("+", "/", false),
            ("a//b", "a/+/b", false),
            ("a/+/b", "a//b", true),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                filter_covers(outer, inner),
                expected,
                "{outer:?} covers {inner:?}"
            );
        }
    }

    #[test]
    fn multi_level_wildcard_takes_in_its_parent() {
        let cases = [
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a", "a/#", false),
            ("a/+", "a/#", false),
            ("a/+/#", "a", false),
            ("#", "a", true),
            ("#", "+", true),
            ("#", "+/#", true),
            // A name has at least one level: `#` and `+/#` match the same names.
            ("+/#", "#", true),
            ("+/+/#", "#", false),
            ("+", "#", false),
            // No name is a single empty level: `/#` matches what `/+/#` does.
            ("/+/#", "/#", true),
            ("+/+/#", "/#", true),
            ("/#", "/+/#", true),
            ("/+", "/#", false),
            ("+/+", "/#", false),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                filter_covers(outer, inner),
                expected,
                "{outer:?} covers {inner:?}"
            );
        }
    }

    /// §4.7.2: a wildcard first level does not match `$` names, a literal one does.
    #[test]
    fn covers_keeps_wildcards_away_from_dollar_topics() {
        let cases = [
            ("#", "$SYS/#", false),
            ("#", "$SYS", false),
            ("+/#", "$SYS/a", false),
            ("+", "$SYS", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/a", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/#", "$SYS/+/#", true),
            ("$SYS/+", "$SYS/x", true),
            ("$SYS/#", "#", false),
            ("$SYS/#", "+/a", false),
            // Only the first character of the first level counts.
            ("a/+", "a/$x", true),
            ("+/#", "a/$x", true),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                filter_covers(outer, inner),
                expected,
                "{outer:?} covers {inner:?}"
            );
        }
    }

    #[test]
    fn intersect_finds_a_shared_name() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("+/b", "a/+", true),
            ("+", "a/b", false),
            ("+", "/", false),
            ("+/+", "/", true),
            ("a/#", "a", true),
            ("a", "a/#", true),
            ("a/+", "a", false),
            ("a/+/#", "a", false),
            ("a/#", "+/b/c", true),
            ("#", "#", true),
            ("+", "#", true),
            ("a/b/c", "a/+", false),
            ("a//b", "a/+/b", true),
            // Their one shared pattern, a single empty level, is no name.
            ("+", "/#", false),
            ("+/#", "/#", true),
            ("#", "/#", true),
            ("+/+", "/#", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(filters_intersect(a, b), expected, "{a:?} and {b:?}");
            assert_eq!(filters_intersect(b, a), expected, "{b:?} and {a:?}");
        }
    }

    #[test]
    fn intersect_keeps_wildcards_away_from_dollar_topics() {
        let cases = [
            ("+/x", "$SYS/x", false),
            ("#", "$SYS", false),
            ("#", "$SYS/#", false),
            ("+/#", "$x", false),
            ("$SYS/#", "$SYS/+", true),
            ("$x/#", "$x", true),
            ("$SYS/#", "$x/#", false),
            ("a/+", "a/$x", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(filters_intersect(a, b), expected, "{a:?} and {b:?}");
            assert_eq!(filters_intersect(b, a), expected, "{b:?} and {a:?}");
        }
    }

    /// Every filter of up to two levels and a `#` over a few values, against every other, by
    /// the names they match; the proptest in `tests/relation_model.rs` goes deeper.
    #[test]
    fn small_filters_agree_with_enumerated_names() {
        let values = ["a", "", "$s"];
        let mut topics: Vec<String> = Vec::new();
        let mut layer = vec![String::new()];
        for depth in 0..4 {
            let mut next = Vec::new();
            for prefix in &layer {
                for value in values.iter().chain(&["z"]) {
                    let topic = if depth == 0 {
                        (*value).to_owned()
                    } else {
                        format!("{prefix}/{value}")
                    };
                    // The empty string is no topic name, but prefixes others.
                    if !topic.is_empty() {
                        topics.push(topic.clone());
                    }
                    next.push(topic);
                }
            }
            layer = next;
        }
        let mut filters = vec!["#".to_owned()];
        let levels: Vec<&str> = values.iter().copied().chain(["+"]).collect();
        for first in &levels {
            for second in [None].into_iter().chain(levels.iter().map(Some)) {
                let base = match second {
                    None => (*first).to_owned(),
                    Some(second) => format!("{first}/{second}"),
                };
                if !base.is_empty() {
                    filters.push(base.clone());
                }
                filters.push(format!("{base}/#"));
            }
        }
        for outer in &filters {
            for inner in &filters {
                let inner_names = topics.iter().filter(|t| matches(inner, t));
                let covers = inner_names.clone().all(|t| matches(outer, t));
                let meets = inner_names.clone().any(|t| matches(outer, t));
                assert_eq!(filter_covers(outer, inner), covers, "{outer:?} ⊇ {inner:?}");
                assert_eq!(
                    filters_intersect(outer, inner),
                    meets,
                    "{outer:?} ∩ {inner:?}"
                );
            }
        }
    }
}
