//! The authenticator chain: each CONNECT's credentials go through the authenticators in
//! order; the first that accepts or rejects decides, and when none does, the listener's
//! anonymous policy does.
//!
//! The order the broker builds: the client certificate (when the listener takes the
//! certificate's identity as the username), the MQTT 5 enhanced authentication outcome
//! (AUTH exchanges run before the chain; a completed exchange is an input here), the
//! password file, then the anonymous policy. More authenticators (JWT, HTTP) implement
//! [`Authenticator`] and take their place in the list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::password::PasswordFile;

/// What a client presented, and where.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The listener's name.
    pub listener: String,
    /// The client identifier.
    pub client_id: String,
    /// The User Name of CONNECT.
    pub username: Option<String>,
    /// The Password of CONNECT.
    pub password: Option<Vec<u8>>,
    /// The client's address (the PROXY protocol's, when the listener has it).
    pub peer: IpAddr,
    /// The identity of the verified client certificate, when the listener takes it as the
    /// username.
    pub certificate_identity: Option<String>,
    /// Whether the listener requires the certificate identity (`use_identity_as_username`).
    pub identity_required: bool,
    /// The enhanced authentication method whose exchange succeeded, if any.
    pub enhanced_method: Option<String>,
    /// Whether the listener lets clients without credentials in.
    pub allow_anonymous: bool,
}

/// Why a client is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Wrong user name or password: MQTT 5 0x86, MQTT 3.1.1 return code 4.
    BadCredentials,
    /// Not allowed here: MQTT 5 0x87, MQTT 3.1.1 return code 5.
    NotAuthorized,
    /// Not tried: the password was not looked at. MQTT 5 0x89 (Server busy), MQTT 3.1.1
    /// return code 3 (Server unavailable): a client retries later, as it should, rather
    /// than taking its password for wrong.
    Busy(Busy),
}

/// Why a password was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Too many recent failures for this username (`guess::Limit::User`).
    UserLimit,
    /// Too many recent failures from this address (`guess::Limit::Address`).
    AddressLimit,
    /// Every hashing slot is taken and the queue for them is full.
    HashQueueFull,
}

impl From<crate::guess::Limit> for Busy {
    fn from(limit: crate::guess::Limit) -> Self {
        match limit {
            crate::guess::Limit::User => Self::UserLimit,
            crate::guess::Limit::Address => Self::AddressLimit,
        }
    }
}

/// One authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The client is who it says; this is its username from now on (ACL, logs).
    Accept {
        /// The username.
        username: Option<String>,
    },
    /// The client is refused.
    Reject(Rejection),
    /// Not this authenticator's call: ask the next.
    Abstain,
}

/// One link of the chain.
pub trait Authenticator: Send + Sync {
    /// Its name, for logs and metrics.
    fn name(&self) -> &'static str;
    /// Decides, or abstains. May be slow (a password hash): the broker calls the chain off
    /// its network threads when `may_block` says so.
    fn authenticate(&self, credentials: &Credentials) -> Verdict;

    /// Whether deciding on `credentials` may take long (a hash, a lookup). Authenticators
    /// that only read the credentials say no, and the broker then decides on the spot.
    fn may_block(&self, credentials: &Credentials) -> bool {
        let _ = credentials;
        true
    }

    /// Decides without blocking when it can (a verification remembered from an earlier
    /// success); `None` when only [`Authenticator::authenticate`] can tell. The default
    /// decides when `may_block` says no.
    fn authenticate_cached(&self, credentials: &Credentials) -> Option<Verdict> {
        (!self.may_block(credentials)).then(|| self.authenticate(credentials))
    }
}

/// The chain's decision, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Accept or Reject (never Abstain).
    pub verdict: Verdict,
    /// The authenticator that decided, or `anonymous`.
    pub by: &'static str,
}

/// Authenticators in order.
#[derive(Clone, Default)]
pub struct Chain {
    links: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.links.iter().map(|a| a.name()).collect();
        f.debug_struct("Chain").field("links", &names).finish()
    }
}

