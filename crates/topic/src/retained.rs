//! `RetainedIndex`: the retained messages of a node, one per topic name, in a trie of topic
//! levels, and the question asked of them on each SUBSCRIBE: which of them match this filter.

use std::{fmt, iter, str};

use crate::children::Children;
use crate::level::split_level;

/// One value per topic name, typically the retained message of that topic (§3.3.1.3), and
/// the topic filters of SUBSCRIBE asked against them.
///
/// `V` is whatever the broker keeps per retained message, an `Arc` of it for instance; the
/// index never clones it. Topic names are those of PUBLISH: valid ([`validate_topic_name`]),
/// so they have at least one level, empty levels count, and a leading `$` is a character
/// like any other until a filter starts with a wildcard.
///
/// The trie has one node per topic level, the root apart. Asking a filter costs one lookup
/// per literal level, one visit per child where it has a `+`, and one visit per node of the
/// subtree under its `#`: the nodes along the paths the filter allows, never all the topics
/// stored. Topic names are not limited in depth (65,535 bytes make 65,536 empty levels), so
/// no walk recurses, dropping included. A removal frees the nodes left empty at once.
///
/// [`validate_topic_name`]: crate::validate_topic_name
pub struct RetainedIndex<V> {
    root: Node<V>,
    /// Nodes below the root.
    nodes: usize,
    /// Values stored.
    len: usize,
}

impl<V> RetainedIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            nodes: 0,
            len: 0,
        }
    }

    /// How many topics hold a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic holds a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many trie nodes, the root apart: 0 when the index is empty.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Stores `value` for `topic`, and returns the value it replaces, if any.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let Self { root, nodes, len } = self;
        let mut node = root;
        for level in levels(topic) {
            node = node.children.get_or_insert(level, nodes);
        }
        let previous = node.value.replace(value);
        *len += usize::from(previous.is_none());
        previous
    }

    /// The value stored for `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in levels(topic) {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Removes and returns the value stored for `topic`, and frees the nodes that are left
    /// with neither a value nor a child.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        // First, without changing anything: the depth of the topic's node, and the depth of
        // the deepest node on its path that stays once the value has gone (the root, at
        // worst). Every node below that one holds no value and has a single child, the next
        // on the path, except the topic's own node, which has none.
        let mut node = &self.root;
        let mut depth = 0;
        let mut stays = 0;
        for level in levels(topic) {
            if node.value.is_some() || node.children.len() > 1 {
                stays = depth;
            }
            node = node.children.get(level)?;
            depth += 1;
        }
        node.value.as_ref()?;
        if !node.children.is_empty() {
            stays = depth;
        }

        // Then down again to the node that stays, and off with the branch below it.
        let mut levels = levels(topic);
        let mut node = &mut self.root;
        for level in levels.by_ref().take(stays) {
            // Found on the way down already.
            node = node.children.get_mut(level)?;
        }
        let value = if stays == depth {
            node.value.take()
        } else {
            let mut branch = node.children.remove(levels.next()?)?;
            for level in levels {
                branch = branch.children.remove(level)?;
            }
            self.nodes -= depth - stays;
            branch.value.take()
        };
        self.len -= 1;
        value
    }

    /// Calls `f` with the topic and the value of every stored topic that the topic filter
    /// `filter` matches (§4.7), in no particular order: `+` matches any one level, `#` the
    /// parent level and any number below (`a/#` matches `a`), and a filter that starts with
    /// a wildcard matches no topic that starts with `$` [MQTT-4.7.2-1].
    ///
    /// `filter` is the topic filter of a subscription, valid ([`validate_topic_filter`]),
    /// the inner one for a shared subscription ([`FilterKind::topic_filter`]); an invalid one
    /// gives an unspecified answer, never a panic. The topic is built in one buffer per
    /// call, level by level: when the value carries its topic, [`for_each_match_value`] is
    /// cheaper.
    ///
    /// [`validate_topic_filter`]: crate::validate_topic_filter
    /// [`FilterKind::topic_filter`]: crate::FilterKind::topic_filter
    /// [`for_each_match_value`]: Self::for_each_match_value
    pub fn for_each_match(&self, filter: &str, f: impl FnMut(&str, &V)) {
        self.walk::<true>(Some(filter), f);
    }

    /// Calls `f` with the value of every stored topic that the topic filter `filter`
    /// matches, as [`for_each_match`] does, without building the topics. Allocates nothing
    /// when `filter` has no wildcard.
    ///
    /// [`for_each_match`]: Self::for_each_match
    pub fn for_each_match_value(&self, filter: &str, mut f: impl FnMut(&V)) {
        self.walk::<false>(Some(filter), |_, value| f(value));
    }

    /// Keeps only the values for which `keep` returns `true`, and returns how many it
    /// removed; `keep` sees every topic, those that start with `$` too. For expiry sweeps:
    /// one walk over the whole trie, then one [`remove`] per topic refused, whose nodes are
    /// freed as usual.
    ///
    /// [`remove`]: Self::remove
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &V) -> bool) -> usize {
        // The refused topics, end to end, and where each one ends.
        let mut refused = String::new();
        let mut ends = Vec::new();
        self.walk::<true>(None, |topic, value| {
            if !keep(topic, value) {
                refused.push_str(topic);
                ends.push(refused.len());
            }
        });
        let mut start = 0;
        for &end in &ends {
            let removed = self.remove(&refused[start..end]);
            debug_assert!(removed.is_some(), "{:?} was found", &refused[start..end]);
            start = end;
        }
        ends.len()
    }

    /// Calls `f` for each value that `filter` matches, or for every value when `filter` is
    /// `None`; with its topic when `NAMED`, else with `""`. Depth first: literal levels are
    /// followed in a loop, and only the children a wildcard fans out to wait on a stack.
    fn walk<const NAMED: bool>(&self, filter: Option<&str>, f: impl FnMut(&str, &V)) {
        let (rest, root) = match filter {
            Some(filter) => (Rest::Levels(filter), Root::WildcardsSkipDollar),
            None => (Rest::All, Root::Everything),
        };
        let mut walk = Walk::<V, NAMED, _> {
            stack: Vec::new(),
            // Most topics are shorter than this: one allocation.
            topic: Vec::with_capacity(if NAMED { 128 } else { 0 }),
            f,
        };
        walk.visit(&self.root, rest, root);
        while let Some(frame) = walk.stack.pop() {
            if NAMED {
                walk.topic.truncate(frame.parent_len);
                walk.topic.push(b'/');
                walk.topic.extend_from_slice(frame.level);
            }
            walk.visit(frame.node, frame.rest, Root::No);
        }
    }
}

