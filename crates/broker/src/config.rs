//! Configuration: a TOML file, overridden by `SHOAL_*` environment variables, overridden by
//! command-line flags. `RawConfig` is what the three say; `Config::from_raw` turns it into
//! typed values or refuses it with the key and the reason.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use shoal_codec::QoS;
use shoal_session::SessionConfig;

/// A configuration that cannot be used: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser says, with the key and line.
        message: String,
    },
    /// A value is out of its range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key, as written in the file (`max_packet_size`).
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

macro_rules! raw_config {
    ($( $(#[doc = $doc:literal])* $key:ident : $ty:ty = $env:literal, )*) => {
        /// Every key, as the file, the environment (`SHOAL_<KEY>`) and the flags
        /// (`--<key>`, with `-` for `_`) say it. Absent keys take their documented defaults.
        #[derive(Debug, Clone, Default, Deserialize, Parser)]
        #[serde(deny_unknown_fields)]
        #[command(name = "shoal", version, about = "shoal: a clustered MQTT broker (MQTT 3.1, 3.1.1, 5.0)",
            long_about = "shoal: a clustered MQTT broker (MQTT 3.1, 3.1.1, 5.0).\n\nEvery key can be set in the TOML file given by --config, by the environment variable SHOAL_<KEY> (upper case), or by the flag --<key>; flags override the environment, which overrides the file.")]
        pub struct RawConfig {
            /// A TOML file of keys (the same names as the flags, with `_`).
            #[arg(long, env = "SHOAL_CONFIG")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env)]
                pub $key: Option<$ty>,
            )*
        }

        impl RawConfig {
            /// Each key set in `self`, else in `lower`.
            fn over(self, lower: Self) -> Self {
                Self {
                    config: self.config.or(lower.config),
                    $( $key: self.$key.or(lower.$key), )*
                }
            }
        }
    };
}

raw_config! {
    /// MQTT over TCP: the address to listen on. Default 0.0.0.0:1883.
    listen: SocketAddr = "SHOAL_LISTEN",
    /// Where the node keeps its data (sessions, queues, retained messages). Default ./data.
    data_dir: PathBuf = "SHOAL_DATA_DIR",
    /// Admin HTTP listener: /metrics (Prometheus), /healthz, /readyz. Default 0.0.0.0:8080;
    /// "off" is not a value: bind it to 127.0.0.1 to keep it local.
    admin_listen: SocketAddr = "SHOAL_ADMIN_LISTEN",
    /// Largest packet accepted, in bytes, fixed header included (1 to 268435460). Default
    /// 1048576. Larger lets clients send bigger messages; each connection may buffer one.
    max_packet_size: u32 = "SHOAL_MAX_PACKET_SIZE",
    /// QoS 1/2 messages a client may have unacknowledged towards the broker (1 to 65535).
    /// Default 1024.
    receive_maximum: u16 = "SHOAL_RECEIVE_MAXIMUM",
    /// Highest QoS accepted and granted (0, 1 or 2). Default 2.
    max_qos: u8 = "SHOAL_MAX_QOS",
    /// Whether retained messages are supported. Default true.
    retain_available: bool = "SHOAL_RETAIN_AVAILABLE",
    /// Topic aliases a client may use towards the broker (0 to 65535). Default 64.
    topic_alias_maximum: u16 = "SHOAL_TOPIC_ALIAS_MAXIMUM",
    /// Messages one session may hold waiting (offline, or a slow reader). Default 1000.
    max_queued_messages: usize = "SHOAL_MAX_QUEUED_MESSAGES",
    /// Bytes of messages one session may hold waiting. Default 16777216.
    max_queued_bytes: usize = "SHOAL_MAX_QUEUED_BYTES",
    /// Whether QoS 0 messages are queued for offline persistent sessions. Default false.
    queue_qos0_messages: bool = "SHOAL_QUEUE_QOS0_MESSAGES",
    /// Longest Session Expiry Interval granted, seconds. Default 604800 (7 days).
    max_session_expiry: u32 = "SHOAL_MAX_SESSION_EXPIRY",
    /// Keep alive imposed on every client, seconds (Server Keep Alive); unset: the client's.
    server_keep_alive: u16 = "SHOAL_SERVER_KEEP_ALIVE",
    /// Interval of the $SYS topics, seconds; 0 turns them off. Default 10.
    sys_interval: u64 = "SHOAL_SYS_INTERVAL",
    /// Log filter (tracing's EnvFilter syntax). Default "info".
    log: String = "SHOAL_LOG",
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The MQTT TCP listener.
    pub listen: SocketAddr,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The admin HTTP listener.
    pub admin_listen: SocketAddr,
    /// What each session enforces and announces.
    pub session: SessionConfig,
    /// The interval of $SYS topics; `None`: off.
    pub sys_interval: Option<Duration>,
    /// The log filter.
    pub log: String,
}

