//! Errors of topic names, topic filters and the subscription index. Each error that breaks the
//! specification names the statement it breaks ([`TopicError::rule`]).

/// Why a string is not a valid topic name or topic filter (§4.7, §4.8.2). Offsets are byte
/// offsets into the whole string as received, `$share/` prefix included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// An empty topic name or topic filter [MQTT-4.7.3-1].
    #[error("empty topic [MQTT-4.7.3-1]")]
    Empty,
    /// The null character U+0000 [MQTT-4.7.3-2].
    #[error("U+0000 at byte {offset} [MQTT-4.7.3-2]")]
    NullCharacter {
        /// Where it is.
        offset: usize,
    },
    /// More than 65,535 bytes [MQTT-4.7.3-3].
    #[error("topic of {len} bytes, more than 65535 [MQTT-4.7.3-3]")]
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// A topic name contains a wildcard, `+` or `#` [MQTT-4.7.0-1].
    #[error("wildcard in a topic name at byte {offset} [MQTT-4.7.0-1]")]
    WildcardInName {
        /// Where it is.
        offset: usize,
    },
    /// A `#` that is not a whole level, or not the last one [MQTT-4.7.1-1].
    #[error("`#` at byte {offset} is not the whole last level [MQTT-4.7.1-1]")]
    MisplacedMultiLevelWildcard {
        /// Where it is.
        offset: usize,
    },
    /// A `+` that is not a whole level [MQTT-4.7.1-2].
    #[error("`+` at byte {offset} is not a whole level [MQTT-4.7.1-2]")]
    MisplacedSingleLevelWildcard {
        /// Where it is.
        offset: usize,
    },
    /// `$share/` followed by an empty ShareName [MQTT-4.8.2-1].
    #[error("empty ShareName after `$share/` [MQTT-4.8.2-1]")]
    EmptyShareName,
    /// A ShareName that contains `+` or `#` [MQTT-4.8.2-2].
    #[error("wildcard in ShareName at byte {offset} [MQTT-4.8.2-2]")]
    InvalidShareName {
        /// Where the wildcard is.
        offset: usize,
    },
    /// A ShareName not followed by `/` and a topic filter [MQTT-4.8.2-2].
    #[error("no topic filter after the ShareName [MQTT-4.8.2-2]")]
    MissingSharedFilter,
}

impl TopicError {
    /// The statement of the specification that the string breaks, e.g. `MQTT-4.7.1-2`.
    pub const fn rule(&self) -> &'static str {
        match self {
            Self::Empty => "MQTT-4.7.3-1",
            Self::NullCharacter { .. } => "MQTT-4.7.3-2",
            Self::TooLong { .. } => "MQTT-4.7.3-3",
            Self::WildcardInName { .. } => "MQTT-4.7.0-1",
            Self::MisplacedMultiLevelWildcard { .. } => "MQTT-4.7.1-1",
            Self::MisplacedSingleLevelWildcard { .. } => "MQTT-4.7.1-2",
            Self::EmptyShareName => "MQTT-4.8.2-1",
            Self::InvalidShareName { .. } | Self::MissingSharedFilter => "MQTT-4.8.2-2",
        }
    }
}

/// Why [`SubscriptionIndex::insert`](crate::SubscriptionIndex::insert) refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// The filter breaks the specification: answer SUBACK 0x8F, Topic Filter invalid.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(#[from] TopicError),
    /// The topic filter has more levels than the index holds ([`MAX_FILTER_LEVELS`]): an
    /// implementation limit that keeps the trie's depth, and so its recursion, bounded.
    ///
    /// [`MAX_FILTER_LEVELS`]: crate::MAX_FILTER_LEVELS
    #[error("topic filter of {levels} levels, more than the {max} the index holds", max = crate::MAX_FILTER_LEVELS)]
    TooManyLevels {
        /// The levels of the topic filter.
        levels: usize,
    },
}
