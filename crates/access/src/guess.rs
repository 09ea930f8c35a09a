//! Bounds on password guessing across connections: failed logins are rationed per username
//! and per client address, whatever the number of connections they come over.
//!
//! Each username and each address has a token bucket (GCRA: one "theoretical arrival
//! time" per key): `failures` attempts per `window`, in a burst or spread out. An attempt
//! that needs a password checked is charged to both buckets *before* the check (so
//! attempts in flight count: a thousand parallel connections get no more than one), and
//! refunded if it succeeds or is not tried at all. Past either bound the attempt is refused
//! without looking at the password (no hash, no cache lookup: the cache would otherwise be
//! an oracle free of any bound).
//!
//! A legitimate user must not be locked out by guesses against their name from elsewhere:
//! an address that has logged in as a user is remembered with that user (a "known pair"),
//! and attempts from a known pair are charged to the address's bucket only. Guesses against
//! other users cost a user nothing; guesses from other addresses cost an address nothing.
//!
//! Memory is bounded: keys are hashed (with a random key: [`std::hash::RandomState`]) to
//! 64 bits, so a username of any length costs the same; at most `max_tracked` keys per
//! table. When a table is full, keys whose bucket has drained are forgotten first, then
//! the half least used, so a flood of random usernames (one failure each) cannot push out
//! the bucket of the user actually under attack. Known pairs live in two generations of
//! `max_tracked / 2`: when the newer fills, the older is forgotten.
//!
//! Sans-IO: time comes in as milliseconds.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

/// At most `failures` within `window_ms` (a token bucket of `failures` tokens, refilled
/// over `window_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed in a burst, and per window.
    pub failures: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
}

/// What [`Guesses`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessConfig {
    /// Per username; `None`: no bound.
    pub per_user: Option<Rate>,
    /// Per client address (IPv4, or the /64 of an IPv6 address); `None`: no bound.
    pub per_address: Option<Rate>,
    /// Keys kept per table at most (usernames, addresses, known pairs).
    pub max_tracked: usize,
}

impl Default for GuessConfig {
    /// 10 per user and 30 per address per minute; 65,536 keys.
    fn default() -> Self {
        Self {
            per_user: Some(Rate {
                failures: 10,
                window_ms: 60_000,
            }),
            per_address: Some(Rate {
                failures: 30,
                window_ms: 60_000,
            }),
            max_tracked: 65_536,
        }
    }
}

/// Which bound refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Too many recent failures for this username (from addresses that never logged in
    /// as it).
    User,
    /// Too many recent failures from this address.
    Address,
}

/// An admitted attempt: what it was charged. Hand it back with [`Guesses::succeeded`],
/// [`Guesses::failed`] or [`Guesses::not_tried`].
#[must_use = "an attempt is settled: succeeded, failed or not tried"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    user: Option<u64>,
    address: Option<u64>,
    pair: u64,
}

/// The bounds' state: buckets per username and per address, and the known pairs.
#[derive(Debug)]
pub struct Guesses {
    hasher: RandomState,
    users: Buckets,
    addresses: Buckets,
    known: KnownPairs,
}

impl Guesses {
    /// Nothing tracked yet.
    pub fn new(config: GuessConfig) -> Self {
        let max_tracked = config.max_tracked.max(2);
        Self {
            hasher: RandomState::new(),
            users: Buckets::new(config.per_user, max_tracked),
            addresses: Buckets::new(config.per_address, max_tracked),
            known: KnownPairs::new(max_tracked),
        }
    }

    /// Whether `username` may have a password checked from `addr` at `now` (ms); if so,
    /// the attempt is charged (see [`Ticket`]).
    pub fn admit(&mut self, now: u64, username: &str, addr: IpAddr) -> Result<Ticket, Limit> {
        let address = self.hasher.hash_one(AddressKey::of(addr));
        let user = self.hasher.hash_one(("user", username));
        let pair = self.hasher.hash_one((username, AddressKey::of(addr)));
        let known = self.known.contains(pair);
        if !self.addresses.allows(address, now) {
            return Err(Limit::Address);
        }
        if !known && !self.users.allows(user, now) {
            return Err(Limit::User);
        }
        Ok(Ticket {
            address: self.addresses.charge(address, now).then_some(address),
            user: (!known && self.users.charge(user, now)).then_some(user),
            pair,
        })
    }

    /// The attempt logged in: its charges are refunded and its address is known for its
    /// username from now on.
    pub fn succeeded(&mut self, now: u64, ticket: Ticket) {
        self.refund(now, ticket);
        self.known.insert(ticket.pair);
    }

    /// The attempt failed: its charges stand.
    pub fn failed(&mut self, ticket: Ticket) {
        let _ = ticket;
    }