/// What is left of the filter at a node of a walk.
#[derive(Debug, Clone, Copy)]
enum Rest<'a> {
    /// These levels of the filter.
    Levels(&'a str),
    /// Nothing: the filter ends at this node.
    End,
    /// Everything: the node is under a `#`, or the walk visits every topic.
    All,
}

impl Rest<'_> {
    /// Whether the filter matches a node with this rest, given that the node has a value.
    fn matches_here(self) -> bool {
        matches!(self, Self::End | Self::All | Self::Levels("#"))
    }
}

/// Whether a node of a walk is the root, and if so whether it applies the `$` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    /// Not the root.
    No,
    /// The root of a filter's walk: a first-level wildcard skips topics that start with `$`
    /// [MQTT-4.7.2-1].
    WildcardsSkipDollar,
    /// The root of a walk over every topic.
    Everything,
}

/// A node still to visit.
struct Frame<'a, V> {
    node: &'a Node<V>,
    /// The node's level.
    level: &'a [u8],
    /// The length of the parent's topic in the walk's buffer.
    parent_len: usize,
    rest: Rest<'a>,
}

/// One walk down the trie, depth first.
struct Walk<'a, V, const NAMED: bool, F> {
    /// The nodes still to visit.
    stack: Vec<Frame<'a, V>>,
    /// `/` and the levels of the path to the node visited, `NAMED` only: its topic after the
    /// first byte.
    topic: Vec<u8>,
    /// What to call for each match.
    f: F,
}

