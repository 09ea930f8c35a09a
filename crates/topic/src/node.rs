//! `Node`: one level of the subscription trie, and the walks down it: insert, remove with
//! pruning, and match.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use ahash::RandomState;

use crate::index::Removed;
use crate::leaf::Leaf;
use crate::level::{Level, split_level};
use crate::recipients::Recipients;

/// Up to this many literal children are kept in a list and found by a linear scan; one more
/// turns the list into a hash map, and the map turns back into a list at half as many.
const FEW_CHILDREN: usize = 8;

/// One level of the trie. The path from the root spells a topic filter, level by level; `+`
/// has its own child and `#`, always last, is the `multi` leaf of its parent, so matching
/// never compares a level with `+` or `#`. A node that holds no subscription and has no child
/// is removed from its parent: the trie holds no dead branch.
#[derive(Debug)]
pub(crate) struct Node<S> {
    /// Children by literal level.
    children: Children<S>,
    /// The `+` child.
    plus: Option<Box<Self>>,
    /// Subscriptions to the filter that ends at this node.
    exact: Option<Box<Leaf<S>>>,
    /// Subscriptions to the filter that ends with `#` right below this node: they match this
    /// level and any number of levels below.
    multi: Option<Box<Leaf<S>>>,
}

/// The literal children of a node: a short list, or a map when there are many. Keys are
/// [`Level`]s, found by the bytes of a topic level without allocating.
#[derive(Debug)]
enum Children<S> {
    Few(Vec<(Level, Node<S>)>),
    #[expect(
        clippy::box_collection,
        reason = "keeps every node 48 bytes: the map is rare"
    )]
    Many(Box<HashMap<Level, Node<S>, RandomState>>),
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Self {
            children: Children::Few(Vec::new()),
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

impl<S: Copy + Eq + Hash> Children<S> {
    fn is_empty(&self) -> bool {
        match self {
            Self::Few(few) => few.is_empty(),
            Self::Many(many) => many.is_empty(),
        }
    }

    #[inline]
    fn get(&self, level: &str) -> Option<&Node<S>> {
        let key = level.as_bytes();
        match self {
            Self::Few(few) => few
                .iter()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, node)| node),
            Self::Many(many) => many.get(key),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<S>> {
        let key = level.as_bytes();
        match self {
            Self::Few(few) => few
                .iter_mut()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, node)| node),
            Self::Many(many) => many.get_mut(key),
        }
    }

    fn get_or_insert(&mut self, level: &str, created: &mut usize) -> &mut Node<S> {
        let key = level.as_bytes();
        if let Self::Few(few) = self
            && few.len() == FEW_CHILDREN
            && !few.iter().any(|(k, _)| k.as_bytes() == key)
        {
            let mut many = HashMap::with_capacity_and_hasher(2 * FEW_CHILDREN, RandomState::new());
            many.extend(few.drain(..));
            *self = Self::Many(Box::new(many));
        }
        match self {
            Self::Few(few) => {
                let i = match few.iter().position(|(k, _)| k.as_bytes() == key) {
                    Some(i) => i,
                    None => {
                        *created += 1;
                        few.reserve_exact(1);
                        few.push((Level::new(level), Node::default()));
                        few.len() - 1
                    }
                };
                &mut few[i].1
            }
            Self::Many(many) => match many.entry(Level::new(level)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    *created += 1;
                    e.insert(Node::default())
                }
            },
        }
    }

    /// Removes a child (an empty one: its subtree is gone already) and gives memory back.
    fn remove(&mut self, level: &str) {
        let key = level.as_bytes();
        match self {
            Self::Few(few) => {
                if let Some(i) = few.iter().position(|(k, _)| k.as_bytes() == key) {
                    few.swap_remove(i);
                    if few.len() <= few.capacity() / 2 {
                        few.shrink_to_fit();
                    }
                }
            }
            Self::Many(many) => {
                many.remove(key);
                if many.len() <= FEW_CHILDREN / 2 {
                    *self = Self::Few(many.drain().collect());
                } else if many.len() <= many.capacity() / 4 {
                    many.shrink_to(2 * many.len());
                }
            }
        }
    }
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

    #[test]
    fn children_turn_into_a_map_and_back() {
        let mut children = Children::<u32>::Few(Vec::new());
        let mut created = 0;
        let names: Vec<String> = (0..40).map(|n| format!("level{n}")).collect();
        for name in &names {
            let _ = children.get_or_insert(name, &mut created);
        }
        assert_eq!(created, 40);
        assert!(matches!(children, Children::Many(_)));
        // Looking up an existing child creates nothing.
        let _ = children.get_or_insert("level7", &mut created);
        assert_eq!(created, 40);
        for name in &names[..37] {
            children.remove(name);
        }
        let Children::Few(few) = &children else {
            panic!("3 children should be a list again")
        };
        assert_eq!(few.len(), 3);
        for name in &names {
            assert_eq!(
                children.get(name).is_some(),
                names[37..].contains(name),
                "{name}"
            );
        }
    }
}
