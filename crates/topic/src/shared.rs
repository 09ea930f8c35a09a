//! Shared subscriptions (§4.8.2): parsing `$share/{ShareName}/{filter}` and the identity of a
//! group.

use std::fmt;
use std::sync::Arc;

use crate::error::TopicError;
use crate::validate::{check_levels, check_string};

/// The prefix of a shared subscription's filter [MQTT-4.8.2-1].
pub const SHARE_PREFIX: &str = "$share/";

/// A topic filter of SUBSCRIBE or UNSUBSCRIBE, parsed: plain or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterKind<'a> {
    /// A non-shared subscription: the topic filter itself.
    Plain(&'a str),
    /// A shared subscription, `$share/{share_name}/{filter}` (§4.8.2).
    Shared {
        /// The ShareName: at least one character, no `/`, `+` or `#`.
        share_name: &'a str,
        /// The topic filter that messages are matched against.
        filter: &'a str,
    },
}

impl<'a> FilterKind<'a> {
    /// Parses and checks a subscription's filter. A filter that starts with `$share/` is
    /// shared: its ShareName must be at least one character [MQTT-4.8.2-1] without `+` or `#`,
    /// followed by `/` and a non-empty topic filter [MQTT-4.8.2-2]. Anything else is a plain
    /// topic filter (`$share` alone or `$shared/a` included). The rules of §4.7.3 apply to the
    /// whole string.
    pub fn parse(s: &'a str) -> Result<Self, TopicError> {
        check_string(s)?;
        let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
            check_levels(s, 0)?;
            return Ok(Self::Plain(s));
        };
        let (share_name, filter) = rest.split_once('/').unwrap_or((rest, ""));
        if share_name.is_empty() {
            return Err(TopicError::EmptyShareName);
        }
        if let Some(i) = share_name.bytes().position(|b| b == b'+' || b == b'#') {
            return Err(TopicError::InvalidShareName {
                offset: SHARE_PREFIX.len() + i,
            });
        }
        if filter.is_empty() {
            return Err(TopicError::MissingSharedFilter);
        }
        check_levels(filter, SHARE_PREFIX.len() + share_name.len() + 1)?;
        Ok(Self::Shared { share_name, filter })
    }

    /// The topic filter that topic names are matched against.
    pub const fn topic_filter(&self) -> &'a str {
        match *self {
            Self::Plain(filter) | Self::Shared { filter, .. } => filter,
        }
    }

    /// The ShareName of a shared subscription.
    pub const fn share_name(&self) -> Option<&'a str> {
        match *self {
            Self::Plain(_) => None,
            Self::Shared { share_name, .. } => Some(share_name),
        }
    }
}

/// A shared subscription group, `$share/{ShareName}/{filter}`: the group is its ShareName and
/// its topic filter together, so one ShareName under two filters is two groups. Cloning is a
/// reference count; equality and hashing are by the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedGroup(Arc<str>);

impl SharedGroup {
    /// The group of a shared subscription's whole filter, already parsed by
    /// [`FilterKind::parse`].
    pub(crate) fn new(shared_filter: &str) -> Self {
        Self(Arc::from(shared_filter))
    }

    /// The whole filter, `$share/{ShareName}/{filter}`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ShareName.
    pub fn share_name(&self) -> &str {
        self.parts().0
    }

    /// The topic filter.
    pub fn filter(&self) -> &str {
        self.parts().1
    }

    fn parts(&self) -> (&str, &str) {
        // The string passed `FilterKind::parse` as shared, so both parts exist.
        self.0
            .strip_prefix(SHARE_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or_default()
    }
}

impl fmt::Debug for SharedGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_filters_are_checked_as_topic_filters() {
        assert_eq!(
            FilterKind::parse("sport/#"),
            Ok(FilterKind::Plain("sport/#"))
        );
        // Only `$share/` makes a filter shared.
        assert_eq!(FilterKind::parse("$share"), Ok(FilterKind::Plain("$share")));
        assert_eq!(
            FilterKind::parse("$shared/a"),
            Ok(FilterKind::Plain("$shared/a"))
        );
        assert_eq!(
            FilterKind::parse("a/b#"),
            Err(TopicError::MisplacedMultiLevelWildcard { offset: 3 })
        );
    }

    #[test]
    fn shared_filters_split_into_share_name_and_filter() {
        let cases = [
            (
                "$share/consumer1/sport/tennis/+",
                "consumer1",
                "sport/tennis/+",
            ),
            ("$share/consumer1//finance", "consumer1", "/finance"),
            ("$share/g/#", "g", "#"),
            ("$share/g/$SYS/#", "g", "$SYS/#"),
            ("$share/g//", "g", "/"),
            ("$share/$share/a", "$share", "a"),
        ];
        for (s, share_name, filter) in cases {
            let kind = FilterKind::parse(s);
            assert_eq!(kind, Ok(FilterKind::Shared { share_name, filter }), "{s:?}");
            assert_eq!(kind.map(|k| k.topic_filter()), Ok(filter));
            let group = SharedGroup::new(s);
            assert_eq!(
                (group.share_name(), group.filter(), group.as_str()),
                (share_name, filter, s)
            );
        }
    }

    /// Each statement of §4.8.2 with the inputs that break it and the error they get.
    #[test]
    fn invalid_shared_filters_name_the_statement_they_break() {
        let cases: &[(&str, &str, TopicError)] = &[
            ("MQTT-4.8.2-1", "$share/", TopicError::EmptyShareName),
            ("MQTT-4.8.2-1", "$share//a", TopicError::EmptyShareName),
            (
                "MQTT-4.8.2-2",
                "$share/g+/a",
                TopicError::InvalidShareName { offset: 8 },
            ),
            (
                "MQTT-4.8.2-2",
                "$share/#/a",
                TopicError::InvalidShareName { offset: 7 },
            ),
            (
                "MQTT-4.8.2-2",
                "$share/+",
                TopicError::InvalidShareName { offset: 7 },
            ),
            (
                "MQTT-4.8.2-2",
                "$share/group",
                TopicError::MissingSharedFilter,
            ),
            (
                "MQTT-4.8.2-2",
                "$share/group/",
                TopicError::MissingSharedFilter,
            ),
            (
                "MQTT-4.7.1-1",
                "$share/g/a#",
                TopicError::MisplacedMultiLevelWildcard { offset: 10 },
            ),
            (
                "MQTT-4.7.1-2",
                "$share/g/a/b+",
                TopicError::MisplacedSingleLevelWildcard { offset: 12 },
            ),
            (
                "MQTT-4.7.3-2",
                "$share/g\0/a",
                TopicError::NullCharacter { offset: 8 },
            ),
        ];
        for (rule, s, error) in cases {
            assert_eq!(FilterKind::parse(s), Err(*error), "{s:?}");
            assert_eq!(error.rule(), *rule);
        }
        let too_long = format!("$share/g/{}", "a".repeat(65_535));
        assert_eq!(
            FilterKind::parse(&too_long),
            Err(TopicError::TooLong {
                len: too_long.len()
            })
        );
    }
}
