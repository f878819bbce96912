use std::net::SocketAddr;
use std::path::PathBuf;

use engine::group::GroupConfig;
use engine::metadata::TopicDefaults;

use crate::limits::DescriptorBudget;

/// The descriptor limit a config assumes until the broker reads the real
/// one at start (Linux's usual soft limit).
const DESCRIPTOR_LIMIT_ASSUMED: u64 = 1024;

/// Everything a broker needs to start. Built by `gregor serve` from flags and
/// `GREGOR_*` variables.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Host and port clients are told to connect to (Metadata responses).
    pub advertise_host: String,
    pub advertise_port: u16,
    pub shard_count: usize,
    pub node_id: i32,
    /// `auto.create.topics.enable`
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of an auto-created topic.
    pub default_partitions: u32,
    /// `default.replication.factor`: replicas of a topic created without
    /// one (auto-created topics too).
    pub default_replication_factor: u32,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for
    /// this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `socket.request.max.bytes`
    pub request_bytes_max: usize,
    /// Broker defaults of topic configs (`log.retention.ms`, `log.segment.bytes`, ...).
    pub topic_defaults: TopicDefaults,
    /// Bound on request bytes a shard holds in flight (read, queued for
    /// append, not yet answered); when reached, its connections stop reading.
    pub shard_request_bytes_max: usize,
    /// Consumer group coordinator settings (`group.*`, `offsets.*`).
    pub groups: GroupConfig,
    /// `log.retention.check.interval.ms`
    pub retention_check_interval_ms: u64,
    /// Where /metrics, /health and /ready are served (None: off).
    pub metrics_listen: Option<SocketAddr>,
    /// `log.cleaner.backoff.ms`: how often compaction looks for work.
    pub cleaner_backoff_ms: u64,
    /// `connections.max.idle.ms`: connections silent this long are closed.
    pub connection_idle_ms_max: u64,
    /// How the descriptor limit is spent (set at start from the raised
    /// `RLIMIT_NOFILE`; see `limits.rs`).
    pub descriptors: DescriptorBudget,
    /// A segment file unused this long is closed (reopened on the next
    /// read or write), so idle partitions hold no descriptor.
    pub segment_file_idle_ms: u64,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: u32,
    /// `offsets.topic.replication.factor` (at most the live brokers when the
    /// topic is made).
    pub offsets_topic_replication_factor: u32,
    /// `transaction.state.log.num.partitions`
    pub transaction_state_partitions: u32,
    /// `transaction.state.log.replication.factor` (at most the live brokers
    /// when the topic is made).
    pub transaction_state_replication_factor: u32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a
    /// producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// How segment appends reach the disk (buffered io_uring or O_DIRECT).
    pub segment_write_mode: SegmentWriteMode,
    /// `producer.id.expiration.ms`: idempotent producers idle this long are
    /// forgotten by each partition.
    pub producer_id_expiration_ms: i64,
    /// The metadata quorum this broker belongs to.
    pub quorum: QuorumSettings,
}

/// `controller.quorum.voters` and the controller listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSettings {
    /// Every voter; empty: this node alone (a one-voter quorum).
    pub voters: Vec<QuorumVoter>,
    /// Where this node's controller listens for its peers (required when
    /// there are other voters).
    pub listen: Option<SocketAddr>,
    /// One tick of the quorum's clock: elections wait 10 to 20 ticks
    /// without a leader, a leader heartbeats every 2.
    pub tick_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often this broker tells the
    /// quorum leader it is alive.
    pub heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker not heard for this long is
    /// fenced (leads nothing, leaves every ISR).
    pub session_timeout_ms: u64,
}

impl Default for QuorumSettings {
    fn default() -> Self {
        QuorumSettings {
            voters: Vec::new(),
            listen: None,
            tick_ms: QUORUM_TICK_MS_DEFAULT,
            heartbeat_interval_ms: 2_000,
            session_timeout_ms: 9_000,
        }
    }
}