impl Config {
    /// The configuration of this process: flags and environment, over the file they name.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(RawConfig::parse())
    }

    /// `cli` (flags and environment) over the file it names, if any.
    pub fn load_from(cli: RawConfig) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => RawConfig::default(),
        };
        Self::from_raw(cli.over(file))
    }

    /// Checks every key and fills in the defaults.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let defaults = SessionConfig::default();
        let max_packet_size = raw.max_packet_size.unwrap_or(1 << 20);
        if max_packet_size == 0 || max_packet_size > shoal_codec::MAX_PACKET_SIZE {
            return Err(invalid(
                "max_packet_size",
                format!(
                    "{max_packet_size} is not between 1 and {}",
                    shoal_codec::MAX_PACKET_SIZE
                ),
            ));
        }
        let receive_maximum = match raw.receive_maximum {
            None => defaults.receive_maximum,
            Some(n) => NonZeroU16::new(n).ok_or_else(|| {
                invalid(
                    "receive_maximum",
                    "0 would let no QoS 1/2 message in".into(),
                )
            })?,
        };
        let n = raw.max_qos.unwrap_or(2);
        let maximum_qos = QoS::from_bits(n)
            .filter(|_| n <= 2)
            .ok_or_else(|| invalid("max_qos", format!("{n} is not 0, 1 or 2")))?;
        let max_queued_messages = raw
            .max_queued_messages
            .unwrap_or(defaults.max_queued_messages);
        if max_queued_messages == 0 {
            return Err(invalid(
                "max_queued_messages",
                "0 would drop every message".into(),
            ));
        }
        let max_queued_bytes = raw.max_queued_bytes.unwrap_or(defaults.max_queued_bytes);
        if max_queued_bytes < 1024 {
            return Err(invalid(
                "max_queued_bytes",
                format!("{max_queued_bytes} is below 1024"),
            ));
        }
        let topic_alias_maximum = raw
            .topic_alias_maximum
            .unwrap_or(defaults.topic_alias_maximum);
        let session = SessionConfig {
            receive_maximum,
            maximum_packet_size: max_packet_size,
            topic_alias_maximum,
            maximum_qos,
            retain_available: raw.retain_available.unwrap_or(true),
            server_keep_alive: raw.server_keep_alive,
            max_queued_messages,
            max_queued_bytes,
            queue_qos0_offline: raw.queue_qos0_messages.unwrap_or(false),
            max_session_expiry: raw
                .max_session_expiry
                .unwrap_or(defaults.max_session_expiry),
            ..defaults
        };
        let log = raw.log.unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| invalid("log", e.to_string()))?;
        Ok(Self {
            listen: raw
                .listen
                .unwrap_or_else(|| "0.0.0.0:1883".parse().expect("a valid address literal")),
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            admin_listen: raw
                .admin_listen
                .unwrap_or_else(|| "0.0.0.0:8080".parse().expect("a valid address literal")),
            session,
            sys_interval: match raw.sys_interval.unwrap_or(10) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            log,
        })
    }
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

fn read_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RawConfig {
        RawConfig::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::from_raw(RawConfig::default()).expect("valid");
        assert_eq!(config.listen, "0.0.0.0:1883".parse().expect("addr"));
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.session.maximum_packet_size, 1 << 20);
        assert_eq!(config.sys_interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1999\"\nmax_qos = 1\n").expect("write");
        let cli = parse(&[
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:2000",
        ]);
        let config = Config::load_from(cli).expect("valid");
        assert_eq!(config.listen.port(), 2000);
        assert_eq!(config.session.maximum_qos, QoS::AtLeastOnce);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Config::from_raw(parse(&["--max-qos", "3"])).expect_err("refused");
        assert!(err.to_string().contains("`max_qos`"), "{err}");
        let err = Config::from_raw(parse(&["--receive-maximum", "0"])).expect_err("refused");
        assert!(err.to_string().contains("`receive_maximum`"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shoal.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").expect("write");
        let err = Config::load_from(parse(&["--config", path.to_str().expect("utf-8")]))
            .expect_err("refused");
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
