//! The ACL file: which topics each client may publish to and receive from, as an ordered list
//! of rules. [`Acl::parse`] or [`Acl::load`] reads the file once; [`Acl::for_client`]
//! compiles it for one connected client into a [`ClientAcl`], which answers
//! [`may_publish`](ClientAcl::may_publish) for each PUBLISH without allocating, and
//! [`subscribe`](ClientAcl::subscribe) once for each subscription.
//!
//! # The file
//!
//! ```text
//! # Who may do what. The first rule that matches decides.
//! default deny
//! allow user:alice   all       sensors/#
//! deny  all          subscribe sensors/secret/#
//! allow client:dev-1 publish   devices/dev-1/#
//! allow all          publish   devices/%c/#   # each device its own tree
//! allow anonymous    subscribe public/#
//! allow user:ops     subscribe $SYS/#
//! ```
//!
//! UTF-8 text, one statement per line, its fields separated by spaces or tabs. Keywords are
//! lower case; names, ids and topic filters are compared byte for byte.
//!
//! - **Comments and blank lines.** A line that is empty or only whitespace is ignored, and so
//!   is a line whose first non-blank character is `#`. After the last field of a statement, a
//!   field that starts with `#` begins a comment that runs to the end of the line (a rule's
//!   topic filter is its fourth field, so `allow all subscribe #` has the filter `#`, and
//!   `allow all subscribe # # everything` the same with a comment).
//! - **`default allow`** or **`default deny`**: what happens to a topic that no rule
//!   matches. At most once, anywhere in the file. Without it, `deny`. The default never
//!   allows a topic that starts with `$` (see below).
//! - **Rules**: `<allow|deny> <who> <action> <topic filter>`, four fields.
//!   - *who* is `all` (every client), `user:NAME` (clients that gave the username NAME),
//!     `client:ID` (the client whose client identifier is ID) or `anonymous` (clients that
//!     gave no username at all; an empty username is a username). NAME and ID are not empty.
//!   - *action* is `publish` (sending PUBLISH to matching topics), `subscribe` (receiving
//!     messages of matching topics, whichever subscription brings them) or `all` (both).
//!   - *topic filter* is a valid MQTT topic filter (§4.7: `+` for one level, `#` as the last
//!     level for any number, `a/#` taking in `a` itself), matched against the topic name of
//!     each message. `$share/...` filters are refused: a shared subscription is checked by
//!     the filter after its ShareName. Within the filter, `%u` stands for the client's
//!     username, `%c` for its client identifier, and `%%` for a `%`; any other `%` is an
//!     error.
//!
//! Names and filters cannot contain whitespace, as it separates the fields: a rule cannot
//! name such a user or client, or such a topic.
//!
//! # How a topic is decided
//!
//! The rules are tried in file order, and the first that applies to the client, is for the
//! action and whose filter matches the topic decides, `allow` or `deny`. Later rules are not
//! looked at: to refuse one subtree of an allowed tree, write the `deny` first. When no rule
//! matches, the default decides, except that a topic name starting with `$` (such as
//! `$SYS/...`) is then always denied: only a rule naming it explicitly (`$SYS/#`; a filter
//! starting with `+` or `#` never matches such a topic) allows it.
//!
//! # `%u` and `%c`
//!
//! When a client connects, `%u` and `%c` in each filter are replaced by its username and
//! client identifier. A rule does not apply to a client (it is skipped, as if it named
//! another client) when:
//!
//! - the filter uses `%u` and the client gave no username;
//! - the value is empty, or contains `+`, `#` or `/`: a client with the id `#` or `a/b`
//!   gains no wildcard and no other client's tree through `devices/%c/#`;
//! - the filter does not start with `$` but the value makes it do so (`%c/#` for a client
//!   with the id `$SYS`): a placeholder never reaches the `$` topics;
//! - the filter is no valid topic filter after the replacement (too long), or has become a
//!   `$share/` one.
//!
//! This holds for `deny` rules as well: a `deny` rule skipped for one client denies that
//! client nothing, so keep the default `deny` when such rules protect anything.
//!
//! # Subscriptions
//!
//! A subscription is decided once, by [`ClientAcl::subscribe`], from the relations between its
//! filter and the rules' filters ([`filter_covers`], [`filters_intersect`]):
//! [`SubscribeDecision::Allow`] when every topic it can match may be received,
//! [`SubscribeDecision::Deny`] when none may, and [`SubscribeDecision::Filtered`] when some
//! may: the broker then grants the subscription and checks [`ClientAcl::may_receive`] for
//! each message (retained ones included) that it brings, so that a wildcard never delivers a
//! topic the client could not subscribe to by name. The answer can be more cautious than the
//! exact one, never less: see [`ClientAcl::subscribe`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_topic::{SHARE_PREFIX, filter_covers, filters_intersect, matches, validate_topic_filter};

