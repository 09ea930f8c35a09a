//! The node's access control state: the authenticator chain over the password file, the
//! ACL, bans and flapping detection, the per-address slow-down after failed logins, and
//! the bounds on password guessing (per username and address: `shoal_access::guess`; on
//! hashing at once: `hash_gate`).
//! The files are reloaded when they change (checked every few seconds) and on SIGHUP; a
//! file that fails to load leaves the previous version in force, with an error logged.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use shoal_access::acl::{Acl, ClientAcl};
use shoal_access::ban::{Ban, BanTarget, Bans, Flapping, FlappingConfig};
use shoal_access::chain::{Busy, Chain, Credentials, Decision, FailureDelay, Rejection, Verdict};
use shoal_access::guess::{GuessConfig, Guesses, Rate};
use shoal_access::password::{PasswordError, PasswordFile};

use crate::broker::{lock, read, write};
use crate::config::Config;
use crate::hash_gate::{HashGate, HashStats};
use crate::metrics as m;

/// Access control, shared by the node's tasks.
#[derive(Debug)]
pub(crate) struct Access {
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    chain: RwLock<Arc<Chain>>,
    acl: RwLock<Arc<Acl>>,
    /// Bumped when the ACL is reloaded: connections recompile their rules.
    generation: AtomicU64,
    bans: RwLock<Bans>,
    /// How many bans there are: zero (the usual case) skips the lock.
    ban_count: AtomicUsize,
    flapping: Option<Mutex<Flapping>>,
    failures: Mutex<FailureDelay>,
    /// Password checks charged per username and per address.
    guesses: Mutex<Guesses>,
    /// Hashes at once, and the queue for them.
    hashing: HashGate,
    stamps: Mutex<[Option<SystemTime>; 2]>,
    clock: crate::clock::Clock,
    /// Where a data folder written before bans were replicated kept them (`bans.json`),
    /// read at start and moved into the cluster (`Broker::migrate_bans`).
    bans_file: PathBuf,
}

impl Access {
    /// Loads the files the configuration names; refuses the node's start if one is bad.
    pub(crate) fn load(config: &Config, clock: crate::clock::Clock) -> Result<Self, String> {
        let chain = build_chain(config.password_file.as_deref())?;
        let acl = match &config.acl_file {
            Some(path) => {
                let acl = Acl::load(path).map_err(|e| e.to_string())?;
                tracing::info!(path = %path.display(), rules = acl.len(), "ACL loaded");
                acl
            }
            None => {
                tracing::info!("no acl_file: every client may publish and subscribe anywhere");
                Acl::allow_all()
            }
        };
        let flapping = config.flapping.map(|f| {
            Mutex::new(Flapping::new(FlappingConfig {
                max_connects: f.max_connects,
                window_ms: f.window.as_millis() as u64,
                ban_ms: f.ban.as_millis() as u64,
            }))
        });
        let bans_file = config.data_dir.join(BANS_FILE);
        let mut bans = Bans::new();
        for ban in load_bans(&bans_file, clock.now().as_millis()) {
            bans.add(ban);
        }
        Ok(Self {
            ban_count: AtomicUsize::new(bans.len()),
            bans: RwLock::new(bans),
            bans_file,
            stamps: Mutex::new([
                modified(config.password_file.as_deref()),
                modified(config.acl_file.as_deref()),
            ]),
            password_file: config.password_file.clone(),
            acl_file: config.acl_file.clone(),
            chain: RwLock::new(Arc::new(chain)),
            acl: RwLock::new(Arc::new(acl)),
            generation: AtomicU64::new(0),
            flapping,
            failures: Mutex::new(FailureDelay::default()),
            guesses: Mutex::new(Guesses::new(guess_config(config))),
            hashing: HashGate::new(config.auth.max_concurrent_hashes, config.auth.hash_queue),
            clock,
        })
    }

    /// The time now, in milliseconds since the epoch (the bans' terms).
    pub(crate) fn now(&self) -> u64 {
        self.clock.now().as_millis()
    }

