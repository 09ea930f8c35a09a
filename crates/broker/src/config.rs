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

/// The admin listener's default address (EMQX's dashboard port: clear of MQTT's 1883,
/// 8883, 8083 and 8084).
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:18083";

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
    /// An environment variable's value cannot be parsed.
    #[error("{message}")]
    Environment {
        /// Which variable, its value and why.
        message: String,
    },
    /// A value is out of its range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key, as written in the file (`max_packet_size`, `listeners[1].cert`).
        key: String,
        /// Why the value is refused.
        reason: String,
    },
}

/// The end of `shoal --help`: the other commands and the exit statuses.
const HELP_FOOTER: &str = "Other commands:
  shoal passwd add|remove|list FILE [USER]   manage a password file (password_file)
  shoal ctl [--admin URL] [--token T] ...    talk to a node's admin API (shoal ctl help)
  shoal cluster local [--nodes N] ...        run N nodes on this machine as one cluster
  shoal cluster status [--admin URL] ...     a node's view of its cluster (shoal cluster help)
  shoal cluster join [--admin URL] SEED...   make a waiting node join a cluster through SEED

Exit status:
  0  stopped in order (SIGTERM, SIGINT)
  1  failed while running
  2  the configuration is refused: a bad key or value, or a file it names (config, TLS,
     password, ACL) that cannot be read or parsed
  3  the node cannot start here: an address in use, the data folder locked by another
     shoal or not writable";

macro_rules! raw_config {
    ($( $(#[doc = $doc:literal])* $key:ident : $ty:ty = $env:literal, )*) => {
        /// Every key, as the file, the environment (`SHOAL_<KEY>`) and the flags
        /// (`--<key>`, with `-` for `_`) say it. Absent keys take their documented defaults.
        #[derive(Debug, Clone, Default, Deserialize, Parser)]
        #[serde(deny_unknown_fields)]
        #[command(name = "shoal", version, about = "shoal: an MQTT broker node (MQTT 3.1, 3.1.1, 5.0)",
            long_about = "shoal: an MQTT broker node (MQTT 3.1, 3.1.1, 5.0). A node is a complete broker on its own; with cluster_listen, seeds or discovery it joins a cluster of nodes that behave as one broker (README, \"Cluster\").\n\nEvery key can be set in the TOML file given by --config, by the environment variable SHOAL_<KEY> (upper case), or by the flag --<key>; flags override the environment, which overrides the file. TLS, WebSocket, QUIC and more TCP listeners are [[listeners]] tables in the file (README, \"Listeners\").",
            after_long_help = HELP_FOOTER)]
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
            /// More listeners (TLS, WebSocket, QUIC, PROXY protocol): `[[listeners]]`
            /// tables, in the file only.
            #[arg(skip)]
            pub listeners: Option<Vec<RawListener>>,
        }

        impl RawConfig {
            /// Each key set in `self`, else in `lower`.
            fn over(self, lower: Self) -> Self {
                Self {
                    config: self.config.or(lower.config),
                    $( $key: self.$key.or(lower.$key), )*
                    listeners: self.listeners.or(lower.listeners),
                }
            }
        }
    };
}