/// The compiled ACL file: rules in file order and the default policy. Cloning copies the
/// rules; compile it per client with [`Acl::for_client`].
#[derive(Debug, Clone)]
pub struct Acl {
    /// The rules in file order.
    rules: Vec<Rule>,
    /// The policy of topics that no rule matches (never granting `$` topics).
    default: Permission,
    /// [`Acl::allow_all`]: no checks at all.
    unrestricted: bool,
}

/// Why an ACL file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read, or is not UTF-8.
    #[error("cannot read acl file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a valid statement.
    #[error("{}acl line {line}: {reason}", FilePrefix(.path.as_deref()))]
    Parse {
        /// The file, when it was read by [`Acl::load`].
        path: Option<PathBuf>,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it, naming the text at fault.
        reason: String,
    },
}

/// The decision on a whole subscription, from [`ClientAcl::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Every topic the filter can match may be received: grant it, check nothing more.
    Allow,
    /// No topic the filter can match may be received: refuse it (SUBACK 0x87, Not
    /// authorized, or 0x80 in MQTT 3.1.1).
    Deny,
    /// Some topics may be received and some not: grant it, and check
    /// [`ClientAcl::may_receive`] for each message it would deliver.
    Filtered,
}

/// The ACL of one connected client: the rules that apply to it, with `%u` and `%c` replaced,
/// split by action. Cloning is a reference count.
#[derive(Debug, Clone)]
pub struct ClientAcl {
    /// Shared by the clones.
    inner: Arc<ClientRules>,
}

/// What a [`ClientAcl`] holds.
#[derive(Debug)]
struct ClientRules {
    /// [`Acl::allow_all`]: every check answers yes.
    unrestricted: bool,
    /// The policy of topics that no rule matches (never granting `$` topics).
    default: Permission,
    /// The `publish` and `all` rules, in file order.
    publish: Box<[Grant]>,
    /// The `subscribe` and `all` rules, in file order.
    subscribe: Box<[Grant]>,
}

/// A rule as it applies to one client: its permission and its final filter.
#[derive(Debug)]
struct Grant {
    /// `allow` or `deny`.
    permission: Permission,
    /// The topic filter, placeholders replaced.
    filter: Arc<str>,
}

/// One rule of the file.
#[derive(Debug, Clone)]
struct Rule {
    /// `allow` or `deny`.
    permission: Permission,
    /// The clients it is for.
    who: Who,
    /// The action it is for.
    action: Action,
    /// Its topic filter, placeholders in place.
    filter: Pattern,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permission {
    /// The rule, or default, grants.
    Allow,
    /// The rule, or default, refuses.
    Deny,
}

/// The clients a rule is for.
#[derive(Debug, Clone)]
enum Who {
    /// `all`.
    All,
    /// `user:NAME`.
    User(Box<str>),
    /// `client:ID`.
    Client(Box<str>),
    /// `anonymous`: no username.
    Anonymous,
}

/// The action a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `publish`.
    Publish,
    /// `subscribe`.
    Subscribe,
    /// `all`: both.
    All,
}

/// A rule's topic filter as written, `%u`, `%c` and `%%` included.
#[derive(Debug, Clone)]
struct Pattern {
    /// The filter as written; shared by every client when it has no placeholder.
    text: Arc<str>,
    /// Whether it contains a `%` sequence to replace.
    has_placeholders: bool,
    /// Whether it contains `%u`.
    uses_username: bool,
}