    /// The attempt was not tried (the node was busy): its charges are refunded.
    pub fn not_tried(&mut self, now: u64, ticket: Ticket) {
        self.refund(now, ticket);
    }

    /// Usernames, addresses and known pairs tracked now.
    pub fn tracked(&self) -> (usize, usize, usize) {
        (
            self.users.tat.len(),
            self.addresses.tat.len(),
            self.known.len(),
        )
    }

    fn refund(&mut self, now: u64, ticket: Ticket) {
        if let Some(user) = ticket.user {
            self.users.refund(user, now);
        }
        if let Some(address) = ticket.address {
            self.addresses.refund(address, now);
        }
    }
}

/// What an address is counted as: an IPv4 address, or the /64 network of an IPv6 one (a
/// single host commonly holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl AddressKey {
    fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    let mut network = [0; 8];
                    network.copy_from_slice(&octets[..8]);
                    Self::V6(network)
                }
            },
        }
    }
}

/// Token buckets by hashed key, as GCRA: each key's theoretical arrival time; an attempt
/// at `now` is allowed when, charged, it stays within `window_ms` of `now`.
#[derive(Debug)]
struct Buckets {
    rate: Option<Rate>,
    /// How much one attempt advances a key's time: `window_ms / failures`.
    interval: u64,
    tat: HashMap<u64, u64>,
    max_tracked: usize,
}

impl Buckets {
    fn new(rate: Option<Rate>, max_tracked: usize) -> Self {
        let rate = rate.filter(|r| r.failures > 0 && r.window_ms > 0);
        let interval = rate.map_or(0, |r| (r.window_ms / u64::from(r.failures)).max(1));
        Self {
            rate,
            interval,
            tat: HashMap::new(),
            max_tracked,
        }
    }

    fn allows(&self, key: u64, now: u64) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let tat = self.tat.get(&key).copied().unwrap_or(now).max(now);
        tat + self.interval - now <= rate.window_ms
    }

    /// Charges one attempt to `key`; false when there is no bound (nothing charged).
    fn charge(&mut self, key: u64, now: u64) -> bool {
        if self.rate.is_none() {
            return false;
        }
        if !self.tat.contains_key(&key) {
            self.make_room(now);
        }
        let tat = self.tat.entry(key).or_insert(now);
        *tat = (*tat).max(now) + self.interval;
        true
    }

    fn refund(&mut self, key: u64, now: u64) {
        if let Some(tat) = self.tat.get_mut(&key) {
            *tat = tat.saturating_sub(self.interval);
            if *tat <= now {
                self.tat.remove(&key);
            }
        }
    }

    /// Below `max_tracked` keys: drained buckets go first (forgetting them changes
    /// nothing), then the less used half.
    fn make_room(&mut self, now: u64) {
        if self.tat.len() < self.max_tracked {
            return;
        }
        self.tat.retain(|_, &mut tat| tat > now);
        if self.tat.len() < self.max_tracked {
            return;
        }
        let mut by_use: Vec<(u64, u64)> = self.tat.drain().collect();
        let keep = by_use.len() / 2;
        // The most used (latest arrival times) first.
        by_use.select_nth_unstable_by(keep, |a, b| b.1.cmp(&a.1));
        self.tat.extend(by_use.into_iter().take(keep));
    }
}

/// (username, address) pairs that logged in, in two generations.
#[derive(Debug)]
struct KnownPairs {
    newer: HashSet<u64>,
    older: HashSet<u64>,
    generation: usize,
}

impl KnownPairs {
    fn new(max_tracked: usize) -> Self {
        Self {
            newer: HashSet::new(),
            older: HashSet::new(),
            generation: max_tracked / 2,
        }
    }

    fn contains(&self, pair: u64) -> bool {
        self.newer.contains(&pair) || self.older.contains(&pair)
    }

