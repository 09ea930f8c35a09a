//! Which broker each client connects to (`--placement`): spread round robin, or `cross`,
//! where no receiver shares a broker with a publisher whose messages it receives, so that
//! every measured message crosses between the nodes of a cluster.
//!
//! The assignment is a pure function of the broker count, the groups' sizes and which group
//! receives which group's messages ([`Relation`]): every process of a run (the parent and
//! each worker) computes the same one from the same scenario.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How clients are placed on the brokers of a run (`--placement`). The variants' docs are
/// the command line's help too; [`layout`] has the whole rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Client i of every group on broker i mod n (-b is 0): a pairs flow stays on one broker.
    #[default]
    Spread,
    /// No receiver on the broker of a publisher it receives from, so every measured message
    /// crosses between brokers (cluster nodes, bridged brokers). pairs: publisher i on broker
    /// i mod n, its subscriber on the next; fanin, fanout, fleet: publishers and receivers on
    /// disjoint halves of the brokers. Needs two brokers or more.
    Cross,
}

impl Placement {
    /// `spread` or `cross`, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Cross => "cross",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the measured messages of one publishing group reach one receiving group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Client `i` of the publishers reaches client `i` of the receivers and no other (two
    /// groups of one size, one flow per publisher, one subscriber each): `pairs`.
    ByIndex,
    /// Anything else: a shared group, a wildcard over several publishers' topics, a
    /// publisher with several flows (`targets`), ...
    Broad,
}

/// That publishing group `from` delivers to receiving group `to` (indexes in the
/// scenario's groups), and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRelation {
    /// The publishing group.
    pub from: usize,
    /// The receiving group.
    pub to: usize,
    /// How its messages reach the receivers.
    pub relation: Relation,
}

/// Why a placement cannot serve a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// `cross` with fewer than two brokers.
    TooFewBrokers(usize),
    /// `cross` in a scenario where no group receives another's measured messages.
    NothingToCross,
    /// `cross` where a group receives its own measured messages.
    OwnMessages(String),
    /// `cross` where these two groups would have to be on both sides: their relations
    /// form a cycle of odd length (A to B, B to C, C to A).
    OddCycle(String, String),
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewBrokers(n) => write!(
                f,
                "--placement cross needs at least two brokers (-b and --more-brokers URL), \
                 got {n}"
            ),
            Self::NothingToCross => f.write_str(
                "--placement cross: no group of this scenario receives another group's \
                 messages (conn, pub or sub alone), so nothing can cross between brokers; \
                 choose the broker with -b instead",
            ),
            Self::OwnMessages(g) => write!(
                f,
                "--placement cross: group {g:?} receives its own messages, which cannot \
                 cross between brokers"
            ),
            Self::OddCycle(a, b) => write!(
                f,
                "--placement cross: groups {a:?} and {b:?} cannot be put on opposite sides \
                 (the groups' publish/receive relations form a cycle of odd length)"
            ),
        }
    }
}

impl std::error::Error for PlacementError {}

/// The broker of every client: per group, the brokers its clients take in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    cycles: Vec<Vec<usize>>,
}

impl Layout {
    /// The position (in the run's broker list, `-b` = 0) of the broker of client `index`
    /// of group `group`.
    pub fn broker(&self, group: usize, index: u32) -> usize {
        let cycle = &self.cycles[group];
        cycle[index as usize % cycle.len()]
    }

    /// Group `group`'s brokers in turn: client `i` connects to the `i mod len`-th.
    pub fn cycle(&self, group: usize) -> &[usize] {
        &self.cycles[group]
    }
}