impl Acl {
    /// Parses the text of an ACL file (see the [module documentation](self)). The first
    /// invalid line is the error, with its number and the reason.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        let mut default: Option<(Permission, usize)> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let error = |reason: String| AclError::Parse {
                path: None,
                line: number,
                reason,
            };
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else {
                continue;
            };
            if first.starts_with('#') {
                continue;
            }
            if first == "default" {
                let permission = match fields.next() {
                    Some(word) => parse_permission(word).ok_or_else(|| {
                        error(format!(
                            "unknown default policy {word:?} (expected allow or deny)"
                        ))
                    })?,
                    None => {
                        return Err(error(
                            "missing policy after \"default\" (expected allow or deny)".into(),
                        ));
                    }
                };
                if let Some((_, first_line)) = default {
                    return Err(error(format!(
                        "default policy given twice (first on line {first_line})"
                    )));
                }
                end_of_statement(fields, "the default policy").map_err(error)?;
                default = Some((permission, number));
                continue;
            }
            let permission = parse_permission(first).ok_or_else(|| {
                error(format!(
                    "unknown keyword {first:?} (expected allow, deny or default)"
                ))
            })?;
            rules.push(parse_rule(first, permission, fields).map_err(error)?);
        }
        Ok(Self {
            rules,
            default: default.map_or(Permission::Deny, |(permission, _)| permission),
            unrestricted: false,
        })
    }

    /// Reads and parses an ACL file. A parse error names the file as well as the line.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            AclError::Parse { line, reason, .. } => AclError::Parse {
                path: Some(path.to_path_buf()),
                line,
                reason,
            },
            other => other,
        })
    }

    /// The ACL without an ACL file: every client may publish and receive every topic, `$`
    /// topics included, and [`ClientAcl::is_unrestricted`] lets the broker skip the checks.
    pub fn allow_all() -> Self {
        Self {
            rules: Vec::new(),
            default: Permission::Allow,
            unrestricted: true,
        }
    }

    /// The number of rules (the `default` line is none).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule, so that the default alone decides.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that apply to the client with this username (`None`: it gave none) and
    /// client identifier, in file order, with `%u` and `%c` replaced and the rules that they
    /// make void left out (see the [module documentation](self)). Once per connection; the
    /// result answers the checks without allocating.
    pub fn for_client(&self, username: Option<&str>, client_id: &str) -> ClientAcl {
        let mut publish = Vec::new();
        let mut subscribe = Vec::new();
        for rule in &self.rules {
            if !rule.who.includes(username, client_id) {
                continue;
            }
            let Some(filter) = rule.filter.for_client(username, client_id) else {
                continue;
            };
            if rule.action != Action::Subscribe {
                publish.push(Grant {
                    permission: rule.permission,
                    filter: Arc::clone(&filter),
                });
            }
            if rule.action != Action::Publish {
                subscribe.push(Grant {
                    permission: rule.permission,
                    filter,
                });
            }
        }
        ClientAcl {
            inner: Arc::new(ClientRules {
                unrestricted: self.unrestricted,
                default: self.default,
                publish: publish.into_boxed_slice(),
                subscribe: subscribe.into_boxed_slice(),
            }),
        }
    }
}

