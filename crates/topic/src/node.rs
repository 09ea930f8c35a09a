//! `Node`: one level of the subscription trie, and the walks down it: insert, remove with
//! pruning, and match.

use std::hash::Hash;

use crate::children::Children;
use crate::index::Removed;
use crate::leaf::Leaf;
use crate::level::split_level;
use crate::recipients::Recipients;

/// One level of the trie. The path from the root spells a topic filter, level by level; `+`
/// has its own child and `#`, always last, is the `multi` leaf of its parent, so matching
/// never compares a level with `+` or `#`. A node that holds no subscription and has no child
/// is removed from its parent: the trie holds no dead branch.
#[derive(Debug)]
pub(crate) struct Node<S> {
    /// Children by literal level.
    children: Children<Self>,
    /// The `+` child.
    plus: Option<Box<Self>>,
    /// Subscriptions to the filter that ends at this node.
    exact: Option<Box<Leaf<S>>>,
    /// Subscriptions to the filter that ends with `#` right below this node: they match this
    /// level and any number of levels below.
    multi: Option<Box<Leaf<S>>>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Self {
            children: Children::default(),
            plus: None,
            exact: None,
            multi: None,
        }
    }
}

impl<S: Copy + Eq + Hash> Node<S> {
    /// Whether the node holds nothing and can be pruned.
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_none()
            && self.multi.is_none()
    }

    /// The leaf of the topic filter `filter` below this node (the root), with the nodes on
    /// the way created as needed; `created` counts the new nodes.
    pub(crate) fn leaf_or_insert(&mut self, filter: &str, created: &mut usize) -> &mut Leaf<S> {
        let mut node = self;
        let mut rest = filter;
        let slot = loop {
            if rest == "#" {
                break &mut node.multi;
            }
            let (level, next) = split_level(rest);
            node = if level == "+" {
                node.plus.get_or_insert_with(|| {
                    *created += 1;
                    Box::default()
                })
            } else {
                node.children.get_or_insert(level, created)
            };
            match next {
                Some(next) => rest = next,
                None => break &mut node.exact,
            }
        };
        slot.get_or_insert_with(Box::default)
    }

    /// Removes the subscription of `subscriber` to the filter `rest` below this node (plain,
    /// or a member of the group `share_name`), then prunes the nodes left empty on the way
    /// back up; `pruned` counts them.
    pub(crate) fn remove(
        &mut self,
        rest: Option<&str>,
        subscriber: S,
        share_name: Option<&str>,
        pruned: &mut usize,
    ) -> Option<Removed<S>> {
        let rest = match rest {
            None => return remove_from(&mut self.exact, subscriber, share_name),
            Some("#") => return remove_from(&mut self.multi, subscriber, share_name),
            Some(rest) => rest,
        };
        let (level, next) = split_level(rest);
        if level == "+" {
            let child = self.plus.as_deref_mut()?;
            let removed = child.remove(next, subscriber, share_name, pruned)?;
            if child.is_empty() {
                self.plus = None;
                *pruned += 1;
            }
            Some(removed)
        } else {
            let child = self.children.get_mut(level)?;
            let removed = child.remove(next, subscriber, share_name, pruned)?;
            if child.is_empty() {
                self.children.remove(level);
                *pruned += 1;
            }
            Some(removed)
        }
    }

    /// Adds to `out` every subscription of this node (the root) whose filter matches `topic`.
    pub(crate) fn collect_root(&self, topic: &str, out: &mut Recipients<S>) {
        let (level, rest) = split_level(topic);
        // A filter that starts with a wildcard does not match a topic name that starts with
        // `$` [MQTT-4.7.2-1]: below the root, wildcards match `$` like any character.
        if !topic.starts_with('$') {
            if let Some(leaf) = &self.multi {
                out.add(leaf);
            }
            if let Some(child) = &self.plus {
                child.collect(rest, out);
            }
        }
        if let Some(child) = self.children.get(level) {
            child.collect(rest, out);
        }
    }

    /// Adds to `out` every subscription below this node whose filter matches the levels
    /// `rest` of the topic name, `None` when the topic ends at this node.
    fn collect(&self, rest: Option<&str>, out: &mut Recipients<S>) {
        // `#` matches the parent level too: `sport/#` matches `sport`.
        if let Some(leaf) = &self.multi {
            out.add(leaf);
        }
        let Some(rest) = rest else {
            if let Some(leaf) = &self.exact {
                out.add(leaf);
            }
            return;
        };
        let (level, rest) = split_level(rest);
        if let Some(child) = self.children.get(level) {
            child.collect(rest, out);
        }
        if let Some(child) = &self.plus {
            child.collect(rest, out);
        }
    }

    /// The nodes below this one, counted one by one.
    #[cfg(test)]
    pub(crate) fn count_descendants(&self) -> usize {
        let children: usize = match &self.children {
            Children::Few(few) => few.iter().map(|(_, n)| 1 + n.count_descendants()).sum(),
            Children::Many(many) => many.values().map(|n| 1 + n.count_descendants()).sum(),
        };
        children + self.plus.as_ref().map_or(0, |n| 1 + n.count_descendants())
    }
}

/// Removes a subscription from the leaf in `slot`, and the leaf once empty.
fn remove_from<S: Copy + Eq + Hash>(
    slot: &mut Option<Box<Leaf<S>>>,
    subscriber: S,
    share_name: Option<&str>,
) -> Option<Removed<S>> {
    let leaf = slot.as_deref_mut()?;
    let removed = leaf.remove(subscriber, share_name)?;
    if leaf.is_empty() {
        *slot = None;
    }
    Some(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_stay_small() {
        // Per-subscription memory is mostly nodes: watch their size.
        assert_eq!(size_of::<Children<u32>>(), 24);
        assert_eq!(size_of::<Node<u32>>(), 48);
    }
}
