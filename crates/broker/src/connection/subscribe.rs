//! SUBSCRIBE: the limits and the ACL's decision, the index, retained messages to send.

use std::collections::HashSet;
use std::sync::Arc;

use shoal_access::acl::SubscribeDecision;
use shoal_codec::{QoS, SubAckReasonCode};
use shoal_session::SubscribeRequest;
use shoal_topic::{FilterKind, Insertion};

use super::{Conn, Transport};
use crate::broker::{Pending, write};
use crate::metrics as m;
use crate::slot::SessionSlot;

impl<T: Transport> Conn<T> {
    /// Registers the requested subscriptions; returns the SUBACK results and the retained
    /// messages to send, per Retain Handling, and in a cluster, the routes the SUBACK waits
    /// for (by entry): a filter's first local subscriber writes its route, later ones wait
    /// for it while it is still pending.
    pub(super) fn subscribe(
        &mut self,
        slot: &Arc<SessionSlot>,
        requests: &[Option<SubscribeRequest>],
    ) -> (Subscribed, Vec<(usize, Pending)>) {
        let broker = Arc::clone(&self.broker);
        let now = broker.now();
        let mut results = Vec::with_capacity(requests.len());
        let mut retained = Vec::new();
        let mut routes = Vec::new();
        let limits = &broker.config.limits;
        // What the session holds already, asked once per request (a lookup, not a copy of
        // its subscriptions): the cost of a SUBSCRIBE does not grow with their number.
        let (held, mut count): (Vec<bool>, usize) = {
            let session = slot.lock();
            let held = match limits.max_subscriptions {
                Some(_) => requests
                    .iter()
                    .map(|r| {
                        r.as_ref()
                            .is_some_and(|r| session.has_subscription(&r.filter))
                    })
                    .collect(),
                None => Vec::new(),
            };
            (held, session.subscriptions().len())
        };
        // Filters this SUBSCRIBE adds: one repeated in it replaces the first [MQTT-3.8.4-3].
        let mut added: HashSet<&str> = HashSet::new();
        for (i, request) in requests.iter().enumerate() {
            let Some(request) = request else {
                results.push(Err(SubAckReasonCode::UnspecifiedError));
                continue;
            };
            let Some(inner) = acl_filter(&request.filter) else {
                results.push(Err(SubAckReasonCode::TopicFilterInvalid));
                continue;
            };
            if inner.split('/').count() > limits.max_topic_levels {
                results.push(Err(SubAckReasonCode::TopicFilterInvalid));
                continue;
            }
            let decision = match self.acl() {
                None => SubscribeDecision::Allow,
                Some(acl) => acl.subscribe(inner),
            };
            if decision == SubscribeDecision::Deny {
                metrics::counter!(m::ACL_DENIED, "action" => "subscribe").increment(1);
                tracing::debug!(filter = %request.filter, "subscription denied by the ACL");
                results.push(Err(SubAckReasonCode::NotAuthorized));
                continue;
            }
            if let Some(max) = limits.max_subscriptions {
                let replaces = held[i] || added.contains(request.filter.as_str());
                if !replaces && count >= max {
                    results.push(Err(SubAckReasonCode::QuotaExceeded));
                    continue;
                }
                if !replaces {
                    added.insert(request.filter.as_str());
                    count += 1;
                }
            }
            let filtered = decision == SubscribeDecision::Filtered;
            if filtered {
                slot.filter_with(self.acl().cloned());
            }
            let inserted = write(&broker.index).insert(
                slot.id,
                &request.filter,
                request.options,
                request.identifier,
            );
            match inserted {
                Ok(insertion) => {
                    if let Some(cluster) = broker.cluster() {
                        let route = match insertion {
                            Insertion::New { first: true } => {
                                Some(cluster.route_add(&request.filter))
                            }
                            _ => cluster.route_pending(&request.filter),
                        };
                        routes.extend(route.map(|r| (results.len(), r)));
                    }
                    results.push(Ok(request.options.qos));
                    let is_new = matches!(insertion, Insertion::New { .. });
                    let wanted = match request.options.retain_handling {
                        shoal_codec::RetainHandling::SendOnSubscribe => true,
                        shoal_codec::RetainHandling::SendIfNew => is_new,
                        shoal_codec::RetainHandling::DoNotSend => false,
                    };
                    // Retained messages are not sent for shared subscriptions (§4.8.2).
                    if wanted
                        && let Ok(FilterKind::Plain(filter)) = FilterKind::parse(&request.filter)
                    {
                        for message in broker.retained_for(filter, now) {
                            if filtered && !slot.may_receive(&message.topic) {
                                continue;
                            }
                            retained.push((message, request.options.qos, request.identifier));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(filter = %request.filter, error = %e, "subscription refused");
                    results.push(Err(SubAckReasonCode::TopicFilterInvalid));
                }
            }
        }
        ((results, retained), routes)
    }
}

/// The filter the ACL judges: a shared subscription's inner filter; `None` if invalid.
pub(super) fn acl_filter(filter: &str) -> Option<&str> {
    match FilterKind::parse(filter).ok()? {
        FilterKind::Plain(filter) => Some(filter),
        FilterKind::Shared { filter, .. } => Some(filter),
    }
}

/// The SUBACK results of one SUBSCRIBE and the retained messages to send after it.
pub(super) type Subscribed = (
    Vec<Result<QoS, SubAckReasonCode>>,
    Vec<(
        Arc<shoal_session::Message>,
        QoS,
        Option<std::num::NonZeroU32>,
    )>,
);
