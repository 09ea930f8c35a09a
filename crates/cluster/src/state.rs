//! `GroupState`: the deterministic state of a Raft group and the commands that change it.
//! Sans-IO: `apply` reads no clock, no randomness and no files, so every replica that
//! applies the same log holds the same state.
//!
//! Every group kind uses the same state type; each holds only its own part:
//! - `meta`: the members (`nodes`);
//! - `routes/N`: routes of the filters that hash to N, and the owners of the client ids
//!   that hash to N (the cluster-wide registry of connected client ids);
//! - `retained/N`: retained messages of the topics that hash to N.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::type_config::RaftNodeId;

/// A change to one node's routes: `filter` has local subscribers on it (`present`) or has
/// none any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChange {
    /// The topic filter as subscribed (`$share/group/filter` for a shared subscription).
    pub filter: String,
    /// Whether the node has subscribers of it now.
    pub present: bool,
}

/// The payload of a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Several commands in one entry (group commit of a leader's proposals), applied in
    /// order; answered with [`Response::Batch`].
    Batch(Vec<Self>),
    /// `node`'s routes changed (applied in order; batched by the node's route writer).
    Routes {
        /// The node the routes point at.
        node: RaftNodeId,
        /// The changes, in order.
        changes: Vec<RouteChange>,
    },
    /// `client_id` connected on `node`: it is the owner now, with a new epoch. The response
    /// says the previous owner, which must close its connection.
    Claim {
        /// The client id.
        client_id: String,
        /// The node that holds the new connection.
        node: RaftNodeId,
    },
    /// The connection of `client_id` with `epoch` ended: it owns nothing any more (a later
    /// claim's epoch is left alone).
    Release {
        /// The client id.
        client_id: String,
        /// The epoch of the claim that ends.
        epoch: u64,
    },
    /// `node` is gone (it left, or failure detection declared it dead): its routes and
    /// ownerships go with it.
    RemoveNode {
        /// The node.
        node: RaftNodeId,
    },
    /// `topic`'s retained message is now `message` (the store's message format).
    Retain {
        /// The topic.
        topic: String,
        /// The message, in the store's format (`shoal_store::message_to_bytes`).
        message: Vec<u8>,
    },
    /// `topic` has no retained message any more.
    ClearRetained {
        /// The topic.
        topic: String,
    },
    /// `topic`'s retained message expired: it is cleared if it is still the message whose
    /// bytes have this [`digest`] (one set meanwhile stays). The leader of the group says
    /// so once its clock passes the message's expiry; `apply` reads no clock.
    ExpireRetained {
        /// The topic.
        topic: String,
        /// [`digest`] of the expired message's bytes.
        digest: u64,
    },
    /// Store writes of persistent sessions (a `shoal_store::WriteBatch`, encoded), from
    /// the owners of the sessions they touch, with their owner epochs (session group).
    /// Refused as a whole ([`Response::Refused`]) if a newer owner of one of them wrote
    /// or fenced since; otherwise every replica applies the writes to its store.
    Session {
        /// Each client id the writes touch, with its writer's owner epoch.
        fences: Vec<(String, u64)>,
        /// The writes (`WriteBatch::encode`), as base64 in the JSON of the log.
        #[serde(with = "base64_bytes")]
        ops: Vec<u8>,
    },
    /// What expired in this session shard by `at` (ms since the Unix epoch) goes: its
    /// leader stamps its time, and every replica removes the same sessions and queued
    /// messages with it (`Store::remove_expired_in_shard`), whatever its own clock says.
    ExpireSessions {
        /// The leader's time, ms since the Unix epoch.
        at: u64,
    },
    /// The owner of `client_id` with `epoch` takes the session over: from now on writes
    /// of older owners are refused (session group).
    Fence {
        /// The client id.
        client_id: String,
        /// The new owner's epoch.
        epoch: u64,
    },
    /// Claims `client_id` for `node` only if nobody owns it, or `from` does (a node taking
    /// up a session that lost its owner, or whose owner died): answered like a claim, or
    /// [`Response::Refused`].
    Adopt {
        /// The client id.
        client_id: String,
        /// The node.
        node: RaftNodeId,
        /// The owner it may take the client id from.
        #[serde(default)]
        from: Option<RaftNodeId>,
    },
    /// `node` left the cluster: it is no member any more (meta).
    ForgetNode {
        /// The node.
        node: RaftNodeId,
    },
    /// Failure detection declared `node` unreachable (`down`), or it answers again (meta).
    /// Route barriers do not wait for a node that is down.
    SetDown {
        /// The node.
        node: RaftNodeId,
        /// Whether it is down.
        down: bool,
    },
    /// `node` is a member, reached at `address` (meta).
    AddNode {
        /// The node.
        node: RaftNodeId,
        /// Its cluster listener, host:port.
        address: String,
        /// A front end: never a voter.
        frontend: bool,
        /// Where its MQTT clients connect, host:port (`mqtt_advertise`): the Server
        /// Reference other nodes give their clients when they send them elsewhere. Absent
        /// in entries written before it existed.
        #[serde(default)]
        mqtt: Option<String>,
    },
    /// `target` is banned (meta): added, or replaced. Bans that ended before the ban's
    /// `created` time are dropped with it, so that the list does not grow with expired
    /// ones (the proposer's clock, stamped in the command: `apply` reads none).
    Ban {
        /// What is banned: `clientid:<id>`, `username:<name>` or `address:<ip or net>`.
        target: String,
        /// Its term and reason.
        ban: BanRecord,
    },
    /// The ban of `target` is lifted (meta).
    Unban {
        /// What was banned.
        target: String,
    },
}