impl ClientAcl {
    /// Whether the client may publish to the topic name `topic`, a valid one. No allocation.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.inner.decide(&self.inner.publish, topic)
    }

    /// Whether the client may receive a message of the topic name `topic`, a valid one: the
    /// `subscribe` action for one concrete topic. For the messages of a
    /// [`SubscribeDecision::Filtered`] subscription. No allocation.
    pub fn may_receive(&self, topic: &str) -> bool {
        self.inner.decide(&self.inner.subscribe, topic)
    }

    /// The decision on a subscription to the topic filter `filter`, valid and plain: for a
    /// shared subscription pass the filter after its ShareName
    /// ([`FilterKind::topic_filter`](shoal_topic::FilterKind::topic_filter)).
    ///
    /// The rules for receiving are tried in order. One whose filter does not intersect
    /// `filter` plays no part. One whose filter covers `filter` decides all the topics that
    /// earlier rules left, and ends the search; one that intersects without covering decides
    /// some of them; when no rule covers `filter`, the default decides what is left. The
    /// answer is `Allow` or `Deny` when every part plays out the same way, `Filtered`
    /// otherwise.
    ///
    /// It is never wrong when it answers `Allow` or `Deny`: each topic that `filter` can
    /// match would get that answer from [`may_receive`](Self::may_receive). It can answer
    /// `Filtered` where `Allow` or `Deny` would be exact in one case only: when the topics
    /// that a rule (or the default) would decide within `filter` are all taken by earlier
    /// rules, by two or more of them together but by no single one (the part of a rule
    /// that one earlier rule takes whole is recognised and ignored). For example, with
    /// `deny all subscribe a`, `deny all subscribe a/+/#` and the default `allow`, a
    /// subscription to `a/#` is `Filtered` where `Deny` is exact. The broker then checks
    /// each message, and the client receives what it may, no more.
    ///
    /// Allocates only when a rule's part must be compared with earlier rules; its cost
    /// grows with the number of rules whose filters intersect `filter`.
    pub fn subscribe(&self, filter: &str) -> SubscribeDecision {
        let rules = &*self.inner;
        if rules.unrestricted {
            return SubscribeDecision::Allow;
        }
        let mut allowed = false;
        let mut denied = false;
        let mut covered = false;
        for (index, grant) in rules.subscribe.iter().enumerate() {
            if !filters_intersect(&grant.filter, filter) {
                continue;
            }
            let covers = filter_covers(&grant.filter, filter);
            let seen = match grant.permission {
                Permission::Allow => &mut allowed,
                Permission::Deny => &mut denied,
            };
            // A covering rule always has something left to decide: had an earlier rule
            // covered `filter`, the search would have ended there.
            let earlier = &rules.subscribe[..index];
            if !*seen && (covers || !taken_by_one(earlier, &grant.filter, filter)) {
                *seen = true;
            }
            if covers {
                covered = true;
                break;
            }
            if allowed && denied {
                return SubscribeDecision::Filtered;
            }
        }
        if !covered {
            // `filter`'s topics all start with `$`, or none does.
            match rules.default_for(filter) {
                Permission::Allow => allowed = true,
                Permission::Deny => denied = true,
            }
        }
        match (allowed, denied) {
            (true, false) => SubscribeDecision::Allow,
            (false, true) => SubscribeDecision::Deny,
            _ => SubscribeDecision::Filtered,
        }
    }

    /// Whether every check answers yes without looking ([`Acl::allow_all`]), so that the
    /// broker may skip them.
    pub fn is_unrestricted(&self) -> bool {
        self.inner.unrestricted
    }
}

impl ClientRules {
    /// The first of `grants` whose filter matches `topic` decides, or else the default.
    fn decide(&self, grants: &[Grant], topic: &str) -> bool {
        if self.unrestricted {
            return true;
        }
        let permission = grants
            .iter()
            .find(|grant| matches(&grant.filter, topic))
            .map_or_else(|| self.default_for(topic), |grant| grant.permission);
        permission == Permission::Allow
    }

    /// The default for a topic name or filter: never `Allow` for one starting with `$`.
    fn default_for(&self, topic: &str) -> Permission {
        if topic.starts_with('$') {
            Permission::Deny
        } else {
            self.default
        }
    }
}

/// Whether one of `earlier` covers every topic that both `rule` and `filter` match, which
/// then never reach `rule`. The two must intersect.
fn taken_by_one(earlier: &[Grant], rule: &str, filter: &str) -> bool {
    let Some(part) = meet(rule, filter) else {
        return false;
    };
    earlier
        .iter()
        .any(|grant| filter_covers(&grant.filter, &part))
}

/// The topic filter that matches exactly the topic names that both `a` and `b` match, two
/// intersecting valid filters: level by level the narrower of the two, and past a `#` the
/// other's remaining levels. `None` when they do not intersect (or are not valid).
fn meet(a: &str, b: &str) -> Option<String> {
    if !filters_intersect(a, b) {
        return None;
    }
    let mut levels: Vec<&str> = Vec::new();
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), other) => {
                levels.extend(other);
                levels.extend(b_levels);
                break;
            }
            (other, Some("#")) => {
                levels.extend(other);
                levels.extend(a_levels);
                break;
            }
            (None, None) => break,
            (Some("+"), Some(level)) | (Some(level), Some(_)) => levels.push(level),
            // Not reached for intersecting filters, whose levels end together.
            (None, Some(_)) | (Some(_), None) => return None,
        }
    }
    // Never empty: a `#` against the end of the other leaves the other whole, and a single
    // empty level, the empty string, is what only `+` and `/#` share, which do not intersect.
    let part = levels.join("/");
    (!part.is_empty()).then_some(part)
}

