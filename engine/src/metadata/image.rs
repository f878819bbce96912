use std::collections::BTreeMap;

/// A partition's leader when it has none (Kafka's -1).
pub const NO_LEADER: i32 = -1;

/// Bytes of one archived `MetadataRecord`. rkyv finds a frame's root object
/// at `payload length - size_of::<ArchivedMetadataRecord>()`, so if a new
/// variant made the archived enum larger, every frame written before would
/// stop decoding. A variant that does not fit boxes its bulky fields on disk
/// (`#[rkyv(with = AsBox)]`); the compile-time assertion below keeps it so.
pub const ARCHIVED_RECORD_BYTES: usize = 48;

const _: () = assert!(std::mem::size_of::<ArchivedMetadataRecord>() == ARCHIVED_RECORD_BYTES);

/// One change to the cluster image. Appended to the metadata log before it
/// takes effect anywhere.
///
/// Stored on disk (rkyv, the variant is its position): new variants go at
/// the end only, and existing variants' fields never change.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataRecord {
    CreateTopic {
        name: String,
        topic_id: [u8; 16],
        /// The shard that owns each partition, by partition index (its slot;
        /// the partitions have no replicas: the single legacy node's).
        partition_shards: Vec<u32>,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    /// Replaces a topic's configs (only the ones set on the topic).
    SetTopicConfigs {
        name: String,
        configs: Vec<(String, String)>,
    },
    /// Adds partitions to a topic, placed on these shards (slots, no
    /// replicas, as `CreateTopic`).
    AddPartitions {
        name: String,
        partition_shards: Vec<u32>,
    },
    /// Producer ids below `end` are reserved: the controller hands out ids
    /// of the newest block only after this record is durable, so no id is
    /// handed out twice, across restarts (see `txn::producer_ids`).
    ReserveProducerIds {
        end: i64,
    },
    /// A broker joins, or rejoins with a new incarnation (a restart), which
    /// replaces its entry. It starts fenced: it leads nothing and joins no
    /// ISR until `UnfenceBroker`. Fields are ordered to fit
    /// `ARCHIVED_RECORD_BYTES`.
    RegisterBroker {
        node_id: i32,
        /// Greater than every broker epoch before it
        /// (`ClusterImage::next_broker_epoch`), so a message from an older
        /// registration of the same node is recognised as stale.
        broker_epoch: i64,
        /// Random per process start.
        #[rkyv(with = rkyv::with::AsBox)]
        incarnation_id: [u8; 16],
        /// Where clients connect (Kafka listener).
        host: String,
        /// Where other brokers' shards fetch replicas from.
        replication_host: String,
        #[rkyv(with = rkyv::with::AsBox)]
        rack: Option<String>,
        /// Its shards: partition slot `s` lives on shard `s % shard_count`.
        shard_count: u32,
        port: u16,
        /// Shard `i` listens for replica fetches on `replication_port_base + i`.
        replication_port_base: u16,
    },
    /// The broker stops leading and leaves ISRs (its session expired, or it
    /// shuts down). Refused unless `broker_epoch` is the broker's current one.
    FenceBroker {
        node_id: i32,
        broker_epoch: i64,
    },
    /// The broker may lead and join ISRs again. Refused unless `broker_epoch`
    /// is the broker's current one.
    UnfenceBroker {
        node_id: i32,
        broker_epoch: i64,
    },
    UnregisterBroker {
        node_id: i32,
    },
    /// A topic whose partitions have replicas: each partition's leader is its
    /// first replica, its ISR all of them, its epochs 0.
    CreateReplicatedTopic {
        name: String,
        topic_id: [u8; 16],
        partitions: Vec<PartitionPlacement>,
        configs: Vec<(String, String)>,
    },
    /// Adds partitions with replicas, started as in `CreateReplicatedTopic`.
    AddReplicatedPartitions {
        name: String,
        partitions: Vec<PartitionPlacement>,
    },
    /// Kafka's PartitionChangeRecord: a partition's new leader and ISR. The
    /// partition epoch is the current one + 1; a new leader comes with a
    /// higher leader epoch.
    PartitionChange {
        topic: String,
        partition: u32,
        /// `NO_LEADER` (-1): none.
        leader: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
        partition_epoch: i32,
    },
    /// A topic's whole state, as a snapshot writes it (partition epochs
    /// included, which `PartitionChange` cannot jump to).
    RestoreTopic {
        name: String,
        topic_id: [u8; 16],
        partitions: Vec<PartitionState>,
        configs: Vec<(String, String)>,
    },
    /// A snapshot's note that broker epochs up to `broker_epoch` were handed
    /// out (to brokers since unregistered), so none is handed out again.
    BrokerEpochSeen {
        broker_epoch: i64,
    },
}

/// Where a new partition lives: its slot and its replicas, preferred
/// leader first.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionPlacement {
    pub slot: u32,
    pub replicas: Vec<i32>,
}

/// One partition's whole state on disk (`RestoreTopic`). Separate from
/// `PartitionImage` so that the image may change without changing the
/// format.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionState {
    pub slot: u32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// One partition in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    /// The shard that owns it on a broker: `slot % that broker's shard count`.
    pub slot: u32,
    /// Preferred leader first. Empty for a partition made by `CreateTopic`
    /// or `AddPartitions`: it lives on the single legacy node, with no ISR
    /// and no leader here, until `ClusterImage::adopt_legacy_partitions`.
    pub replicas: Vec<i32>,
    /// In-sync replicas, a subset of `replicas`. Never empty once the
    /// partition has replicas: the last member stays even when fenced.
    pub isr: Vec<i32>,
    /// A member of `isr`, or `NO_LEADER`.
    pub leader: i32,
    /// Rises with every leader change.
    pub leader_epoch: i32,
    /// Rises with every change.
    pub partition_epoch: i32,
}