/// A ban as `meta` keeps it (the broker's own type lives in shoal-access).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// When it ends, in milliseconds since the epoch (`None`: never).
    pub until: Option<u64>,
    /// Why.
    pub reason: String,
    /// When it was made, in milliseconds since the epoch.
    pub created: u64,
}

/// Bytes as a base64 string in JSON (an array of numbers would be three to four times
/// larger, and far slower to read back: session writes are most of the log).
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The owner of a connected client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The node holding the connection.
    pub node: RaftNodeId,
    /// The claim's epoch: larger than every earlier claim's in the group.
    pub epoch: u64,
}

/// A member as `meta` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its cluster listener, host:port.
    pub address: String,
    /// A front end: never a voter.
    pub frontend: bool,
    /// Declared unreachable by failure detection.
    #[serde(default)]
    pub down: bool,
    /// Where its MQTT clients connect, host:port, if it said (`mqtt_advertise`).
    #[serde(default)]
    pub mqtt: Option<String>,
}

/// FNV-1a of `bytes`: names a retained message in [`Command::ExpireRetained`] (fixed:
/// every replica computes the same).
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl Command {
    /// About how many bytes the command weighs in a log entry (what batching bounds).
    pub(crate) fn weight(&self) -> usize {
        match self {
            Self::Batch(commands) => commands.iter().map(Self::weight).sum(),
            Self::Routes { changes, .. } => {
                changes.iter().map(|c| c.filter.len() + 16).sum::<usize>() + 16
            }
            Self::Retain { topic, message } => topic.len() + 4 * message.len() + 16,
            Self::Claim { client_id, .. } | Self::Release { client_id, .. } => client_id.len() + 32,
            Self::ClearRetained { topic } | Self::ExpireRetained { topic, .. } => topic.len() + 16,
            Self::Ban { target, ban } => target.len() + ban.reason.len() + 64,
            Self::Session { fences, ops } => {
                fences.iter().map(|(c, _)| c.len() + 16).sum::<usize>() + 4 * ops.len() / 3 + 16
            }
            _ => 64,
        }
    }
}

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// Nothing to report (blank and membership entries, routes, retained, members).
    #[default]
    Done,
    /// A claim: its epoch, and the owner it replaced (if another claim was live).
    Claimed {
        /// The new claim's epoch.
        epoch: u64,
        /// The previous owner, if any.
        previous: Option<Owner>,
    },
    /// A release: whether the claim was still the live one.
    Released(bool),
    /// The responses of a [`Command::Batch`], in its order.
    Batch(Vec<Self>),
    /// Not applied: a session write of an owner that was replaced, or an adoption of a
    /// client id that has an owner.
    Refused,
}

