//! Bans of client ids, usernames, addresses and networks, with expiry; flapping detection.
//!
//! [`Bans`] answers "is this connection banned?" cheaply: nothing at all when there are no
//! bans, one hash lookup per client id, username and address otherwise, plus a scan of the
//! network bans. [`Flapping`] notices a client id that connects too often in a short window
//! (as EMQX does) and hands back a [`Ban`] for the caller to add.
//!
//! Time is milliseconds since the epoch, passed in by the caller; nothing here reads a clock.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What a ban applies to.
///
/// Written and parsed as `client:ID`, `user:NAME`, `addr:IP` or `net:IP/PREFIX`
/// (`addr:10.1.2.3`, `addr:::1`, `net:10.0.0.0/8`, `net:fd00::/8`).
///
/// Addresses are kept canonical: an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is stored and
/// matched as the IPv4 address, so a ban of either form applies to a client on either kind of
/// socket. A network with host bits set (`net:10.1.2.3/8`) is normalised to its network
/// address (`net:10.0.0.0/8`) by parsing, by [`BanTarget::network`] and by [`Bans::add`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanTarget {
    /// One MQTT client id.
    ClientId(String),
    /// One username, as given in CONNECT.
    Username(String),
    /// One peer address.
    Addr(IpAddr),
    /// All peer addresses whose first `prefix` bits equal `addr`'s.
    Network {
        /// The network address.
        addr: IpAddr,
        /// Prefix length in bits: at most 32 for IPv4, 128 for IPv6.
        prefix: u8,
    },
}

