//! `RouteTable`: the deterministic state of a route group, which filters have
//! subscribers on which nodes. Sans-IO: no clock, no randomness, no files.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::type_config::RaftNodeId;

/// A change to the route index, the payload of a route group's log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteCommand {
    /// `node` has its first local subscriber of `filter`.
    AddRoute {
        /// The topic filter, as subscribed.
        filter: String,
        /// The node that holds the subscriber.
        node: RaftNodeId,
    },
    /// `node` lost its last local subscriber of `filter`.
    RemoveRoute {
        /// The topic filter, as subscribed.
        filter: String,
        /// The node that held the subscriber.
        node: RaftNodeId,
    },
}

/// What applying one entry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResponse {
    /// The command changed the table (adding a route already there does not).
    pub changed: bool,
}

/// Filter -> the nodes that have subscribers of it. Only non-empty sets are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    routes: BTreeMap<String, BTreeSet<RaftNodeId>>,
}

impl RouteTable {
    /// Applies `command`; the same commands in the same order give the same table on
    /// every replica.
    pub fn apply(&mut self, command: &RouteCommand) -> RouteResponse {
        let changed = match command {
            RouteCommand::AddRoute { filter, node } => {
                self.routes.entry(filter.clone()).or_default().insert(*node)
            }
            RouteCommand::RemoveRoute { filter, node } => match self.routes.get_mut(filter) {
                Some(nodes) => {
                    let removed = nodes.remove(node);
                    if nodes.is_empty() {
                        self.routes.remove(filter);
                    }
                    removed
                }
                None => false,
            },
        };
        RouteResponse { changed }
    }

    /// The nodes with subscribers of `filter` (empty if none).
    pub fn nodes(&self, filter: &str) -> Option<&BTreeSet<RaftNodeId>> {
        self.routes.get(filter)
    }

    /// Every route, by filter.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeSet<RaftNodeId>)> {
        self.routes.iter().map(|(f, n)| (f.as_str(), n))
    }

    /// The number of filters with at least one node.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No filter has a node.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Sets the nodes of `filter` (as read back from disk); an empty set removes it.
    pub(crate) fn set(&mut self, filter: String, nodes: BTreeSet<RaftNodeId>) {
        if nodes.is_empty() {
            self.routes.remove(&filter);
        } else {
            self.routes.insert(filter, nodes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(filter: &str, node: u64) -> RouteCommand {
        RouteCommand::AddRoute {
            filter: filter.into(),
            node,
        }
    }

    fn remove(filter: &str, node: u64) -> RouteCommand {
        RouteCommand::RemoveRoute {
            filter: filter.into(),
            node,
        }
    }

    #[test]
    fn adding_a_route_twice_changes_the_table_once() {
        let mut table = RouteTable::default();
        assert!(table.apply(&add("a/+", 1)).changed);
        assert!(!table.apply(&add("a/+", 1)).changed);
        assert_eq!(table.nodes("a/+"), Some(&BTreeSet::from([1])));
    }

    #[test]
    fn removing_the_last_node_removes_the_filter() {
        let mut table = RouteTable::default();
        table.apply(&add("a", 1));
        table.apply(&add("a", 2));
        assert!(table.apply(&remove("a", 1)).changed);
        assert_eq!(table.nodes("a"), Some(&BTreeSet::from([2])));
        assert!(table.apply(&remove("a", 2)).changed);
        assert!(!table.apply(&remove("a", 2)).changed);
        assert!(table.is_empty());
    }

    #[test]
    fn replicas_applying_the_same_commands_agree() {
        let commands = [
            add("x", 3),
            add("y", 1),
            remove("x", 3),
            add("x", 2),
            add("y", 2),
        ];
        let mut a = RouteTable::default();
        let mut b = RouteTable::default();
        let ra: Vec<_> = commands.iter().map(|c| a.apply(c)).collect();
        let rb: Vec<_> = commands.iter().map(|c| b.apply(c)).collect();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }
}
