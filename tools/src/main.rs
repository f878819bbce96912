//! `gregor`: the single binary. `gregor serve` runs the broker; the operator
//! CLI (topic, produce, consume, group, cluster) talks to any Kafka endpoint.

mod cli;
mod client;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

/// A malformed request must not abort the broker through a huge up-front
/// allocation in a decoder (see engine::reserving_alloc).
#[global_allocator]
static ALLOCATOR: engine::reserving_alloc::ReservingAllocator =
    engine::reserving_alloc::ReservingAllocator;

#[derive(Parser)]
#[command(
    name = "gregor",
    version,
    about = "Kafka-compatible event streaming, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Kafka brokers to talk to (host:port[,host:port...]) [default:
    /// 127.0.0.1:9092]; for `gregor dev`, how many brokers to start.
    #[arg(short = 'b', long, global = true, env = "GREGOR_BROKERS")]
    brokers: Option<String>,
    /// Output: table, json, or (produce/consume) a kcat-like pattern such as '%k=%v\n'.
    #[arg(short = 'f', long, global = true, default_value = "table")]
    format: String,
    /// Connect and request timeout.
    #[arg(
        long,
        global = true,
        env = "GREGOR_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    timeout_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(Box<ServeArgs>),
    /// Create, list, describe, delete and configure topics.
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Write records to a topic (stdin lines, a --format pattern, or --file).
    Produce(cli::produce::ProduceArgs),
    /// Read records from a topic, alone or in a consumer group.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe, delete and seek consumer groups.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Cluster information and broker configs.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// A local cluster to try out: N brokers as child processes, data under
    /// one directory, Ctrl-C stops them all.
    Dev(cli::dev::DevArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory for segments, indexes and metadata.
    #[arg(long, env = "GREGOR_DATA_DIR", default_value = "./gregor-data")]
    data_dir: PathBuf,
    /// Kafka listener address.
    #[arg(long, env = "GREGOR_LISTEN", default_value = "127.0.0.1:9092")]
    listen: String,
    /// Address clients are told to use (host:port); defaults to --listen.
    #[arg(long, env = "GREGOR_ADVERTISE")]
    advertise: Option<String>,
    /// Number of shards (one executor pinned per core); default: all cores.
    #[arg(long, env = "GREGOR_SHARDS")]
    shards: Option<usize>,
    /// This broker's node id.
    #[arg(long, env = "GREGOR_NODE_ID", default_value_t = 0)]
    node_id: i32,
    /// auto.create.topics.enable
    #[arg(long, env = "GREGOR_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// num.partitions: partitions of an auto-created topic.
    #[arg(long, env = "GREGOR_NUM_PARTITIONS", default_value_t = 1)]
    num_partitions: u32,
    /// default.replication.factor: replicas of a topic created without a
    /// replication factor (at most the live brokers).
    #[arg(long, env = "GREGOR_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    default_replication_factor: u32,
    /// replica.lag.time.max.ms: a follower that has not caught up with its
    /// leader for this long leaves the ISR (and rejoins once caught up).
    #[arg(long, env = "GREGOR_REPLICA_LAG_TIME_MAX_MS", default_value_t = 30_000)]
    replica_lag_time_max_ms: u64,
    /// Broker settings file (Kafka names, key=value lines), e.g.
    /// log.retention.hours=24, log.segment.bytes=536870912.
    #[arg(long, env = "GREGOR_CONFIG")]
    config: Option<PathBuf>,
    /// log.segment.bytes [default: 1073741824]
    #[arg(long, env = "GREGOR_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// log.roll.ms [default: 604800000]
    #[arg(long, env = "GREGOR_SEGMENT_MS")]
    segment_ms: Option<i64>,
    /// message.max.bytes: largest record set a producer may send [default: 1048588]
    #[arg(long, env = "GREGOR_MESSAGE_MAX_BYTES")]
    message_max_bytes: Option<usize>,
    /// log.retention.ms (-1: forever) [default: 604800000]
    #[arg(long, env = "GREGOR_RETENTION_MS")]
    retention_ms: Option<i64>,
    /// log.retention.bytes per partition (-1: no bound) [default: -1]
    #[arg(long, env = "GREGOR_RETENTION_BYTES")]
    retention_bytes: Option<i64>,
    /// log.cleanup.policy: delete, compact or compact,delete [default: delete]
    #[arg(long, env = "GREGOR_CLEANUP_POLICY")]
    cleanup_policy: Option<String>,
    /// Log format on stderr: text or json.
    #[arg(long, env = "GREGOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Where /metrics (Prometheus), /health and /ready are served; "off"
    /// disables [default: the --listen host, port + 552: 9092 -> 9644]
    #[arg(long, env = "GREGOR_METRICS")]
    metrics: Option<String>,
    /// controller.quorum.voters: the metadata quorum's voters, id@host:port
    /// of their controller listeners, comma-separated (every broker of a
    /// cluster lists the same). Unset: this node alone.
    #[arg(long, env = "GREGOR_CONTROLLER_QUORUM_VOTERS")]
    controller_quorum_voters: Option<String>,
    /// Where this node's controller listens for the other voters (host:port;
    /// its entry in --controller-quorum-voters).
    #[arg(long, env = "GREGOR_CONTROLLER_LISTEN")]
    controller_listen: Option<String>,
    /// controller.quorum.election.timeout.ms: a follower that hears no
    /// leader for 1x to 2x this long stands for election.
    #[arg(
        long,
        env = "GREGOR_CONTROLLER_QUORUM_ELECTION_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    controller_quorum_election_timeout_ms: u64,
    /// How segment appends reach the disk: buffered (io_uring through the
    /// page cache, so tail reads come from memory) or direct (O_DIRECT)
    #[arg(long, env = "GREGOR_SEGMENT_WRITES", default_value = "buffered")]
    segment_writes: shards::SegmentWriteMode,
    /// log.cleaner.backoff.ms: how often compaction looks for work
    #[arg(long, env = "GREGOR_CLEANER_BACKOFF_MS", default_value_t = 15_000)]
    cleaner_backoff_ms: u64,
    /// A segment file unused this long is closed and reopened on demand, so
    /// idle partitions hold no file descriptor (checked at each maintenance
    /// tick, every --cleaner-backoff-ms at most)
    #[arg(long, env = "GREGOR_SEGMENT_FILE_IDLE_MS", default_value_t = 60_000)]
    segment_file_idle_ms: u64,
    /// log.retention.check.interval.ms
    #[arg(
        long,
        env = "GREGOR_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    retention_check_interval_ms: u64,
    /// socket.request.max.bytes
    #[arg(long, env = "GREGOR_SOCKET_REQUEST_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    socket_request_max_bytes: usize,
    /// connections.max.idle.ms
    #[arg(
        long,
        env = "GREGOR_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    connections_max_idle_ms: u64,
    /// group.initial.rebalance.delay.ms
    #[arg(
        long,
        env = "GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    group_initial_rebalance_delay_ms: i64,
    /// group.min.session.timeout.ms
    #[arg(
        long,
        env = "GREGOR_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    group_min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    #[arg(
        long,
        env = "GREGOR_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    group_max_session_timeout_ms: i32,
    /// offsets.retention.minutes
    #[arg(
        long,
        env = "GREGOR_OFFSETS_RETENTION_MINUTES",
        default_value_t = 10_080
    )]
    offsets_retention_minutes: i64,
    /// offsets.topic.num.partitions (used when __consumer_offsets is first created)
    #[arg(
        long,
        env = "GREGOR_OFFSETS_TOPIC_NUM_PARTITIONS",
        default_value_t = 50
    )]
    offsets_topic_num_partitions: u32,
    /// offsets.topic.replication.factor: replicas of __consumer_offsets
    /// (fewer when fewer brokers are live as it is made)
    #[arg(
        long,
        env = "GREGOR_OFFSETS_TOPIC_REPLICATION_FACTOR",
        default_value_t = 3
    )]
    offsets_topic_replication_factor: u32,
    /// transaction.state.log.num.partitions: partitions of
    /// __transaction_state, made on the first transactional producer
    #[arg(
        long,
        env = "GREGOR_TRANSACTION_STATE_LOG_NUM_PARTITIONS",
        default_value_t = 50
    )]
    transaction_state_log_num_partitions: u32,
    /// transaction.state.log.replication.factor: replicas of
    /// __transaction_state (fewer when fewer brokers are live as it is made)
    #[arg(
        long,
        env = "GREGOR_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        default_value_t = 3
    )]
    transaction_state_log_replication_factor: u32,
    /// transaction.max.timeout.ms: the longest transaction timeout a
    /// producer may ask for
    #[arg(
        long,
        env = "GREGOR_TRANSACTION_MAX_TIMEOUT_MS",
        default_value_t = 900_000
    )]
    transaction_max_timeout_ms: i32,
    /// producer.id.expiration.ms: idempotent producers idle this long are forgotten
    #[arg(
        long,
        env = "GREGOR_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000
    )]
    producer_id_expiration_ms: i64,
    /// broker.heartbeat.interval.ms: how often this broker tells the quorum
    /// leader it is alive
    #[arg(
        long,
        env = "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 2_000
    )]
    broker_heartbeat_interval_ms: u64,
    /// broker.session.timeout.ms: a broker not heard for this long is fenced
    #[arg(
        long,
        env = "GREGOR_BROKER_SESSION_TIMEOUT_MS",
        default_value_t = 9_000
    )]
    broker_session_timeout_ms: u64,
}