raw_config! {
    /// MQTT over TCP: the address to listen on. Default 0.0.0.0:1883, unless the file has
    /// `[[listeners]]` tables: then only those, plus this one if it is set.
    listen: SocketAddr = "SHOAL_LISTEN",
    /// Where the node keeps its data (sessions, queues, retained messages). Default ./data.
    data_dir: PathBuf = "SHOAL_DATA_DIR",
    /// Admin HTTP listener: /metrics (Prometheus), /healthz, /readyz, and the admin API
    /// (/api/v1, /bans), which needs `admin_token` from any address but loopback. Default
    /// 0.0.0.0:18083; bind it to 127.0.0.1 to keep it local.
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
    /// Keep alive imposed on MQTT 5 clients, seconds (Server Keep Alive); unset: the
    /// client's. MQTT 3.1.1 clients cannot be told, so they keep theirs.
    server_keep_alive: u16 = "SHOAL_SERVER_KEEP_ALIVE",
    /// Longest keep alive a client may use, seconds; unset: no cap. An MQTT 5 client asking
    /// for more, or for 0 (none), gets Server Keep Alive = the cap; an MQTT 3.1.1 or 3.1
    /// client, which cannot be told, is refused (CONNACK 2, identifier rejected, as Mosquitto
    /// does).
    max_keep_alive: u16 = "SHOAL_MAX_KEEP_ALIVE",
    /// Interval of the $SYS topics, seconds; 0 turns them off. Default 10.
    sys_interval: u64 = "SHOAL_SYS_INTERVAL",
    /// Log filter (tracing's EnvFilter syntax). Default "info,openraft=warn" (openraft logs every election and membership step at info).
    log: String = "SHOAL_LOG",
    /// The token the admin API (/api/v1, /bans) requires (`Authorization: Bearer <token>`).
    /// Default: none, and then the API answers loopback clients only.
    admin_token: String = "SHOAL_ADMIN_TOKEN",
    /// Password file (`user:$7$...` lines, PBKDF2-SHA512; Mosquitto's format), managed with
    /// `shoal passwd`. Reloaded when it changes. Default: none (any credentials pass).
    password_file: PathBuf = "SHOAL_PASSWORD_FILE",
    /// ACL rule file (see README, "Access control"). Reloaded when it changes. Default:
    /// none (everything allowed).
    acl_file: PathBuf = "SHOAL_ACL_FILE",
    /// Whether clients without a username may connect (per listener: `allow_anonymous`).
    /// Default true.
    allow_anonymous: bool = "SHOAL_ALLOW_ANONYMOUS",
    /// Connections in their handshake (PROXY header, TLS, WebSocket upgrade) at once; more
    /// wait their turn. Default 256.
    max_handshakes: usize = "SHOAL_MAX_HANDSHAKES",
    /// Password hashes (PBKDF2, milliseconds of a core each) computed at once, at most;
    /// more wait in `auth_hash_queue`. Default 2: a guessing flood takes at most two
    /// cores, and 2 × 140 logins a second that need a hash get through. Logins whose
    /// password the node remembers from an earlier success never wait here.
    auth_max_concurrent_hashes: usize = "SHOAL_AUTH_MAX_CONCURRENT_HASHES",
    /// Logins waiting for a hashing slot, at most; more are refused at once with CONNACK
    /// 0x89 (3.1.1: return code 3). Default 32 (about 100 ms of waiting at the default).
    auth_hash_queue: usize = "SHOAL_AUTH_HASH_QUEUE",
    /// Failed logins one username may have within `auth_failures_per_user_window`
    /// seconds, from all addresses that never logged in as it (token bucket); past it the
    /// password is not checked: CONNACK 0x89 (3.1.1: 3) after the failure delay. Default
    /// 10; 0: no limit.
    auth_failures_per_user: u32 = "SHOAL_AUTH_FAILURES_PER_USER",
    /// The window of `auth_failures_per_user`, seconds. Default 60.
    auth_failures_per_user_window: u64 = "SHOAL_AUTH_FAILURES_PER_USER_WINDOW",
    /// Failed logins one client address (IPv4, or IPv6 /64) may have within
    /// `auth_failures_per_address_window` seconds, whatever the usernames, the same way.
    /// Default 30; 0: no limit.
    auth_failures_per_address: u32 = "SHOAL_AUTH_FAILURES_PER_ADDRESS",
    /// The window of `auth_failures_per_address`, seconds. Default 60.
    auth_failures_per_address_window: u64 = "SHOAL_AUTH_FAILURES_PER_ADDRESS_WINDOW",
    /// Flapping detection: this many connects of one client id within
    /// `flapping_window` seconds ban it for `flapping_ban` seconds. Default 0 (off).
    flapping_max_connects: u32 = "SHOAL_FLAPPING_MAX_CONNECTS",
    /// Flapping detection window, seconds. Default 60.
    flapping_window: u64 = "SHOAL_FLAPPING_WINDOW",
    /// How long a flapping client id is banned, seconds. Default 300.
    flapping_ban: u64 = "SHOAL_FLAPPING_BAN",
    /// QoS 1/2 messages sent to a client and not yet acknowledged, at most (the client's
    /// Receive Maximum, if lower, wins). Default 65535.
    max_inflight: u16 = "SHOAL_MAX_INFLIGHT",
    /// Subscriptions one client may hold; more get SUBACK 0x97 (quota exceeded). Default
    /// 100000, far past what a device or a backend service using wildcards holds, and a
    /// bound on what one client can make the node keep; 0: no limit.
    max_subscriptions: usize = "SHOAL_MAX_SUBSCRIPTIONS",
    /// Levels a topic name or filter may have; more: PUBACK 0x90 / SUBACK 0x8F. Default
    /// 128.
    max_topic_levels: usize = "SHOAL_MAX_TOPIC_LEVELS",
    /// PUBLISH packets per second one client may send; beyond it the broker stops reading
    /// its socket until it is back under (TCP pushes back). Default 0 (no limit).
    publish_rate: u32 = "SHOAL_PUBLISH_RATE",
    /// PUBLISH bytes per second one client may send, the same way. Default 0 (no limit).
    publish_bytes_rate: u64 = "SHOAL_PUBLISH_BYTES_RATE",
    /// Retained messages the node keeps, at most; a retained PUBLISH on a new topic past it
    /// gets PUBACK/PUBREC 0x97 (Quota exceeded; 3.1.1: acknowledged and dropped), counted
    /// in `shoal_retained_refused_total`. Replacing or clearing a topic's message still
    /// works. Default 1000000.
    max_retained_messages: usize = "SHOAL_MAX_RETAINED_MESSAGES",
    /// Bytes of retained messages (topic, payload and 64 bytes each) the node keeps, at
    /// most, the same way. Default 1073741824 (1 GiB).
    max_retained_bytes: usize = "SHOAL_MAX_RETAINED_BYTES",
    /// Seconds a client has to complete a packet it started sending, whatever its keep
    /// alive; then the connection is closed (counted in `shoal_packet_timeouts_total`).
    /// Bounds what slow senders of large packets hold. Default 30.
    packet_timeout: u64 = "SHOAL_PACKET_TIMEOUT",
    /// Seconds a client of the admin listener has to send a whole request, however slowly
    /// it trickles. Default 10.
    admin_request_timeout: u64 = "SHOAL_ADMIN_REQUEST_TIMEOUT",
    /// Whether a client id belongs to the username that created its session: another user
    /// (or an anonymous client) connecting with it is refused with CONNACK 0x87 (3.1.1:
    /// return code 5), clean start or not. Default false (any authenticated client may
    /// take over any client id, as in Mosquitto). Sessions restored after a restart are
    /// claimed by the first client that resumes them.
    bind_client_id_to_username: bool = "SHOAL_BIND_CLIENT_ID_TO_USERNAME",
    /// Cluster: the address the node listens on for other nodes (gRPC: Raft, forwarding).
    /// Setting it (or `seeds`, or `discovery`) makes the node a member of a cluster; unset,
    /// the node is a broker on its own (a cluster of one that no other node can reach:
    /// its Raft groups run on it alone, with no listener). Set alone (no seeds, discovery or bootstrap), the
    /// node waits for `shoal cluster join`. Example 0.0.0.0:7946.
    cluster_listen: SocketAddr = "SHOAL_CLUSTER_LISTEN",
    /// Cluster: this node's id, a positive integer unique in the cluster and stable across
    /// restarts. Default: the number at the end of the host name plus one (pod `shoal-2`
    /// of a StatefulSet is node 3); a host name without one is refused. A node alone is node
    /// 1. The data folder remembers its node: another id is refused at start.
    node_id: u64 = "SHOAL_NODE_ID",
    /// Cluster: host:port at which other nodes reach this one. Default: `cluster_listen`,
    /// with the host name in place of an unspecified address (0.0.0.0).
    cluster_advertise: String = "SHOAL_CLUSTER_ADVERTISE",
    /// Cluster: host:port at which MQTT clients reach this node (a name or address the
    /// clients can resolve and connect to, not a bind address), recorded with its
    /// membership. When a node sends its MQTT 5 clients elsewhere (it leaves the cluster,
    /// or is cut off from the majority), it names another node's in DISCONNECT and CONNACK
    /// 0x9C (Use another server, with a Server Reference); nodes without one are never
    /// named, and with none known clients get 0x8B or 0x89. Default: none.
    mqtt_advertise: String = "SHOAL_MQTT_ADVERTISE",
    /// Cluster: nodes to join through, `host:port` separated by commas; a name resolving
    /// to several addresses is tried at each. A node with no state starts a new cluster
    /// only with `bootstrap` (or on the `bootstrap_host`); with neither seeds, `discovery`
    /// nor `bootstrap` it waits, not serving, until `shoal cluster join` gives it seeds.
    seeds: String = "SHOAL_SEEDS",
    /// Cluster: `dns:NAME:PORT`, a name that resolves to every node (a Kubernetes headless
    /// service), used as a seed and resolved again at each attempt.
    discovery: String = "SHOAL_DISCOVERY",
    /// Cluster: start a new cluster with this node if it has no state yet (with seeds, it
    /// asks them first and joins a cluster that answers). Exactly one node of a new cluster
    /// does this (the StatefulSet's first pod). Default false: the node joins through its
    /// seeds or `discovery`, or, with neither, waits for `shoal cluster join`.
    bootstrap: bool = "SHOAL_BOOTSTRAP",
    /// Cluster: bootstrap (as `bootstrap` does) only on the machine whose host name is this
    /// one, so that every node can be given the same value: `shoal-0` makes the first pod
    /// of a StatefulSet start a new cluster and the others join it. Not with
    /// `bootstrap = true`. Default: none.
    bootstrap_host: String = "SHOAL_BOOTSTRAP_HOST",
    /// Cluster: `full` (default: a voter of the groups where there is room, up to five,
    /// and a front end) or `frontend` (a learner of every group: terminates MQTT, holds no
    /// vote).
    role: String = "SHOAL_ROLE",
    /// Cluster: route shards, each a Raft group (1 to 64). Default 4. Every node must use
    /// the same number.
    route_shards: u16 = "SHOAL_ROUTE_SHARDS",
    /// Cluster: retained message shards, each a Raft group (1 to 64). Default 2. Every
    /// node must use the same number.
    retained_shards: u16 = "SHOAL_RETAINED_SHARDS",
    /// Cluster: voters of the session group, its replication factor (odd, 1 to 5): a
    /// write to a persistent session is committed once a majority of them has it on disk.
    /// Other full nodes follow as learners (every node applies every write, so any node
    /// can take a session up). Default 3. Applies as nodes join: a group keeps the voters
    /// it has.
    session_replicas: u16 = "SHOAL_SESSION_REPLICAS",
    /// Cluster: session shards (`sessions/0..S`, 1 to 16), each a Raft group with
    /// `session_replicas` voters: a client's persistent session lives in the shard its
    /// client id hashes to, and each shard's leader writes its own. Default 1 (more
    /// spreads the leaders' work, at more CPU per message: every node applies every
    /// shard's writes, in smaller batches). Every node must use the same number, and it
    /// cannot change for a data folder (a node refuses to start).
    session_shards: u16 = "SHOAL_SESSION_SHARDS",
    /// Cluster: Raft heartbeat interval, milliseconds. Default 150.
    cluster_heartbeat_ms: u64 = "SHOAL_CLUSTER_HEARTBEAT_MS",
    /// Cluster: Raft election timeout, milliseconds (a follower that hears no leader for
    /// between this and twice this starts an election; with openraft's leader lease, a new
    /// leader is in place within about three times this). Default 750.
    cluster_election_timeout_ms: u64 = "SHOAL_CLUSTER_ELECTION_TIMEOUT_MS",
    /// Cluster: a node that does not answer for this long, milliseconds, is declared down:
    /// its routes and client ids are removed, route barriers stop waiting for it. A node
    /// stops serving its clients after half of it without contact with a majority (its
    /// lease), so half of it must exceed an election (three times
    /// `cluster_election_timeout_ms`). Default 6000.
    cluster_failure_timeout_ms: u64 = "SHOAL_CLUSTER_FAILURE_TIMEOUT_MS",
    /// Cluster (advanced): a Raft group snapshots its state every this many log entries
    /// and keeps a tenth of that many before the snapshot; a node that fell further behind
    /// (down, or restarted from an old data folder) is sent the snapshot rather than the
    /// log. Fewer: more snapshot work, less log on disk. Default 10000, at least 10.
    cluster_snapshot_logs: u64 = "SHOAL_CLUSTER_SNAPSHOT_LOGS",
    /// Cluster: how long a SUBACK waits for its new route to be usable on every node,
    /// seconds, before it answers 0x80. Default 10.
    route_timeout: u64 = "SHOAL_ROUTE_TIMEOUT",
}