impl Who {
    /// Whether the rule is for this client.
    fn includes(&self, username: Option<&str>, client_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::User(name) => username == Some(&**name),
            Self::Client(id) => client_id == &**id,
            Self::Anonymous => username.is_none(),
        }
    }
}

impl Pattern {
    /// Checks a rule's filter as written.
    fn parse(text: &str) -> Result<Self, String> {
        validate_topic_filter(text)
            .map_err(|error| format!("invalid topic filter {text:?}: {error}"))?;
        if text.starts_with(SHARE_PREFIX) {
            return Err(format!(
                "shared subscription filter {text:?} not allowed in a rule (write the filter \
                 after the ShareName: shared subscriptions are checked by it)"
            ));
        }
        let mut uses_username = false;
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            let after = &rest[at + 1..];
            match after.chars().next() {
                Some('u') => uses_username = true,
                Some('c' | '%') => {}
                other => {
                    let sequence = other.map_or_else(|| "%".to_owned(), |c| format!("%{c}"));
                    return Err(format!(
                        "unknown placeholder {sequence:?} in topic filter {text:?} (expected \
                         %u, %c or %%)"
                    ));
                }
            }
            // Each of the three sequences is two ASCII bytes.
            rest = &after[1..];
        }
        Ok(Self {
            has_placeholders: text.contains('%'),
            text: text.into(),
            uses_username,
        })
    }

    /// The filter for one client, or `None` when the rule does not apply to it (see the
    /// module documentation).
    fn for_client(&self, username: Option<&str>, client_id: &str) -> Option<Arc<str>> {
        if !self.has_placeholders {
            return Some(Arc::clone(&self.text));
        }
        if self.uses_username && !username.is_some_and(fits_a_level) {
            return None;
        }
        let mut filter = String::with_capacity(self.text.len() + client_id.len());
        let mut rest = &*self.text;
        while let Some(at) = rest.find('%') {
            filter.push_str(&rest[..at]);
            match rest.as_bytes().get(at + 1) {
                Some(b'u') => filter.push_str(username?),
                Some(b'c') if fits_a_level(client_id) => filter.push_str(client_id),
                Some(b'%') => filter.push('%'),
                // `%c` with a value that does not fit; nothing else passed `parse`.
                _ => return None,
            }
            rest = &rest[at + 2..];
        }
        filter.push_str(rest);
        let valid = validate_topic_filter(&filter).is_ok()
            && !filter.starts_with(SHARE_PREFIX)
            && (self.text.starts_with('$') || !filter.starts_with('$'));
        valid.then(|| filter.into())
    }
}

/// Whether a username or client identifier may replace a placeholder: not empty, and without
/// a character that a topic filter gives a meaning (`+`, `#`, `/`).
fn fits_a_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['+', '#', '/'])
}

/// `allow` or `deny`.
fn parse_permission(word: &str) -> Option<Permission> {
    match word {
        "allow" => Some(Permission::Allow),
        "deny" => Some(Permission::Deny),
        _ => None,
    }
}

/// The fields of a rule after its permission, `word`.
fn parse_rule<'a>(
    word: &str,
    permission: Permission,
    mut fields: impl Iterator<Item = &'a str>,
) -> Result<Rule, String> {
    const WHO: &str = "expected all, user:NAME, client:ID or anonymous";
    const ACTION: &str = "expected publish, subscribe or all";
    let who_field = fields
        .next()
        .ok_or_else(|| format!("missing who after {word:?} ({WHO})"))?;
    let who = match who_field {
        "all" => Who::All,
        "anonymous" => Who::Anonymous,
        _ => {
            if let Some(name) = who_field.strip_prefix("user:") {
                if name.is_empty() {
                    return Err(format!("empty username in {who_field:?}"));
                }
                Who::User(name.into())
            } else if let Some(id) = who_field.strip_prefix("client:") {
                if id.is_empty() {
                    return Err(format!("empty client id in {who_field:?}"));
                }
                Who::Client(id.into())
            } else {
                return Err(format!("unknown who {who_field:?} ({WHO})"));
            }
        }
    };
    let action_field = fields
        .next()
        .ok_or_else(|| format!("missing action after {who_field:?} ({ACTION})"))?;
    let action = match action_field {
        "publish" => Action::Publish,
        "subscribe" => Action::Subscribe,
        "all" => Action::All,
        _ => return Err(format!("unknown action {action_field:?} ({ACTION})")),
    };
    let filter = fields
        .next()
        .ok_or_else(|| format!("missing topic filter after {action_field:?}"))?;
    let filter = Pattern::parse(filter)?;
    end_of_statement(fields, "the topic filter")?;
    Ok(Rule {
        permission,
        who,
        action,
        filter,
    })
}

