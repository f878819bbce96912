//! The partition replicas one shard owns, by topic then index.

use std::collections::HashMap;
use std::rc::Rc;

use super::Partition;

/// One topic's partitions on a shard, by index (None: not owned here).
pub type TopicSlots = [Option<Rc<Partition>>];

/// The partitions one shard owns, by topic then index, so that a lookup by
/// `&str` allocates nothing (it runs for every partition of every request).
#[derive(Default)]
pub struct OwnedPartitions {
    by_topic: HashMap<String, Vec<Option<Rc<Partition>>>>,
}

impl OwnedPartitions {
    pub fn get(&self, topic: &str, index: i32) -> Option<&Rc<Partition>> {
        let slots = self.by_topic.get(topic)?;
        slots.get(usize::try_from(index).ok()?)?.as_ref()
    }

    /// Every slot of `topic`, by index.
    pub fn topic(&self, topic: &str) -> Option<&TopicSlots> {
        self.by_topic.get(topic).map(Vec::as_slice)
    }

    pub fn insert(&mut self, partition: Rc<Partition>) {
        let index = usize::try_from(partition.index).expect("partition indexes are >= 0");
        let slots = self.by_topic.entry(partition.topic.clone()).or_default();
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(partition);
    }

    /// Takes every partition of `topic` out of the map.
    pub fn remove_topic(&mut self, topic: &str) -> Vec<Rc<Partition>> {
        let slots = self.by_topic.remove(topic).unwrap_or_default();
        slots.into_iter().flatten().collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &Rc<Partition>> {
        self.by_topic.values().flatten().flatten()
    }

    pub fn len(&self) -> usize {
        self.values().count()
    }
}