impl PartitionImage {
    fn legacy(slot: u32) -> PartitionImage {
        PartitionImage {
            slot,
            replicas: Vec::new(),
            isr: Vec::new(),
            leader: NO_LEADER,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn placed(placement: &PartitionPlacement) -> PartitionImage {
        PartitionImage {
            slot: placement.slot,
            replicas: placement.replicas.clone(),
            isr: placement.replicas.clone(),
            leader: placement.replicas.first().copied().unwrap_or(NO_LEADER),
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn restored(state: &PartitionState) -> PartitionImage {
        PartitionImage {
            slot: state.slot,
            replicas: state.replicas.clone(),
            isr: state.isr.clone(),
            leader: state.leader,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
        }
    }

    fn state(&self) -> PartitionState {
        PartitionState {
            slot: self.slot,
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
        }
    }

    /// False for the single legacy node's partitions (`CreateTopic`).
    pub fn has_replicas(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// Whether `node_id` keeps a replica (a lone node keeps every
    /// partition without replicas: it made them before the quorum).
    pub fn has_replica_on(&self, node_id: i32) -> bool {
        self.replicas.is_empty() || self.replicas.contains(&node_id)
    }

    /// The broker serving the partition as `node_id` sees it: its leader
    /// (`NO_LEADER` while it has none), or `node_id` itself for a partition
    /// without replicas.
    pub fn serving_leader(&self, node_id: i32) -> i32 {
        if self.replicas.is_empty() {
            node_id
        } else {
            self.leader
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    pub fn partition(&self, partition: u32) -> Option<&PartitionImage> {
        self.partitions.get(usize::try_from(partition).ok()?)
    }

    /// The partition's slot (its shard on each broker, modulo the broker's
    /// shard count).
    pub fn slot(&self, partition: u32) -> Option<u32> {
        self.partition(partition).map(|p| p.slot)
    }

    /// `unclean.leader.election.enable` as set on the topic (Kafka's
    /// default, false, when not set): may a replica outside the ISR lead?
    pub fn unclean_leader_election(&self) -> bool {
        self.configs
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// What a broker sends to register (Kafka's BrokerRegistrationRequest); the
/// controller adds the broker epoch. It travels from the broker to the
/// quorum leader's controller, hence rkyv.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    pub incarnation_id: [u8; 16],
    pub host: String,
    pub port: u16,
    pub replication_host: String,
    pub replication_port_base: u16,
    pub shard_count: u32,
    pub rack: Option<String>,
}

/// A registered broker: what it sent, and what the controller decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub registration: BrokerRegistration,
    pub broker_epoch: i64,
    /// A fenced broker leads nothing and is in no ISR, except as the last
    /// member of a partition that has no leader (which waits for it).
    pub fenced: bool,
}

impl BrokerImage {
    /// The port where `shard` of this broker serves replica fetches.
    pub fn replication_port(&self, shard: u32) -> Option<u16> {
        if shard >= self.registration.shard_count {
            return None;
        }
        u16::try_from(u32::from(self.registration.replication_port_base) + shard).ok()
    }

    /// The shard of this broker that owns a partition of `slot`, and the
    /// `host:port` of that shard's replication listener (where followers
    /// fetch and other brokers send it inter-broker requests).
    pub fn replication_address(&self, slot: u32) -> Option<(u32, String)> {
        let shard = slot % self.registration.shard_count.max(1);
        let port = self.replication_port(shard)?;
        Some((
            shard,
            format!("{}:{port}", self.registration.replication_host),
        ))
    }

    pub fn node_id(&self) -> i32 {
        self.registration.node_id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name '{0}': {1}")]
    InvalidTopicName(String, &'static str),
    #[error("invalid partition count {0}")]
    InvalidPartitions(i64),
    #[error("producer id reservation up to {end} is not past the reserved {reserved}")]
    ProducerIdsBehind { end: i64, reserved: i64 },
    #[error("replication factor {asked} is not within 1..={live} (live brokers)")]
    InvalidReplicationFactor { asked: usize, live: usize },
    #[error("invalid registration of broker {node_id}: {why}")]
    InvalidBroker { node_id: i32, why: &'static str },
    #[error("broker epoch {broker_epoch} is not past the epochs seen (up to {seen})")]
    BrokerEpochBehind { broker_epoch: i64, seen: i64 },
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("broker {node_id}'s epoch is {current}, not {broker_epoch}")]
    StaleBrokerEpoch {
        node_id: i32,
        broker_epoch: i64,
        current: i64,
    },
    #[error("partition {topic}-{partition} does not exist")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("invalid replicas or state for partition {topic}-{partition}: {why}")]
    InvalidPartitionState {
        topic: String,
        partition: u32,
        why: &'static str,
    },
    #[error(
        "partition {topic}-{partition} change has epoch {partition_epoch}, \
         not the next after {current}"
    )]
    StalePartitionEpoch {
        topic: String,
        partition: u32,
        partition_epoch: i32,
        current: i32,
    },
    #[error(
        "partition {topic}-{partition} change has leader epoch {leader_epoch} \
         after {current} (a new leader needs a higher one)"
    )]
    StaleLeaderEpoch {
        topic: String,
        partition: u32,
        leader_epoch: i32,
        current: i32,
    },
}

/// Longest topic name Kafka allows (leaves room for the partition suffix in
/// directory names).
pub const TOPIC_NAME_CHARS_MAX: usize = 249;

/// Most partitions one topic may have here; bounds memory and files.
pub const TOPIC_PARTITIONS_MAX: i64 = 100_000;

/// Longest host name or rack id a broker may register (a DNS name is at
/// most 253).
pub const BROKER_HOST_CHARS_MAX: usize = 255;

/// Kafka's topic-name rule: 1..=249 of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |why| Err(MetadataError::InvalidTopicName(name.to_string(), why));
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > TOPIC_NAME_CHARS_MAX {
        return invalid("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Partition `index` of `topic` for error messages (indexes past u32 are
/// past `TOPIC_PARTITIONS_MAX` anyway).
fn partition_error(topic: &str, index: usize, why: &'static str) -> MetadataError {
    MetadataError::InvalidPartitionState {
        topic: topic.to_string(),
        partition: u32::try_from(index).unwrap_or(u32::MAX),
        why,
    }
}

/// True when `ids` has no id twice.
pub(super) fn distinct(ids: &[i32]) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).all(|w| w[0] != w[1])
}

/// A new partition's replicas: some, non-negative node ids, each once.
fn check_replicas(topic: &str, index: usize, replicas: &[i32]) -> Result<(), MetadataError> {
    if replicas.is_empty() {
        return Err(partition_error(topic, index, "no replicas"));
    }
    if replicas.iter().any(|&id| id < 0) {
        return Err(partition_error(topic, index, "negative replica id"));
    }
    if !distinct(replicas) {
        return Err(partition_error(topic, index, "a replica listed twice"));
    }
    Ok(())
}

/// Leader and ISR of a partition that has replicas: the ISR is a non-empty
/// subset of the replicas, each once; the leader is in it or `NO_LEADER`.
fn check_leader_and_isr(
    topic: &str,
    index: usize,
    replicas: &[i32],
    isr: &[i32],
    leader: i32,
) -> Result<(), MetadataError> {
    if isr.is_empty() {
        return Err(partition_error(topic, index, "empty ISR"));
    }
    if !isr.iter().all(|id| replicas.contains(id)) {
        return Err(partition_error(topic, index, "ISR member not a replica"));
    }
    if !distinct(isr) {
        return Err(partition_error(topic, index, "an ISR member listed twice"));
    }
    if leader != NO_LEADER && !isr.contains(&leader) {
        return Err(partition_error(topic, index, "leader not in the ISR"));
    }
    Ok(())
}

fn check_partition_count(count: usize) -> Result<(), MetadataError> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    if !(1..=TOPIC_PARTITIONS_MAX).contains(&count) {
        return Err(MetadataError::InvalidPartitions(count));
    }
    Ok(())
}

/// A restored partition: the legacy shape, or replicas with a valid leader
/// and ISR and epochs that are not negative.
fn check_partition_state(
    topic: &str,
    index: usize,
    state: &PartitionState,
) -> Result<(), MetadataError> {
    if state.replicas.is_empty() {
        let legacy = PartitionImage::legacy(state.slot).state();
        if *state != legacy {
            return Err(partition_error(
                topic,
                index,
                "a partition without replicas has no ISR, leader or epochs",
            ));
        }
        return Ok(());
    }
    check_replicas(topic, index, &state.replicas)?;
    check_leader_and_isr(topic, index, &state.replicas, &state.isr, state.leader)?;
    if state.leader_epoch < 0 || state.partition_epoch < 0 {
        return Err(partition_error(topic, index, "negative epoch"));
    }
    Ok(())
}

fn check_host(node_id: i32, host: &str, what: &'static str) -> Result<(), MetadataError> {
    if host.is_empty() || host.len() > BROKER_HOST_CHARS_MAX {
        return Err(MetadataError::InvalidBroker { node_id, why: what });
    }
    Ok(())
}

/// The broker's view of the cluster, rebuilt by replaying the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterImage {
    topics: BTreeMap<String, TopicImage>,
    /// The end of the last reserved producer id block (0: none yet).
    producer_ids_reserved_end: i64,
    brokers: BTreeMap<i32, BrokerImage>,
    /// The largest broker epoch ever registered (0: none yet), kept after
    /// its broker is unregistered so that no epoch is handed out twice.
    broker_epoch_max: i64,
}

impl ClusterImage {
    /// The end of the last producer id block reserved (0: none yet).
    pub fn producer_ids_reserved_end(&self) -> i64 {
        self.producer_ids_reserved_end
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    /// Registered brokers, fenced or not, by node id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values()
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerImage> {
        self.brokers.get(&node_id)
    }

    /// Registered, unfenced brokers, by node id: the ones that may lead and
    /// be in an ISR.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether `node_id` is registered and unfenced.
    pub fn is_live(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// The epoch for the next `RegisterBroker`: past every epoch seen.
    pub fn next_broker_epoch(&self) -> i64 {
        self.broker_epoch_max.saturating_add(1)
    }

    /// Gives every partition without replicas (made by `CreateTopic` or
    /// `AddPartitions` on a single node) the replicas and ISR `[node_id]`,
    /// led by it at epoch 0: once, when a single-node data dir becomes a
    /// member of a Raft log. Returns how many partitions it adopted.
    pub fn adopt_legacy_partitions(&mut self, node_id: i32) -> usize {
        assert!(node_id >= 0, "node ids are not negative: {node_id}");
        let mut adopted = 0;
        for partition in self
            .topics
            .values_mut()
            .flat_map(|t| t.partitions.iter_mut())
            .filter(|p| !p.has_replicas())
        {
            debug_assert_eq!(*partition, PartitionImage::legacy(partition.slot));
            partition.replicas = vec![node_id];
            partition.isr = vec![node_id];
            partition.leader = node_id;
            adopted += 1;
        }
        adopted
    }

    fn registered(&self, node_id: i32) -> Result<&BrokerImage, MetadataError> {
        self.brokers
            .get(&node_id)
            .ok_or(MetadataError::UnknownBroker(node_id))
    }

    fn existing_topic(&self, name: &str) -> Result<&TopicImage, MetadataError> {
        self.topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    fn check_new_topic(&self, name: &str, partition_count: usize) -> Result<(), MetadataError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        check_partition_count(partition_count)
    }

    fn check_added_partitions(&self, name: &str, added: usize) -> Result<(), MetadataError> {
        let topic = self.existing_topic(name)?;
        let count = topic.partitions.len().saturating_add(added);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        if added == 0 || count > TOPIC_PARTITIONS_MAX {
            return Err(MetadataError::InvalidPartitions(count));
        }
        Ok(())
    }

    fn check_broker_epoch(&self, node_id: i32, broker_epoch: i64) -> Result<(), MetadataError> {
        let broker = self.registered(node_id)?;
        if broker.broker_epoch != broker_epoch {
            return Err(MetadataError::StaleBrokerEpoch {
                node_id,
                broker_epoch,
                current: broker.broker_epoch,
            });
        }
        Ok(())
    }

    /// Checks a record against the image without applying it. Every record
    /// read from the log passes here first, so `apply` may rely on it.
    pub fn check(&self, record: &MetadataRecord) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::CreateTopic {
                name,
                partition_shards,
                ..
            } => self.check_new_topic(name, partition_shards.len()),
            MetadataRecord::ReserveProducerIds { end } => {
                if *end <= self.producer_ids_reserved_end {
                    return Err(MetadataError::ProducerIdsBehind {
                        end: *end,
                        reserved: self.producer_ids_reserved_end,
                    });
                }
                Ok(())
            }
            MetadataRecord::DeleteTopic { name } | MetadataRecord::SetTopicConfigs { name, .. } => {
                self.existing_topic(name).map(|_| ())
            }
            MetadataRecord::AddPartitions {
                name,
                partition_shards,
            } => self.check_added_partitions(name, partition_shards.len()),
            MetadataRecord::RegisterBroker {
                node_id,
                broker_epoch,
                host,
                replication_host,
                rack,
                shard_count,
                port,
                replication_port_base,
                ..
            } => {
                let node_id = *node_id;
                let invalid = |why| Err(MetadataError::InvalidBroker { node_id, why });
                if node_id < 0 {
                    return invalid("negative node id");
                }
                if *broker_epoch <= self.broker_epoch_max {
                    return Err(MetadataError::BrokerEpochBehind {
                        broker_epoch: *broker_epoch,
                        seen: self.broker_epoch_max,
                    });
                }
                check_host(node_id, host, "host empty or too long")?;
                check_host(
                    node_id,
                    replication_host,
                    "replication host empty or too long",
                )?;
                if rack
                    .as_ref()
                    .is_some_and(|r| r.len() > BROKER_HOST_CHARS_MAX)
                {
                    return invalid("rack too long");
                }
                if *port == 0 || *replication_port_base == 0 {
                    return invalid("port 0");
                }
                if *shard_count == 0 {
                    return invalid("no shards");
                }
                let last_port = u64::from(*replication_port_base) + u64::from(*shard_count) - 1;
                if last_port > u64::from(u16::MAX) {
                    return invalid("replication ports past 65535");
                }
                Ok(())
            }
            MetadataRecord::FenceBroker {
                node_id,
                broker_epoch,
            }
            | MetadataRecord::UnfenceBroker {
                node_id,
                broker_epoch,
            } => self.check_broker_epoch(*node_id, *broker_epoch),
            MetadataRecord::UnregisterBroker { node_id } => self.registered(*node_id).map(|_| ()),
            MetadataRecord::BrokerEpochSeen { broker_epoch } => {
                if *broker_epoch <= self.broker_epoch_max {
                    return Err(MetadataError::BrokerEpochBehind {
                        broker_epoch: *broker_epoch,
                        seen: self.broker_epoch_max,
                    });
                }
                Ok(())
            }
            MetadataRecord::CreateReplicatedTopic {
                name, partitions, ..
            } => {
                self.check_new_topic(name, partitions.len())?;
                for (index, placement) in partitions.iter().enumerate() {
                    check_replicas(name, index, &placement.replicas)?;
                }
                Ok(())
            }
            MetadataRecord::AddReplicatedPartitions { name, partitions } => {
                self.check_added_partitions(name, partitions.len())?;
                let first = self.existing_topic(name)?.partitions.len();
                for (offset, placement) in partitions.iter().enumerate() {
                    check_replicas(name, first + offset, &placement.replicas)?;
                }
                Ok(())
            }
            MetadataRecord::RestoreTopic {
                name, partitions, ..
            } => {
                self.check_new_topic(name, partitions.len())?;
                for (index, state) in partitions.iter().enumerate() {
                    check_partition_state(name, index, state)?;
                }
                Ok(())
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                leader,
                leader_epoch,
                isr,
                partition_epoch,
            } => {
                let current = self
                    .existing_topic(topic)?
                    .partition(*partition)
                    .ok_or_else(|| MetadataError::UnknownPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    })?;
                let index = *partition as usize;
                if !current.has_replicas() {
                    return Err(partition_error(
                        topic,
                        index,
                        "a partition without replicas does not change",
                    ));
                }
                check_leader_and_isr(topic, index, &current.replicas, isr, *leader)?;
                if current.partition_epoch.checked_add(1) != Some(*partition_epoch) {
                    return Err(MetadataError::StalePartitionEpoch {
                        topic: topic.clone(),
                        partition: *partition,
                        partition_epoch: *partition_epoch,
                        current: current.partition_epoch,
                    });
                }
                let leader_changes = *leader != current.leader;
                if *leader_epoch < current.leader_epoch
                    || (leader_changes && *leader_epoch == current.leader_epoch)
                {
                    return Err(MetadataError::StaleLeaderEpoch {
                        topic: topic.clone(),
                        partition: *partition,
                        leader_epoch: *leader_epoch,
                        current: current.leader_epoch,
                    });
                }
                Ok(())
            }
        }
    }

    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), MetadataError> {
        self.check(record)?;
        match record {
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                partition_shards,
                configs,
            } => {
                let partitions = partition_shards
                    .iter()
                    .map(|&slot| PartitionImage::legacy(slot))
                    .collect();
                self.insert_topic(name, *topic_id, partitions, configs);
            }
            MetadataRecord::DeleteTopic { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::SetTopicConfigs { name, configs } => {
                let topic = self.topics.get_mut(name).expect("checked");
                topic.configs = configs.iter().cloned().collect();
            }
            MetadataRecord::AddPartitions {
                name,
                partition_shards,
            } => {
                let topic = self.topics.get_mut(name).expect("checked");
                topic.partitions.extend(
                    partition_shards
                        .iter()
                        .map(|&slot| PartitionImage::legacy(slot)),
                );
            }
            MetadataRecord::ReserveProducerIds { end } => {
                self.producer_ids_reserved_end = *end;
            }
            MetadataRecord::RegisterBroker {
                node_id,
                broker_epoch,
                incarnation_id,
                host,
                replication_host,
                rack,
                shard_count,
                port,
                replication_port_base,
            } => {
                self.broker_epoch_max = *broker_epoch;
                self.brokers.insert(
                    *node_id,
                    BrokerImage {
                        registration: BrokerRegistration {
                            node_id: *node_id,
                            incarnation_id: *incarnation_id,
                            host: host.clone(),
                            port: *port,
                            replication_host: replication_host.clone(),
                            replication_port_base: *replication_port_base,
                            shard_count: *shard_count,
                            rack: rack.clone(),
                        },
                        broker_epoch: *broker_epoch,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker { node_id, .. } => {
                self.brokers.get_mut(node_id).expect("checked").fenced = true;
            }
            MetadataRecord::UnfenceBroker { node_id, .. } => {
                self.brokers.get_mut(node_id).expect("checked").fenced = false;
            }
            MetadataRecord::UnregisterBroker { node_id } => {
                self.brokers.remove(node_id);
            }
            MetadataRecord::BrokerEpochSeen { broker_epoch } => {
                self.broker_epoch_max = *broker_epoch;
            }
            MetadataRecord::CreateReplicatedTopic {
                name,
                topic_id,
                partitions,
                configs,
            } => {
                let partitions = partitions.iter().map(PartitionImage::placed).collect();
                self.insert_topic(name, *topic_id, partitions, configs);
            }
            MetadataRecord::AddReplicatedPartitions { name, partitions } => {
                let topic = self.topics.get_mut(name).expect("checked");
                topic
                    .partitions
                    .extend(partitions.iter().map(PartitionImage::placed));
            }
            MetadataRecord::RestoreTopic {
                name,
                topic_id,
                partitions,
                configs,
            } => {
                let partitions = partitions.iter().map(PartitionImage::restored).collect();
                self.insert_topic(name, *topic_id, partitions, configs);
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                leader,
                leader_epoch,
                isr,
                partition_epoch,
            } => {
                let topic = self.topics.get_mut(topic).expect("checked");
                let partition = &mut topic.partitions[*partition as usize];
                partition.leader = *leader;
                partition.leader_epoch = *leader_epoch;
                partition.isr = isr.clone();
                partition.partition_epoch = *partition_epoch;
            }
        }
        Ok(())
    }

    fn insert_topic(
        &mut self,
        name: &str,
        topic_id: [u8; 16],
        partitions: Vec<PartitionImage>,
        configs: &[(String, String)],
    ) {
        self.topics.insert(
            name.to_string(),
            TopicImage {
                name: name.to_string(),
                topic_id,
                partitions,
                configs: configs.iter().cloned().collect(),
            },
        );
    }

    /// Records that rebuild this image from empty: the snapshot's content.
    /// Brokers come first, in epoch order (each registration must pass the
    /// ones before); a topic whose partitions have no replicas is written as
    /// the `CreateTopic` it was, so a single node's snapshot reads as before.
    pub fn snapshot_records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        let mut brokers: Vec<&BrokerImage> = self.brokers.values().collect();
        brokers.sort_by_key(|b| b.broker_epoch);
        for broker in &brokers {
            records.push(MetadataRecord::RegisterBroker {
                node_id: broker.node_id(),
                broker_epoch: broker.broker_epoch,
                incarnation_id: broker.registration.incarnation_id,
                host: broker.registration.host.clone(),
                replication_host: broker.registration.replication_host.clone(),
                rack: broker.registration.rack.clone(),
                shard_count: broker.registration.shard_count,
                port: broker.registration.port,
                replication_port_base: broker.registration.replication_port_base,
            });
            if !broker.fenced {
                records.push(MetadataRecord::UnfenceBroker {
                    node_id: broker.node_id(),
                    broker_epoch: broker.broker_epoch,
                });
            }
        }
        let registered_max = brokers.last().map_or(0, |b| b.broker_epoch);
        if self.broker_epoch_max > registered_max {
            records.push(MetadataRecord::BrokerEpochSeen {
                broker_epoch: self.broker_epoch_max,
            });
        }
        for topic in self.topics.values() {
            let configs = topic
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if topic.partitions.iter().any(PartitionImage::has_replicas) {
                records.push(MetadataRecord::RestoreTopic {
                    name: topic.name.clone(),
                    topic_id: topic.topic_id,
                    partitions: topic.partitions.iter().map(PartitionImage::state).collect(),
                    configs,
                });
            } else {
                records.push(MetadataRecord::CreateTopic {
                    name: topic.name.clone(),
                    topic_id: topic.topic_id,
                    partition_shards: topic.partitions.iter().map(|p| p.slot).collect(),
                    configs,
                });
            }
        }
        if self.producer_ids_reserved_end > 0 {
            records.push(MetadataRecord::ReserveProducerIds {
                end: self.producer_ids_reserved_end,
            });
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn create(name: &str, partitions: usize) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.to_string(),
            topic_id: [name.len() as u8; 16],
            partition_shards: (0..partitions as u32).collect(),
            configs: vec![
                ("retention.ms".into(), "1000".into()),
                ("cleanup.policy".into(), "delete".into()),
            ],
        }
    }

    fn delete(name: &str) -> MetadataRecord {
        MetadataRecord::DeleteTopic {
            name: name.to_string(),
        }
    }

    #[test]
    fn topic_names_follow_kafka() {
        for good in ["a", "A-b_c.d", "0", "...", "._-", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            &"x".repeat(250),
            "a b",
            "a/b",
            "a\\b",
            "topic:1",
            "é",
            "a\0",
            "tab\t",
        ] {
            assert!(
                matches!(validate_topic_name(bad), Err(MetadataError::InvalidTopicName(n, _)) if n == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn apply_and_check() {
        let mut image = ClusterImage::default();
        assert_eq!(image.apply(&create("orders", 3)), Ok(()));
        let topic = image.topic("orders").unwrap();
        assert_eq!(topic.partition_count(), 3);
        assert_eq!(topic.topic_id, [6; 16]);
        assert_eq!(topic.configs["retention.ms"], "1000");
        assert_eq!(
            image.apply(&create("orders", 1)),
            Err(MetadataError::TopicExists("orders".into()))
        );
        assert_eq!(
            image.check(&delete("missing")),
            Err(MetadataError::UnknownTopic("missing".into()))
        );
        assert!(matches!(
            image.check(&create("bad name", 1)),
            Err(MetadataError::InvalidTopicName(..))
        ));
        assert_eq!(
            image.check(&create("empty", 0)),
            Err(MetadataError::InvalidPartitions(0))
        );
        assert_eq!(
            image.check(&create("huge", TOPIC_PARTITIONS_MAX as usize + 1)),
            Err(MetadataError::InvalidPartitions(TOPIC_PARTITIONS_MAX + 1))
        );
        assert_eq!(
            image.check(&create("max", TOPIC_PARTITIONS_MAX as usize)),
            Ok(())
        );
        // A failed apply changes nothing.
        let before = image.clone();
        assert!(image.apply(&create("x y", 1)).is_err());
        assert!(image.apply(&delete("nope")).is_err());
        assert_eq!(image, before);
        assert_eq!(image.apply(&delete("orders")), Ok(()));
        assert!(image.topic("orders").is_none());
        assert_eq!(image.topics().count(), 0);
        // A deleted name can be created again.
        assert_eq!(image.apply(&create("orders", 1)), Ok(()));
    }

    #[test]
    fn snapshot_rebuilds_an_equal_image() {
        let mut image = ClusterImage::default();
        for (name, partitions) in [("b", 2), ("a", 5), ("c", 1), ("d", 7)] {
            image.apply(&create(name, partitions)).unwrap();
        }
        image.apply(&delete("c")).unwrap();
        let mut rebuilt = ClusterImage::default();
        for record in image.snapshot_records() {
            rebuilt.apply(&record).unwrap();
        }
        assert_eq!(rebuilt, image);
        assert_eq!(ClusterImage::default().snapshot_records(), vec![]);
    }

    fn register(node_id: i32, broker_epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            node_id,
            broker_epoch,
            incarnation_id: [broker_epoch as u8; 16],
            host: format!("broker{node_id}"),
            replication_host: format!("replication{node_id}"),
            rack: (node_id % 2 == 0).then(|| format!("rack{node_id}")),
            shard_count: 4,
            port: 9092,
            replication_port_base: 19000,
        }
    }

    fn unfence(node_id: i32, broker_epoch: i64) -> MetadataRecord {
        MetadataRecord::UnfenceBroker {
            node_id,
            broker_epoch,
        }
    }

    fn replicated(name: &str, replicas: &[&[i32]]) -> MetadataRecord {
        MetadataRecord::CreateReplicatedTopic {
            name: name.into(),
            topic_id: [9; 16],
            partitions: replicas
                .iter()
                .enumerate()
                .map(|(slot, r)| PartitionPlacement {
                    slot: slot as u32,
                    replicas: r.to_vec(),
                })
                .collect(),
            configs: vec![],
        }
    }

    fn change(leader: i32, leader_epoch: i32, isr: &[i32], partition_epoch: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic: "r".into(),
            partition: 0,
            leader,
            leader_epoch,
            isr: isr.to_vec(),
            partition_epoch,
        }
    }

    fn rebuilt(image: &ClusterImage) -> ClusterImage {
        let mut rebuilt = ClusterImage::default();
        for record in image.snapshot_records() {
            rebuilt.apply(&record).expect("snapshot records apply");
        }
        rebuilt
    }

    #[test]
    fn brokers_register_fenced_and_unfence_at_their_epoch() {
        let mut image = ClusterImage::default();
        assert_eq!(image.next_broker_epoch(), 1);
        image.apply(&register(1, 1)).unwrap();
        let broker = image.broker(1).unwrap();
        assert!(broker.fenced);
        assert_eq!(broker.replication_port(3), Some(19003));
        assert_eq!(broker.replication_port(4), None);
        assert_eq!(image.live_brokers().count(), 0);
        assert_eq!(
            image.check(&unfence(1, 0)),
            Err(MetadataError::StaleBrokerEpoch {
                node_id: 1,
                broker_epoch: 0,
                current: 1
            })
        );
        assert_eq!(
            image.check(&unfence(2, 1)),
            Err(MetadataError::UnknownBroker(2))
        );
        image.apply(&unfence(1, 1)).unwrap();
        image.apply(&register(0, 2)).unwrap();
        image.apply(&unfence(0, 2)).unwrap();
        let live: Vec<i32> = image.live_brokers().map(|b| b.node_id()).collect();
        assert_eq!(live, vec![0, 1]);
        // A restart re-registers with a new epoch: fenced again, and the
        // old epoch no longer fences or unfences it.
        assert_eq!(
            image.check(&register(1, 2)),
            Err(MetadataError::BrokerEpochBehind {
                broker_epoch: 2,
                seen: 2
            })
        );
        image.apply(&register(1, 3)).unwrap();
        assert!(image.broker(1).unwrap().fenced);
        assert_eq!(
            image.broker(1).unwrap().registration.incarnation_id,
            [3; 16]
        );
        assert!(image
            .check(&MetadataRecord::FenceBroker {
                node_id: 1,
                broker_epoch: 1
            })
            .is_err());
        assert!(!image.is_live(1));
        assert!(image.is_live(0));
        // Unregistering keeps the epochs seen: no epoch is handed out twice,
        // after a snapshot too.
        image
            .apply(&MetadataRecord::UnregisterBroker { node_id: 1 })
            .unwrap();
        assert_eq!(image.broker(1), None);
        assert_eq!(image.next_broker_epoch(), 4);
        assert_eq!(rebuilt(&image), image);
        assert_eq!(rebuilt(&image).next_broker_epoch(), 4);
        assert_eq!(
            image.check(&MetadataRecord::UnregisterBroker { node_id: 1 }),
            Err(MetadataError::UnknownBroker(1))
        );
    }

    #[test]
    fn registrations_are_checked() {
        let image = ClusterImage::default();
        let with = |edit: &dyn Fn(&mut MetadataRecord)| {
            let mut record = register(3, 1);
            edit(&mut record);
            image.check(&record)
        };
        assert_eq!(with(&|_| {}), Ok(()));
        let invalid = |why| Err(MetadataError::InvalidBroker { node_id: 3, why });
        let set =
            |f: fn(&mut i32, &mut String, &mut u32, &mut u16, &mut u16, &mut Option<String>)| {
                with(&move |r| {
                    if let MetadataRecord::RegisterBroker {
                        node_id,
                        host,
                        shard_count,
                        port,
                        replication_port_base,
                        rack,
                        ..
                    } = r
                    {
                        f(
                            node_id,
                            host,
                            shard_count,
                            port,
                            replication_port_base,
                            rack,
                        )
                    }
                })
            };
        assert!(matches!(
            set(|id, _, _, _, _, _| *id = -1),
            Err(MetadataError::InvalidBroker { node_id: -1, .. })
        ));
        assert_eq!(
            set(|_, h, _, _, _, _| h.clear()),
            invalid("host empty or too long")
        );
        assert_eq!(
            set(|_, h, _, _, _, _| *h = "h".repeat(256)),
            invalid("host empty or too long")
        );
        assert_eq!(set(|_, _, s, _, _, _| *s = 0), invalid("no shards"));
        assert_eq!(set(|_, _, _, p, _, _| *p = 0), invalid("port 0"));
        assert_eq!(set(|_, _, _, _, b, _| *b = 0), invalid("port 0"));
        assert_eq!(
            set(|_, _, s, _, b, _| (*b, *s) = (65535, 2)),
            invalid("replication ports past 65535")
        );
        assert_eq!(set(|_, _, s, _, b, _| (*b, *s) = (65535, 1)), Ok(()));
        assert_eq!(
            set(|_, _, s, _, _, _| *s = u32::MAX),
            invalid("replication ports past 65535")
        );
        assert_eq!(
            set(|_, _, _, _, _, r| *r = Some("r".repeat(256))),
            invalid("rack too long")
        );
        assert_eq!(
            image.check(&register(3, 0)),
            Err(MetadataError::BrokerEpochBehind {
                broker_epoch: 0,
                seen: 0
            })
        );
    }

    #[test]
    fn replicated_topics_start_led_by_their_first_replica() {
        let mut image = ClusterImage::default();
        image.apply(&replicated("r", &[&[2, 1, 3], &[1]])).unwrap();
        let topic = image.topic("r").unwrap();
        assert_eq!(topic.slot(1), Some(1));
        assert_eq!(topic.slot(2), None);
        assert_eq!(
            topic.partition(0),
            Some(&PartitionImage {
                slot: 0,
                replicas: vec![2, 1, 3],
                isr: vec![2, 1, 3],
                leader: 2,
                leader_epoch: 0,
                partition_epoch: 0,
            })
        );
        let bad = |replicas: &[i32], why| {
            assert_eq!(
                ClusterImage::default().check(&replicated("x", &[&[1], replicas])),
                Err(MetadataError::InvalidPartitionState {
                    topic: "x".into(),
                    partition: 1,
                    why
                })
            );
        };
        bad(&[], "no replicas");
        bad(&[1, -1], "negative replica id");
        bad(&[1, 2, 1], "a replica listed twice");
        assert_eq!(
            ClusterImage::default().check(&replicated("x", &[])),
            Err(MetadataError::InvalidPartitions(0))
        );
        let add = |partitions: Vec<PartitionPlacement>| MetadataRecord::AddReplicatedPartitions {
            name: "r".into(),
            partitions,
        };
        let placement = |replicas: Vec<i32>| PartitionPlacement { slot: 5, replicas };
        assert_eq!(
            image.check(&add(vec![])),
            Err(MetadataError::InvalidPartitions(2))
        );
        assert!(matches!(
            image.check(&add(vec![placement(vec![])])),
            Err(MetadataError::InvalidPartitionState { partition: 2, .. })
        ));
        image.apply(&add(vec![placement(vec![3, 4])])).unwrap();
        let added = image.topic("r").unwrap().partition(2).unwrap();
        assert_eq!((added.slot, added.leader), (5, 3));
        assert_eq!(added.isr, vec![3, 4]);
        // Configs as before.
        assert!(!image.topic("r").unwrap().unclean_leader_election());
        image
            .apply(&MetadataRecord::SetTopicConfigs {
                name: "r".into(),
                configs: vec![("unclean.leader.election.enable".into(), "true".into())],
            })
            .unwrap();
        assert!(image.topic("r").unwrap().unclean_leader_election());
    }

    #[test]
    fn legacy_partitions_have_no_replicas_until_adopted() {
        let mut image = ClusterImage::default();
        image.apply(&create("a", 2)).unwrap();
        image.apply(&replicated("r", &[&[2]])).unwrap();
        image
            .apply(&MetadataRecord::AddPartitions {
                name: "r".into(),
                partition_shards: vec![7],
            })
            .unwrap();
        let legacy = PartitionImage {
            slot: 7,
            replicas: vec![],
            isr: vec![],
            leader: NO_LEADER,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        assert_eq!(image.topic("r").unwrap().partition(1), Some(&legacy));
        assert_eq!(image.topic("a").unwrap().slot(1), Some(1));
        // A partition without replicas does not change.
        assert!(matches!(
            image.check(&MetadataRecord::PartitionChange {
                topic: "a".into(),
                partition: 0,
                leader: NO_LEADER,
                leader_epoch: 0,
                isr: vec![],
                partition_epoch: 1,
            }),
            Err(MetadataError::InvalidPartitionState { .. })
        ));
        assert_eq!(rebuilt(&image), image);
        assert_eq!(image.adopt_legacy_partitions(5), 3);
        for topic in ["a", "r"] {
            for p in &image.topic(topic).unwrap().partitions {
                if p.replicas != [2] {
                    assert_eq!(p.replicas, vec![5]);
                    assert_eq!((p.isr.clone(), p.leader, p.leader_epoch), (vec![5], 5, 0));
                }
            }
        }
        assert_eq!(image.topic("r").unwrap().partition(0).unwrap().leader, 2);
        assert_eq!(image.adopt_legacy_partitions(5), 0);
        assert_eq!(rebuilt(&image), image);
    }

    #[test]
    fn partition_changes_follow_the_epochs() {
        let mut image = ClusterImage::default();
        image.apply(&replicated("r", &[&[1, 2, 3]])).unwrap();
        let refused = |image: &ClusterImage, record: MetadataRecord| {
            let err = image.check(&record).unwrap_err();
            err.to_string()
        };
        // The partition epoch is the next one, exactly.
        assert!(refused(&image, change(1, 0, &[1, 2], 0)).contains("not the next"));
        assert!(refused(&image, change(1, 0, &[1, 2], 2)).contains("not the next"));
        // The ISR is a non-empty subset of the replicas, the leader in it.
        assert!(refused(&image, change(1, 0, &[1, 4], 1)).contains("not a replica"));
        assert!(refused(&image, change(1, 0, &[], 1)).contains("empty ISR"));
        assert!(refused(&image, change(1, 0, &[1, 1], 1)).contains("twice"));
        assert!(refused(&image, change(3, 1, &[1, 2], 1)).contains("leader not in the ISR"));
        // A new leader needs a higher leader epoch.
        assert!(refused(&image, change(2, 0, &[1, 2], 1)).contains("leader epoch"));
        image.apply(&change(1, 0, &[1, 2], 1)).unwrap();
        image.apply(&change(2, 3, &[2], 2)).unwrap();
        assert!(refused(&image, change(2, 2, &[2], 3)).contains("leader epoch"));
        image.apply(&change(NO_LEADER, 4, &[2], 3)).unwrap();
        let p = image.topic("r").unwrap().partition(0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone(), p.partition_epoch),
            (NO_LEADER, 4, vec![2], 3)
        );
        assert_eq!(
            image.check(&MetadataRecord::PartitionChange {
                topic: "r".into(),
                partition: 1,
                leader: 1,
                leader_epoch: 5,
                isr: vec![1],
                partition_epoch: 4,
            }),
            Err(MetadataError::UnknownPartition {
                topic: "r".into(),
                partition: 1
            })
        );
        assert_eq!(rebuilt(&image), image);
    }

    /// A single node's image (no brokers, no replicas) snapshots to the
    /// records an older broker wrote and reads.
    #[test]
    fn a_single_node_snapshot_is_written_as_before() {
        let topic = MetadataRecord::CreateTopic {
            name: "a".into(),
            topic_id: [3; 16],
            partition_shards: vec![1, 0, 1],
            configs: vec![("retention.ms".into(), "1000".into())],
        };
        let reserved = MetadataRecord::ReserveProducerIds { end: 1000 };
        let mut image = ClusterImage::default();
        image.apply(&topic).unwrap();
        image.apply(&reserved).unwrap();
        assert_eq!(image.snapshot_records(), vec![topic, reserved]);
    }

    #[test]
    fn restored_topics_are_checked() {
        let state = |replicas: Vec<i32>, isr: Vec<i32>, leader, epoch| PartitionState {
            slot: 0,
            replicas,
            isr,
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
        };
        let restore = |partitions| MetadataRecord::RestoreTopic {
            name: "t".into(),
            topic_id: [1; 16],
            partitions,
            configs: vec![],
        };
        let image = ClusterImage::default();
        assert_eq!(
            image.check(&restore(vec![state(vec![], vec![], -1, 0)])),
            Ok(())
        );
        assert_eq!(
            image.check(&restore(vec![state(vec![1], vec![1], 1, 9)])),
            Ok(())
        );
        for bad in [
            state(vec![], vec![], -1, 1),
            state(vec![], vec![1], -1, 0),
            state(vec![1], vec![1], 2, 0),
            state(vec![1], vec![], -1, 0),
            state(vec![1], vec![1], 1, -1),
            state(vec![1, 1], vec![1], 1, 0),
        ] {
            assert!(
                matches!(
                    image.check(&restore(vec![bad.clone()])),
                    Err(MetadataError::InvalidPartitionState { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            image.check(&restore(vec![])),
            Err(MetadataError::InvalidPartitions(0))
        );
    }

    /// One random operation: a kind and raw numbers it reads as it likes,
    /// often out of range, so that `check` refuses some.
    fn arbitrary_operation() -> impl Strategy<Value = (u8, u8, i8, i8, Vec<i8>)> {
        (
            0u8..14,
            0u8..6,
            -2i8..4,
            -2i8..4,
            prop::collection::vec(-1i8..6, 0..5),
        )
    }

    /// The record for a random operation on `image`.
    fn record_for(
        image: &ClusterImage,
        (kind, a, b, c, ids): (u8, u8, i8, i8, Vec<i8>),
    ) -> Option<MetadataRecord> {
        let names = ["a", "b", "c"];
        let name = names[a as usize % names.len()].to_string();
        let node_id = i32::from(a) - 1;
        let ids: Vec<i32> = ids.iter().map(|&i| i32::from(i)).collect();
        let epoch_of = |id: i32| image.broker(id).map_or(1, |b| b.broker_epoch);
        let placements = |count: i8| -> Vec<PartitionPlacement> {
            (0..count.max(0))
                .map(|i| PartitionPlacement {
                    slot: i as u32,
                    replicas: ids
                        .iter()
                        .copied()
                        .filter(|&id| id >= 0)
                        .take(i as usize + 1)
                        .collect(),
                })
                .collect()
        };
        Some(match kind {
            0 => create(&name, b.max(0) as usize),
            1 => register(node_id, image.next_broker_epoch() + i64::from(b) - 1),
            2 => unfence(node_id, epoch_of(node_id) - i64::from(b == -1)),
            3 => MetadataRecord::FenceBroker {
                node_id,
                broker_epoch: epoch_of(node_id) - i64::from(b == -1),
            },
            4 => MetadataRecord::UnregisterBroker { node_id },
            5 => MetadataRecord::CreateReplicatedTopic {
                name,
                topic_id: [a; 16],
                partitions: placements(b),
                configs: vec![("unclean.leader.election.enable".into(), (c > 0).to_string())],
            },
            6 => MetadataRecord::AddReplicatedPartitions {
                name,
                partitions: placements(b),
            },
            7 => MetadataRecord::AddPartitions {
                name,
                partition_shards: (0..b.max(0) as u32).collect(),
            },
            8 | 9 => {
                // A change to some partition with replicas, mostly valid.
                let partitions: Vec<(&TopicImage, u32)> = image
                    .topics()
                    .flat_map(|t| {
                        let count = t.partition_count() as u32;
                        (0..count).map(move |p| (t, p))
                    })
                    .filter(|(t, p)| t.partition(*p).is_some_and(|p| p.has_replicas()))
                    .collect();
                if partitions.is_empty() {
                    return None;
                }
                let (topic, partition) = partitions[usize::from(a) % partitions.len()];
                let current = topic.partition(partition)?;
                // The replicas whose positions `ids` names; else the ISR.
                let mut isr: Vec<i32> = (0..current.replicas.len())
                    .filter(|&i| ids.contains(&(i as i32)))
                    .map(|i| current.replicas[i])
                    .collect();
                if isr.is_empty() {
                    isr = current.isr.clone();
                }
                if b == 2 && ids.contains(&5) {
                    isr.push(42); // not a replica
                }
                let leader = match (kind, c) {
                    (9, _) => current.leader,
                    (_, -2) => NO_LEADER,
                    (_, c) => isr[usize::from(c.unsigned_abs()) % isr.len()],
                };
                let leader_epoch =
                    current.leader_epoch + i32::from(leader != current.leader) + i32::from(b == 3)
                        - i32::from(b == -2);
                MetadataRecord::PartitionChange {
                    topic: topic.name.clone(),
                    partition,
                    leader,
                    leader_epoch,
                    isr,
                    partition_epoch: current.partition_epoch + 1 - i32::from(b == -1),
                }
            }
            10 => delete(&name),
            11 => MetadataRecord::ReserveProducerIds {
                end: i64::from(b) * 100,
            },
            12 => MetadataRecord::BrokerEpochSeen {
                broker_epoch: image.next_broker_epoch() + i64::from(b),
            },
            _ => return None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random cluster records, valid or not: `check` and `apply` agree,
        /// a refused record changes nothing, and the snapshot rebuilds the
        /// image after every step.
        #[test]
        fn snapshot_of_random_cluster_records_rebuilds_the_image(
            ops in prop::collection::vec(arbitrary_operation(), 1..80),
        ) {
            let mut image = ClusterImage::default();
            for op in ops {
                let kind = op.0;
                let Some(record) = record_for(&image, op.clone()) else {
                    if kind == 13 && op.1 < 2 {
                        image.adopt_legacy_partitions(i32::from(op.1));
                    }
                    continue;
                };
                let before = image.clone();
                let checked = image.check(&record);
                prop_assert_eq!(image.apply(&record), checked.clone());
                if checked.is_err() {
                    prop_assert_eq!(&image, &before);
                }
                let again = crate::metadata::decode_frames(&crate::metadata::encode_frame(&record));
                prop_assert_eq!(again.records, vec![record]);
                prop_assert_eq!(rebuilt(&image), image.clone());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_operations_keep_check_and_apply_consistent(
            ops in prop::collection::vec((any::<bool>(), 0usize..6, 0usize..4), 1..60),
        ) {
            let names = ["a", "b", "c", "bad name", "", "d.e"];
            let mut image = ClusterImage::default();
            let mut model = std::collections::BTreeMap::new();
            for (is_create, name, partitions) in ops {
                let name = names[name];
                let record = if is_create { create(name, partitions) } else { delete(name) };
                let expected_ok = if is_create {
                    validate_topic_name(name).is_ok() && partitions > 0 && !model.contains_key(name)
                } else {
                    model.contains_key(name)
                };
                prop_assert_eq!(image.check(&record).is_ok(), expected_ok);
                prop_assert_eq!(image.apply(&record).is_ok(), expected_ok);
                if expected_ok {
                    if is_create { model.insert(name, partitions); } else { model.remove(name); }
                }
                let actual: Vec<(&str, usize)> =
                    image.topics().map(|t| (t.name.as_str(), t.partition_count())).collect();
                let expected: Vec<(&str, usize)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(actual, expected);
            }
        }
    }
}
