//! `Children`: the literal children of a trie node, shared by the subscription trie and the
//! retained index. A short list, or a hash map when there are many; keys are [`Level`]s,
//! found by the bytes of a topic level without allocating. The map is seeded once from the
//! OS: clients choose topic levels, so it must resist collision flooding.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use ahash::RandomState;

use crate::level::Level;

/// Up to this many children are kept in a list and found by a linear scan; one more turns
/// the list into a hash map, and the map turns back into a list at half as many.
pub(crate) const FEW_CHILDREN: usize = 8;

/// The children of a node, `N` being the node type.
#[derive(Debug)]
pub(crate) enum Children<N> {
    Few(Vec<(Level, N)>),
    #[expect(
        clippy::box_collection,
        reason = "keeps every node small: the map is rare"
    )]
    Many(Box<HashMap<Level, N, RandomState>>),
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<N> Children<N> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(few) => few.len(),
            Self::Many(many) => many.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        let key = level.as_bytes();
        match self {
            Self::Few(few) => few
                .iter()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, node)| node),
            Self::Many(many) => many.get(key),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        let key = level.as_bytes();
        match self {
            Self::Few(few) => few
                .iter_mut()
                .find(|(k, _)| k.as_bytes() == key)
                .map(|(_, node)| node),
            Self::Many(many) => many.get_mut(key),
        }
    }

    /// Calls `f` with the level and the node of each child.
    #[inline]
    pub(crate) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8], &'a N)) {
        match self {
            Self::Few(few) => few.iter().for_each(|(k, node)| f(k.as_bytes(), node)),
            Self::Many(many) => many.iter().for_each(|(k, node)| f(k.as_bytes(), node)),
        }
    }

    /// The child at `level`, created if need be; `created` counts the new nodes.
    pub(crate) fn get_or_insert(&mut self, level: &str, created: &mut usize) -> &mut N
    where
        N: Default,
    {
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
                        few.push((Level::new(level), N::default()));
                        few.len() - 1
                    }
                };
                &mut few[i].1
            }
            Self::Many(many) => match many.entry(Level::new(level)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    *created += 1;
                    e.insert(N::default())
                }
            },
        }
    }

    /// Takes the child at `level` out, with its subtree, and gives memory back.
    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let key = level.as_bytes();
        match self {
            Self::Few(few) => {
                let i = few.iter().position(|(k, _)| k.as_bytes() == key)?;
                let (_, node) = few.swap_remove(i);
                if few.len() <= few.capacity() / 2 {
                    few.shrink_to_fit();
                }
                Some(node)
            }
            Self::Many(many) => {
                let node = many.remove(key)?;
                if many.len() <= FEW_CHILDREN / 2 {
                    *self = Self::Few(many.drain().collect());
                } else if many.len() <= many.capacity() / 4 {
                    many.shrink_to(2 * many.len());
                }
                Some(node)
            }
        }
    }

    /// Moves every child into `out`, levels dropped.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<N>) {
        match self {
            Self::Few(few) => out.extend(few.drain(..).map(|(_, node)| node)),
            Self::Many(many) => out.extend(many.drain().map(|(_, node)| node)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
