//! `Subscription`: one subscriber's subscription to one filter, as the index holds it.

use std::num::NonZeroU32;

use shoal_codec::SubscriptionOptions;

/// One subscriber's subscription to one filter: who, with which options, and the Subscription
/// Identifier it was made with (MQTT 5, §3.8.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription<S> {
    /// The subscriber: the broker's id of the session.
    pub subscriber: S,
    /// The options of the subscription.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier, to send back with each message it matches.
    pub identifier: Option<NonZeroU32>,
}