fn parse_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("'{text}' is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in '{text}'"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Where CLI commands connect without --brokers.
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// The default metrics port is the Kafka port plus this (9092 -> 9644).
const METRICS_PORT_OFFSET: u16 = 552;

fn resolve(text: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("cannot resolve {flag} {text}"))?
        .next()
        .with_context(|| format!("{flag} {text} resolves to nothing"))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listen: SocketAddr = args
        .listen
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --listen {}", args.listen))?
        .next()
        .with_context(|| format!("--listen {} resolves to nothing", args.listen))?;
    let shard_count = match args.shards {
        Some(0) => bail!("--shards must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let mut config = shards::BrokerConfig::with_defaults(args.data_dir, listen, shard_count);
    if let Some(advertise) = args.advertise {
        let (host, port) = parse_host_port(&advertise)?;
        config.advertise_host = host;
        config.advertise_port = port;
    }
    config.node_id = args.node_id;
    config.auto_create_topics = args.auto_create_topics;
    config.default_partitions = args.num_partitions.max(1);
    config.default_replication_factor = args.default_replication_factor.max(1);
    config.replica_lag_time_max_ms = args.replica_lag_time_max_ms.max(1);
    let defaults = &mut config.topic_defaults;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) = line.split_once('=').with_context(|| {
                format!("{}:{}: expected key=value", path.display(), number + 1)
            })?;
            defaults
                .set_broker_config(key.trim(), value.trim())
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), number + 1))?;
        }
    }
    // Flags given explicitly win over the file.
    for (name, value) in [
        (
            "log.segment.bytes",
            args.segment_bytes.map(|v| v.to_string()),
        ),
        ("log.roll.ms", args.segment_ms.map(|v| v.to_string())),
        (
            "message.max.bytes",
            args.message_max_bytes.map(|v| v.to_string()),
        ),
        ("log.retention.ms", args.retention_ms.map(|v| v.to_string())),
        (
            "log.retention.bytes",
            args.retention_bytes.map(|v| v.to_string()),
        ),
        ("log.cleanup.policy", args.cleanup_policy.clone()),
    ] {
        if let Some(value) = value {
            defaults
                .set_broker_config(name, &value)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    config.request_bytes_max = args.socket_request_max_bytes;
    config.connection_idle_ms_max = args.connections_max_idle_ms;
    config.retention_check_interval_ms = args.retention_check_interval_ms.max(10);
    config.cleaner_backoff_ms = args.cleaner_backoff_ms.max(10);
    config.segment_file_idle_ms = args.segment_file_idle_ms;
    config.segment_write_mode = args.segment_writes;
    config.metrics_listen = match args.metrics.as_deref() {
        Some("off") | Some("") => None,
        Some(text) => Some(resolve(text, "--metrics")?),
        // Derived from the Kafka port, so brokers on one host whose ports
        // differ do not collide: 9092 -> 9644, 9192 -> 9744.
        None => listen
            .port()
            .checked_add(METRICS_PORT_OFFSET)
            .map(|port| SocketAddr::new(listen.ip(), port)),
    };
    if let Some(voters) = &args.controller_quorum_voters {
        config.quorum.voters = shards::parse_quorum_voters(voters)
            .map_err(|e| anyhow::anyhow!("--controller-quorum-voters: {e}"))?;
    }
    if let Some(text) = &args.controller_listen {
        config.quorum.listen = Some(resolve(text, "--controller-listen")?);
    }
    let ticks = shards::QUORUM_ELECTION_TICKS as u64;
    if args.controller_quorum_election_timeout_ms < ticks {
        bail!("--controller-quorum-election-timeout-ms must be at least {ticks}");
    }
    config.quorum.tick_ms = args.controller_quorum_election_timeout_ms / ticks;
    if args.broker_heartbeat_interval_ms == 0
        || args.broker_session_timeout_ms <= args.broker_heartbeat_interval_ms
    {
        bail!(
            "--broker-session-timeout-ms must be longer than --broker-heartbeat-interval-ms (> 0)"
        );
    }
    config.quorum.heartbeat_interval_ms = args.broker_heartbeat_interval_ms;
    config.quorum.session_timeout_ms = args.broker_session_timeout_ms;
    config.groups.initial_rebalance_delay_ms = args.group_initial_rebalance_delay_ms.max(0);
    config.groups.session_timeout_ms_min = args.group_min_session_timeout_ms;
    config.groups.session_timeout_ms_max = args.group_max_session_timeout_ms;
    config.groups.offsets_retention_ms = args.offsets_retention_minutes.saturating_mul(60_000);
    if args.offsets_topic_num_partitions == 0 {
        bail!("--offsets-topic-num-partitions must be at least 1");
    }
    config.offsets_topic_partitions = args.offsets_topic_num_partitions;
    config.offsets_topic_replication_factor = args.offsets_topic_replication_factor.max(1);
    if args.transaction_state_log_num_partitions == 0 {
        bail!("--transaction-state-log-num-partitions must be at least 1");
    }
    config.transaction_state_partitions = args.transaction_state_log_num_partitions;
    config.transaction_state_replication_factor =
        args.transaction_state_log_replication_factor.max(1);
    if args.transaction_max_timeout_ms < 1 {
        bail!("--transaction-max-timeout-ms must be at least 1");
    }
    config.transaction_max_timeout_ms = args.transaction_max_timeout_ms;
    if args.producer_id_expiration_ms < 1 {
        bail!("--producer-id-expiration-ms must be at least 1");
    }
    config.producer_id_expiration_ms = args.producer_id_expiration_ms;
    shards::run(config)?;
    Ok(())
}

/// Logs to stderr through tracing, filtered by RUST_LOG; `json` gives one
/// JSON object per line for log shippers.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // glommio logs a harmless ERROR while probing iopoll support.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,glommio=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors as one line, like every other error.
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("gregor: {first} — see `gregor --help`");
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    };
    let json_logs = match &cli.command {
        Command::Serve(args) => args.log_format == "json",
        _ => false,
    };
    init_logging(json_logs);
    if !matches!(cli.command, Command::Serve(_) | Command::Dev(_)) {
        // CLI output piped into `head` and the like: exit quietly when the
        // reader goes away instead of panicking on a broken pipe.
        // SAFETY: resetting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let dev_brokers = match &cli.command {
        Command::Dev(_) => cli.brokers.clone(),
        _ => None,
    };
    let ctx = cli::Context {
        brokers: cli.brokers.unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_string()),
        timeout: std::time::Duration::from_millis(cli.timeout_ms.max(1)),
        format: cli::Format::parse(&cli.format),
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Topic(command) => cli::topic::run(&ctx, command),
        Command::Produce(args) => cli::produce::run(&ctx, args),
        Command::Consume(args) => cli::consume::run(&ctx, args),
        Command::Group(command) => cli::group::run(&ctx, command),
        Command::Cluster(command) => cli::cluster::run(&ctx, command),
        Command::Dev(args) => cli::dev::run(args, dev_brokers.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("gregor: {e:#}");
        std::process::exit(1);
    }
}
