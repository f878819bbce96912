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
    /// Replaces a topic's configs (only the ones set on the topic).
    SetTopicConfigs {
        name: String,
        configs: Vec<(String, String)>,
    },
    /// Adds partitions to a topic, placed on these shards.
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
    #[error("producer id reservation up to {end} is not past the reserved {reserved}")]
    ProducerIdsBehind { end: i64, reserved: i64 },
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
    /// The end of the last reserved producer id block (0: none yet).
    producer_ids_reserved_end: i64,
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
                if !self.topics.contains_key(name) {
                    return Err(MetadataError::UnknownTopic(name.clone()));
                }
                Ok(())
            }
            MetadataRecord::AddPartitions {
                name,
                partition_shards,
            } => {
                let topic = self
                    .topics
                    .get(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                let count = (topic.partition_shards.len() + partition_shards.len()) as i64;
                if partition_shards.is_empty() || count > TOPIC_PARTITIONS_MAX {
                    return Err(MetadataError::InvalidPartitions(count));
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
            MetadataRecord::SetTopicConfigs { name, configs } => {
                let topic = self.topics.get_mut(name).expect("checked");
                topic.configs = configs.iter().cloned().collect();
            }
            MetadataRecord::AddPartitions {
                name,
                partition_shards,
            } => {
                let topic = self.topics.get_mut(name).expect("checked");
                topic.partition_shards.extend_from_slice(partition_shards);
            }
            MetadataRecord::ReserveProducerIds { end } => {
                self.producer_ids_reserved_end = *end;
            }
        }
        Ok(())
    }

    /// Records that rebuild this image from empty: the snapshot's content.
    pub fn snapshot_records(&self) -> Vec<MetadataRecord> {
        let reserved =
            (self.producer_ids_reserved_end > 0).then_some(MetadataRecord::ReserveProducerIds {
                end: self.producer_ids_reserved_end,
            });
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
            .chain(reserved)
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

    #[test]
    fn placement_fills_the_least_loaded_shards_first() {
        let mut image = ClusterImage::default();
        assert_eq!(image.place_partitions(5, 3), vec![0, 1, 2, 0, 1]);
        assert_eq!(image.place_partitions(0, 3), Vec::<u32>::new());
        image
            .apply(&MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: [0; 16],
                partition_shards: vec![0, 0, 1],
                configs: vec![],
            })
            .unwrap();
        assert_eq!(image.place_partitions(4, 3), vec![2, 1, 2, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn placement_on_an_empty_image_is_balanced(count in 0usize..500, shards in 1usize..33) {
            let placed = ClusterImage::default().place_partitions(count, shards);
            prop_assert_eq!(placed.len(), count);
            let mut load = vec![0usize; shards];
            for shard in placed {
                prop_assert!((shard as usize) < shards);
                load[shard as usize] += 1;
            }
            let max = *load.iter().max().unwrap();
            let min = *load.iter().min().unwrap();
            prop_assert!(max - min <= 1, "{load:?}");
        }

        /// Placing topic after topic keeps the whole image balanced.
        #[test]
        fn placement_stays_balanced_across_topics(
            counts in prop::collection::vec(1usize..20, 1..15),
            shards in 1usize..9,
        ) {
            let mut image = ClusterImage::default();
            for (i, count) in counts.into_iter().enumerate() {
                let partition_shards = image.place_partitions(count, shards);
                image.apply(&MetadataRecord::CreateTopic {
                    name: format!("t{i}"),
                    topic_id: [i as u8; 16],
                    partition_shards,
                    configs: vec![],
                }).unwrap();
            }
            let mut load = vec![0usize; shards];
            for topic in image.topics() {
                for &shard in &topic.partition_shards {
                    load[shard as usize] += 1;
                }
            }
            prop_assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "{load:?}");
        }

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