impl<'a, V, const NAMED: bool, F: FnMut(&str, &V)> Walk<'a, V, NAMED, F> {
    /// Visits `node`, whose topic is in the buffer, with `rest` of the filter left: reports
    /// what matches, follows literal levels down, and stacks the children a wildcard fans
    /// out to.
    fn visit(&mut self, mut node: &'a Node<V>, mut rest: Rest<'a>, mut root: Root) {
        loop {
            let levels = match rest {
                Rest::End => return self.report(node),
                // `#` matches the parent level too: `a/#` matches `a`.
                Rest::All | Rest::Levels("#") => {
                    self.report(node);
                    return self.fan_out(node, Rest::All, root);
                }
                Rest::Levels(levels) => levels,
            };
            let (level, next) = split_level(levels);
            rest = next.map_or(Rest::End, Rest::Levels);
            if level == "+" {
                return self.fan_out(node, rest, root);
            }
            let Some(child) = node.children.get(level) else {
                return;
            };
            if NAMED {
                self.topic.push(b'/');
                self.topic.extend_from_slice(level.as_bytes());
            }
            node = child;
            root = Root::No;
        }
    }

    /// Stacks the children of `node`, each with `rest` of the filter to match; a child
    /// without children of its own (it has a value, then) is reported at once if it matches,
    /// and never stacked.
    fn fan_out(&mut self, node: &'a Node<V>, rest: Rest<'a>, root: Root) {
        let skip_dollar = root == Root::WildcardsSkipDollar;
        let parent_len = self.topic.len();
        let leaves_match = rest.matches_here();
        node.children.for_each(|level, child| {
            if skip_dollar && level.first() == Some(&b'$') {
                return;
            }
            if !child.children.is_empty() {
                self.stack.push(Frame {
                    node: child,
                    level,
                    parent_len,
                    rest,
                });
            } else if leaves_match {
                if NAMED {
                    self.topic.push(b'/');
                    self.topic.extend_from_slice(level);
                }
                self.report(child);
                if NAMED {
                    self.topic.truncate(parent_len);
                }
            }
        });
    }

    /// Calls `f` with the value of `node`, if it has one.
    fn report(&mut self, node: &Node<V>) {
        if let Some(value) = &node.value {
            let name = if NAMED {
                // The root holds no value: the topic has its leading `/`.
                let bytes = self.topic.get(1..).unwrap_or_default();
                str::from_utf8(bytes).expect("levels are cut from `&str`s at `/`, joined by `/`")
            } else {
                ""
            };
            (self.f)(name, value);
        }
    }
}

/// The levels of a topic name, first to last.
fn levels(topic: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(topic);
    iter::from_fn(move || {
        let (level, next) = split_level(rest?);
        rest = next;
        Some(level)
    })
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// One level of the trie: the path from the root spells a topic name. A node with neither a
/// value nor a child is removed from its parent: the trie holds no dead branch.
struct Node<V> {
    children: Children<Self>,
    /// The value of the topic that ends at this node. Always `None` at the root: a topic name
    /// has at least one level.
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: Children::default(),
            value: None,
        }
    }
}

