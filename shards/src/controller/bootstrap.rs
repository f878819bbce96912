//! The metadata at start-up, before the shards run: the snapshot plus the
//! log replayed, the internal topics a first start needs, folded into a new
//! snapshot with an empty log.

use std::io;
use std::path::Path;

use engine::group::OFFSETS_TOPIC;
use engine::metadata::{ClusterImage, MetadataRecord};
use tracing::info;

use crate::disk::metadata_log;

/// Loads the metadata, creates `__consumer_offsets` on a first start, and
/// compacts snapshot + log into a new snapshot.
pub fn bootstrap_metadata(
    data_dir: &Path,
    shard_count: usize,
    offsets_topic_partitions: u32,
) -> io::Result<ClusterImage> {
    let mut image = metadata_log::load(data_dir)?;
    if image.topic(OFFSETS_TOPIC).is_none() {
        // The internal topic for committed offsets and group metadata exists
        // from the first start, compacted like Kafka's.
        let record = MetadataRecord::CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            topic_id: *uuid::Uuid::new_v4().as_bytes(),
            partition_shards: image
                .place_partitions(offsets_topic_partitions as usize, shard_count),
            configs: vec![("cleanup.policy".into(), "compact".into())],
        };
        image
            .apply(&record)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    metadata_log::write_snapshot(data_dir, &image)?;
    info!(topics = image.topics().count(), "loaded cluster metadata");
    Ok(image)
}