/// A key of the state that an entry changed, so that it can be written through and
/// reported to the observer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    /// A route's filter.
    Route(String),
    /// An owner's client id.
    Owner(String),
    /// A retained message's topic.
    Retained(String),
    /// A member.
    Node(RaftNodeId),
    /// The epoch counter.
    Epoch,
    /// The owner epoch a session's writes must have (session group).
    Fence(String),
    /// A ban's target (meta).
    Ban(String),
}

/// The state of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Filter -> the nodes that have subscribers of it. Only non-empty sets are kept.
    pub(crate) routes: BTreeMap<String, BTreeSet<RaftNodeId>>,
    /// Client id -> the node that holds its connection.
    pub(crate) owners: BTreeMap<String, Owner>,
    /// The last epoch handed out.
    pub(crate) epoch: u64,
    /// Topic -> the retained message (store format).
    pub(crate) retained: BTreeMap<String, Vec<u8>>,
    /// The members (meta).
    pub(crate) nodes: BTreeMap<RaftNodeId, Member>,
    /// Client id -> the owner epoch its session's writes must have at least (session
    /// group).
    #[serde(default)]
    pub(crate) fences: BTreeMap<String, u64>,
    /// Target -> the ban in force (meta).
    #[serde(default)]
    pub(crate) bans: BTreeMap<String, BanRecord>,
}

