//! shoal-topic: MQTT topic names and topic filters (§4.7), shared subscriptions (§4.8.2), and
//! the subscription index that answers, for each PUBLISH, who gets the message. The rules are
//! the same in MQTT 3.1.1 and 5.0.
//!
//! Sans-IO and synchronous: this crate never touches a socket, a clock, a task or a lock, and
//! never decides delivery. The broker owns a [`SubscriptionIndex`] per node, feeds it SUBSCRIBE
//! and UNSUBSCRIBE, and asks [`SubscriptionIndex::match_topic`] for each message; access
//! control, picking a member of a shared group, queueing and routes between nodes are the
//! broker's. Hash maps are seeded once from the OS by `ahash`, against collision flooding
//! through topic levels that clients choose; no result depends on the seed.
//!
//! - Validation follows the specification to the letter, with a [`TopicError`] that names
//!   the statement broken ([`TopicError::rule`]): [`validate_topic_name`],
//!   [`validate_topic_filter`], and [`FilterKind::parse`] for the filters of SUBSCRIBE, which
//!   may be shared.
//! - [`matches()`] checks one filter against one topic name, the plain way; the index is
//!   tested against it.
//! - [`filter_covers`] and [`filters_intersect`] relate two filters by the topic names they
//!   match, so that access control can decide a wildcard subscription once, when it is made.
//! - [`SubscriptionIndex`] is a trie of topic levels, generic over the subscriber id.
//!   Matching fills a [`Recipients`] buffer that the caller reuses, without allocating once
//!   warm: each plain subscriber once with its aggregated QoS and Subscription Identifiers,
//!   each shared group with its members.
//! - [`RetainedIndex`] holds one value per topic name, the retained messages, in a trie of
//!   topic levels generic over the value, and answers a SUBSCRIBE's filter with every value
//!   whose topic it matches, visiting only the branches the filter allows.
//!
//! Main types: [`SubscriptionIndex`], [`Recipients`], [`RetainedIndex`], [`Subscription`],
//! [`FilterKind`], [`SharedGroup`], [`TopicError`].

mod children;
mod error;
mod index;
mod leaf;
mod level;
mod matches;
mod node;
mod recipients;
mod relation;
mod retained;
mod shared;
mod subscribers;
mod subscription;
mod validate;

pub use error::{InsertError, TopicError};
pub use index::{Insertion, MAX_FILTER_LEVELS, Removed, SubscriptionIndex};
pub use matches::matches;
pub use recipients::{Recipient, Recipients, SharedRecipients};
pub use relation::{filter_covers, filters_intersect};
pub use retained::RetainedIndex;
pub use shared::{FilterKind, SHARE_PREFIX, SharedGroup};
pub use subscription::Subscription;
pub use validate::{MAX_TOPIC_LEN, validate_topic_filter, validate_topic_name};
