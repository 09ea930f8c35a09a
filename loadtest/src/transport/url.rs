//! The broker address: `mqtt://host:port`, `mqtts://`, `ws://host:port/path`, `wss://`,
//! `quic://`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the MQTT byte stream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain TCP (`mqtt://`, `tcp://`), default port 1883.
    Tcp,
    /// TLS over TCP (`mqtts://`, `ssl://`, `tls://`), default port 8883.
    Tls,
    /// WebSocket, subprotocol `mqtt` (`ws://`), default port 80.
    Ws,
    /// WebSocket over TLS (`wss://`), default port 443.
    Wss,
    /// QUIC, ALPN `mqtt`, MQTT on the first bidirectional stream (`quic://`), default port
    /// 14567.
    Quic,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Self::Tcp => 1883,
            Self::Tls => 8883,
            Self::Ws => 80,
            Self::Wss => 443,
            Self::Quic => 14567,
        }
    }

    /// Whether the transport runs TLS (or QUIC's TLS 1.3).
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss | Self::Quic)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "mqtt",
            Self::Tls => "mqtts",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Quic => "quic",
        }
    }
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// WebSocket path (default `/mqtt`).
    pub path: String,
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "mqtt" | "tcp" => Scheme::Tcp,
                    "mqtts" | "ssl" | "tls" => Scheme::Tls,
                    "ws" => Scheme::Ws,
                    "wss" => Scheme::Wss,
                    "quic" => Scheme::Quic,
                    other => {
                        return Err(format!(
                            "unknown scheme {other:?} in {s:?} (mqtt, mqtts, ws, wss, quic)"
                        ));
                    }
                };
                (scheme, rest)
            }
            None => (Scheme::Tcp, s),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/mqtt"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("unclosed [ in {s:?}"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("no host in {s:?}"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("bad port {p:?} in {s:?}"))?,
            None => scheme.default_port(),
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{}:{}", self.scheme.name(), host, self.port)?;
        if matches!(self.scheme, Scheme::Ws | Scheme::Wss) {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

impl Serialize for BrokerUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_with_default_ports() {
        let u: BrokerUrl = "127.0.0.1".parse().expect("valid");
        assert_eq!((u.scheme, u.port), (Scheme::Tcp, 1883));
        let u: BrokerUrl = "mqtts://broker:9000".parse().expect("valid");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Tls, "broker", 9000)
        );
        let u: BrokerUrl = "ws://[::1]:8080/ws".parse().expect("valid");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.path.as_str()),
            (Scheme::Ws, "::1", "/ws")
        );
        assert_eq!(u.to_string(), "ws://[::1]:8080/ws");
        let u: BrokerUrl = "wss://h".parse().expect("valid");
        assert_eq!((u.port, u.path.as_str()), (443, "/mqtt"));
        assert_eq!("quic://h".parse::<BrokerUrl>().map(|u| u.port), Ok(14567));
        assert!("http://h".parse::<BrokerUrl>().is_err());
        assert!("mqtt://h:x".parse::<BrokerUrl>().is_err());
    }
}