/// One `[[listeners]]` table as the file says it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// A name for logs and metrics. Default `<kind>:<bind>`.
    pub name: Option<String>,
    /// `tcp`, `tls`, `ws`, `wss` or `quic`.
    pub kind: String,
    /// The address (a UDP port for `quic`).
    pub bind: SocketAddr,
    /// PEM certificate chain, the leaf first (`tls`, `wss`, `quic`).
    pub cert: Option<PathBuf>,
    /// PEM private key (`tls`, `wss`, `quic`).
    pub key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client certificate is required (default true) or only
    /// checked when present.
    pub require_client_cert: Option<bool>,
    /// Use the client certificate's identity as the username: `cn` (subject common name)
    /// or `san` (first DNS or e-mail subject alternative name). Needs `client_ca`.
    pub use_identity_as_username: Option<String>,
    /// Lowest TLS version: `1.2` (default) or `1.3`. QUIC is always 1.3.
    pub tls_min_version: Option<String>,
    /// WebSocket path. Default `/mqtt`.
    pub path: Option<String>,
    /// Expect a PROXY protocol v1 or v2 header first (`tcp`, `tls`, `ws`, `wss`).
    pub proxy_protocol: Option<bool>,
    /// Connections this listener holds at once; more are closed at accept. Default 0 (no
    /// limit).
    pub max_connections: Option<usize>,
    /// New connections per second this listener accepts; more wait in the backlog.
    /// Default 0 (no limit).
    pub max_connection_rate: Option<u32>,
    /// Whether clients without a username may connect here. Default: the global key.
    pub allow_anonymous: Option<bool>,
}

/// How a listener carries MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls(TlsSettings),
    /// WebSocket over TCP, on this path.
    Ws {
        /// The HTTP path of the upgrade.
        path: String,
    },
    /// WebSocket over TLS.
    Wss {
        /// The TLS settings.
        tls: TlsSettings,
        /// The HTTP path of the upgrade.
        path: String,
    },
    /// QUIC (ALPN `mqtt`), MQTT on the first bidirectional stream.
    Quic(TlsSettings),
}