impl<V> Drop for Node<V> {
    /// Drops the subtree with a loop and a stack of its own: a chain of 65,536 levels would
    /// overflow the thread's stack if each node dropped its children recursively.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut orphans = Vec::new();
        self.children.drain_into(&mut orphans);
        while let Some(mut node) = orphans.pop() {
            // Childless now, `node` drops without going deeper.
            node.children.drain_into(&mut orphans);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::MAX_TOPIC_LEN;

    /// An index holding each topic with its position in `topics` as value.
    fn index_of(topics: &[&str]) -> RetainedIndex<usize> {
        let mut index = RetainedIndex::new();
        for (n, topic) in topics.iter().enumerate() {
            assert_eq!(index.insert(topic, n), None, "{topic:?}");
        }
        index
    }

    /// The topics `filter` matches, sorted, checked against the values and against
    /// [`RetainedIndex::for_each_match_value`].
    fn found(index: &RetainedIndex<usize>, filter: &str) -> Vec<String> {
        let mut named = Vec::new();
        index.for_each_match(filter, |topic, &value| {
            assert_eq!(index.get(topic), Some(&value), "{filter:?} gave {topic:?}");
            named.push((topic.to_owned(), value));
        });
        let mut values = Vec::new();
        index.for_each_match_value(filter, |&value| values.push(value));
        let mut named_values: Vec<_> = named.iter().map(|(_, v)| *v).collect();
        named_values.sort_unstable();
        values.sort_unstable();
        assert_eq!(named_values, values, "{filter:?}");
        let mut topics: Vec<_> = named.into_iter().map(|(t, _)| t).collect();
        topics.sort_unstable();
        topics
    }

    fn sorted(topics: &[&str]) -> Vec<String> {
        let mut topics: Vec<_> = topics.iter().map(|&t| t.to_owned()).collect();
        topics.sort_unstable();
        topics
    }

    /// The nodes below `node`, counted one by one, without recursion.
    fn count_descendants<V>(node: &Node<V>) -> usize {
        let mut count = 0;
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            node.children.for_each(|_, child| {
                count += 1;
                stack.push(child);
            });
        }
        count
    }

    /// The examples of §4.7, the other way round: the topics each filter finds.
    #[test]
    fn filters_find_the_topics_of_the_specification_examples() {
        let topics = [
            "sport",
            "sport/",
            "sports",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "$SYS",
        ];
        let index = index_of(&topics);
        let cases: &[(&str, &[&str])] = &[
            (
                "sport/tennis/player1/#",
                &[
                    "sport/tennis/player1",
                    "sport/tennis/player1/ranking",
                    "sport/tennis/player1/score/wimbledon",
                ],
            ),
            (
                "sport/tennis/+",
                &["sport/tennis/player1", "sport/tennis/player2"],
            ),
            ("sport/+", &["sport/"]),
            ("+", &["sport", "sports", "finance"]),
            ("+/+", &["sport/", "/finance"]),
            ("/+", &["/finance"]),
            ("+/tennis/#", &topics[3..7]),
            ("sport/+/player1", &["sport/tennis/player1"]),
            ("$SYS/#", &["$SYS/monitor/Clients", "$SYS"]),
            ("$SYS/monitor/+", &["$SYS/monitor/Clients"]),
            ("+/monitor/Clients", &[]),
            ("sport/tennis/player1", &["sport/tennis/player1"]),
            ("sport/tennis", &[]),
            ("Sport", &[]),
        ];
        for (filter, expected) in cases {
            assert_eq!(found(&index, filter), sorted(expected), "{filter:?}");
        }
    }

    #[test]
    fn first_level_wildcards_skip_dollar_topics() {
        let index = index_of(&["$SYS/broker/load", "$SYS", "$x/a", "a/$SYS", "a"]);
        assert_eq!(found(&index, "#"), ["a", "a/$SYS"]);
        assert_eq!(found(&index, "+"), ["a"]);
        assert_eq!(found(&index, "+/#"), ["a", "a/$SYS"]);
        assert_eq!(found(&index, "+/+"), ["a/$SYS"]);
        assert_eq!(found(&index, "+/broker/load"), Vec::<String>::new());
        // Below the first level, `$` is a character like any other.
        assert_eq!(found(&index, "a/+"), ["a/$SYS"]);
        assert_eq!(found(&index, "a/#"), ["a", "a/$SYS"]);
        // A literal `$` level finds its topics, wildcards after it included.
        assert_eq!(found(&index, "$SYS/#"), ["$SYS", "$SYS/broker/load"]);
        assert_eq!(found(&index, "$SYS/+/load"), ["$SYS/broker/load"]);
        assert_eq!(found(&index, "$x/+"), ["$x/a"]);
    }

