//! The rules of topic names and topic filters (§4.7).

use crate::error::TopicError;

/// The longest topic name or topic filter: a UTF-8 string's two-byte length prefix
/// [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Checks a topic name, as carried by PUBLISH or a Will: at least one byte, at most 65,535, no
/// U+0000, no wildcard (§4.7). Empty levels (`a//b`, `/`) and a leading `$` are allowed.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_string(name)?;
    match name.bytes().position(|b| b == b'+' || b == b'#') {
        Some(offset) => Err(TopicError::WildcardInName { offset }),
        None => Ok(()),
    }
}

/// Checks a plain topic filter: the rules of [`validate_topic_name`] except that `+` may stand
/// for a whole level and `#` for the whole last level (§4.7.1). The filter is taken as it is:
/// to accept shared subscriptions too, parse it with
/// [`FilterKind::parse`](crate::FilterKind::parse).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_string(filter)?;
    check_levels(filter, 0)
}

/// The rules of every topic name and filter: at least one byte [MQTT-4.7.3-1], at most 65,535
/// [MQTT-4.7.3-3], no U+0000 [MQTT-4.7.3-2].
pub(crate) fn check_string(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    match s.bytes().position(|b| b == 0) {
        Some(offset) => Err(TopicError::NullCharacter { offset }),
        None => Ok(()),
    }
}

/// The wildcard rules of a topic filter [MQTT-4.7.1-1], [MQTT-4.7.1-2]; `base` is the
/// filter's offset in the string received, for the error.
pub(crate) fn check_levels(filter: &str, base: usize) -> Result<(), TopicError> {
    let mut start = base;
    for level in filter.split('/') {
        match level {
            "+" => {}
            // `#` ends the filter: nothing, not even an empty level, may follow.
            "#" if start + 1 == base + filter.len() => {}
            _ => {
                if let Some(i) = level.bytes().position(|b| b == b'+' || b == b'#') {
                    let offset = start + i;
                    return Err(if level.as_bytes()[i] == b'#' {
                        TopicError::MisplacedMultiLevelWildcard { offset }
                    } else {
                        TopicError::MisplacedSingleLevelWildcard { offset }
                    });
                }
            }
        }
        start += level.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topic_names() {
        for name in [
            "a",
            "/",
            "//",
            "a//b",
            "/finance",
            "sport/",
            "$SYS/broker",
            "$share/g/a",
            " ",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
        assert_eq!(validate_topic_name(&"a".repeat(MAX_TOPIC_LEN)), Ok(()));
    }

    #[test]
    fn valid_topic_filters() {
        let filters = [
            "#",
            "+",
            "/",
            "+/+",
            "/+",
            "a//b",
            "sport/#",
            "sport/tennis/+",
            "+/tennis/#",
            "sport/+/player1",
            "$SYS/#",
            "+/+/#",
            "//#",
            "a/+/",
            "+//+",
        ];
        for filter in filters {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    /// Each statement of §4.7 with the inputs that break it and the error they get.
    #[test]
    fn invalid_topics_name_the_statement_they_break() {
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let names: &[(&str, &str, TopicError)] = &[
            ("MQTT-4.7.3-1", "", TopicError::Empty),
            (
                "MQTT-4.7.3-2",
                "a\0b",
                TopicError::NullCharacter { offset: 1 },
            ),
            (
                "MQTT-4.7.3-3",
                &too_long,
                TopicError::TooLong {
                    len: MAX_TOPIC_LEN + 1,
                },
            ),
            (
                "MQTT-4.7.0-1",
                "a/+",
                TopicError::WildcardInName { offset: 2 },
            ),
            (
                "MQTT-4.7.0-1",
                "#",
                TopicError::WildcardInName { offset: 0 },
            ),
            (
                "MQTT-4.7.0-1",
                "sport/tennis#",
                TopicError::WildcardInName { offset: 12 },
            ),
        ];
        for (rule, name, error) in names {
            assert_eq!(validate_topic_name(name), Err(*error), "{name:?}");
            assert_eq!(error.rule(), *rule);
        }

        let filters: &[(&str, &str, TopicError)] = &[
            ("MQTT-4.7.3-1", "", TopicError::Empty),
            (
                "MQTT-4.7.3-2",
                "a/\0/#",
                TopicError::NullCharacter { offset: 2 },
            ),
            (
                "MQTT-4.7.3-3",
                &too_long,
                TopicError::TooLong {
                    len: MAX_TOPIC_LEN + 1,
                },
            ),
            (
                "MQTT-4.7.1-1",
                "sport/tennis#",
                TopicError::MisplacedMultiLevelWildcard { offset: 12 },
            ),
            (
                "MQTT-4.7.1-1",
                "sport/tennis/#/ranking",
                TopicError::MisplacedMultiLevelWildcard { offset: 13 },
            ),
            (
                "MQTT-4.7.1-1",
                "#/",
                TopicError::MisplacedMultiLevelWildcard { offset: 0 },
            ),
            (
                "MQTT-4.7.1-1",
                "a/##",
                TopicError::MisplacedMultiLevelWildcard { offset: 2 },
            ),
            (
                "MQTT-4.7.1-1",
                "#+",
                TopicError::MisplacedMultiLevelWildcard { offset: 0 },
            ),
            (
                "MQTT-4.7.1-2",
                "sport+",
                TopicError::MisplacedSingleLevelWildcard { offset: 5 },
            ),
            (
                "MQTT-4.7.1-2",
                "sport/+tennis",
                TopicError::MisplacedSingleLevelWildcard { offset: 6 },
            ),
            (
                "MQTT-4.7.1-2",
                "++",
                TopicError::MisplacedSingleLevelWildcard { offset: 0 },
            ),
            (
                "MQTT-4.7.1-2",
                "a/+#",
                TopicError::MisplacedSingleLevelWildcard { offset: 2 },
            ),
        ];
        for (rule, filter, error) in filters {
            assert_eq!(validate_topic_filter(filter), Err(*error), "{filter:?}");
            assert_eq!(error.rule(), *rule);
        }
    }

    #[test]
    fn errors_display_their_statement() {
        let e = TopicError::MisplacedSingleLevelWildcard { offset: 5 };
        assert_eq!(
            e.to_string(),
            "`+` at byte 5 is not a whole level [MQTT-4.7.1-2]"
        );
    }
}