impl ListenerKind {
    /// `tcp`, `tls`, `ws`, `wss` or `quic`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls(_) => "tls",
            Self::Ws { .. } => "ws",
            Self::Wss { .. } => "wss",
            Self::Quic(_) => "quic",
        }
    }

    /// The TLS settings, for the kinds that have them.
    pub fn tls(&self) -> Option<&TlsSettings> {
        match self {
            Self::Tls(tls) | Self::Wss { tls, .. } | Self::Quic(tls) => Some(tls),
            Self::Tcp | Self::Ws { .. } => None,
        }
    }
}

/// Where a client certificate's identity is read, for `use_identity_as_username`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// The subject's common name.
    CommonName,
    /// The first DNS name or e-mail address among the subject alternative names.
    SubjectAltName,
}

/// A listener's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// The CA bundle client certificates are checked against.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with `client_ca`).
    pub require_client_cert: bool,
    /// Whether TLS 1.2 is accepted (else 1.3 only).
    pub tls12: bool,
    /// The certificate identity used as username, if any.
    pub identity: Option<IdentitySource>,
}

/// A validated listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Its name in logs and metrics.
    pub name: String,
    /// Its address.
    pub bind: SocketAddr,
    /// How it carries MQTT.
    pub kind: ListenerKind,
    /// Whether a PROXY protocol header comes first.
    pub proxy_protocol: bool,
    /// Connections at once, at most.
    pub max_connections: Option<usize>,
    /// New connections per second, at most.
    pub max_connection_rate: Option<u32>,
    /// Whether clients without a username may connect.
    pub allow_anonymous: bool,
}

/// What every client is held to, besides the session's own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Subscriptions per client.
    pub max_subscriptions: Option<usize>,
    /// Levels per topic name or filter.
    pub max_topic_levels: usize,
    /// PUBLISH packets per second.
    pub publish_rate: Option<u32>,
    /// PUBLISH bytes per second.
    pub publish_bytes_rate: Option<u64>,
    /// Retained messages the node keeps.
    pub max_retained_messages: usize,
    /// Bytes of retained messages the node keeps.
    pub max_retained_bytes: usize,
    /// How long a started packet may take to complete.
    pub packet_timeout: Duration,
}

/// Bounds on password checking: how many hashes at once, and how many failures per
/// username and per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Hashes computed at once.
    pub max_concurrent_hashes: usize,
    /// Logins waiting for a hashing slot.
    pub hash_queue: usize,
    /// Failures per username, and the window; `None`: no limit.
    pub failures_per_user: Option<(u32, Duration)>,
    /// Failures per address, and the window; `None`: no limit.
    pub failures_per_address: Option<(u32, Duration)>,
}

/// Flapping detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlappingSettings {
    /// Connects within the window that ban.
    pub max_connects: u32,
    /// The window.
    pub window: Duration,
    /// How long the ban lasts.
    pub ban: Duration,
}

/// The validated configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The admin HTTP listener.
    pub admin_listen: SocketAddr,
    /// Every MQTT listener: the plain TCP one (`listen`) first when there is one.
    pub listeners: Vec<ListenerConfig>,
    /// The admin API token.
    pub admin_token: Option<String>,
    /// How long an admin client has to send a whole request.
    pub admin_request_timeout: Duration,
    /// The password file.
    pub password_file: Option<PathBuf>,
    /// The ACL file.
    pub acl_file: Option<PathBuf>,
    /// Whether a client id belongs to the username that created its session.
    pub bind_client_id_to_username: bool,
    /// Handshakes at once.
    pub max_handshakes: usize,
    /// Flapping detection, if on.
    pub flapping: Option<FlappingSettings>,
    /// Bounds on password checking.
    pub auth: AuthLimits,
    /// Per-client limits.
    pub limits: ClientLimits,
    /// What each session enforces and announces.
    pub session: SessionConfig,
    /// The interval of $SYS topics; `None`: off.
    pub sys_interval: Option<Duration>,
    /// The log filter.
    pub log: String,
    /// Cluster membership (a node alone is a cluster of one: see
    /// [`ClusterSettings::is_alone`]).
    pub cluster: ClusterSettings,
}

/// How the node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// What the cluster crate needs.
    pub node: shoal_cluster::ClusterConfig,
    /// How long a SUBACK waits for its route.
    pub route_timeout: Duration,
}

impl ClusterSettings {
    /// A node alone: a cluster of one with no listener, which no other node can join.
    pub fn is_alone(&self) -> bool {
        self.node.listen.is_none()
    }
}

