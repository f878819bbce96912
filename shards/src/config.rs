use std::net::SocketAddr;
use std::path::PathBuf;

use engine::group::GroupConfig;
use engine::metadata::TopicDefaults;

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
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: u32,
    /// How segment appends reach the disk (buffered io_uring or O_DIRECT).
    pub segment_write_mode: SegmentWriteMode,
    /// `producer.id.expiration.ms`: idempotent producers idle this long are
    /// forgotten by each partition.
    pub producer_id_expiration_ms: i64,
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
            request_bytes_max: engine::protocol::REQUEST_BYTES_MAX_DEFAULT,
            topic_defaults: TopicDefaults::default(),
            shard_request_bytes_max: 256 << 20,
            groups: GroupConfig::default(),
            connection_idle_ms_max: 600_000,
            retention_check_interval_ms: 300_000,
            cleaner_backoff_ms: 15_000,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            offsets_topic_partitions: engine::group::OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            segment_write_mode: SegmentWriteMode::Buffered,
            producer_id_expiration_ms: engine::txn::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
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