    /// Reloads the password file and the ACL if they changed (or always, with `force`);
    /// returns whether a new ACL is in force.
    pub(crate) fn reload(&self, force: bool) -> bool {
        let mut acl_changed = false;
        let now = [
            modified(self.password_file.as_deref()),
            modified(self.acl_file.as_deref()),
        ];
        let before = std::mem::replace(&mut *lock(&self.stamps), now);
        if let Some(path) = &self.password_file
            && (force || before[0] != now[0])
        {
            match build_chain(Some(path)) {
                Ok(chain) => {
                    *write(&self.chain) = Arc::new(chain);
                    tracing::info!(file = %path.display(), "password file reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "password file not reloaded; the previous one stays in force")
                }
            }
        }
        if let Some(path) = &self.acl_file
            && (force || before[1] != now[1])
        {
            match Acl::load(path) {
                Ok(acl) => {
                    let rules = acl.len();
                    *write(&self.acl) = Arc::new(acl);
                    self.generation.fetch_add(1, Ordering::Release);
                    acl_changed = true;
                    tracing::info!(file = %path.display(), rules, "ACL reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "ACL not reloaded; the previous one stays in force")
                }
            }
        }
        acl_changed
    }

    /// The authenticator chain now.
    pub(crate) fn chain(&self) -> Arc<Chain> {
        Arc::clone(&read(&self.chain))
    }

    /// Runs the chain. What needs no hash (no password file, no username, a certificate,
    /// a password the file remembers from an earlier success) is decided on the spot;
    /// anything that would check a password is first charged to its username and address
    /// (`shoal_access::guess`: past their bounds it is refused without looking at the
    /// password), then hashed off the network threads within the node's hashing bound
    /// (refused at once when that is full).
    pub(crate) async fn authenticate(&self, credentials: Credentials) -> Decision {
        let chain = self.chain();
        // Most connections need no hash (no password file, or no username): no thread hop.
        if !chain.may_block(&credentials) {
            return chain.decide(&credentials);
        }
        let username = credentials.username.as_deref().unwrap_or_default();
        // Charged before the cache is asked: unbounded cache lookups would be an oracle.
        let ticket = match lock(&self.guesses).admit(self.now(), username, credentials.peer) {
            Ok(ticket) => ticket,
            Err(limit) => return busy(Busy::from(limit)),
        };
        let decision = match chain.decide_cached(&credentials) {
            // A known-good password never waits behind guessers' hashes.
            Some(decision) => decision,
            None => match self.hashing.run(move || chain.decide(&credentials)).await {
                Some(Ok(decision)) => decision,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "authentication task failed");
                    Decision {
                        verdict: Verdict::Reject(Rejection::NotAuthorized),
                        by: "error",
                    }
                }
                None => {
                    lock(&self.guesses).not_tried(self.now(), ticket);
                    return busy(Busy::HashQueueFull);
                }
            },
        };
        let mut guesses = lock(&self.guesses);
        match decision.verdict {
            Verdict::Accept { .. } => guesses.succeeded(self.now(), ticket),
            Verdict::Reject(Rejection::Busy(_)) => guesses.not_tried(self.now(), ticket),
            Verdict::Reject(_) | Verdict::Abstain => guesses.failed(ticket),
        }
        decision
    }

    /// What the node has hashed so far.
    pub(crate) fn hash_stats(&self) -> HashStats {
        self.hashing.stats()
    }

    /// Records a failed login from `addr`: how long to wait before answering it.
    pub(crate) fn failed(&self, addr: IpAddr) -> Duration {
        Duration::from_millis(lock(&self.failures).fail(addr, self.now()))
    }

    /// Records a successful login from `addr`.
    pub(crate) fn succeeded(&self, addr: IpAddr) {
        let mut failures = lock(&self.failures);
        if !failures.is_empty() {
            failures.succeed(addr);
        }
    }

    /// The ACL's generation and the rules of one client.
    pub(crate) fn client_acl(&self, username: Option<&str>, client_id: &str) -> (u64, ClientAcl) {
        let generation = self.generation.load(Ordering::Acquire);
        (generation, read(&self.acl).for_client(username, client_id))
    }

    /// The ACL's generation now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `addr` is banned (by address or network).
    pub(crate) fn banned_addr(&self, addr: IpAddr) -> bool {
        if self.ban_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        read(&self.bans).check_addr(self.now(), addr).is_some()
    }

    /// The ban that refuses this client, if any.
    pub(crate) fn banned(
        &self,
        client_id: &str,
        username: Option<&str>,
        addr: IpAddr,
    ) -> Option<String> {
        if self.ban_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        read(&self.bans)
            .check(self.now(), client_id, username, addr)
            .map(|ban| format!("banned ({}): {}", ban.target, ban.reason))
    }

    /// Counts a connect of `client_id`; bans it here and returns the ban when it flaps
    /// (the caller spreads it to the cluster).
    pub(crate) fn flapping(&self, client_id: &str) -> Option<Ban> {
        let flapping = self.flapping.as_ref()?;
        let ban = lock(flapping).connect(self.now(), client_id)?;
        metrics::counter!(m::FLAPPING_BANS).increment(1);
        tracing::warn!(client_id, reason = %ban.reason, "client id banned for flapping");
        self.add_ban(ban.clone());
        Some(ban)
    }