impl Chain {
    /// The chain of the built-in authenticators: certificate, enhanced, then the password
    /// file if there is one.
    pub fn standard(passwords: Option<Arc<PasswordFile>>) -> Self {
        let mut chain = Self::default();
        chain.push(Arc::new(CertificateIdentity));
        chain.push(Arc::new(EnhancedOutcome));
        if let Some(passwords) = passwords {
            chain.push(Arc::new(PasswordCheck(passwords)));
        }
        chain
    }

    /// Adds an authenticator at the end.
    pub fn push(&mut self, authenticator: Arc<dyn Authenticator>) {
        self.links.push(authenticator);
    }

    /// Whether running the chain on `credentials` may take long (see
    /// `Authenticator::may_block`).
    pub fn may_block(&self, credentials: &Credentials) -> bool {
        self.links.iter().any(|link| link.may_block(credentials))
    }

    /// Runs the chain as far as it can without blocking: `Some` when every link before the
    /// deciding one (and that one) could answer on the spot, e.g. a password the file's
    /// cache remembers; `None` when a link would have to block (a hash).
    pub fn decide_cached(&self, credentials: &Credentials) -> Option<Decision> {
        for link in &self.links {
            match link.authenticate_cached(credentials)? {
                Verdict::Abstain => {}
                verdict => {
                    return Some(Decision {
                        verdict,
                        by: link.name(),
                    });
                }
            }
        }
        Some(self.anonymous(credentials))
    }

    /// Runs the chain: the first Accept or Reject decides; if every link abstains, the
    /// anonymous policy: clients are let in (with the username they sent, unchecked, as
    /// Mosquitto does without a password file) when the listener allows anonymous access,
    /// and refused with Not Authorized otherwise.
    pub fn decide(&self, credentials: &Credentials) -> Decision {
        for link in &self.links {
            match link.authenticate(credentials) {
                Verdict::Abstain => {}
                verdict => {
                    return Decision {
                        verdict,
                        by: link.name(),
                    };
                }
            }
        }
        self.anonymous(credentials)
    }

    /// The listener's anonymous policy, when every link abstained.
    fn anonymous(&self, credentials: &Credentials) -> Decision {
        let verdict = if credentials.allow_anonymous {
            Verdict::Accept {
                username: credentials.username.clone(),
            }
        } else {
            Verdict::Reject(Rejection::NotAuthorized)
        };
        Decision {
            verdict,
            by: "anonymous",
        }
    }
}

/// `use_identity_as_username`: the verified certificate's identity is the username; no
/// certificate (or one without the identity) is refused.
#[derive(Debug)]
struct CertificateIdentity;

impl Authenticator for CertificateIdentity {
    fn name(&self) -> &'static str {
        "certificate"
    }

    fn may_block(&self, _: &Credentials) -> bool {
        false
    }

    fn authenticate(&self, credentials: &Credentials) -> Verdict {
        if !credentials.identity_required {
            return Verdict::Abstain;
        }
        match &credentials.certificate_identity {
            Some(identity) => Verdict::Accept {
                username: Some(identity.clone()),
            },
            None => Verdict::Reject(Rejection::NotAuthorized),
        }
    }
}

/// A completed MQTT 5 enhanced authentication exchange accepts the client with the
/// username it sent.
#[derive(Debug)]
struct EnhancedOutcome;

impl Authenticator for EnhancedOutcome {
    fn name(&self) -> &'static str {
        "enhanced"
    }

    fn may_block(&self, _: &Credentials) -> bool {
        false
    }

    fn authenticate(&self, credentials: &Credentials) -> Verdict {
        match credentials.enhanced_method {
            Some(_) => Verdict::Accept {
                username: credentials.username.clone(),
            },
            None => Verdict::Abstain,
        }
    }
}