    #[test]
    fn multi_level_wildcard_matches_the_parent_level() {
        let index = index_of(&["a", "a/b", "a/b/c", "a/", "ab"]);
        assert_eq!(found(&index, "a/#"), ["a", "a/", "a/b", "a/b/c"]);
        assert_eq!(found(&index, "a/b/#"), ["a/b", "a/b/c"]);
        assert_eq!(found(&index, "a/b/c/#"), ["a/b/c"]);
        assert_eq!(found(&index, "a/+/#"), ["a/", "a/b", "a/b/c"]);
        assert_eq!(found(&index, "#"), ["a", "a/", "a/b", "a/b/c", "ab"]);
        // A parent without a value of its own: only its subtree.
        let index = index_of(&["x/y"]);
        assert_eq!(found(&index, "x/#"), ["x/y"]);
    }

    #[test]
    fn single_level_wildcard_matches_empty_levels() {
        let index = index_of(&["a//b", "a/x/b", "/", "//", "a/", "a"]);
        assert_eq!(found(&index, "a/+/b"), ["a//b", "a/x/b"]);
        assert_eq!(found(&index, "a//b"), ["a//b"]);
        assert_eq!(found(&index, "a/b"), Vec::<String>::new());
        assert_eq!(found(&index, "+/+"), ["/", "a/"]);
        assert_eq!(found(&index, "+/+/+"), ["//", "a//b", "a/x/b"]);
        assert_eq!(found(&index, "/"), ["/"]);
        assert_eq!(found(&index, "/+"), ["/"]);
        assert_eq!(found(&index, "+"), ["a"]);
        assert_eq!(found(&index, "/#"), ["/", "//"]);
        assert_eq!(found(&index, "a/+"), ["a/"]);
    }

    #[test]
    fn insert_replaces_and_returns_the_previous_value() {
        let mut index = RetainedIndex::new();
        assert_eq!(index.insert("a/b", 1), None);
        assert_eq!(index.insert("a/b", 2), Some(1));
        assert_eq!(index.insert("a", 3), None);
        assert_eq!((index.len(), index.node_count()), (2, 2));
        assert_eq!(index.get("a/b"), Some(&2));
        assert_eq!(index.get("a"), Some(&3));
        assert_eq!(index.get("a/"), None);
        assert_eq!(index.get("a/b/c"), None);
        assert_eq!(index.get("b"), None);
    }

    #[test]
    fn removing_everything_frees_every_node() {
        let mut topics = vec![
            "a/b/c",
            "a/b",
            "a",
            "a/",
            "/",
            "//",
            "a//",
            "$SYS",
            "$SYS/load",
            "b/c/d/e",
        ];
        // Many children, to go through a map and back.
        let wide: Vec<String> = (0..50).map(|n| format!("wide/{n}/x")).collect();
        topics.extend(wide.iter().map(String::as_str));
        let mut index = index_of(&topics);
        assert_eq!(index.node_count(), count_descendants(&index.root));
        assert_eq!(index.len(), topics.len());

        for (n, topic) in topics.iter().enumerate().rev() {
            assert_eq!(index.remove(topic), Some(n), "{topic:?}");
            assert_eq!(index.remove(topic), None, "{topic:?}");
            assert_eq!(index.node_count(), count_descendants(&index.root));
        }
        assert_eq!((index.len(), index.node_count()), (0, 0));
        assert!(index.is_empty());
        assert!(index.root.children.is_empty());
        assert!(found(&index, "#").is_empty());
    }

    #[test]
    fn removing_one_topic_keeps_its_neighbours() {
        let mut index = index_of(&["a/b/c/d", "a/b"]);
        assert_eq!(index.node_count(), 4);
        // `c` and `d` go, `a/b` stays.
        assert_eq!(index.remove("a/b/c/d"), Some(0));
        assert_eq!(index.node_count(), 2);
        assert_eq!(found(&index, "#"), ["a/b"]);

        // A value above, a branch beside, a branch below.
        let mut index = index_of(&["a/b/c", "a/x", "a/b/c/d/e", "a"]);
        assert_eq!(index.node_count(), 6);
        assert_eq!(index.remove("a/b/c"), Some(0));
        assert_eq!(index.node_count(), 6, "`a/b/c` leads to `a/b/c/d/e`");
        assert_eq!(index.remove("a/b/c/d/e"), Some(2));
        assert_eq!(index.node_count(), 2, "`a/b` down to `e` go");
        assert_eq!(index.remove("a"), Some(3));
        assert_eq!(index.node_count(), 2, "`a` leads to `a/x`");
        assert_eq!(found(&index, "#"), ["a/x"]);

        // Removing what is not there changes nothing.
        for topic in ["a", "a/x/y", "a/+", "b", "a/"] {
            assert_eq!(index.remove(topic), None, "{topic:?}");
        }
        assert_eq!((index.len(), index.node_count()), (1, 2));
    }