    /// Enforces a ban (or replaces one) on this node: memory only, the cluster's `meta`
    /// group keeps them.
    pub(crate) fn add_ban(&self, ban: Ban) {
        let mut bans = write(&self.bans);
        bans.add(ban);
        self.ban_count.store(bans.len(), Ordering::Relaxed);
    }

    /// Stops enforcing the ban of `target` on this node; false if there was none.
    pub(crate) fn remove_ban(&self, target: &BanTarget) -> bool {
        let mut bans = write(&self.bans);
        let removed = bans.remove(target);
        self.ban_count.store(bans.len(), Ordering::Relaxed);
        removed
    }

    /// The bans a data folder written before bans were replicated keeps in `bans.json`
    /// (enforced from the start, moved into the cluster by `Broker::migrate_bans`).
    pub(crate) fn saved_bans(&self) -> Vec<Ban> {
        load_bans(&self.bans_file, self.now())
    }

    /// Removes `bans.json` once its bans are in the cluster.
    pub(crate) fn forget_saved_bans(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.bans_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The bans in force.
    pub(crate) fn bans(&self) -> Vec<Ban> {
        read(&self.bans).list(self.now())
    }

    /// Forgets expired bans and quiet flapping records.
    pub(crate) fn sweep(&self) {
        let now = self.now();
        if self.ban_count.load(Ordering::Relaxed) > 0 {
            let mut bans = write(&self.bans);
            bans.purge(now);
            self.ban_count.store(bans.len(), Ordering::Relaxed);
        }
        if let Some(flapping) = &self.flapping {
            lock(flapping).purge(now);
        }
    }
}

/// Bans as JSON, the shape `GET /bans` answers and `bans.json` kept: a list of
/// `{target, until_ms, reason, created_ms}`.
pub(crate) fn bans_json(bans: &[Ban]) -> String {
    let list: Vec<serde_json::Value> = bans
        .iter()
        .map(|ban| {
            serde_json::json!({
                "target": ban.target.to_string(),
                "until_ms": ban.until,
                "reason": ban.reason,
                "created_ms": ban.created,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The file in the data folder that kept bans across restarts before `meta` replicated
/// them.
const BANS_FILE: &str = "bans.json";

/// The unexpired bans saved in `path`; a missing file is no bans, and a bad entry (or file)
/// is skipped with an error logged, never a failed start.
fn load_bans(path: &Path, now: u64) -> Vec<Ban> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "saved bans not read");
            return Vec::new();
        }
    };
    let entries: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "saved bans are not a JSON list; ignored");
            return Vec::new();
        }
    };
    let mut bans = Vec::new();
    for entry in entries {
        let target = entry["target"]
            .as_str()
            .and_then(|t| t.parse::<BanTarget>().ok());
        let Some(target) = target else {
            tracing::error!(file = %path.display(), %entry, "a saved ban without a valid target; skipped");
            continue;
        };
        let ban = Ban {
            target,
            until: entry["until_ms"].as_u64(),
            reason: entry["reason"].as_str().unwrap_or_default().to_owned(),
            created: entry["created_ms"].as_u64().unwrap_or(now),
        };
        if ban.is_active(now) {
            bans.push(ban);
        }
    }
    bans
}

fn build_chain(password_file: Option<&Path>) -> Result<Chain, String> {
    let passwords = match password_file {
        Some(path) => {
            let passwords = PasswordFile::load(path).map_err(|e| match e {
                // The parse error knows the line, not the file.
                PasswordError::Parse { .. } => format!("{}: {e}", path.display()),
                other => other.to_string(),
            })?;
            tracing::info!(path = %path.display(), users = passwords.users().count(), "password file loaded");
            Some(passwords)
        }
        None => None,
    };
    Ok(Chain::standard(passwords.map(Arc::new)))
}

/// A refusal without a password check.
fn busy(why: Busy) -> Decision {
    Decision {
        verdict: Verdict::Reject(Rejection::Busy(why)),
        by: match why {
            Busy::UserLimit | Busy::AddressLimit => "guess_limit",
            Busy::HashQueueFull => "hash_queue",
        },
    }
}

/// The guessing bounds of the configuration.
fn guess_config(config: &Config) -> GuessConfig {
    let rate = |limit: Option<(u32, Duration)>| {
        limit.map(|(failures, window)| Rate {
            failures,
            window_ms: window.as_millis() as u64,
        })
    };
    GuessConfig {
        per_user: rate(config.auth.failures_per_user),
        per_address: rate(config.auth.failures_per_address),
        ..GuessConfig::default()
    }
}

fn modified(path: Option<&Path>) -> Option<SystemTime> {
    std::fs::metadata(path?).and_then(|m| m.modified()).ok()
}
