//! The command line: subcommands for each scenario shape, shared run options, and their
//! conversion into a [`RunConfig`].

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::progress::ProgressMode;
use crate::run::LossLimit;
use crate::run::{Expectations, Reporting, RunConfig};
use crate::scenario::builtin::{self, Fleet, Publishing};
use crate::scenario::{Placement, Scenario, ScenarioSpec, SessionDefaults};
use crate::transport::{BrokerUrl, Brokers, TlsOptions};
use crate::units::{Rate, Span, parse_size};

/// A load generator for MQTT brokers (any broker, not only shoal).
#[derive(Debug, Parser)]
#[command(name = "shoal-loadtest", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N connections and hold them for the duration.
    Conn {
        /// Connections.
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: u32,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// N publishers.
    Pub {
        /// Publishers.
        #[arg(short = 'c', long, default_value_t = 10)]
        clients: u32,
        /// Topic pattern (%i: client index, %s: site).
        #[arg(short = 't', long, default_value = "lt/pub/%i")]
        topic: String,
        /// Message options.
        #[command(flatten)]
        message: MessageArgs,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// N subscribers (loss is measured from sequence gaps of whatever they receive).
    Sub {
        /// Subscribers.
        #[arg(short = 'c', long, default_value_t = 10)]
        clients: u32,
        /// Topic filters (repeat for several per client).
        #[arg(short = 't', long = "topic", default_value = "lt/pub/+")]
        topics: Vec<String>,
        /// Subscription QoS.
        #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Join this shared-subscription group ($share/GROUP/filter).
        #[arg(long)]
        share: Option<String>,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// N publisher/subscriber pairs, one topic each.
    Pairs {
        /// Pairs.
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: u32,
        /// Topic pattern, one per pair.
        #[arg(short = 't', long, default_value = "lt/pairs/%i")]
        topic: String,
        /// Message options.
        #[command(flatten)]
        message: MessageArgs,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Many publishers into one subscriber, or into a shared-subscription group.
    Fanin {
        /// Publishers.
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: u32,
        /// Subscribers.
        #[arg(long, default_value_t = 1)]
        subscribers: u32,
        /// Make the subscribers one shared-subscription group of this name.
        #[arg(long)]
        share: Option<String>,
        /// Topic prefix: publishers use PREFIX/%i, subscribers PREFIX/+.
        #[arg(long, default_value = "lt/fanin")]
        prefix: String,
        /// Message options.
        #[command(flatten)]
        message: MessageArgs,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// One publisher (or a few) to many subscribers of the same topic.
    Fanout {
        /// Subscribers.
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: u32,
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        publishers: u32,
        /// The topic.
        #[arg(short = 't', long, default_value = "lt/fanout")]
        topic: String,
        /// Message options.
        #[command(flatten)]
        message: MessageArgs,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// The industrial fleet: devices with telemetry, retained status, Last Will and
    /// commands; backend consumers in a shared group; a command sender.
    Fleet {
        /// Devices.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        /// Sites the devices are spread over (topic level %s).
        #[arg(long, default_value_t = 10)]
        sites: u32,
        /// Telemetry interval per device.
        #[arg(long, default_value = "1s")]
        interval: Span,
        /// Telemetry QoS.
        #[arg(short = 'q', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Telemetry payload size.
        #[arg(short = 's', long, default_value = "128", value_parser = parse_size)]
        size: usize,
        /// Backend consumers in $share/backend/fleet/+/+/telemetry.
        #[arg(long, default_value_t = 2)]
        backends: u32,
        /// Commands per second from the command sender, round robin over devices (0: none).
        #[arg(long, default_value_t = 10.0)]
        command_rate: f64,
        /// Command QoS.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
        command_qos: u8,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Groups of clients described in a TOML file.
    Scenario {
        /// The scenario file.
        file: PathBuf,
        /// Run options.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Turn JSON results into one self-contained HTML page that compares them.
    Report {
        /// Results written with --json.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The HTML file to write.
        #[arg(short = 'o', long, default_value = "report.html")]
        output: PathBuf,
        /// Page title.
        #[arg(long, default_value = "shoal-loadtest report")]
        title: String,
    },
    /// Check record files (--record): acknowledged QoS 1/2 messages never delivered, QoS 2
    /// duplicates and per-publisher order violations; exit 3 on any.
    Check {
        /// Record files of one run.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// When the fault happened (CLOCK_MONOTONIC nanoseconds): report recovery.
        #[arg(long)]
        fault_at_ns: Option<u64>,
        /// A pause in a flow's deliveries across the fault longer than this is an
        /// interruption.
        #[arg(long, default_value = "500ms")]
        stall: Span,
        /// Write the verdict as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// (internal) A worker process of a --workers run.
    #[command(hide = true)]
    Worker,
}

/// How measured messages are published.
#[derive(Debug, Clone, Args)]
pub struct MessageArgs {
    /// QoS of publications and subscriptions.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size (at least 24 bytes: the measurement header).
    #[arg(short = 's', long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Messages per second per publisher, or `max`.
    #[arg(short = 'r', long, default_value = "1000")]
    pub rate: Rate,
    /// Messages per publisher (the run ends when all are sent and delivered).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Publish retained.
    #[arg(long)]
    pub retain: bool,
}

impl MessageArgs {
    fn publishing(&self) -> Publishing {
        Publishing {
            qos: self.qos,
            size: self.size,
            rate: self.rate,
            count: self.count,
            retain: self.retain,
        }
    }
}

/// Options every run takes.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Broker URL: mqtt://, mqtts://, ws://host:port/path, wss://, quic://.
    #[arg(
        short = 'b',
        long,
        default_value = "mqtt://127.0.0.1:1883",
        env = "SHOAL_LOADTEST_BROKER"
    )]
    pub broker: BrokerUrl,
    /// Further brokers (several broker processes, or the nodes of a cluster), comma-separated
    /// or repeated, with the same scheme as -b: clients are spread over -b and these by
    /// --placement.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub more_brokers: Vec<BrokerUrl>,
    /// Which broker of -b and --more-brokers each client connects to.
    #[arg(long, value_enum, default_value_t = Placement::Spread)]
    pub placement: Placement,
    /// MQTT version: 3.1, 3.1.1 or 5.
    #[arg(short = 'V', long = "mqtt-version", default_value = "5", value_parser = parse_version)]
    pub mqtt_version: u8,
    /// How long publishers run (default 10s unless --count bounds them).
    #[arg(short = 'd', long)]
    pub duration: Option<Span>,
    /// Hard limit on the whole run.
    #[arg(long, default_value = "10m")]
    pub timeout: Span,
    /// New connections per second (default: as fast as possible).
    #[arg(long)]
    pub ramp: Option<f64>,
    /// Handshakes in progress at once, per process.
    #[arg(long, default_value_t = 512)]
    pub connect_concurrency: usize,
    /// Limit on transport connect + CONNACK + SUBACK.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: Span,
    /// Most QoS 1/2 publications in flight per client (the broker's Receive Maximum may
    /// lower it).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// Keep alive, seconds.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Persistent sessions (clean start off).
    #[arg(long)]
    pub persistent: bool,
    /// MQTT 5 session expiry of persistent sessions, seconds.
    #[arg(long, default_value_t = 300)]
    pub session_expiry: u32,
    /// Client id prefix: clients are PREFIX-GROUP-INDEX.
    #[arg(long, default_value = "lt")]
    pub client_id_prefix: String,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Reconnect this long after a connection is lost (default: do not reconnect).
    #[arg(long)]
    pub reconnect: Option<Span>,
    /// With --reconnect: reconnect to the next broker of -b and --more-brokers (a cluster
    /// node that died) instead of the same one.
    #[arg(long, requires = "reconnect")]
    pub failover: bool,
    /// Longest wait for in-flight messages once publishing stops.
    #[arg(long, default_value = "5s")]
    pub drain: Span,
    /// Local addresses to connect from, round robin (e.g. 127.0.0.2,127.0.0.3): each adds
    /// an ephemeral port range.
    #[arg(long, value_delimiter = ',')]
    pub source_ip: Vec<IpAddr>,
    /// Worker processes to spread the clients over (one process may open only so many
    /// files).
    #[arg(short = 'w', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Largest packet accepted from the broker.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_packet_size: usize,
    /// TLS: PEM file of the authorities to trust.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// TLS: client certificate chain (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// TLS: client private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// TLS: accept any server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// TLS: the server name to verify (default: the broker host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write what the broker acknowledged and what each subscriber received (JSON lines)
    /// for `shoal-loadtest check`. Not with --workers.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Write per-second samples as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write an HTML report of this run.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// A label for this run in reports.
    #[arg(long)]
    pub label: Option<String>,
    /// The broker's process id: report its CPU and memory. Several (comma-separated or
    /// repeated, e.g. one per broker of --more-brokers) are summed.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Do not ask the brokers their version (by default one short connection per broker,
    /// before the run, reads the retained $SYS/broker/version that Mosquitto and shoal keep).
    #[arg(long)]
    pub no_broker_version: bool,
    /// Live progress display.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Fail (exit 3) if more messages are lost: a count, or a percentage like 0.1%.
    #[arg(long)]
    pub expect_loss: Option<LossLimit>,
    /// Fail (exit 3) if the end-to-end p99 latency is higher, e.g. 5ms.
    #[arg(long)]
    pub expect_p99: Option<Span>,
    /// Fail (exit 3) if fewer messages per second are received.
    #[arg(long)]
    pub expect_rate: Option<f64>,
    /// Fail (exit 3) if more errors occur.
    #[arg(long)]
    pub expect_errors: Option<u64>,
    /// Fail (exit 3) if fewer connections are open at once.
    #[arg(long)]
    pub expect_connections: Option<u64>,
}

fn parse_version(s: &str) -> Result<u8, String> {
    match s {
        "3.1" | "3" => Ok(3),
        "3.1.1" | "311" | "4" => Ok(4),
        "5" | "5.0" => Ok(5),
        other => Err(format!("unknown MQTT version {other:?} (3.1, 3.1.1 or 5)")),
    }
}

impl RunArgs {
    /// The run configuration for `scenario`.
    pub fn config(&self, scenario: ScenarioSpec) -> anyhow::Result<RunConfig> {
        let config = RunConfig {
            scenario,
            session: SessionDefaults {
                version: self.mqtt_version,
                clean_start: !self.persistent,
                session_expiry: self.session_expiry,
                keep_alive: self.keep_alive,
                username: self.username.clone(),
                password: self.password.clone(),
                client_id_prefix: self.client_id_prefix.clone(),
            },
            brokers: Brokers::new(self.broker.clone(), self.more_brokers.iter().cloned())?,
            placement: self.placement,
            tls: TlsOptions {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                insecure: self.insecure,
                server_name: self.server_name.clone(),
            },
            duration: self.duration,
            timeout: self.timeout,
            ramp: self.ramp,
            connect_concurrency: self.connect_concurrency,
            connect_timeout: self.connect_timeout,
            inflight: self.inflight,
            reconnect: self.reconnect,
            failover: self.failover,
            drain: self.drain,
            source_ips: self.source_ip.clone(),
            max_packet_size: u32::try_from(self.max_packet_size)
                .context("--max-packet-size is too large")?,
            workers: usize::from(self.workers),
            slot: None,
            record: self.record.clone(),
        };
        anyhow::ensure!(
            self.record.is_none() || self.workers <= 1,
            "--record needs every client in one process: leave out --workers"
        );
        // Check the scenario and the placement now, before any connection or worker starts.
        Scenario::build(&config.scenario, &config.session)?
            .layout(config.placement, config.brokers.count())?;
        Ok(config)
    }

    /// What the run reports and expects.
    pub fn reporting(&self, command: String) -> Reporting {
        Reporting {
            broker_pids: self.broker_pid.clone(),
            progress: self.progress,
            command,
            label: self.label.clone(),
            expect: Expectations {
                loss: self.expect_loss,
                p99: self.expect_p99,
                rate: self.expect_rate,
                errors: self.expect_errors,
                connections: self.expect_connections,
            },
            probe_version: !self.no_broker_version,
        }
    }
}

impl Command {
    /// The scenario and run options of a run subcommand (`None` for `report` and `worker`).
    pub fn scenario(&self) -> anyhow::Result<Option<(ScenarioSpec, &RunArgs)>> {
        Ok(Some(match self {
            Self::Conn { clients, run } => (builtin::conn(*clients), run),
            Self::Pub {
                clients,
                topic,
                message,
                run,
            } => (
                builtin::publishers(*clients, topic, &message.publishing()),
                run,
            ),
            Self::Sub {
                clients,
                topics,
                qos,
                share,
                run,
            } => (
                builtin::subscribers(*clients, topics, *qos, share.as_deref()),
                run,
            ),
            Self::Pairs {
                clients,
                topic,
                message,
                run,
            } => (builtin::pairs(*clients, topic, &message.publishing()), run),
            Self::Fanin {
                clients,
                subscribers,
                share,
                prefix,
                message,
                run,
            } => (
                builtin::fanin(
                    *clients,
                    *subscribers,
                    share.as_deref(),
                    prefix,
                    &message.publishing(),
                ),
                run,
            ),
            Self::Fanout {
                clients,
                publishers,
                topic,
                message,
                run,
            } => (
                builtin::fanout(*clients, *publishers, topic, &message.publishing()),
                run,
            ),
            Self::Fleet {
                devices,
                sites,
                interval,
                qos,
                size,
                backends,
                command_rate,
                command_qos,
                run,
            } => (
                builtin::fleet(&Fleet {
                    devices: *devices,
                    sites: *sites,
                    interval: *interval,
                    qos: *qos,
                    size: *size,
                    backends: *backends,
                    command_rate: *command_rate,
                    command_qos: *command_qos,
                }),
                run,
            ),
            Self::Scenario { file, run } => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let spec = Scenario::parse_toml(&text)
                    .with_context(|| format!("{} is not a valid scenario", file.display()))?;
                (spec, run)
            }
            Self::Report { .. } | Self::Check { .. } | Self::Worker => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn builds_a_config_from_flags() {
        let cli = Cli::try_parse_from([
            "shoal-loadtest",
            "pairs",
            "-c",
            "4",
            "-q",
            "1",
            "--rate",
            "max",
            "-V",
            "3.1.1",
            "--source-ip",
            "127.0.0.2,127.0.0.3",
            "--expect-loss",
            "0",
        ])
        .expect("valid flags");
        let (spec, args) = cli.command.scenario().expect("ok").expect("a run");
        let config = args.config(spec).expect("valid");
        assert_eq!(config.session.version, 4);
        assert_eq!(config.source_ips.len(), 2);
        assert_eq!(config.scenario.groups[0].count, 4);
        assert_eq!(args.expect_loss, Some(LossLimit::Count(0)));
        assert_eq!(config.brokers.count(), 1);
        assert!(args.reporting(String::new()).broker_pids.is_empty());
    }

    #[test]
    fn more_brokers_and_broker_pids_take_lists_and_repeats() {
        let cli = Cli::try_parse_from([
            "shoal-loadtest",
            "conn",
            "-b",
            "mqtt://127.0.0.1:1883",
            "--more-brokers",
            "mqtt://127.0.0.1:1884,mqtt://127.0.0.1:1885",
            "--more-brokers",
            "tcp://127.0.0.1:1886",
            "--broker-pid",
            "10,11",
            "--broker-pid",
            "12",
        ])
        .expect("valid flags");
        let (spec, args) = cli.command.scenario().expect("ok").expect("a run");
        let config = args.config(spec).expect("valid");
        let ports: Vec<u16> = config.brokers.urls().iter().map(|u| u.port).collect();
        assert_eq!(ports, [1883, 1884, 1885, 1886]);
        assert_eq!(args.reporting(String::new()).broker_pids, [10, 11, 12]);
    }

    #[test]
    fn brokers_of_different_schemes_are_refused() {
        let cli = Cli::try_parse_from([
            "shoal-loadtest",
            "conn",
            "-b",
            "mqtt://127.0.0.1:1883",
            "--more-brokers",
            "ws://127.0.0.1:8080/mqtt",
        ])
        .expect("each URL parses");
        let (spec, args) = cli.command.scenario().expect("ok").expect("a run");
        let err = args
            .config(spec)
            .expect_err("mqtt and ws mixed")
            .to_string();
        assert!(
            err.contains("mqtt://127.0.0.1:1883") && err.contains("ws://127.0.0.1:8080/mqtt"),
            "{err}"
        );
    }

    fn config_of(args: &[&str]) -> anyhow::Result<RunConfig> {
        let cli = Cli::try_parse_from(args).expect("valid flags");
        let (spec, run) = cli.command.scenario().expect("ok").expect("a run");
        run.config(spec)
    }

    #[test]
    fn placement_defaults_to_spread_and_takes_cross() {
        let config = config_of(&["shoal-loadtest", "pairs", "-c", "2"]).expect("valid");
        assert_eq!(config.placement, Placement::Spread);
        let config = config_of(&[
            "shoal-loadtest",
            "pairs",
            "-c",
            "2",
            "-b",
            "mqtt://127.0.0.1:1883",
            "--more-brokers",
            "mqtt://127.0.0.1:1884",
            "--placement",
            "cross",
        ])
        .expect("two brokers");
        assert_eq!(config.placement, Placement::Cross);
        assert!(
            Cli::try_parse_from(["shoal-loadtest", "pairs", "--placement", "apart"]).is_err(),
            "an unknown placement is a usage error"
        );
    }

    #[test]
    fn cross_with_one_broker_is_refused() {
        let err = config_of(&["shoal-loadtest", "pairs", "-c", "2", "--placement", "cross"])
            .expect_err("one broker cannot be crossed")
            .to_string();
        assert!(
            err.contains("--placement cross needs at least two brokers"),
            "{err}"
        );
        // A scenario in which nothing is received from another group has nothing to cross.
        let err = config_of(&[
            "shoal-loadtest",
            "conn",
            "--more-brokers",
            "mqtt://127.0.0.1:1884",
            "--placement",
            "cross",
        ])
        .expect_err("conn has no messages")
        .to_string();
        assert!(err.contains("nothing can cross"), "{err}");
    }
}