/// Elections after 1 to 2 s without a leader, as Kafka's
/// `controller.quorum.election.timeout.ms` (1 s).
pub const QUORUM_TICK_MS_DEFAULT: u64 = 100;

/// One voter of `controller.quorum.voters`: `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoter {
    pub node_id: i32,
    /// host:port of its controller listener.
    pub address: String,
}

/// Parses `controller.quorum.voters`: `1@host:port,2@host:port,...`.
pub fn parse_quorum_voters(text: &str) -> Result<Vec<QuorumVoter>, String> {
    let mut voters: Vec<QuorumVoter> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| format!("voter {item:?} is not id@host:port"))?;
        let node_id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("voter {item:?}: {id:?} is not a node id (0 or more)"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("voter {item:?}: {address:?} has no :port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("voter {item:?}: {address:?} is not host:port"));
        }
        if voters.iter().any(|v| v.node_id == node_id) {
            return Err(format!("voter {node_id} is listed twice"));
        }
        voters.push(QuorumVoter {
            node_id,
            address: address.to_string(),
        });
    }
    Ok(voters)
}

impl BrokerConfig {
    pub fn with_defaults(data_dir: PathBuf, listen: SocketAddr, shard_count: usize) -> Self {
        BrokerConfig {
            data_dir,
            listen,
            advertise_host: listen.ip().to_string(),
            advertise_port: listen.port(),
            shard_count,
            node_id: 0,
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            replica_lag_time_max_ms: 30_000,
            request_bytes_max: engine::protocol::REQUEST_BYTES_MAX_DEFAULT,
            topic_defaults: TopicDefaults::default(),
            shard_request_bytes_max: 256 << 20,
            groups: GroupConfig::default(),
            connection_idle_ms_max: 600_000,
            descriptors: DescriptorBudget::plan(DESCRIPTOR_LIMIT_ASSUMED, shard_count),
            segment_file_idle_ms: 60_000,
            retention_check_interval_ms: 300_000,
            cleaner_backoff_ms: 15_000,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            offsets_topic_partitions: engine::group::OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            offsets_topic_replication_factor: 3,
            transaction_state_partitions: engine::txn::TRANSACTION_STATE_PARTITIONS_DEFAULT,
            transaction_state_replication_factor: 3,
            transaction_max_timeout_ms: engine::txn::TRANSACTION_MAX_TIMEOUT_MS_DEFAULT,
            segment_write_mode: SegmentWriteMode::Buffered,
            producer_id_expiration_ms: engine::txn::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            quorum: QuorumSettings::default(),
        }
    }
}

/// Which write path segment appends take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentWriteMode {
    /// io_uring writes through the page cache (tail reads hit memory).
    #[default]
    Buffered,
    /// O_DIRECT writes from aligned buffers.
    Direct,
}

impl std::str::FromStr for SegmentWriteMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "buffered" => Ok(SegmentWriteMode::Buffered),
            "direct" => Ok(SegmentWriteMode::Direct),
            other => Err(format!(
                "unknown segment write mode {other:?} (buffered or direct)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_voters_parse_as_kafka_writes_them() {
        let voters =
            parse_quorum_voters("1@127.0.0.1:9093, 2@localhost:9193,3@[::1]:9293").unwrap();
        assert_eq!(
            voters,
            vec![
                QuorumVoter {
                    node_id: 1,
                    address: "127.0.0.1:9093".into()
                },
                QuorumVoter {
                    node_id: 2,
                    address: "localhost:9193".into()
                },
                QuorumVoter {
                    node_id: 3,
                    address: "[::1]:9293".into()
                },
            ]
        );
        assert_eq!(parse_quorum_voters("").unwrap(), vec![]);
        for bad in [
            "1",
            "x@h:1",
            "-1@h:1",
            "1@h",
            "1@:1",
            "1@h:99999",
            "1@h:1,1@g:2",
        ] {
            assert!(parse_quorum_voters(bad).is_err(), "{bad}");
        }
    }
}