/// A [`BanTarget`] could not be parsed or built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BanTargetError {
    /// The kind before the `:` is missing or unknown.
    #[error(
        "invalid ban target {input:?}: expected client:ID, user:NAME, addr:IP or net:IP/PREFIX"
    )]
    Kind {
        /// The text given.
        input: String,
    },
    /// The client id or username is empty.
    #[error("invalid ban target {input:?}: the {what} is empty")]
    Empty {
        /// The text given.
        input: String,
        /// "client id" or "username".
        what: &'static str,
    },
    /// The address is not an IPv4 or IPv6 address.
    #[error("invalid ban target {input:?}: {addr:?} is not an IPv4 or IPv6 address")]
    Addr {
        /// The text given.
        input: String,
        /// The part that should have been an address.
        addr: String,
    },
    /// A network lacks `/PREFIX` or its prefix is not a number.
    #[error(
        "invalid ban target {input:?}: expected net:IP/PREFIX with a prefix length in bits, \
         such as net:10.0.0.0/8 or net:fd00::/8"
    )]
    Prefix {
        /// The text given.
        input: String,
    },
    /// The prefix is longer than the address.
    #[error("invalid ban target {input:?}: a prefix of {prefix} bits is longer than {max}")]
    PrefixTooLong {
        /// The text given.
        input: String,
        /// The prefix length given.
        prefix: u8,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl BanTarget {
    /// A network ban of `addr/prefix`, normalised: host bits cleared, an IPv4-mapped IPv6
    /// network with a prefix of 96 or more turned into the IPv4 network. Refuses a prefix
    /// longer than the address.
    pub fn network(addr: IpAddr, prefix: u8) -> Result<Self, BanTargetError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return Err(BanTargetError::PrefixTooLong {
                input: format!("net:{addr}/{prefix}"),
                prefix,
                max,
            });
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        Ok(Self::Network {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The same target in canonical form (see the type's documentation); a network whose
    /// prefix is too long (possible only by building the variant directly) is left alone, and
    /// matches nothing.
    fn canonical(self) -> Self {
        match self {
            Self::Addr(addr) => Self::Addr(canonical(addr)),
            Self::Network { addr, prefix } => {
                Self::network(addr, prefix).unwrap_or(Self::Network { addr, prefix })
            }
            other => other,
        }
    }
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientId(id) => write!(f, "client:{id}"),
            Self::Username(name) => write!(f, "user:{name}"),
            Self::Addr(addr) => write!(f, "addr:{addr}"),
            Self::Network { addr, prefix } => write!(f, "net:{addr}/{prefix}"),
        }
    }
}

impl FromStr for BanTarget {
    type Err = BanTargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (kind, value) = input.split_once(':').ok_or_else(|| BanTargetError::Kind {
            input: input.to_owned(),
        })?;
        let empty = |what| BanTargetError::Empty {
            input: input.to_owned(),
            what,
        };
        let parse_addr = |text: &str| {
            text.parse::<IpAddr>().map_err(|_| BanTargetError::Addr {
                input: input.to_owned(),
                addr: text.to_owned(),
            })
        };
        match kind {
            "client" if value.is_empty() => Err(empty("client id")),
            "client" => Ok(Self::ClientId(value.to_owned())),
            "user" if value.is_empty() => Err(empty("username")),
            "user" => Ok(Self::Username(value.to_owned())),
            "addr" => Ok(Self::Addr(canonical(parse_addr(value)?))),
            "net" => {
                let (addr, prefix) =
                    value
                        .split_once('/')
                        .ok_or_else(|| BanTargetError::Prefix {
                            input: input.to_owned(),
                        })?;
                let addr = parse_addr(addr)?;
                let prefix = prefix.parse::<u8>().map_err(|_| BanTargetError::Prefix {
                    input: input.to_owned(),
                })?;
                Self::network(addr, prefix).map_err(|e| match e {
                    BanTargetError::PrefixTooLong { prefix, max, .. } => {
                        BanTargetError::PrefixTooLong {
                            input: input.to_owned(),
                            prefix,
                            max,
                        }
                    }
                    other => other,
                })
            }
            _ => Err(BanTargetError::Kind {
                input: input.to_owned(),
            }),
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned into the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// `addr` with all but the first `prefix` bits cleared; a prefix longer than the address
/// keeps every bit.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// Whether canonical `addr` is in the network `network/prefix`. An IPv4 address is also
/// checked, in its mapped form, against IPv6 networks (`net:::/0` covers everyone); a prefix
/// longer than the address matches nothing.
fn in_network(addr: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let addr = match (addr, network) {
        (IpAddr::V4(v4), IpAddr::V6(_)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V6(_), IpAddr::V4(_)) => return false,
        _ => addr,
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix <= max && mask(addr, prefix) == mask(network, prefix)
}

/// One ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// Who is banned.
    pub target: BanTarget,
    /// When the ban ends, in milliseconds since the epoch: it applies while `now < until`.
    /// `None` is permanent.
    pub until: Option<u64>,
    /// Why, for operators and logs.
    pub reason: String,
    /// When it was made, in milliseconds since the epoch.
    pub created: u64,
}

impl Ban {
    /// Whether the ban still applies at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// The bans in force, indexed for [`Bans::check`].
///
/// Expired bans stop applying at once, but take memory until [`Bans::purge`]; call it now and
/// then (each flapping ban adds one).
#[derive(Clone, Debug, Default)]
pub struct Bans {
    clients: HashMap<String, Ban>,
    users: HashMap<String, Ban>,
    addrs: HashMap<IpAddr, Ban>,
    /// Scanned in order of addition.
    networks: Vec<Ban>,
}

impl Bans {
    /// An empty set of bans.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `ban`, with its target made canonical (see [`BanTarget`]), replacing any ban of
    /// the same target.
    pub fn add(&mut self, mut ban: Ban) {
        ban.target = ban.target.canonical();
        match &ban.target {
            BanTarget::ClientId(id) => {
                self.clients.insert(id.clone(), ban);
            }
            BanTarget::Username(name) => {
                self.users.insert(name.clone(), ban);
            }
            BanTarget::Addr(addr) => {
                self.addrs.insert(*addr, ban);
            }
            BanTarget::Network { .. } => {
                match self.networks.iter_mut().find(|b| b.target == ban.target) {
                    Some(existing) => *existing = ban,
                    None => self.networks.push(ban),
                }
            }
        }
    }

    /// Removes the ban of `target` (compared in canonical form); false if there was none.
    pub fn remove(&mut self, target: &BanTarget) -> bool {
        match target.clone().canonical() {
            BanTarget::ClientId(id) => self.clients.remove(&id).is_some(),
            BanTarget::Username(name) => self.users.remove(&name).is_some(),
            BanTarget::Addr(addr) => self.addrs.remove(&addr).is_some(),
            target @ BanTarget::Network { .. } => {
                let before = self.networks.len();
                self.networks.retain(|b| b.target != target);
                self.networks.len() != before
            }
        }
    }

    /// The bans still in force at `now`, sorted by target: client ids, usernames, addresses,
    /// networks, each in ascending order.
    pub fn list(&self, now: u64) -> Vec<Ban> {
        let mut bans: Vec<Ban> = self
            .clients
            .values()
            .chain(self.users.values())
            .chain(self.addrs.values())
            .chain(&self.networks)
            .filter(|b| b.is_active(now))
            .cloned()
            .collect();
        bans.sort_by(|a, b| a.target.cmp(&b.target));
        bans
    }

    /// The first ban in force at `now` that applies to a client, checked in this order: its
    /// client id, its username, its address, then the network bans in the order added.
    pub fn check(
        &self,
        now: u64,
        client_id: &str,
        username: Option<&str>,
        addr: IpAddr,
    ) -> Option<&Ban> {
        if !self.clients.is_empty()
            && let Some(ban) = self.clients.get(client_id).filter(|b| b.is_active(now))
        {
            return Some(ban);
        }
        if !self.users.is_empty()
            && let Some(ban) = username
                .and_then(|name| self.users.get(name))
                .filter(|b| b.is_active(now))
        {
            return Some(ban);
        }
        self.check_addr(now, addr)
    }

    /// The first address or network ban in force at `now` that applies to `addr`: for a
    /// connection that has not sent anything yet.
    pub fn check_addr(&self, now: u64, addr: IpAddr) -> Option<&Ban> {
        if self.addrs.is_empty() && self.networks.is_empty() {
            return None;
        }
        let addr = canonical(addr);
        if let Some(ban) = self.addrs.get(&addr).filter(|b| b.is_active(now)) {
            return Some(ban);
        }
        self.networks.iter().find(|ban| {
            ban.is_active(now)
                && matches!(ban.target, BanTarget::Network { addr: network, prefix }
                    if in_network(addr, network, prefix))
        })
    }

    /// Drops the bans expired at `now`; returns how many.
    pub fn purge(&mut self, now: u64) -> usize {
        let before = self.len();
        self.clients.retain(|_, b| b.is_active(now));
        self.users.retain(|_, b| b.is_active(now));
        self.addrs.retain(|_, b| b.is_active(now));
        self.networks.retain(|b| b.is_active(now));
        before - self.len()
    }

    /// How many bans are held, expired ones included until [`Bans::purge`].
    pub fn len(&self) -> usize {
        self.clients.len() + self.users.len() + self.addrs.len() + self.networks.len()
    }

    /// Whether no ban is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings of [`Flapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlappingConfig {
    /// Connects of one client id within `window_ms` that get it banned. Default 15; 0 turns
    /// detection off. Lower catches a reconnect loop sooner but may ban a device on a bad
    /// network.
    pub max_connects: u32,
    /// The window in milliseconds: a connect counts while less than this long ago. Default
    /// 60,000 (one minute).
    pub window_ms: u64,
    /// How long a flapping client id is banned, in milliseconds. Default 300,000 (five
    /// minutes).
    pub ban_ms: u64,
}

impl Default for FlappingConfig {
    /// EMQX's defaults: 15 connects in one minute ban for five minutes.
    fn default() -> Self {
        Self {
            max_connects: 15,
            window_ms: 60_000,
            ban_ms: 300_000,
        }
    }
}

/// Most client ids [`Flapping::new`] tracks at once.
pub const DEFAULT_MAX_TRACKED_CLIENTS: usize = 100_000;

/// When the table is full, [`Flapping::connect`] purges it at most this often (milliseconds),
/// so that a flood of new client ids cannot make every connect scan the whole table.
const FULL_PURGE_INTERVAL_MS: u64 = 1_000;

/// Flapping detection: counts each client id's recent connects.
///
/// Memory is bounded whatever client ids arrive: a client id is kept as a 64-bit keyed hash
/// (so long ids cost nothing extra; a collision, which needs the secret per-process key, would
/// only merge two clients' counts), each with at most `max_connects` timestamps, and at most
/// [`DEFAULT_MAX_TRACKED_CLIENTS`] (or the number given to [`Flapping::with_max_clients`])
/// client ids. When that many are tracked, a new client id first makes the table purge
/// (at most once a second), and if it is still full the new id is not tracked, so it cannot be
/// caught flapping until room frees up. Ids already tracked keep being counted.
#[derive(Debug)]
pub struct Flapping {
    config: FlappingConfig,
    max_clients: usize,
    hasher: RandomState,
    /// Client id hash to the times of its recent connects, oldest first.
    clients: HashMap<u64, VecDeque<u64>>,
    /// When a full table was last purged by [`Flapping::connect`].
    last_full_purge: Option<u64>,
}

impl Flapping {
    /// Detection with `config`, tracking at most [`DEFAULT_MAX_TRACKED_CLIENTS`] client ids.
    pub fn new(config: FlappingConfig) -> Self {
        Self::with_max_clients(config, DEFAULT_MAX_TRACKED_CLIENTS)
    }

    /// Detection with `config`, tracking at most `max_clients` client ids.
    pub fn with_max_clients(config: FlappingConfig, max_clients: usize) -> Self {
        Self {
            config,
            max_clients,
            hasher: RandomState::new(),
            clients: HashMap::new(),
            last_full_purge: None,
        }
    }

    /// Records a connect of `client_id` at `now`. Returns a ban of that client id, until
    /// `now + ban_ms`, when this connect makes `max_connects` or more within `window_ms`; the
    /// client's count then starts again from zero.
    pub fn connect(&mut self, now: u64, client_id: &str) -> Option<Ban> {
        let max = usize::try_from(self.config.max_connects).unwrap_or(usize::MAX);
        if max == 0 {
            return None;
        }
        let key = self.hasher.hash_one(client_id);
        if !self.clients.contains_key(&key) && self.clients.len() >= self.max_clients {
            let due = self
                .last_full_purge
                .is_none_or(|last| now.saturating_sub(last) >= FULL_PURGE_INTERVAL_MS);
            if due {
                self.last_full_purge = Some(now);
                self.purge(now);
            }
            if self.clients.len() >= self.max_clients {
                return None;
            }
        }
        let window = self.config.window_ms;
        let times = self.clients.entry(key).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= max {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() < max {
            return None;
        }
        let count = times.len();
        self.clients.remove(&key);
        Some(Ban {
            target: BanTarget::ClientId(client_id.to_owned()),
            until: Some(now.saturating_add(self.config.ban_ms)),
            reason: format!("flapping: connected {count} times within {window} ms"),
            created: now,
        })
    }

    /// Forgets the client ids with no connect within the window at `now`.
    pub fn purge(&mut self, now: u64) {
        let window = self.config.window_ms;
        self.clients.retain(|_, times| {
            times
                .back()
                .is_some_and(|&t| now.saturating_sub(t) < window)
        });
    }

    /// How many client ids are tracked.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_keeps_at_most_max_connects_timestamps() {
        let mut flapping = Flapping::new(FlappingConfig {
            max_connects: 3,
            window_ms: 10,
            ban_ms: 100,
        });
        // Two connects per window never ban; the deque must not grow past the limit.
        for now in (0..10_000).step_by(6) {
            assert_eq!(flapping.connect(now, "c"), None, "at {now}");
            let longest = flapping.clients.values().map(VecDeque::len).max();
            assert!(longest <= Some(3), "{longest:?} at {now}");
        }
    }

    #[test]
    fn a_full_table_is_purged_at_most_once_a_second() {
        let config = FlappingConfig {
            max_connects: 5,
            window_ms: 100,
            ban_ms: 1_000,
        };
        let mut flapping = Flapping::with_max_clients(config, 2);
        assert_eq!(flapping.connect(0, "a"), None);
        assert_eq!(flapping.connect(0, "b"), None);
        assert_eq!(flapping.connect(0, "c"), None);
        assert_eq!(flapping.last_full_purge, Some(0));
        // "a" and "b" are stale by now, but the last purge was too recent to scan again.
        assert_eq!(flapping.connect(500, "d"), None);
        assert_eq!(flapping.tracked(), 2);
        assert_eq!(flapping.connect(1_000, "d"), None);
        assert_eq!(flapping.tracked(), 1, "a and b purged, d tracked");
    }

    #[test]
    fn mask_handles_zero_and_full_prefixes() {
        let v4: IpAddr = "10.1.2.3".parse().expect("address");
        assert_eq!(mask(v4, 0), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(mask(v4, 32), v4);
        let v6: IpAddr = "fd00::1".parse().expect("address");
        assert_eq!(mask(v6, 0), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(mask(v6, 128), v6);
    }
}
