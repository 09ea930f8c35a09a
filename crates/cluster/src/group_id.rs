//! `GroupId`: which Raft group a log, a state machine or a message belongs to.

use std::fmt;

/// A Raft group of the cluster. Displayed as it appears in tree names: `meta`,
/// `routes/3`, `retained/0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupId {
    /// The one group of membership, shard map and bans.
    Meta,
    /// Route shard `n`: which nodes have subscribers of which filters.
    Routes(u16),
    /// Retained message shard `n`.
    Retained(u16),
    /// Session shard `n`: the persistent sessions of the client ids that hash to it
    /// (records, subscriptions, queues, QoS 2 receipts), as the store's writes of their
    /// owners (`ClusterConfig::session_shards`).
    Sessions(u16),
}

impl GroupId {
    /// The name of this group's sled tree `part` (`log`, `sm`): `raft/routes/0/log`. Every
    /// group of a node lives in the node's one database, each in trees of its own.
    pub fn tree_name(self, part: &str) -> String {
        format!("raft/{self}/{part}")
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Meta => f.write_str("meta"),
            Self::Routes(n) => write!(f, "routes/{n}"),
            Self::Retained(n) => write!(f, "retained/{n}"),
            Self::Sessions(n) => write!(f, "sessions/{n}"),
        }
    }
}

impl std::str::FromStr for GroupId {
    type Err = String;

    /// Reads a group as displayed: `meta`, `routes/3`, `retained/0`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shard = |n: &str| {
            n.parse::<u16>()
                .map_err(|_| format!("not a group: {s:?} (its shard is not a number)"))
        };
        match s.split_once('/') {
            None if s == "meta" => Ok(Self::Meta),
            Some(("routes", n)) => Ok(Self::Routes(shard(n)?)),
            Some(("retained", n)) => Ok(Self::Retained(shard(n)?)),
            Some(("sessions", n)) => Ok(Self::Sessions(shard(n)?)),
            _ => Err(format!("not a group: {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_names_start_with_the_group() {
        assert_eq!(GroupId::Routes(0).tree_name("log"), "raft/routes/0/log");
        assert_eq!(GroupId::Meta.tree_name("sm"), "raft/meta/sm");
        assert_eq!(GroupId::Retained(7).tree_name("sm"), "raft/retained/7/sm");
    }

    #[test]
    fn groups_read_back_as_displayed_and_bad_names_are_errors() {
        for group in [
            GroupId::Meta,
            GroupId::Routes(3),
            GroupId::Retained(0),
            GroupId::Sessions(0),
        ] {
            assert_eq!(group.to_string().parse::<GroupId>(), Ok(group));
        }
        assert!("routes/x".parse::<GroupId>().is_err());
        assert!("sessions/x".parse::<GroupId>().is_err());
        assert!("".parse::<GroupId>().is_err());
    }
}