/// The password file: a username is checked against it; a username it does not know, or a
/// wrong password, is refused with the same answer in the same time.
#[derive(Debug)]
struct PasswordCheck(Arc<PasswordFile>);

impl Authenticator for PasswordCheck {
    fn name(&self) -> &'static str {
        "password_file"
    }

    /// Only a username is checked (a PBKDF2 hash, unless the verify cache knows it).
    fn may_block(&self, credentials: &Credentials) -> bool {
        credentials.username.is_some()
    }

    /// A username whose password the file's cache remembers is accepted at once; any other
    /// needs the hash.
    fn authenticate_cached(&self, credentials: &Credentials) -> Option<Verdict> {
        let Some(username) = &credentials.username else {
            return Some(Verdict::Abstain);
        };
        let password = credentials.password.as_deref().unwrap_or_default();
        self.0
            .verify_cached(username, password)
            .then(|| Verdict::Accept {
                username: Some(username.clone()),
            })
    }

    fn authenticate(&self, credentials: &Credentials) -> Verdict {
        let Some(username) = &credentials.username else {
            return Verdict::Abstain;
        };
        let password = credentials.password.as_deref().unwrap_or_default();
        if self.0.verify(username, password) {
            Verdict::Accept {
                username: Some(username.clone()),
            }
        } else {
            Verdict::Reject(Rejection::BadCredentials)
        }
    }
}

/// Failed attempts per address, to slow down guessing: each failure from an address
/// doubles the wait before its next refusal is sent (from 100 ms up to 5 s); an address
/// quiet for a minute starts again. Memory is bounded: past `MAX_TRACKED` addresses the
/// oldest are forgotten.
#[derive(Debug, Default)]
pub struct FailureDelay {
    failures: HashMap<IpAddr, (u32, u64)>,
}

const FIRST_DELAY_MS: u64 = 100;
const MAX_DELAY_MS: u64 = 5_000;
const FORGET_AFTER_MS: u64 = 60_000;
const MAX_TRACKED: usize = 65_536;

impl FailureDelay {
    /// Records a failure from `addr` at `now` (ms); returns how long to wait before
    /// answering it, in milliseconds.
    pub fn fail(&mut self, addr: IpAddr, now: u64) -> u64 {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&addr) {
            self.failures
                .retain(|_, &mut (_, at)| now.saturating_sub(at) < FORGET_AFTER_MS);
            if self.failures.len() >= MAX_TRACKED {
                self.failures.clear();
            }
        }
        let entry = self.failures.entry(addr).or_insert((0, now));
        if now.saturating_sub(entry.1) >= FORGET_AFTER_MS {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = entry.0.saturating_sub(1).min(16);
        (FIRST_DELAY_MS << doublings).min(MAX_DELAY_MS)
    }