impl GroupState {
    /// Applies `command`, noting in `touched` what it changed; the same commands in the
    /// same order give the same state on every replica.
    pub fn apply(&mut self, command: &Command, touched: &mut BTreeSet<Touched>) -> Response {
        match command {
            Command::Batch(commands) => Response::Batch(
                commands
                    .iter()
                    .map(|command| self.apply(command, touched))
                    .collect(),
            ),
            Command::Routes { node, changes } => {
                for change in changes {
                    let changed = if change.present {
                        self.routes
                            .entry(change.filter.clone())
                            .or_default()
                            .insert(*node)
                    } else {
                        self.remove_route(&change.filter, *node)
                    };
                    if changed {
                        touched.insert(Touched::Route(change.filter.clone()));
                    }
                }
                Response::Done
            }
            Command::Claim { client_id, node } => {
                self.epoch += 1;
                let owner = Owner {
                    node: *node,
                    epoch: self.epoch,
                };
                let previous = self.owners.insert(client_id.clone(), owner);
                touched.insert(Touched::Owner(client_id.clone()));
                touched.insert(Touched::Epoch);
                Response::Claimed {
                    epoch: self.epoch,
                    previous,
                }
            }
            Command::Adopt {
                client_id,
                node,
                from,
            } => {
                if let Some(owner) = self.owners.get(client_id)
                    && Some(owner.node) != *from
                {
                    return Response::Refused;
                }
                self.apply(
                    &Command::Claim {
                        client_id: client_id.clone(),
                        node: *node,
                    },
                    touched,
                )
            }
            Command::Session { fences, .. } => {
                let stale = fences
                    .iter()
                    .any(|(client, epoch)| self.fences.get(client).is_some_and(|f| f > epoch));
                if stale {
                    return Response::Refused;
                }
                for (client, epoch) in fences {
                    self.raise_fence(client, *epoch, touched);
                }
                Response::Done
            }
            Command::Fence { client_id, epoch } => {
                self.raise_fence(client_id, *epoch, touched);
                Response::Done
            }
            // The store's part is the state machine's (`state_machine.rs`).
            Command::ExpireSessions { .. } => Response::Done,
            Command::Release { client_id, epoch } => {
                let live = self
                    .owners
                    .get(client_id)
                    .is_some_and(|o| o.epoch == *epoch);
                if live {
                    self.owners.remove(client_id);
                    touched.insert(Touched::Owner(client_id.clone()));
                }
                Response::Released(live)
            }
            Command::RemoveNode { node } => {
                let filters: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|(_, nodes)| nodes.contains(node))
                    .map(|(f, _)| f.clone())
                    .collect();
                for filter in filters {
                    self.remove_route(&filter, *node);
                    touched.insert(Touched::Route(filter));
                }
                let clients: Vec<String> = self
                    .owners
                    .iter()
                    .filter(|(_, o)| o.node == *node)
                    .map(|(c, _)| c.clone())
                    .collect();
                for client in clients {
                    self.owners.remove(&client);
                    touched.insert(Touched::Owner(client));
                }
                Response::Done
            }
            Command::Retain { topic, message } => {
                self.retained.insert(topic.clone(), message.clone());
                touched.insert(Touched::Retained(topic.clone()));
                Response::Done
            }
            Command::ClearRetained { topic } => {
                if self.retained.remove(topic).is_some() {
                    touched.insert(Touched::Retained(topic.clone()));
                }
                Response::Done
            }
            Command::ExpireRetained { topic, digest: d } => {
                if self.retained.get(topic).is_some_and(|m| digest(m) == *d) {
                    self.retained.remove(topic);
                    touched.insert(Touched::Retained(topic.clone()));
                }
                Response::Done
            }
            Command::ForgetNode { node } => {
                if self.nodes.remove(node).is_some() {
                    touched.insert(Touched::Node(*node));
                }
                Response::Done
            }
            Command::SetDown { node, down } => {
                if let Some(member) = self.nodes.get_mut(node)
                    && member.down != *down
                {
                    member.down = *down;
                    touched.insert(Touched::Node(*node));
                }
                Response::Done
            }
            Command::AddNode {
                node,
                address,
                frontend,
                mqtt,
            } => {
                let member = Member {
                    address: address.clone(),
                    frontend: *frontend,
                    down: false,
                    mqtt: mqtt.clone(),
                };
                if self.nodes.get(node) != Some(&member) {
                    self.nodes.insert(*node, member);
                    touched.insert(Touched::Node(*node));
                }
                Response::Done
            }
            Command::Ban { target, ban } => {
                let ended: Vec<String> = self
                    .bans
                    .iter()
                    .filter(|(t, b)| *t != target && b.until.is_some_and(|u| u <= ban.created))
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in ended {
                    self.bans.remove(&t);
                    touched.insert(Touched::Ban(t));
                }
                self.bans.insert(target.clone(), ban.clone());
                touched.insert(Touched::Ban(target.clone()));
                Response::Done
            }
            Command::Unban { target } => {
                if self.bans.remove(target).is_some() {
                    touched.insert(Touched::Ban(target.clone()));
                }
                Response::Done
            }
        }
    }

    fn raise_fence(&mut self, client: &str, epoch: u64, touched: &mut BTreeSet<Touched>) {
        let fence = self.fences.entry(client.to_owned()).or_insert(0);
        if *fence < epoch {
            *fence = epoch;
            touched.insert(Touched::Fence(client.to_owned()));
        }
    }

    fn remove_route(&mut self, filter: &str, node: RaftNodeId) -> bool {
        let Some(nodes) = self.routes.get_mut(filter) else {
            return false;
        };
        let removed = nodes.remove(&node);
        if nodes.is_empty() {
            self.routes.remove(filter);
        }
        removed
    }

    /// The nodes with subscribers of `filter`.
    pub fn route(&self, filter: &str) -> Option<&BTreeSet<RaftNodeId>> {
        self.routes.get(filter)
    }

    /// Every route, by filter.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &BTreeSet<RaftNodeId>)> {
        self.routes.iter().map(|(f, n)| (f.as_str(), n))
    }

    /// The owner of `client_id`.
    pub fn owner(&self, client_id: &str) -> Option<Owner> {
        self.owners.get(client_id).copied()
    }

    /// The retained message of `topic` (store format).
    pub fn retained(&self, topic: &str) -> Option<&[u8]> {
        self.retained.get(topic).map(Vec::as_slice)
    }

    /// The members (meta).
    pub fn nodes(&self) -> &BTreeMap<RaftNodeId, Member> {
        &self.nodes
    }

    /// The ban of `target` (meta).
    pub fn ban(&self, target: &str) -> Option<&BanRecord> {
        self.bans.get(target)
    }

    /// Every key the state holds (to report them all after a snapshot or at start).
    pub(crate) fn keys(&self, into: &mut BTreeSet<Touched>) {
        into.extend(self.routes.keys().cloned().map(Touched::Route));
        into.extend(self.owners.keys().cloned().map(Touched::Owner));
        into.extend(self.retained.keys().cloned().map(Touched::Retained));
        into.extend(self.nodes.keys().copied().map(Touched::Node));
        into.extend(self.fences.keys().cloned().map(Touched::Fence));
        into.extend(self.bans.keys().cloned().map(Touched::Ban));
        into.insert(Touched::Epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(node: u64, changes: &[(&str, bool)]) -> Command {
        Command::Routes {
            node,
            changes: changes
                .iter()
                .map(|(f, p)| RouteChange {
                    filter: (*f).into(),
                    present: *p,
                })
                .collect(),
        }
    }

    fn apply(state: &mut GroupState, command: &Command) -> (Response, BTreeSet<Touched>) {
        let mut touched = BTreeSet::new();
        let response = state.apply(command, &mut touched);
        (response, touched)
    }

    fn ban(target: &str, until: Option<u64>, created: u64) -> Command {
        Command::Ban {
            target: target.into(),
            ban: BanRecord {
                until,
                reason: "r".into(),
                created,
            },
        }
    }

    #[test]
    fn a_ban_drops_the_bans_that_ended_before_it_and_unban_lifts_one() {
        let mut state = GroupState::default();
        apply(&mut state, &ban("client:a", Some(100), 10));
        apply(&mut state, &ban("client:b", None, 20));
        apply(&mut state, &ban("client:c", Some(500), 30));
        let (_, touched) = apply(&mut state, &ban("client:d", None, 200));
        assert!(state.ban("client:a").is_none(), "ended at 100, before 200");
        assert!(touched.contains(&Touched::Ban("client:a".into())));
        assert!(state.ban("client:b").is_some() && state.ban("client:c").is_some());
        let (_, touched) = apply(
            &mut state,
            &Command::Unban {
                target: "client:b".into(),
            },
        );
        assert_eq!(touched.len(), 1);
        assert!(state.ban("client:b").is_none());
        let (_, touched) = apply(
            &mut state,
            &Command::Unban {
                target: "client:b".into(),
            },
        );
        assert!(touched.is_empty(), "lifting twice changes nothing");
    }

    #[test]
    fn adding_a_route_twice_changes_the_state_once() {
        let mut state = GroupState::default();
        assert_eq!(apply(&mut state, &routes(1, &[("a/+", true)])).1.len(), 1);
        assert!(apply(&mut state, &routes(1, &[("a/+", true)])).1.is_empty());
        assert_eq!(state.route("a/+"), Some(&BTreeSet::from([1])));
    }

    #[test]
    fn removing_the_last_node_removes_the_filter() {
        let mut state = GroupState::default();
        apply(&mut state, &routes(1, &[("a", true)]));
        apply(&mut state, &routes(2, &[("a", true)]));
        apply(&mut state, &routes(1, &[("a", false)]));
        assert_eq!(state.route("a"), Some(&BTreeSet::from([2])));
        apply(&mut state, &routes(2, &[("a", false)]));
        assert!(apply(&mut state, &routes(2, &[("a", false)])).1.is_empty());
        assert_eq!(state.routes().count(), 0);
    }

    #[test]
    fn a_claim_replaces_the_owner_with_a_larger_epoch_and_names_the_previous() {
        let mut state = GroupState::default();
        let claim = |node| Command::Claim {
            client_id: "c".into(),
            node,
        };
        let (first, _) = apply(&mut state, &claim(1));
        assert_eq!(
            first,
            Response::Claimed {
                epoch: 1,
                previous: None
            }
        );
        let (second, _) = apply(&mut state, &claim(2));
        assert_eq!(
            second,
            Response::Claimed {
                epoch: 2,
                previous: Some(Owner { node: 1, epoch: 1 })
            }
        );
        // The first connection's late release does not remove the second's claim.
        let (late, touched) = apply(
            &mut state,
            &Command::Release {
                client_id: "c".into(),
                epoch: 1,
            },
        );
        assert_eq!(late, Response::Released(false));
        assert!(touched.is_empty());
        assert_eq!(state.owner("c"), Some(Owner { node: 2, epoch: 2 }));
    }

    #[test]
    fn removing_a_node_drops_its_routes_and_owners_only() {
        let mut state = GroupState::default();
        apply(&mut state, &routes(1, &[("a", true), ("b", true)]));
        apply(&mut state, &routes(2, &[("a", true)]));
        apply(
            &mut state,
            &Command::Claim {
                client_id: "c1".into(),
                node: 1,
            },
        );
        apply(
            &mut state,
            &Command::Claim {
                client_id: "c2".into(),
                node: 2,
            },
        );
        apply(&mut state, &Command::RemoveNode { node: 1 });
        assert_eq!(state.route("a"), Some(&BTreeSet::from([2])));
        assert_eq!(state.route("b"), None);
        assert_eq!(state.owner("c1"), None);
        assert_eq!(state.owner("c2").map(|o| o.node), Some(2));
    }

    #[test]
    fn an_add_node_entry_written_before_the_mqtt_address_still_decodes() {
        let old = br#"{"AddNode":{"node":2,"address":"10.0.0.2:7946","frontend":false}}"#;
        let command: Command = serde_json::from_slice(old).expect("an old entry decodes");
        let mut state = GroupState::default();
        apply(&mut state, &command);
        assert_eq!(state.nodes()[&2].mqtt, None);
        let old_member = br#"{"address":"10.0.0.2:7946","frontend":false}"#;
        let member: Member = serde_json::from_slice(old_member).expect("an old member decodes");
        assert_eq!(member.mqtt, None);
        // The same node again with its MQTT address: recorded.
        let (_, touched) = apply(
            &mut state,
            &Command::AddNode {
                node: 2,
                address: "10.0.0.2:7946".into(),
                frontend: false,
                mqtt: Some("mqtt-2.example:1883".into()),
            },
        );
        assert_eq!(touched, BTreeSet::from([Touched::Node(2)]));
        assert_eq!(
            state.nodes()[&2].mqtt.as_deref(),
            Some("mqtt-2.example:1883")
        );
    }

    #[test]
    fn an_expiry_clears_only_the_message_it_names() {
        let mut state = GroupState::default();
        let set = |bytes: &[u8]| Command::Retain {
            topic: "t".into(),
            message: bytes.to_vec(),
        };
        let expire = |bytes: &[u8]| Command::ExpireRetained {
            topic: "t".into(),
            digest: digest(bytes),
        };
        apply(&mut state, &set(&[1]));
        apply(&mut state, &set(&[2]));
        // The expiry of the message replaced comes late: the new one stays.
        let (_, touched) = apply(&mut state, &expire(&[1]));
        assert!(touched.is_empty());
        assert_eq!(state.retained.get("t"), Some(&vec![2]));
        let (_, touched) = apply(&mut state, &expire(&[2]));
        assert_eq!(touched, BTreeSet::from([Touched::Retained("t".into())]));
        assert!(state.retained.is_empty());
    }

    #[test]
    fn a_replaced_owner_s_session_writes_are_refused() {
        let mut state = GroupState::default();
        let write = |epoch| Command::Session {
            fences: vec![("c".into(), epoch), ("d".into(), 1)],
            ops: vec![1],
        };
        assert_eq!(apply(&mut state, &write(3)).0, Response::Done);
        assert_eq!(state.fences.get("c"), Some(&3));
        // The same owner writes again; an older one is refused, with nothing changed.
        assert_eq!(apply(&mut state, &write(3)).0, Response::Done);
        let (refused, touched) = apply(&mut state, &write(2));
        assert_eq!(refused, Response::Refused);
        assert!(touched.is_empty());
        // A new owner fences: the owner of 3 is refused from now on.
        apply(
            &mut state,
            &Command::Fence {
                client_id: "c".into(),
                epoch: 5,
            },
        );
        assert_eq!(apply(&mut state, &write(3)).0, Response::Refused);
        assert_eq!(apply(&mut state, &write(5)).0, Response::Done);
    }

    #[test]
    fn an_adoption_claims_only_a_client_id_nobody_owns() {
        let mut state = GroupState::default();
        let adopt = |node, from| Command::Adopt {
            client_id: "c".into(),
            node,
            from,
        };
        let (first, _) = apply(&mut state, &adopt(2, None));
        assert!(matches!(first, Response::Claimed { previous: None, .. }));
        assert_eq!(apply(&mut state, &adopt(3, None)).0, Response::Refused);
        assert_eq!(apply(&mut state, &adopt(3, Some(1))).0, Response::Refused);
        assert_eq!(state.owner("c").map(|o| o.node), Some(2));
        // Node 2 died: node 3 may take the client id from it.
        let (taken, _) = apply(&mut state, &adopt(3, Some(2)));
        assert!(matches!(
            taken,
            Response::Claimed {
                previous: Some(Owner { node: 2, .. }),
                ..
            }
        ));
        assert_eq!(state.owner("c").map(|o| o.node), Some(3));
    }

    #[test]
    fn replicas_applying_the_same_commands_agree() {
        let commands = [
            routes(3, &[("x", true)]),
            routes(1, &[("y", true)]),
            routes(3, &[("x", false)]),
            Command::Claim {
                client_id: "c".into(),
                node: 2,
            },
            Command::Retain {
                topic: "t".into(),
                message: vec![1, 2],
            },
            routes(2, &[("x", true), ("y", true)]),
        ];
        let mut a = GroupState::default();
        let mut b = GroupState::default();
        let ra: Vec<_> = commands.iter().map(|c| apply(&mut a, c)).collect();
        let rb: Vec<_> = commands.iter().map(|c| apply(&mut b, c)).collect();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
    }

    #[test]
    fn a_batch_applies_like_its_commands_one_by_one() {
        let commands = vec![
            Command::Claim {
                client_id: "a".into(),
                node: 1,
            },
            Command::Claim {
                client_id: "a".into(),
                node: 2,
            },
            routes(2, &[("x/#", true)]),
            Command::Release {
                client_id: "a".into(),
                epoch: 1,
            },
        ];
        let mut one_by_one = GroupState::default();
        let responses: Vec<Response> = commands
            .iter()
            .map(|c| apply(&mut one_by_one, c).0)
            .collect();
        let mut batched = GroupState::default();
        let (response, touched) = apply(&mut batched, &Command::Batch(commands));
        assert_eq!(response, Response::Batch(responses));
        assert_eq!(batched, one_by_one);
        assert!(touched.contains(&Touched::Owner("a".into())));
        assert!(touched.contains(&Touched::Route("x/#".into())));
    }
}
