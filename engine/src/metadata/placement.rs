//! Where new partitions go: slots balanced over shards, replicas balanced
//! over the live brokers.

use super::image::{ClusterImage, MetadataError, PartitionPlacement};

impl ClusterImage {
    /// Shards for `count` new partitions, balancing partition counts across
    /// `shard_count` shards (ties go to the lowest shard).
    pub fn place_partitions(&self, count: usize, shard_count: usize) -> Vec<u32> {
        assert!(shard_count > 0);
        let mut load = vec![0u64; shard_count];
        for partition in self.topics().flat_map(|t| t.partitions.iter()) {
            load[partition.slot as usize % shard_count] += 1;
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

    /// Slots and replicas for `count` new partitions, numbered from
    /// `first_partition` in their topic (0 for a new topic, its partition
    /// count when adding), with `replication_factor` replicas each on
    /// `live_brokers()`.
    ///
    /// Round robin as Kafka assigns without racks, with the live brokers in
    /// id order as the ring: a partition's preferred leader is the live
    /// broker that is preferred leader of the fewest partitions so far
    /// (ties: lowest id), so leaders balance across topics too; its
    /// followers are the brokers after it on the ring. As in Kafka, the
    /// followers start one broker further along for each round of `n`
    /// partitions (`n` live brokers), so that one broker's partitions do not
    /// all fail over to the same neighbour. Slots balance as
    /// `place_partitions` over the largest shard count among live brokers.
    pub fn place_replicas(
        &self,
        count: usize,
        replication_factor: usize,
        first_partition: usize,
    ) -> Result<Vec<PartitionPlacement>, MetadataError> {
        let live: Vec<i32> = self.live_brokers().map(|b| b.node_id()).collect();
        let n = live.len();
        if replication_factor < 1 || replication_factor > n {
            return Err(MetadataError::InvalidReplicationFactor {
                asked: replication_factor,
                live: n,
            });
        }
        let shard_count = self
            .live_brokers()
            .map(|b| b.registration.shard_count)
            .max()
            .unwrap_or(1)
            .max(1);
        let slots = self.place_partitions(count, shard_count as usize);
        // Preferred leaderships: what leadership returns to once the
        // cluster is balanced, unlike current leaders after failovers.
        let mut leads = vec![0u64; n];
        for partition in self.topics().flat_map(|t| t.partitions.iter()) {
            let preferred = partition.replicas.first();
            if let Some(i) = preferred.and_then(|id| live.binary_search(id).ok()) {
                leads[i] += 1;
            }
        }
        let placements = slots
            .into_iter()
            .enumerate()
            .map(|(k, slot)| {
                let partition = first_partition + k;
                let (leader, _) = leads
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| (**l, *i))
                    .expect("n >= replication_factor >= 1");
                leads[leader] += 1;
                let shift = if n > 1 { (partition / n) % (n - 1) } else { 0 };
                let replicas = (0..replication_factor)
                    .map(|i| {
                        if i == 0 {
                            live[leader]
                        } else {
                            // n > 1 here: replication_factor <= n.
                            live[(leader + 1 + (shift + i - 1) % (n - 1)) % n]
                        }
                    })
                    .collect();
                PartitionPlacement { slot, replicas }
            })
            .collect::<Vec<_>>();
        debug_assert!(placements.iter().all(|p| {
            let mut ids = p.replicas.clone();
            ids.sort_unstable();
            ids.dedup();
            ids.len() == replication_factor
        }));
        Ok(placements)
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::MetadataRecord;
    use super::*;
    use proptest::prelude::*;

    fn register(image: &mut ClusterImage, node_id: i32, shard_count: u32, live: bool) {
        let broker_epoch = image.next_broker_epoch();
        image
            .apply(&MetadataRecord::RegisterBroker {
                node_id,
                broker_epoch,
                incarnation_id: [node_id as u8; 16],
                host: format!("b{node_id}"),
                replication_host: format!("b{node_id}"),
                rack: None,
                shard_count,
                port: 9092,
                replication_port_base: 19092,
            })
            .unwrap();
        if live {
            image
                .apply(&MetadataRecord::UnfenceBroker {
                    node_id,
                    broker_epoch,
                })
                .unwrap();
        }
    }

    fn create(image: &mut ClusterImage, name: &str, partitions: Vec<PartitionPlacement>) {
        image
            .apply(&MetadataRecord::CreateReplicatedTopic {
                name: name.into(),
                topic_id: [1; 16],
                partitions,
                configs: vec![],
            })
            .unwrap();
    }

    #[test]
    fn slots_fill_the_least_loaded_shards_first() {
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

    #[test]
    fn replicas_rotate_over_live_brokers() {
        let mut image = ClusterImage::default();
        for id in [1, 2, 3] {
            register(&mut image, id, 2, true);
        }
        register(&mut image, 4, 8, false); // fenced: no replicas, no slots
        let placed = image.place_replicas(4, 2, 0).unwrap();
        let replicas: Vec<Vec<i32>> = placed.iter().map(|p| p.replicas.clone()).collect();
        // The fourth partition starts the second round: followers shift by one.
        assert_eq!(
            replicas,
            vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 3]]
        );
        let slots: Vec<u32> = placed.iter().map(|p| p.slot).collect();
        assert_eq!(slots, vec![0, 1, 0, 1]);
        // Leaders go to the brokers that lead least: 1 leads two, so a
        // second topic starts on 2.
        create(&mut image, "a", placed);
        let next = image.place_replicas(2, 3, 0).unwrap();
        assert_eq!(next[0].replicas, vec![2, 3, 1]);
        assert_eq!(next[1].replicas, vec![3, 1, 2]);
        assert_eq!(image.place_replicas(0, 1, 0), Ok(vec![]));
    }

    #[test]
    fn replication_factor_must_fit_the_live_brokers() {
        let mut image = ClusterImage::default();
        assert_eq!(
            image.place_replicas(1, 1, 0),
            Err(MetadataError::InvalidReplicationFactor { asked: 1, live: 0 })
        );
        register(&mut image, 7, 1, true);
        register(&mut image, 8, 1, false);
        assert_eq!(
            image.place_replicas(1, 2, 0),
            Err(MetadataError::InvalidReplicationFactor { asked: 2, live: 1 })
        );
        assert_eq!(
            image.place_replicas(1, 0, 0),
            Err(MetadataError::InvalidReplicationFactor { asked: 0, live: 1 })
        );
        let placed = image.place_replicas(3, 1, 5).unwrap();
        assert!(placed.iter().all(|p| p.replicas == [7] && p.slot == 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn slots_on_an_empty_image_are_balanced(count in 0usize..500, shards in 1usize..33) {
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
        fn slots_stay_balanced_across_topics(
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
                for partition in &topic.partitions {
                    load[partition.slot as usize] += 1;
                }
            }
            prop_assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "{load:?}");
        }

        /// Topic after topic, preferred leaders stay balanced over the live
        /// brokers, replicas are distinct live brokers, slots fit the
        /// largest shard count.
        #[test]
        fn replicas_stay_balanced_across_topics(
            topics in prop::collection::vec((1usize..12, 1usize..4), 1..12),
            brokers in prop::collection::vec((1u32..5, any::<bool>()), 1..7),
        ) {
            let mut image = ClusterImage::default();
            for (id, &(shard_count, live)) in brokers.iter().enumerate() {
                register(&mut image, id as i32, shard_count, live || id == 0);
            }
            let live: Vec<i32> = image.live_brokers().map(|b| b.node_id()).collect();
            let shards_max = image.live_brokers().map(|b| b.registration.shard_count).max().unwrap();
            for (i, (count, rf)) in topics.into_iter().enumerate() {
                let placed = image.place_replicas(count, rf, 0);
                if rf > live.len() {
                    prop_assert_eq!(
                        placed,
                        Err(MetadataError::InvalidReplicationFactor { asked: rf, live: live.len() })
                    );
                    continue;
                }
                let placed = placed.unwrap();
                prop_assert_eq!(placed.len(), count);
                for p in &placed {
                    prop_assert_eq!(p.replicas.len(), rf);
                    prop_assert!(p.replicas.iter().all(|id| live.contains(id)));
                    prop_assert!(p.slot < shards_max);
                }
                create(&mut image, &format!("t{i}"), placed);
            }
            let mut leads = vec![0usize; live.len()];
            for partition in image.topics().flat_map(|t| t.partitions.iter()) {
                leads[live.binary_search(&partition.replicas[0]).unwrap()] += 1;
            }
            prop_assert!(leads.iter().max().unwrap() - leads.iter().min().unwrap() <= 1, "{leads:?}");
        }
    }
}