impl Config {
    /// The configuration of this process: flags and environment, over the file they name.
    /// A flag or variable clap cannot parse ends the process (exit status 2) with clap's
    /// message, naming the `SHOAL_*` variable when the value came from the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match RawConfig::try_parse_from(&args) {
            Ok(raw) => Self::load_from(raw),
            Err(e) => match env_error(&e, &args, |name| std::env::var_os(name).is_some()) {
                Some(message) => Err(ConfigError::Environment { message }),
                None => e.exit(),
            },
        }
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
        let cluster = cluster_settings(&raw)?;
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
            max_keep_alive: raw.max_keep_alive.filter(|&cap| cap > 0),
            max_queued_messages,
            max_queued_bytes,
            queue_qos0_offline: raw.queue_qos0_messages.unwrap_or(false),
            max_session_expiry: raw
                .max_session_expiry
                .unwrap_or(defaults.max_session_expiry),
            max_inflight: match raw.max_inflight {
                None => defaults.max_inflight,
                Some(n) => NonZeroU16::new(n).ok_or_else(|| {
                    invalid("max_inflight", "0 would send no QoS 1/2 message".into())
                })?,
            },
            ..defaults
        };
        let allow_anonymous = raw.allow_anonymous.unwrap_or(true);
        let mut listeners = Vec::new();
        let explicit = raw.listeners.unwrap_or_default();
        if raw.listen.is_some() || explicit.is_empty() {
            let bind = raw
                .listen
                .unwrap_or_else(|| "0.0.0.0:1883".parse().expect("a valid address literal"));
            listeners.push(ListenerConfig {
                name: "default".into(),
                bind,
                kind: ListenerKind::Tcp,
                proxy_protocol: false,
                max_connections: None,
                max_connection_rate: None,
                allow_anonymous,
            });
        }
        for (i, listener) in explicit.into_iter().enumerate() {
            listeners.push(listener_config(i, listener, allow_anonymous)?);
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in listeners.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                return Err(invalid(
                    format!("listeners[{i}].name"),
                    format!("{:?} is used by another listener", l.name),
                ));
            }
        }
        let max_handshakes = raw.max_handshakes.unwrap_or(256);
        if max_handshakes == 0 {
            return Err(invalid(
                "max_handshakes",
                "0 would accept no connection".into(),
            ));
        }
        let flapping = match raw.flapping_max_connects.unwrap_or(0) {
            0 => None,
            max_connects => {
                let window = raw.flapping_window.unwrap_or(60);
                let ban = raw.flapping_ban.unwrap_or(300);
                if window == 0 || ban == 0 {
                    return Err(invalid(
                        if window == 0 {
                            "flapping_window"
                        } else {
                            "flapping_ban"
                        },
                        "must be at least 1 second".into(),
                    ));
                }
                Some(FlappingSettings {
                    max_connects,
                    window: Duration::from_secs(window),
                    ban: Duration::from_secs(ban),
                })
            }
        };
        let auth = AuthLimits {
            max_concurrent_hashes: match raw.auth_max_concurrent_hashes.unwrap_or(2) {
                0 => {
                    return Err(invalid(
                        "auth_max_concurrent_hashes",
                        "0 would check no password".into(),
                    ));
                }
                n => n,
            },
            hash_queue: raw.auth_hash_queue.unwrap_or(32),
            failures_per_user: failure_limit(
                "auth_failures_per_user_window",
                raw.auth_failures_per_user.unwrap_or(10),
                raw.auth_failures_per_user_window.unwrap_or(60),
            )?,
            failures_per_address: failure_limit(
                "auth_failures_per_address_window",
                raw.auth_failures_per_address.unwrap_or(30),
                raw.auth_failures_per_address_window.unwrap_or(60),
            )?,
        };
        let max_topic_levels = raw.max_topic_levels.unwrap_or(128);
        if max_topic_levels == 0 {
            return Err(invalid(
                "max_topic_levels",
                "0 would refuse every topic".into(),
            ));
        }
        let admin_request_timeout = raw.admin_request_timeout.unwrap_or(10);
        if admin_request_timeout == 0 {
            return Err(invalid(
                "admin_request_timeout",
                "must be at least 1 second".into(),
            ));
        }
        let packet_timeout = raw.packet_timeout.unwrap_or(30);
        if packet_timeout == 0 {
            return Err(invalid(
                "packet_timeout",
                "must be at least 1 second".into(),
            ));
        }
        let limits = ClientLimits {
            max_retained_messages: raw.max_retained_messages.unwrap_or(1_000_000),
            max_retained_bytes: raw.max_retained_bytes.unwrap_or(1 << 30),
            packet_timeout: Duration::from_secs(packet_timeout),
            max_subscriptions: Some(raw.max_subscriptions.unwrap_or(100_000)).filter(|&n| n > 0),
            max_topic_levels,
            publish_rate: raw.publish_rate.filter(|&n| n > 0),
            publish_bytes_rate: raw.publish_bytes_rate.filter(|&n| n > 0),
        };
        let log = raw.log.unwrap_or_else(|| "info,openraft=warn".into());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| invalid("log", e.to_string()))?;
        Ok(Self {
            listeners,
            admin_token: raw.admin_token.filter(|t| !t.is_empty()),
            admin_request_timeout: Duration::from_secs(admin_request_timeout),
            password_file: raw.password_file,
            acl_file: raw.acl_file,
            bind_client_id_to_username: raw.bind_client_id_to_username.unwrap_or(false),
            max_handshakes,
            flapping,
            auth,
            limits,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            admin_listen: raw.admin_listen.unwrap_or_else(|| {
                DEFAULT_ADMIN_LISTEN
                    .parse()
                    .expect("a valid address literal")
            }),
            session,
            sys_interval: match raw.sys_interval.unwrap_or(10) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            log,
            cluster,
        })
    }
}

/// The cluster keys (a node alone is a cluster of one).
fn cluster_settings(raw: &RawConfig) -> Result<ClusterSettings, ConfigError> {
    cluster_settings_on(raw, &hostname())
}