    fn insert(&mut self, pair: u64) {
        if self.newer.contains(&pair) {
            return;
        }
        if self.newer.len() >= self.generation {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(pair);
    }

    fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn guesses(per_user: u32, per_address: u32) -> Guesses {
        Guesses::new(GuessConfig {
            per_user: Some(Rate {
                failures: per_user,
                window_ms: 10_000,
            }),
            per_address: Some(Rate {
                failures: per_address,
                window_ms: 10_000,
            }),
            max_tracked: 1_000,
        })
    }

    /// Admits and fails `n` attempts; returns how many were admitted.
    fn fail_n(g: &mut Guesses, now: u64, user: &str, addr: IpAddr, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            if let Ok(ticket) = g.admit(now, user, addr) {
                g.failed(ticket);
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn attempts_in_flight_count_and_a_user_gets_its_burst_then_its_rate() {
        let mut g = guesses(5, 1_000);
        // Admitted but not settled yet: parallel connections share the bucket.
        let tickets: Vec<_> = (0..5)
            .map(|_| g.admit(0, "alice", A).expect("within the burst"))
            .collect();
        assert_eq!(g.admit(0, "alice", A), Err(Limit::User));
        assert_eq!(g.admit(0, "alice", B), Err(Limit::User), "any address");
        for ticket in tickets {
            g.failed(ticket);
        }
        // One attempt back every window / failures = 2 s.
        assert_eq!(g.admit(1_999, "alice", A), Err(Limit::User));
        assert!(g.admit(2_000, "alice", A).is_ok());
        assert_eq!(g.admit(2_000, "alice", A), Err(Limit::User));
        // A whole quiet window refills the burst.
        assert_eq!(fail_n(&mut g, 20_000, "alice", A, 10), 5);
    }

    #[test]
    fn guesses_against_one_user_cost_another_nothing() {
        let mut g = guesses(3, 1_000);
        assert_eq!(fail_n(&mut g, 0, "alice", A, 10), 3);
        let bob = g.admit(0, "bob", B).expect("bob's bucket is full");
        g.succeeded(0, bob);
    }

    #[test]
    fn an_address_is_bounded_across_usernames() {
        let mut g = guesses(1_000, 4);
        let admitted: usize = (0..10)
            .map(|i| fail_n(&mut g, 0, &format!("user{i}"), A, 1))
            .sum();
        assert_eq!(admitted, 4);
        assert_eq!(g.admit(0, "someone", A), Err(Limit::Address));
        assert!(g.admit(0, "someone", B).is_ok(), "other addresses are free");
    }

    #[test]
    fn an_address_that_logged_in_as_a_user_is_not_locked_out_by_guesses_elsewhere() {
        let mut g = guesses(3, 1_000);
        let ticket = g.admit(0, "alice", B).expect("first login");
        g.succeeded(0, ticket);
        assert_eq!(fail_n(&mut g, 1, "alice", A, 100), 3);
        assert_eq!(g.admit(2, "alice", A), Err(Limit::User));
        // alice from B: a known pair, charged to B only.
        let ticket = g.admit(2, "alice", B).expect("known pair");
        g.succeeded(2, ticket);
        // A new address for alice waits like the guesser.
        let c = IpAddr::from([10, 0, 0, 3]);
        assert_eq!(g.admit(2, "alice", c), Err(Limit::User));
    }

    #[test]
    fn successes_and_untried_attempts_are_refunded() {
        let mut g = guesses(2, 2);
        for now in 0..10 {
            let ticket = g.admit(now, "alice", A).expect("nothing failed yet");
            g.not_tried(now, ticket);
        }
        for now in 10..20 {
            let ticket = g.admit(now, "bob", A).expect("nothing failed yet");
            g.succeeded(now, ticket);
        }
        assert_eq!(g.tracked().0, 0, "refunded buckets are forgotten");
        assert_eq!(g.tracked().1, 0);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let mut g = guesses(1_000, 2);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(fail_n(&mut g, 0, "u1", one, 1), 1);
        assert_eq!(fail_n(&mut g, 0, "u2", two, 5), 1, "same /64");
        assert_eq!(fail_n(&mut g, 0, "u3", other, 1), 1, "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("address");
        assert_eq!(fail_n(&mut g, 0, "u4", A, 2), 2);
        assert_eq!(g.admit(0, "u5", mapped), Err(Limit::Address));
    }

    #[test]
    fn random_usernames_cannot_grow_the_tables_or_push_out_the_attacked_user() {
        let mut g = Guesses::new(GuessConfig {
            per_user: Some(Rate {
                failures: 3,
                window_ms: 60_000,
            }),
            per_address: None,
            max_tracked: 100,
        });
        assert_eq!(fail_n(&mut g, 0, "alice", A, 10), 3);
        for i in 0..10_000 {
            fail_n(&mut g, 1, &format!("random-{i}"), B, 1);
            assert!(g.tracked().0 <= 100);
        }
        assert_eq!(
            g.admit(2, "alice", A),
            Err(Limit::User),
            "alice is still bounded"
        );
        for i in 0..10_000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            let ticket = g
                .admit(3, "bob", addr)
                .expect("bob is not bounded by pairs");
            g.succeeded(3, ticket);
            assert!(g.tracked().2 <= 100);
        }
    }

    #[test]
    fn no_bounds_charge_nothing() {
        let mut g = Guesses::new(GuessConfig {
            per_user: None,
            per_address: None,
            max_tracked: 10,
        });
        assert_eq!(fail_n(&mut g, 0, "alice", A, 1_000), 1_000);
        assert_eq!(g.tracked(), (0, 0, 0));
    }
}
