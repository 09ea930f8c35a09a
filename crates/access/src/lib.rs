//! shoal-access: who may connect, and what they may do once connected.
//!
//! - [`password`]: the password file (PBKDF2-SHA512, salted, in Mosquitto's `$7$` format so
//!   that existing `mosquitto_passwd` files work), and the `shoal passwd` command.
//! - [`acl`]: the ACL rule file, compiled per client; publish checks per message, subscribe
//!   checks once per subscription.
//! - [`chain`]: the authenticator chain (certificate identity, enhanced authentication,
//!   password file, anonymous policy) and the per-address slow-down after failures.
//! - [`guess`]: bounds on password guessing per username and per address, across
//!   connections (token buckets, bounded memory).
//! - [`ban`]: banned client ids, usernames, addresses and networks, with expiry; flapping
//!   detection.
//!
//! Sans-IO except for reading and writing the files it owns: no sockets, no tasks, no clock
//! (time comes in as milliseconds since the epoch).

pub mod acl;
pub mod ban;
pub mod chain;
pub mod guess;
pub mod password;
