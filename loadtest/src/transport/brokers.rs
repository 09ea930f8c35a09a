//! The brokers of a run: `-b` and `--more-brokers`, one scheme for all. Which of them each
//! client connects to is the run's placement ([`crate::scenario::Layout`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::transport::{BrokerUrl, Scheme};

/// Why a list of broker URLs cannot serve one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokersError {
    /// No URL at all.
    Empty,
    /// The URLs use different transports (each URL is listed, its scheme visible in it).
    MixedSchemes(Vec<BrokerUrl>),
}

impl fmt::Display for BrokersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no broker URL"),
            Self::MixedSchemes(urls) => {
                let list: Vec<String> = urls.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the brokers of one run must use one scheme (-b and --more-brokers), got {}",
                    list.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for BrokersError {}

/// One or more broker URLs of the same scheme: several broker processes, or the nodes of a
/// cluster. Clients are spread over them by the run's `--placement`
/// ([`crate::scenario::layout`]).
///
/// One scheme, because a run measures one transport: a mix would blend, say, TLS and plain
/// TCP handshakes into one connect latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<BrokerUrl>", into = "Vec<BrokerUrl>")]
pub struct Brokers(Vec<BrokerUrl>);

impl Brokers {
    /// `first` (the `-b` broker) and `more`, refused if their schemes differ.
    pub fn new(
        first: BrokerUrl,
        more: impl IntoIterator<Item = BrokerUrl>,
    ) -> Result<Self, BrokersError> {
        let mut urls = vec![first];
        urls.extend(more);
        Self::try_from(urls)
    }

    /// The first broker (`-b`).
    pub fn first(&self) -> &BrokerUrl {
        &self.0[0]
    }

    /// Every broker, `-b` first.
    pub fn urls(&self) -> &[BrokerUrl] {
        &self.0
    }

    /// How many brokers (at least one).
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The transport they all use.
    pub fn scheme(&self) -> Scheme {
        self.first().scheme
    }
}

impl TryFrom<Vec<BrokerUrl>> for Brokers {
    type Error = BrokersError;

    fn try_from(urls: Vec<BrokerUrl>) -> Result<Self, BrokersError> {
        let first = urls.first().ok_or(BrokersError::Empty)?;
        if urls.iter().any(|u| u.scheme != first.scheme) {
            return Err(BrokersError::MixedSchemes(urls));
        }
        Ok(Self(urls))
    }
}

impl From<Brokers> for Vec<BrokerUrl> {
    fn from(brokers: Brokers) -> Self {
        brokers.0
    }
}

impl fmt::Display for Brokers {
    /// The URLs, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{url}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> BrokerUrl {
        s.parse().expect("a valid URL")
    }

    #[test]
    fn keeps_the_order_of_one_scheme() {
        let brokers = Brokers::new(
            url("mqtt://127.0.0.1:1883"),
            [url("mqtt://127.0.0.1:1884"), url("tcp://127.0.0.1:1885")],
        )
        .expect("one scheme (tcp:// is mqtt://)");
        let ports: Vec<u16> = brokers.urls().iter().map(|u| u.port).collect();
        assert_eq!(ports, [1883, 1884, 1885]);
        assert_eq!(brokers.count(), 3);
        assert_eq!(brokers.first().port, 1883);
    }

    #[test]
    fn a_mix_of_schemes_is_refused_naming_every_url() {
        let err = Brokers::new(
            url("mqtt://127.0.0.1:1883"),
            [url("mqtts://127.0.0.1:8883"), url("mqtt://127.0.0.1:1884")],
        )
        .expect_err("mqtt and mqtts mixed");
        let text = err.to_string();
        for u in [
            "mqtt://127.0.0.1:1883",
            "mqtts://127.0.0.1:8883",
            "mqtt://127.0.0.1:1884",
        ] {
            assert!(text.contains(u), "{text}");
        }
        assert_eq!(Brokers::try_from(Vec::new()), Err(BrokersError::Empty));
    }

    #[test]
    fn serialises_as_a_list_and_checks_it_when_read() {
        let brokers = Brokers::new(url("ws://h:80/mqtt"), [url("ws://g:81/mqtt")]).expect("ok");
        let text = serde_json::to_string(&brokers).expect("serialises");
        assert_eq!(text, r#"["ws://h:80/mqtt","ws://g:81/mqtt"]"#);
        assert_eq!(
            serde_json::from_str::<Brokers>(&text).expect("reads"),
            brokers
        );
        assert!(serde_json::from_str::<Brokers>(r#"["ws://h:80/mqtt","wss://g"]"#).is_err());
        assert_eq!(brokers.to_string(), "ws://h:80/mqtt, ws://g:81/mqtt");
    }
}