/// The cluster keys, on a machine whose host name is `host`.
fn cluster_settings_on(raw: &RawConfig, host: &str) -> Result<ClusterSettings, ConfigError> {
    let discovery = match raw.discovery.as_deref() {
        None | Some("") => None,
        Some(d) => match d.strip_prefix("dns:") {
            Some(name)
                if name
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Some(name.to_owned())
            }
            _ => {
                return Err(invalid("discovery", format!("{d:?} is not dns:NAME:PORT")));
            }
        },
    };
    let mut seeds: Vec<String> = raw
        .seeds
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for seed in &seeds {
        check_seed(seed).map_err(|why| invalid("seeds", why))?;
    }
    seeds.extend(discovery);
    // A node without cluster_listen, seeds or discovery runs alone: a cluster of one
    // that no other node can reach (no listener), bootstrapped by itself, node 1 unless
    // node_id says otherwise.
    let alone = raw.cluster_listen.is_none() && seeds.is_empty();
    if alone {
        if raw
            .mqtt_advertise
            .as_deref()
            .is_some_and(|a| !a.trim().is_empty())
        {
            return Err(invalid(
                "mqtt_advertise",
                "set on a node alone: it only serves a cluster (set cluster_listen, seeds or discovery)".into(),
            ));
        }
        if raw.role.as_deref().is_some_and(|r| r == "frontend") {
            return Err(invalid(
                "role",
                "frontend on a node alone: a front end serves a cluster (set seeds or discovery)"
                    .into(),
            ));
        }
    }
    let listen = (!alone).then(|| {
        raw.cluster_listen
            .unwrap_or_else(|| "0.0.0.0:7946".parse().expect("a valid address literal"))
    });
    let bootstrap = match raw.bootstrap_host.as_deref().map(str::trim) {
        _ if alone => true,
        None | Some("") => raw.bootstrap.unwrap_or(false),
        Some(_) if raw.bootstrap == Some(true) => {
            return Err(invalid(
                "bootstrap_host",
                "set with bootstrap = true: give one of the two".into(),
            ));
        }
        Some(bootstrap_host) => bootstrap_host == host,
    };
    let node_id = match raw.node_id {
        Some(0) => return Err(invalid("node_id", "0 is not a node id (1 and up)".into())),
        Some(id) => id,
        None if alone => 1,
        None => {
            let digits: String = host
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            match digits.parse::<u64>() {
                Ok(n) => n + 1,
                Err(_) => {
                    return Err(invalid(
                        "node_id",
                        format!(
                            "not set, and the host name {host:?} does not end in a number to derive it from"
                        ),
                    ));
                }
            }
        }
    };
    let advertise = match (raw.cluster_advertise.as_deref(), listen) {
        (Some(a), Some(_)) if !a.is_empty() => a.to_owned(),
        (_, Some(listen)) if listen.ip().is_unspecified() => {
            format!("{host}:{}", listen.port())
        }
        (_, Some(listen)) => listen.to_string(),
        (_, None) => String::new(),
    };
    let mqtt_advertise = match raw.mqtt_advertise.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(address) => {
            check_seed(address).map_err(|why| invalid("mqtt_advertise", why))?;
            Some(address.to_owned())
        }
    };
    let frontend = match raw.role.as_deref().unwrap_or("full") {
        "full" => false,
        "frontend" => true,
        other => {
            return Err(invalid(
                "role",
                format!("{other:?} is not full or frontend"),
            ));
        }
    };
    let shards = |key: &str, value: Option<u16>, default: u16| match value.unwrap_or(default) {
        n @ 1..=64 => Ok(n),
        n => Err(invalid(key, format!("{n} is not between 1 and 64"))),
    };
    let millis =
        |key: &str, value: Option<u64>, default: u64, min: u64| match value.unwrap_or(default) {
            n if n >= min => Ok(Duration::from_millis(n)),
            n => Err(invalid(key, format!("{n} is below the minimum of {min}"))),
        };
    let heartbeat = millis("cluster_heartbeat_ms", raw.cluster_heartbeat_ms, 150, 10)?;
    let election_timeout = millis(
        "cluster_election_timeout_ms",
        raw.cluster_election_timeout_ms,
        750,
        50,
    )?;
    if election_timeout <= heartbeat * 2 {
        return Err(invalid(
            "cluster_election_timeout_ms",
            format!(
                "{} ms must be more than twice cluster_heartbeat_ms ({} ms)",
                election_timeout.as_millis(),
                heartbeat.as_millis()
            ),
        ));
    }
    let failure_timeout = millis(
        "cluster_failure_timeout_ms",
        raw.cluster_failure_timeout_ms,
        6000,
        100,
    )?;
    if failure_timeout / 2 <= election_timeout * 3 {
        return Err(invalid(
            "cluster_failure_timeout_ms",
            format!(
                "{} ms: half of it (the lease) must exceed three times cluster_election_timeout_ms ({} ms), or an election would disconnect every client",
                failure_timeout.as_millis(),
                election_timeout.as_millis()
            ),
        ));
    }
    let snapshot_logs = match raw.cluster_snapshot_logs.unwrap_or(10_000) {
        n if n >= 10 => n,
        n => {
            return Err(invalid(
                "cluster_snapshot_logs",
                format!("{n} is below the minimum of 10"),
            ));
        }
    };
    let route_timeout = match raw.route_timeout.unwrap_or(10) {
        0 => {
            return Err(invalid(
                "route_timeout",
                "0 would fail every new route".into(),
            ));
        }
        secs => Duration::from_secs(secs),
    };
    Ok(ClusterSettings {
        node: shoal_cluster::ClusterConfig {
            node_id,
            listen,
            advertise,
            mqtt_advertise,
            seeds,
            bootstrap,
            frontend,
            route_shards: shards("route_shards", raw.route_shards, 4)?,
            retained_shards: shards("retained_shards", raw.retained_shards, 2)?,
            session_shards: match raw.session_shards.unwrap_or(1) {
                n @ 1..=16 => n,
                n => {
                    return Err(invalid(
                        "session_shards",
                        format!("{n} is not between 1 and 16"),
                    ));
                }
            },
            session_replicas: match raw.session_replicas.unwrap_or(3) {
                n @ (1 | 3 | 5) => usize::from(n),
                n => {
                    return Err(invalid(
                        "session_replicas",
                        format!(
                            "{n}: the session group's voters are 1, 3 or 5 (odd: a majority must decide)"
                        ),
                    ));
                }
            },
            heartbeat,
            election_timeout,
            failure_timeout,
            join_timeout: Duration::from_secs(120),
            snapshot_logs,
        },
        route_timeout,
    })
}

/// Checks that `seed` is `host:port` (as `seeds` and `POST /api/v1/cluster/join` take it).
pub(crate) fn check_seed(seed: &str) -> Result<(), String> {
    if seed
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!("{seed:?} is not host:port"));
    }
    Ok(())
}

/// This machine's host name (`HOSTNAME`, else the kernel's), for the node id and address.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A failure limit: `None` when `failures` is 0 (no limit); a window of 0 is refused.
fn failure_limit(
    window_key: &str,
    failures: u32,
    window: u64,
) -> Result<Option<(u32, Duration)>, ConfigError> {
    if failures == 0 {
        return Ok(None);
    }
    if window == 0 {
        return Err(invalid(window_key, "must be at least 1 second".into()));
    }
    Ok(Some((failures, Duration::from_secs(window))))
}

fn invalid(key: impl Into<String>, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason,
    }
}