/// Checks that what follows a statement is nothing, or a comment.
fn end_of_statement<'a>(
    mut fields: impl Iterator<Item = &'a str>,
    after: &str,
) -> Result<(), String> {
    match fields.next() {
        Some(field) if !field.starts_with('#') => Err(format!(
            "unexpected {field:?} after {after} (a comment starts with '#')"
        )),
        _ => Ok(()),
    }
}

/// The file of a parse error, as a prefix of its message.
struct FilePrefix<'a>(Option<&'a Path>);

impl fmt::Display for FilePrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}: ", path.display()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every topic name of up to four levels over a few values, `z` standing for the values
    /// no filter names.
    fn topics() -> Vec<String> {
        let values = ["a", "", "$s", "z"];
        let mut all = Vec::new();
        let mut layer: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        for _ in 0..3 {
            all.extend(layer.iter().cloned());
            layer = layer
                .iter()
                .flat_map(|prefix| values.iter().map(move |v| format!("{prefix}/{v}")))
                .collect();
        }
        all.extend(layer);
        // The empty string is no topic name.
        all.retain(|topic| !topic.is_empty());
        all
    }

    /// Every filter of up to two levels over `a`, the empty level, `$s` and `+`, with and
    /// without a `#`.
    fn filters() -> Vec<String> {
        let levels = ["a", "", "$s", "+"];
        let mut filters = vec!["#".to_owned()];
        for first in levels {
            for second in [None].into_iter().chain(levels.map(Some)) {
                let base = second.map_or_else(|| first.to_owned(), |s| format!("{first}/{s}"));
                if !base.is_empty() {
                    filters.push(base.clone());
                }
                filters.push(format!("{base}/#"));
            }
        }
        filters
    }

    #[test]
    fn meet_matches_exactly_the_shared_names() {
        let topics = topics();
        let filters = filters();
        for a in &filters {
            for b in &filters {
                let both: Vec<&String> = topics
                    .iter()
                    .filter(|t| matches(a, t) && matches(b, t))
                    .collect();
                match meet(a, b) {
                    None => assert!(both.is_empty(), "{a:?} ∩ {b:?}: {both:?}"),
                    Some(part) => {
                        assert_eq!(validate_topic_filter(&part), Ok(()), "{part:?}");
                        let of_part: Vec<&String> =
                            topics.iter().filter(|t| matches(&part, t)).collect();
                        assert_eq!(of_part, both, "{a:?} ∩ {b:?} = {part:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn meet_examples() {
        let cases = [
            ("#", "#", Some("#")),
            ("#", "+/#", Some("+/#")),
            ("a/#", "a", Some("a")),
            ("a/#", "+/b", Some("a/b")),
            ("+/+", "a/+", Some("a/+")),
            ("a/+", "a", None),
            ("#", "$SYS/a", None),
            ("$SYS/#", "$SYS/+/x", Some("$SYS/+/x")),
        ];
        for (a, b, expected) in cases {
            assert_eq!(meet(a, b).as_deref(), expected, "{a:?} ∩ {b:?}");
            assert_eq!(meet(b, a).as_deref(), expected, "{b:?} ∩ {a:?}");
        }
    }

    #[test]
    fn placeholders_are_replaced_and_percent_escaped() {
        let pattern = Pattern::parse("a/%u-%c/100%%").expect("valid");
        assert_eq!(
            pattern.for_client(Some("bob"), "dev").as_deref(),
            Some("a/bob-dev/100%")
        );
        assert_eq!(pattern.for_client(None, "dev"), None);
        let plain = Pattern::parse("a/b").expect("valid");
        assert!(Arc::ptr_eq(
            &plain.for_client(None, "x").expect("applies"),
            &plain.text
        ));
    }
}