    /// A successful login from `addr` clears its record.
    pub fn succeed(&mut self, addr: IpAddr) {
        self.failures.remove(&addr);
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            listener: "default".into(),
            client_id: "c".into(),
            username: None,
            password: None,
            peer: IpAddr::from([127, 0, 0, 1]),
            certificate_identity: None,
            identity_required: false,
            enhanced_method: None,
            allow_anonymous: true,
        }
    }

    fn passwords() -> Arc<PasswordFile> {
        let mut file = PasswordFile::new();
        file.set("alice", b"secret").expect("valid user");
        Arc::new(file)
    }

    #[test]
    fn anonymous_policy_decides_when_everyone_abstains() {
        let chain = Chain::standard(None);
        let decision = chain.decide(&credentials());
        assert_eq!(decision.verdict, Verdict::Accept { username: None });
        assert_eq!(decision.by, "anonymous");
        let closed = Credentials {
            allow_anonymous: false,
            ..credentials()
        };
        assert_eq!(
            chain.decide(&closed).verdict,
            Verdict::Reject(Rejection::NotAuthorized)
        );
    }

    #[test]
    fn only_a_password_check_may_block() {
        let with_user = Credentials {
            username: Some("alice".into()),
            ..credentials()
        };
        assert!(!Chain::standard(None).may_block(&with_user));
        let chain = Chain::standard(Some(passwords()));
        assert!(chain.may_block(&with_user));
        assert!(!chain.may_block(&credentials()));
    }

    #[test]
    fn the_password_file_checks_usernames() {
        let chain = Chain::standard(Some(passwords()));
        let good = Credentials {
            username: Some("alice".into()),
            password: Some(b"secret".to_vec()),
            allow_anonymous: false,
            ..credentials()
        };
        let decision = chain.decide(&good);
        assert_eq!(
            decision.verdict,
            Verdict::Accept {
                username: Some("alice".into())
            }
        );
        assert_eq!(decision.by, "password_file");
        for (user, password) in [("alice", "wrong"), ("mallory", "secret")] {
            let bad = Credentials {
                username: Some(user.into()),
                password: Some(password.as_bytes().to_vec()),
                ..good.clone()
            };
            assert_eq!(
                chain.decide(&bad).verdict,
                Verdict::Reject(Rejection::BadCredentials),
                "{user}"
            );
        }
        // No username: the password file abstains, the anonymous policy refuses.
        let anonymous = Credentials {
            username: None,
            ..good
        };
        assert_eq!(
            chain.decide(&anonymous).verdict,
            Verdict::Reject(Rejection::NotAuthorized)
        );
    }

    #[test]
    fn only_a_remembered_password_is_decided_without_blocking() {
        let chain = Chain::standard(Some(passwords()));
        let good = Credentials {
            username: Some("alice".into()),
            password: Some(b"secret".to_vec()),
            allow_anonymous: false,
            ..credentials()
        };
        assert_eq!(chain.decide_cached(&good), None, "not verified yet");
        let wrong = Credentials {
            password: Some(b"wrong".to_vec()),
            ..good.clone()
        };
        assert_eq!(chain.decide_cached(&wrong), None);
        assert!(matches!(
            chain.decide(&good).verdict,
            Verdict::Accept { .. }
        ));
        let decision = chain.decide_cached(&good).expect("remembered");
        assert_eq!(decision.by, "password_file");
        assert_eq!(chain.decide_cached(&wrong), None, "failures need the hash");
        // Links that never block decide as `decide` does.
        let anonymous = Credentials {
            username: None,
            ..good
        };
        assert_eq!(
            chain.decide_cached(&anonymous).map(|d| d.verdict),
            Some(Verdict::Reject(Rejection::NotAuthorized))
        );
    }

    #[test]
    fn certificate_identity_comes_first_and_is_required_when_asked() {
        let chain = Chain::standard(Some(passwords()));
        let with_cert = Credentials {
            username: Some("ignored".into()),
            password: Some(b"wrong".to_vec()),
            certificate_identity: Some("device-7".into()),
            identity_required: true,
            ..credentials()
        };
        assert_eq!(
            chain.decide(&with_cert).verdict,
            Verdict::Accept {
                username: Some("device-7".into())
            }
        );
        let without = Credentials {
            certificate_identity: None,
            ..with_cert
        };
        assert_eq!(
            chain.decide(&without).verdict,
            Verdict::Reject(Rejection::NotAuthorized)
        );
    }

    #[test]
    fn failures_slow_down_per_address_and_are_forgotten() {
        let mut delay = FailureDelay::default();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(delay.fail(a, 0), 100);
        assert_eq!(delay.fail(a, 1), 200);
        assert_eq!(delay.fail(a, 2), 400);
        assert_eq!(delay.fail(b, 3), 100, "other addresses are not slowed");
        for t in 0..20 {
            delay.fail(a, 10 + t);
        }
        assert_eq!(delay.fail(a, 40), 5_000, "capped");
        assert_eq!(
            delay.fail(a, 40 + 60_000),
            100,
            "quiet for a minute: forgotten"
        );
        delay.succeed(b);
        assert_eq!(delay.fail(b, 100), 100);
    }
}