/// Checks one `[[listeners]]` table (the `i`th).
fn listener_config(
    i: usize,
    raw: RawListener,
    allow_anonymous: bool,
) -> Result<ListenerConfig, ConfigError> {
    let key = |k: &str| format!("listeners[{i}].{k}");
    let tls = |raw: &RawListener| -> Result<TlsSettings, ConfigError> {
        let cert = raw.cert.clone().ok_or_else(|| {
            invalid(
                key("cert"),
                format!("a {} listener needs a certificate", raw.kind),
            )
        })?;
        let key_file = raw.key.clone().ok_or_else(|| {
            invalid(
                key("key"),
                format!("a {} listener needs a private key", raw.kind),
            )
        })?;
        let identity = match raw.use_identity_as_username.as_deref() {
            None => None,
            Some("cn") => Some(IdentitySource::CommonName),
            Some("san") => Some(IdentitySource::SubjectAltName),
            Some(other) => {
                return Err(invalid(
                    key("use_identity_as_username"),
                    format!("{other:?} is not `cn` or `san`"),
                ));
            }
        };
        if identity.is_some() && raw.client_ca.is_none() {
            return Err(invalid(
                key("use_identity_as_username"),
                "needs `client_ca` (client certificates are not asked for without it)".into(),
            ));
        }
        let tls12 = match raw.tls_min_version.as_deref() {
            None | Some("1.2") => raw.kind != "quic",
            Some("1.3") => false,
            Some(other) => {
                return Err(invalid(
                    key("tls_min_version"),
                    format!("{other:?} is not \"1.2\" or \"1.3\""),
                ));
            }
        };
        Ok(TlsSettings {
            cert,
            key: key_file,
            client_ca: raw.client_ca.clone(),
            require_client_cert: raw.require_client_cert.unwrap_or(true),
            tls12,
            identity,
        })
    };
    let path = || -> Result<String, ConfigError> {
        let path = raw.path.clone().unwrap_or_else(|| "/mqtt".into());
        if !path.starts_with('/') {
            return Err(invalid(
                key("path"),
                format!("{path:?} does not start with `/`"),
            ));
        }
        Ok(path)
    };
    let kind = match raw.kind.as_str() {
        "tcp" => ListenerKind::Tcp,
        "tls" => ListenerKind::Tls(tls(&raw)?),
        "ws" => ListenerKind::Ws { path: path()? },
        "wss" => ListenerKind::Wss {
            tls: tls(&raw)?,
            path: path()?,
        },
        "quic" => ListenerKind::Quic(tls(&raw)?),
        other => {
            return Err(invalid(
                key("kind"),
                format!("{other:?} is not tcp, tls, ws, wss or quic"),
            ));
        }
    };
    let needs_tls = kind.tls().is_some();
    for (name, set) in [
        ("cert", raw.cert.is_some()),
        ("key", raw.key.is_some()),
        ("client_ca", raw.client_ca.is_some()),
        ("tls_min_version", raw.tls_min_version.is_some()),
        (
            "use_identity_as_username",
            raw.use_identity_as_username.is_some(),
        ),
        ("require_client_cert", raw.require_client_cert.is_some()),
    ] {
        if set && !needs_tls {
            return Err(invalid(
                key(name),
                format!("a {} listener has no TLS", raw.kind),
            ));
        }
    }
    if raw.path.is_some() && !matches!(kind, ListenerKind::Ws { .. } | ListenerKind::Wss { .. }) {
        return Err(invalid(
            key("path"),
            format!("a {} listener is not a WebSocket", raw.kind),
        ));
    }
    let proxy_protocol = raw.proxy_protocol.unwrap_or(false);
    if proxy_protocol && matches!(kind, ListenerKind::Quic(_)) {
        return Err(invalid(
            key("proxy_protocol"),
            "PROXY protocol is for TCP-based listeners, not QUIC".into(),
        ));
    }
    Ok(ListenerConfig {
        name: raw
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", raw.kind, raw.bind)),
        bind: raw.bind,
        kind,
        proxy_protocol,
        max_connections: raw.max_connections.filter(|&n| n > 0),
        max_connection_rate: raw.max_connection_rate.filter(|&n| n > 0),
        allow_anonymous: raw.allow_anonymous.unwrap_or(allow_anonymous),
    })
}

