//! Topic patterns (`fleet/%s/%i/telemetry`) and the plain MQTT topic matcher used to work out
//! how many subscribers each published flow should reach.

use std::fmt::Write;

/// A topic, filter or client-id pattern: literal text with placeholders.
///
/// - `%i`: the client's index in its group (0-based)
/// - `%s`: the client's site (`index % sites`)
/// - `%g`: the group name
/// - `%%`: a literal `%`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Index,
    Site,
    Group,
}

/// The values that a pattern's placeholders stand for.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// `%i`.
    pub index: u32,
    /// `%s`.
    pub site: u32,
    /// `%g`.
    pub group: &'a str,
}

impl Pattern {
    /// Parses a pattern; an unknown placeholder is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('i') => Part::Index,
                Some('s') => Part::Site,
                Some('g') => Part::Group,
                Some(other) => {
                    return Err(format!(
                        "unknown placeholder %{other} in {text:?} (use %i, %s, %g or %%)"
                    ));
                }
                None => return Err(format!("{text:?} ends with a lone %")),
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// Whether the pattern names a different value for each client (has `%i`).
    pub fn per_client(&self) -> bool {
        self.parts.contains(&Part::Index)
    }

    /// The pattern with its placeholders replaced.
    pub fn expand(&self, vars: Vars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                // Writing to a String cannot fail.
                Part::Index => drop(write!(out, "{}", vars.index)),
                Part::Site => drop(write!(out, "{}", vars.site)),
                Part::Group => out.push_str(vars.group),
            }
        }
        out
    }
}

/// Whether the topic filter `filter` matches the topic name `topic` (MQTT §4.7): `+` one
/// level, `#` the rest (parent level included), and wildcards at the front never match a
/// topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Splits `$share/{group}/{filter}` into the group and the inner filter.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders() {
        let p = Pattern::parse("fleet/%s/%i/100%%/%g").expect("valid pattern");
        let vars = Vars {
            index: 42,
            site: 2,
            group: "dev",
        };
        assert_eq!(p.expand(vars), "fleet/2/42/100%/dev");
        assert!(p.per_client());
        assert!(Pattern::parse("a/%x").is_err());
        assert!(Pattern::parse("a/%").is_err());
        assert!(!Pattern::parse("lt/fanout").expect("valid").per_client());
    }

    #[test]
    fn matches_like_a_broker() {
        assert!(matches("fleet/+/+/telemetry", "fleet/1/7/telemetry"));
        assert!(!matches("fleet/+/+/telemetry", "fleet/1/7/status"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(!matches("#", "$SYS/load"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b/c", "a/b"));
        assert_eq!(
            split_shared("$share/backend/fleet/+/+/telemetry"),
            Some(("backend", "fleet/+/+/telemetry"))
        );
        assert_eq!(split_shared("fleet/#"), None);
    }
}
