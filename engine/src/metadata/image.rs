use std::collections::BTreeMap;

/// One change to the cluster image. Appended to the metadata log before it
/// takes effect anywhere.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataRecord {
    CreateTopic {
        name: String,
        topic_id: [u8; 16],
        /// The shard that owns each partition, by partition index.
        partition_shards: Vec<u32>,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partition_shards: Vec<u32>,
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn partition_count(&self) -> usize {
        self.partition_shards.len()
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
}

/// Longest topic name Kafka allows (leaves room for the partition suffix in
/// directory names).
pub const TOPIC_NAME_CHARS_MAX: usize = 249;

/// Most partitions one topic may have here; bounds memory and files.
pub const TOPIC_PARTITIONS_MAX: i64 = 100_000;

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

/// The broker's view of the cluster, rebuilt by replaying the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterImage {
    topics: BTreeMap<String, TopicImage>,
}

impl ClusterImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    /// Checks a record against the image without applying it.
    pub fn check(&self, record: &MetadataRecord) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::CreateTopic {
                name,
                partition_shards,
                ..
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                let count = partition_shards.len() as i64;
                if !(1..=TOPIC_PARTITIONS_MAX).contains(&count) {
                    return Err(MetadataError::InvalidPartitions(count));
                }
                Ok(())
            }
            MetadataRecord::DeleteTopic { name } => {
                if !self.topics.contains_key(name) {
                    return Err(MetadataError::UnknownTopic(name.clone()));
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
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partition_shards: partition_shards.clone(),
                        configs: configs.iter().cloned().collect(),
                    },
                );
            }
            MetadataRecord::DeleteTopic { name } => {
                self.topics.remove(name);
            }
        }
        Ok(())
    }

    /// Records that rebuild this image from empty: the snapshot's content.
    pub fn snapshot_records(&self) -> Vec<MetadataRecord> {
        self.topics
            .values()
            .map(|t| MetadataRecord::CreateTopic {
                name: t.name.clone(),
                topic_id: t.topic_id,
                partition_shards: t.partition_shards.clone(),
                configs: t
                    .configs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect()
    }

    /// Shards for `count` new partitions, balancing partition counts across
    /// `shard_count` shards (ties go to the lowest shard).
    pub fn place_partitions(&self, count: usize, shard_count: usize) -> Vec<u32> {
        assert!(shard_count > 0);
        let mut load = vec![0u64; shard_count];
        for topic in self.topics.values() {
            for &shard in &topic.partition_shards {
                load[shard as usize % shard_count] += 1;
            }
        }
        (0..count)
            .map(|_| {
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| (**l, *i))
                    .expect("shard_count > 0");
                load[shard] += 1;
                shard as u32
            })
            .collect()
    }
}