/// When clap refused a value that came from a `SHOAL_*` variable rather than from the
/// command line: the message, naming the variable (clap names the flag).
fn env_error(
    error: &clap::Error,
    args: &[std::ffi::OsString],
    is_set: impl Fn(&str) -> bool,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    // `--max-qos <MAX_QOS>` -> `--max-qos`, `max_qos`.
    let flag = arg.split_whitespace().next()?;
    let key = flag.strip_prefix("--")?.replace('-', "_");
    let on_command_line = args.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    });
    let variable = format!("SHOAL_{}", key.to_uppercase());
    if on_command_line || !is_set(&variable) {
        return None;
    }
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => String::new(),
    };
    let reason = std::error::Error::source(error)
        .map(|source| source.to_string())
        .unwrap_or_else(|| error.kind().to_string());
    Some(format!(
        "environment variable {variable} (config key `{key}`): invalid value {value:?}: {reason}"
    ))
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
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(
            config.listeners[0].bind,
            "0.0.0.0:1883".parse().expect("addr")
        );
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.session.maximum_packet_size, 1 << 20);
        assert_eq!(config.sys_interval, Some(Duration::from_secs(10)));
        assert_eq!(config.admin_listen.port(), 18083);
        assert_eq!(
            config.auth,
            AuthLimits {
                max_concurrent_hashes: 2,
                hash_queue: 32,
                failures_per_user: Some((10, Duration::from_secs(60))),
                failures_per_address: Some((30, Duration::from_secs(60))),
            }
        );
    }

    #[test]
    fn guessing_bounds_turn_off_with_zero_and_refuse_empty_windows_and_slots() {
        let raw = RawConfig {
            auth_failures_per_user: Some(0),
            auth_failures_per_address: Some(0),
            ..Default::default()
        };
        let config = Config::from_raw(raw).expect("valid");
        assert_eq!(config.auth.failures_per_user, None);
        assert_eq!(config.auth.failures_per_address, None);
        for (raw, key) in [
            (
                RawConfig {
                    auth_max_concurrent_hashes: Some(0),
                    ..Default::default()
                },
                "auth_max_concurrent_hashes",
            ),
            (
                RawConfig {
                    auth_failures_per_user_window: Some(0),
                    ..Default::default()
                },
                "auth_failures_per_user_window",
            ),
            (
                RawConfig {
                    auth_failures_per_address_window: Some(0),
                    ..Default::default()
                },
                "auth_failures_per_address_window",
            ),
        ] {
            let err = Config::from_raw(raw).expect_err("refused");
            assert!(err.to_string().contains(key), "{err}");
        }
        let help = <RawConfig as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for key in [
            "--auth-max-concurrent-hashes",
            "--auth-hash-queue",
            "--auth-failures-per-user",
            "--auth-failures-per-user-window",
            "--auth-failures-per-address",
            "--auth-failures-per-address-window",
        ] {
            assert!(help.contains(key), "{key} in --help");
        }
    }

    #[test]
    fn a_bad_environment_value_names_the_variable_not_the_flag() {
        let args: Vec<std::ffi::OsString> = vec!["shoal".into()];
        let err = RawConfig::try_parse_from(["shoal", "--max-qos", "x"]).expect_err("refused");
        let message = env_error(&err, &args, |name| name == "SHOAL_MAX_QOS").expect("from env");
        assert!(
            message.starts_with(
                "environment variable SHOAL_MAX_QOS (config key `max_qos`): invalid value \"x\""
            ),
            "{message}"
        );
        // Given on the command line, clap's own message (naming the flag) stands.
        let args: Vec<std::ffi::OsString> = vec!["shoal".into(), "--max-qos".into(), "x".into()];
        assert_eq!(env_error(&err, &args, |_| true), None);
    }

    /// The cluster settings of node 1 listening on 127.0.0.1:7946, with `args`.
    fn node(args: &[&str]) -> Result<ClusterSettings, ConfigError> {
        let mut all = vec!["--cluster-listen", "127.0.0.1:7946", "--node-id", "1"];
        all.extend(args);
        cluster_settings_on(&parse(&all), "h")
    }

    #[test]
    fn mqtt_advertise_is_host_port_and_only_for_a_cluster() {
        let set = node(&["--mqtt-advertise", "mqtt-1.example:1883"]).expect("valid");
        assert_eq!(
            set.node.mqtt_advertise.as_deref(),
            Some("mqtt-1.example:1883")
        );
        let unset = node(&[]).expect("valid");
        assert_eq!(unset.node.mqtt_advertise, None);
        let err = node(&["--mqtt-advertise", "mqtt-1.example"]).expect_err("no port");
        assert!(err.to_string().contains("`mqtt_advertise`"), "{err}");
        let alone = cluster_settings_on(&parse(&["--mqtt-advertise", "a:1883"]), "h")
            .expect_err("a node alone");
        assert!(alone.to_string().contains("`mqtt_advertise`"), "{alone}");
    }

    #[test]
    fn a_node_alone_is_a_cluster_of_one_without_a_listener() {
        let alone = cluster_settings_on(&parse(&[]), "laptop").expect("valid");
        assert!(alone.is_alone());
        assert_eq!(alone.node.listen, None);
        assert_eq!(alone.node.node_id, 1, "no number in the host name: node 1");
        assert!(alone.node.bootstrap, "it starts its own cluster");
        assert!(alone.node.seeds.is_empty());
        let named = cluster_settings_on(&parse(&["--node-id", "7"]), "h").expect("valid");
        assert_eq!(named.node.node_id, 7);
        let err = cluster_settings_on(&parse(&["--role", "frontend"]), "h").expect_err("alone");
        assert!(err.to_string().contains("`role`"), "{err}");
        let member = node(&[]).expect("valid");
        assert!(!member.is_alone());
        assert!(!member.node.bootstrap, "a listener alone waits for a join");
    }

    #[test]
    fn cluster_snapshot_logs_defaults_to_ten_thousand_and_refuses_tiny_values() {
        let default = node(&[]).expect("valid");
        assert_eq!(default.node.snapshot_logs, 10_000);
        let small = node(&["--cluster-snapshot-logs", "50"]).expect("valid");
        assert_eq!(small.node.snapshot_logs, 50);
        let err = node(&["--cluster-snapshot-logs", "5"]).expect_err("too small");
        assert!(err.to_string().contains("`cluster_snapshot_logs`"), "{err}");
    }

    #[test]
    fn session_shards_default_to_one_and_go_up_to_sixteen() {
        assert_eq!(node(&[]).expect("valid").node.session_shards, 1);
        let settings = node(&["--session-shards", "3"]).expect("valid");
        assert_eq!(settings.node.session_shards, 3);
        for n in ["0", "17"] {
            let err = node(&["--session-shards", n]).expect_err("refused");
            assert!(err.to_string().contains("`session_shards`"), "{n}: {err}");
        }
    }

    #[test]
    fn session_replicas_default_to_three_and_must_be_odd_up_to_five() {
        assert_eq!(node(&[]).expect("valid").node.session_replicas, 3);
        for n in ["1", "5"] {
            let settings = node(&["--session-replicas", n]).expect("valid");
            assert_eq!(settings.node.session_replicas.to_string(), n);
        }
        for n in ["0", "2", "4", "7"] {
            let err = node(&["--session-replicas", n]).expect_err("refused");
            assert!(err.to_string().contains("`session_replicas`"), "{n}: {err}");
        }
    }

    #[test]
    fn bootstrap_host_bootstraps_only_the_machine_it_names() {
        let raw = parse(&[
            "--discovery",
            "dns:shoal-headless:7946",
            "--bootstrap-host",
            "shoal-0",
        ]);
        let on = |host: &str| cluster_settings_on(&raw, host).expect("valid").node;
        let first = on("shoal-0");
        assert!(first.bootstrap, "shoal-0 starts the cluster");
        assert_eq!(first.node_id, 1);
        for host in ["shoal-1", "shoal-10", "xshoal-0", "other-0"] {
            assert!(!on(host).bootstrap, "{host} joins");
        }
        // Without the key, `bootstrap` decides, as before.
        let plain = parse(&["--seeds", "a:7946", "--node-id", "4"]);
        let node = |raw: &RawConfig| cluster_settings_on(raw, "shoal-0").expect("valid");
        assert!(!node(&plain).node.bootstrap);
        let forced = parse(&["--seeds", "a:7946", "--node-id", "4", "--bootstrap", "true"]);
        assert!(node(&forced).node.bootstrap);
        // An empty value (a chart's unset variable) is no value.
        let empty = parse(&[
            "--seeds",
            "a:7946",
            "--node-id",
            "4",
            "--bootstrap-host",
            "",
        ]);
        assert!(!node(&empty).node.bootstrap);
        // Both at once contradict each other on every host but one: refused.
        let both = parse(&[
            "--seeds",
            "a:7946",
            "--bootstrap",
            "true",
            "--bootstrap-host",
            "shoal-0",
        ]);
        let err = cluster_settings_on(&both, "shoal-1").expect_err("refused");
        assert!(err.to_string().contains("`bootstrap_host`"), "{err}");
        let help = <RawConfig as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains("--bootstrap-host"), "in --help");
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
        assert_eq!(config.listeners[0].bind.port(), 2000);
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