    #[test]
    fn retain_removes_what_it_refuses_and_frees_the_nodes() {
        let topics = ["a/b", "a/b/c", "a/c", "$SYS/x", "$SYS", "b"];
        let mut index = index_of(&topics);
        let mut seen = Vec::new();
        let removed = index.retain(|topic, &value| {
            assert_eq!(topics[value], topic);
            seen.push(topic.to_owned());
            value % 2 == 0
        });
        seen.sort_unstable();
        assert_eq!(seen, sorted(&topics), "every topic, `$` ones included");
        assert_eq!(removed, 3);
        assert_eq!(index.len(), 3);
        assert_eq!(index.node_count(), count_descendants(&index.root));
        assert_eq!(found(&index, "#"), ["a/b", "a/c"]);
        assert_eq!(found(&index, "$SYS/#"), ["$SYS"]);

        assert_eq!(index.retain(|_, _| false), 3);
        assert_eq!((index.len(), index.node_count()), (0, 0));
        assert_eq!(index.retain(|_, _| false), 0);
    }

    #[test]
    fn children_turn_into_a_map_and_back() {
        let names: Vec<String> = (0..40).map(|n| format!("level{n}")).collect();
        let mut index = RetainedIndex::new();
        for (n, name) in names.iter().enumerate() {
            index.insert(name, n);
        }
        assert!(matches!(index.root.children, Children::Many(_)));
        assert_eq!(found(&index, "+").len(), 40);
        for name in &names[..37] {
            assert!(index.remove(name).is_some());
        }
        assert!(matches!(&index.root.children, Children::Few(few) if few.len() == 3));
        assert_eq!(
            found(&index, "#"),
            sorted(&["level37", "level38", "level39"])
        );
    }

    /// The longest topic names have tens of thousands of levels: inserting, matching,
    /// removing and dropping them recurse nowhere, even on a thread with a small stack.
    #[test]
    fn the_deepest_topics_fit_a_small_stack() {
        let run = || {
            let deepest = "/".repeat(MAX_TOPIC_LEN);
            let beside = format!("{}x", "/".repeat(MAX_TOPIC_LEN - 1));
            let mut index = index_of(&[&deepest, &beside, "a"]);
            assert_eq!(index.node_count(), MAX_TOPIC_LEN + 3);
            let all = found(&index, "#");
            let with_x = found(&index, &format!("{}x", "+/".repeat(MAX_TOPIC_LEN - 1)));
            assert_eq!(index.remove(&beside), Some(1));
            assert_eq!(index.node_count(), MAX_TOPIC_LEN + 2);
            assert_eq!(index.retain(|topic, _| topic != deepest), 1);
            assert_eq!(index.node_count(), 1);
            // Again, to drop it whole.
            index.insert(&deepest, 0);
            drop(index);
            (all.len(), with_x == [beside])
        };
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(run)
            .map(|t| t.join());
        assert!(matches!(outcome, Ok(Ok((3, true)))), "{outcome:?}");
    }

    #[test]
    fn the_index_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<RetainedIndex<std::sync::Arc<[u8]>>>();
    }

    #[test]
    fn nodes_stay_small() {
        assert_eq!(size_of::<Children<u32>>(), 24);
        assert_eq!(size_of::<Node<std::sync::Arc<[u8]>>>(), 40);
        assert_eq!(size_of::<Node<std::sync::Arc<u64>>>(), 32);
    }
}
