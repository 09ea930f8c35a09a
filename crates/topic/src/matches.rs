//! `matches`: one topic filter against one topic name, the plain way. The reference that the
//! subscription index is tested against, and enough for one-off checks (retained messages
//! against a new subscription).

/// Whether the topic filter `filter` matches the topic name `topic` (§4.7): level by level,
/// `+` matches any one level, `#` matches the parent level and any number of levels below
/// (`sport/#` matches `sport`), and a filter that starts with a wildcard does not match a
/// topic name that starts with `$` [MQTT-4.7.2-1]. No normalisation of any kind
/// [MQTT-4.7.3-4].
///
/// Both must be valid ([`validate_topic_filter`], [`validate_topic_name`]); for a shared
/// subscription pass its [`FilterKind::topic_filter`]. Invalid input gives an unspecified
/// answer, never a panic.
///
/// [`validate_topic_filter`]: crate::validate_topic_filter
/// [`validate_topic_name`]: crate::validate_topic_name
/// [`FilterKind::topic_filter`]: crate::FilterKind::topic_filter
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            _ => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of §4.7.1.2, §4.7.1.3 and §4.7.2, and their edges.
    #[test]
    fn examples_from_the_specification() {
        let cases = [
            // §4.7.1.2 multi-level wildcard.
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("sport/#", "sports", false),
            ("#", "sport/tennis", true),
            ("#", "/", true),
            // §4.7.1.3 single-level wildcard.
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player2", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+", "finance", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+/tennis/#", "sport/tennis/player1/ranking", true),
            ("sport/+/player1", "sport/tennis/player1", true),
            // Empty levels are levels.
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("a/b", "a//b", false),
            ("/", "/", true),
            ("+/+", "/", true),
            ("+", "/", false),
            // §4.7.2 topics beginning with `$`.
            ("#", "$SYS/broker/clients", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("$SYS/#", "$SYS", true),
            ("+/#", "$SYS/a", false),
            // Only the first character of the topic counts.
            ("+/$x", "a/$x", true),
            ("a/#", "a/$x", true),
            // Case and bytes matter: no normalisation [MQTT-4.7.3-4].
            ("ACCOUNTS", "Accounts", false),
            ("caf\u{e9}", "cafe\u{301}", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter:?} vs {topic:?}");
        }
    }
}