/// Places the clients of groups of `sizes` (by name, in scenario order) on `brokers`
/// brokers.
///
/// - `spread`: client `i` of every group on broker `i mod n`.
/// - `cross`: the groups that exchange measured messages (`relations`) are split into two
///   sides, so that every relation goes from one side to the other (the side of the first
///   publishing group is the publishers' side). Then, for each set of related groups:
///   - if every relation in it is [`Relation::ByIndex`] (`pairs`), every group uses every
///     broker, and the receivers' side is shifted by one: publisher `i` on broker
///     `i mod n`, its subscriber on `(i + 1) mod n`;
///   - otherwise (`fanin`, `fanout`, `fleet`, shared groups), the sides get disjoint sets
///     of brokers: the side with more clients the first `ceil(n/2)` positions (the
///     publishers' side on a tie), the other the remaining `floor(n/2)`, the publishers'
///     side taking the lower positions; each group's clients go round robin over its side's
///     brokers.
///
///   Groups that neither publish to nor receive from another group are spread as with
///   `spread`. `cross` is refused with fewer than two brokers, with no relation at all, when
///   a group receives its own messages, and when the relations cannot be split in two sides.
pub fn layout(
    placement: Placement,
    brokers: usize,
    sizes: &[(&str, u32)],
    relations: &[GroupRelation],
) -> Result<Layout, PlacementError> {
    let all: Vec<usize> = (0..brokers.max(1)).collect();
    let mut cycles = vec![all.clone(); sizes.len()];
    if placement == Placement::Spread {
        return Ok(Layout { cycles });
    }
    if brokers < 2 {
        return Err(PlacementError::TooFewBrokers(brokers));
    }
    if relations.is_empty() {
        return Err(PlacementError::NothingToCross);
    }
    if let Some(r) = relations.iter().find(|r| r.from == r.to) {
        return Err(PlacementError::OwnMessages(sizes[r.from].0.to_owned()));
    }
    let neighbours = |g: usize| {
        relations
            .iter()
            .filter_map(move |r| match (r.from == g, r.to == g) {
                (true, _) => Some(r.to),
                (_, true) => Some(r.from),
                _ => None,
            })
    };
    let mut side: Vec<Option<bool>> = vec![None; sizes.len()];
    // Each set of related groups starts from its first publishing group, in scenario order:
    // the publishers' side is `false`.
    let mut starts: Vec<usize> = relations.iter().map(|r| r.from).collect();
    starts.sort_unstable();
    starts.dedup();
    for start in starts {
        if side[start].is_some() {
            continue;
        }
        side[start] = Some(false);
        let (mut members, mut next) = (vec![start], 0);
        while next < members.len() {
            let g = members[next];
            next += 1;
            let mine = side[g].unwrap_or_default();
            for h in neighbours(g) {
                match side[h] {
                    None => {
                        side[h] = Some(!mine);
                        members.push(h);
                    }
                    Some(s) if s == mine => {
                        return Err(PlacementError::OddCycle(
                            sizes[g].0.to_owned(),
                            sizes[h].0.to_owned(),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let by_index = relations
            .iter()
            .filter(|r| members.contains(&r.from))
            .all(|r| r.relation == Relation::ByIndex);
        if by_index {
            for &g in &members {
                let shift = usize::from(side[g] == Some(true));
                cycles[g] = (0..brokers).map(|k| (k + shift) % brokers).collect();
            }
            continue;
        }
        let clients = |s: bool| -> u64 {
            members
                .iter()
                .filter(|&&g| side[g] == Some(s))
                .map(|&g| u64::from(sizes[g].1))
                .sum()
        };
        let (wide, narrow) = (brokers.div_ceil(2), brokers / 2);
        let publishers = if clients(false) >= clients(true) {
            wide
        } else {
            narrow
        };
        for &g in &members {
            cycles[g] = if side[g] == Some(true) {
                (publishers..brokers).collect()
            } else {
                (0..publishers).collect()
            };
        }
    }
    Ok(Layout { cycles })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(from: usize, to: usize, relation: Relation) -> GroupRelation {
        GroupRelation { from, to, relation }
    }

    /// The broker of clients `0..count` of `group`.
    fn brokers_of(layout: &Layout, group: usize, count: u32) -> Vec<usize> {
        (0..count).map(|i| layout.broker(group, i)).collect()
    }

    #[test]
    fn spread_goes_round_robin_by_index_in_every_group() {
        let l = layout(
            Placement::Spread,
            3,
            &[("sub", 5), ("pub", 5)],
            &[rel(1, 0, Relation::ByIndex)],
        )
        .expect("spread always places");
        assert_eq!(brokers_of(&l, 0, 5), [0, 1, 2, 0, 1]);
        assert_eq!(brokers_of(&l, 1, 5), [0, 1, 2, 0, 1]);
        // One broker, or none given: everything on broker 0.
        let l = layout(Placement::Spread, 1, &[("conn", 3)], &[]).expect("ok");
        assert_eq!(brokers_of(&l, 0, 3), [0, 0, 0]);
    }

    #[test]
    fn cross_pairs_put_each_subscriber_one_broker_after_its_publisher() {
        let groups = [("sub", 5), ("pub", 5)];
        let pairs = [rel(1, 0, Relation::ByIndex)];
        for n in 2..=4 {
            let l = layout(Placement::Cross, n, &groups, &pairs).expect("pairs cross");
            for i in 0..5 {
                let publisher = l.broker(1, i);
                assert_eq!(
                    publisher,
                    i as usize % n,
                    "publisher {i} stays where spread is"
                );
                assert_eq!(
                    l.broker(0, i),
                    (publisher + 1) % n,
                    "subscriber {i}, {n} brokers"
                );
            }
        }
        let l = layout(Placement::Cross, 2, &groups, &pairs).expect("ok");
        assert_eq!(brokers_of(&l, 1, 5), [0, 1, 0, 1, 0]);
        assert_eq!(brokers_of(&l, 0, 5), [1, 0, 1, 0, 1]);
    }

    #[test]
    fn cross_fanin_and_fanout_split_the_brokers_between_the_sides() {
        // fanin: 6 publishers into 1 subscriber. The publishers' side has more clients: it
        // gets ceil(n/2) brokers, from position 0.
        let fanin = [("sub", 1), ("pub", 6)];
        let broad = [rel(1, 0, Relation::Broad)];
        let l = layout(Placement::Cross, 2, &fanin, &broad).expect("ok");
        assert_eq!(brokers_of(&l, 1, 6), [0; 6]);
        assert_eq!(brokers_of(&l, 0, 1), [1]);
        let l = layout(Placement::Cross, 3, &fanin, &broad).expect("ok");
        assert_eq!(brokers_of(&l, 1, 6), [0, 1, 0, 1, 0, 1]);
        assert_eq!(l.cycle(0), [2]);
        // fanout: 1 publisher to 6 subscribers: the subscribers' side is the wider one.
        let fanout = [("sub", 6), ("pub", 1)];
        let l = layout(Placement::Cross, 3, &fanout, &broad).expect("ok");
        assert_eq!(l.cycle(1), [0]);
        assert_eq!(brokers_of(&l, 0, 6), [1, 2, 1, 2, 1, 2]);
        let l = layout(Placement::Cross, 4, &fanout, &broad).expect("ok");
        assert_eq!((l.cycle(1), l.cycle(0)), (&[0, 1][..], &[2, 3][..]));
    }

    #[test]
    fn cross_fleet_puts_devices_opposite_the_backends_and_the_commander() {
        // backend (shared group) <- device <- commander (one flow per device).
        let groups = [
            ("backend", 2),
            ("device", 10),
            ("commander", 1),
            ("idle", 4),
        ];
        let relations = [rel(1, 0, Relation::Broad), rel(2, 1, Relation::Broad)];
        let l = layout(Placement::Cross, 2, &groups, &relations).expect("two-sided");
        assert_eq!(
            l.cycle(1),
            [0],
            "devices: the first publishing group's side"
        );
        assert_eq!(l.cycle(0), [1]);
        assert_eq!(l.cycle(2), [1]);
        assert_eq!(
            l.cycle(3),
            [0, 1],
            "a group outside every relation is spread"
        );
    }

    #[test]
    fn cross_is_refused_where_it_cannot_cross() {
        let pairs = [rel(1, 0, Relation::ByIndex)];
        let groups = [("sub", 2), ("pub", 2)];
        for n in [0, 1] {
            let err = layout(Placement::Cross, n, &groups, &pairs).expect_err("one broker");
            assert_eq!(err, PlacementError::TooFewBrokers(n));
            assert!(err.to_string().contains("at least two brokers"), "{err}");
        }
        assert_eq!(
            layout(Placement::Cross, 2, &[("conn", 3)], &[]),
            Err(PlacementError::NothingToCross)
        );
        assert_eq!(
            layout(
                Placement::Cross,
                2,
                &[("chat", 3)],
                &[rel(0, 0, Relation::Broad)]
            ),
            Err(PlacementError::OwnMessages("chat".to_owned()))
        );
        let triangle = [
            rel(0, 1, Relation::Broad),
            rel(1, 2, Relation::Broad),
            rel(2, 0, Relation::Broad),
        ];
        let err = layout(
            Placement::Cross,
            3,
            &[("a", 1), ("b", 1), ("c", 1)],
            &triangle,
        )
        .expect_err("odd cycle");
        assert!(matches!(err, PlacementError::OddCycle(..)), "{err}");
    }

    #[test]
    fn placement_reads_and_writes_in_lower_case() {
        assert_eq!(
            serde_json::to_string(&Placement::Cross).expect("serialises"),
            r#""cross""#
        );
        assert_eq!(
            serde_json::from_str::<Placement>(r#""spread""#).expect("reads"),
            Placement::Spread
        );
        assert_eq!(Placement::default().to_string(), "spread");
    }
}
