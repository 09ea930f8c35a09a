//! `Leaf`: everything subscribed to one topic filter, plain and shared.

use std::hash::Hash;

use crate::index::{Insertion, Removed};
use crate::shared::SharedGroup;
use crate::subscribers::Subscribers;
use crate::subscription::Subscription;

/// The subscriptions to one topic filter: the plain ones and the shared groups whose filter
/// it is. A trie node holds one for the filters that end at it and one for those that end
/// with `#` right below it.
#[derive(Debug)]
pub(crate) struct Leaf<S> {
    /// Non-shared subscriptions, one per subscriber.
    pub(crate) plain: Subscribers<S>,
    /// Shared groups, one per ShareName; few, so a list.
    pub(crate) groups: Vec<Group<S>>,
}

/// The members of one shared group, one subscription per subscriber.
#[derive(Debug)]
pub(crate) struct Group<S> {
    pub(crate) group: SharedGroup,
    pub(crate) members: Subscribers<S>,
}

impl<S> Default for Leaf<S> {
    fn default() -> Self {
        Self {
            plain: Subscribers::default(),
            groups: Vec::new(),
        }
    }
}

impl<S: Copy + Eq + Hash> Leaf<S> {
    /// Whether no subscription is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    /// Adds `subscription`, or replaces the subscriber's existing one to the same filter
    /// [MQTT-3.8.4-3]. `shared` is the ShareName and the whole filter of a shared one.
    pub(crate) fn upsert(
        &mut self,
        subscription: Subscription<S>,
        shared: Option<(&str, &str)>,
    ) -> Insertion<S> {
        let list = match shared {
            None => &mut self.plain,
            Some((share_name, shared_filter)) => self.group_or_insert(share_name, shared_filter),
        };
        let first = list.is_empty();
        match list.upsert(subscription) {
            Some(previous) => Insertion::Replaced { previous },
            None => Insertion::New { first },
        }
    }

    /// Removes the subscription of `subscriber`: plain, or a member of the group `share_name`.
    pub(crate) fn remove(&mut self, subscriber: S, share_name: Option<&str>) -> Option<Removed<S>> {
        let Some(share_name) = share_name else {
            let subscription = self.plain.remove(subscriber)?;
            return Some(Removed {
                subscription,
                last: self.plain.is_empty(),
            });
        };
        let i = self.group_position(share_name)?;
        let subscription = self.groups[i].members.remove(subscriber)?;
        let last = self.groups[i].members.is_empty();
        if last {
            self.groups.swap_remove(i);
            if self.groups.is_empty() {
                self.groups = Vec::new();
            }
        }
        Some(Removed { subscription, last })
    }

    /// The members of the group `share_name`, created empty for the shared filter
    /// `shared_filter` if it does not exist.
    fn group_or_insert(&mut self, share_name: &str, shared_filter: &str) -> &mut Subscribers<S> {
        let i = match self.group_position(share_name) {
            Some(i) => i,
            None => {
                self.groups.reserve_exact(1);
                self.groups.push(Group {
                    group: SharedGroup::new(shared_filter),
                    members: Subscribers::default(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i].members
    }

    fn group_position(&self, share_name: &str) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.group.share_name() == share_name)
    }
}
