//! The metadata at start-up, before the shards run: what this node
//! persisted of the quorum, and the image its committed entries build. A
//! one-voter quorum's first start commits its bootstrap entry at once (the
//! internal topics), as `kafka-storage format` writes a bootstrap checkpoint.

use std::io;
use std::path::Path;

use engine::group::OFFSETS_TOPIC;
use engine::metadata::{decode_records, encode_records, ClusterImage, MetadataRecord};
use engine::raft::PersistedQuorum;
use tracing::{info, warn};

use crate::disk::quorum_log::{load_quorum, write_quorum};

/// What start-up hands shard 0's quorum driver and every shard's backend.
#[derive(Debug, Clone)]
pub struct MetadataStart {
    /// Every committed entry applied.
    pub image: ClusterImage,
    pub persisted: PersistedQuorum,
    /// The commit index the image is current to.
    pub applied: u64,
}

/// Loads the quorum's file and applies its committed entries; on a lone
/// voter's first start, commits the bootstrap entry first.
pub fn bootstrap_metadata(
    data_dir: &Path,
    shard_count: usize,
    offsets_topic_partitions: u32,
    single_voter: bool,
) -> io::Result<MetadataStart> {
    let mut persisted = load_quorum(data_dir)?;
    if persisted.entries.is_empty() && single_voter {
        persisted = bootstrap_entry(shard_count, offsets_topic_partitions);
        write_quorum(data_dir, &persisted)?;
    }
    let image = replay_committed(&persisted);
    let applied = persisted.hard_state.commit;
    info!(
        topics = image.topics().count(),
        entries = persisted.entries.len(),
        committed = applied,
        term = persisted.hard_state.term,
        "loaded cluster metadata"
    );
    Ok(MetadataStart {
        image,
        persisted,
        applied,
    })
}

/// The image the committed entries build. A record that does not apply is
/// skipped with a log line on every node alike (the image is deterministic).
fn replay_committed(persisted: &PersistedQuorum) -> ClusterImage {
    let mut image = ClusterImage::default();
    for entry in persisted.committed() {
        match decode_records(&entry.data) {
            Ok(records) => {
                for record in &records {
                    if let Err(e) = image.apply(record) {
                        warn!(index = entry.index, error = %e, "skipping metadata record that does not apply");
                    }
                }
            }
            Err(reason) => {
                warn!(index = entry.index, %reason, "skipping a committed metadata entry that does not decode")
            }
        }
    }
    image
}

/// Entry 1 of a lone voter's log, committed in term 1: the internal topic
/// for committed offsets and group metadata, compacted like Kafka's.
fn bootstrap_entry(shard_count: usize, offsets_topic_partitions: u32) -> PersistedQuorum {
    let record = MetadataRecord::CreateTopic {
        name: OFFSETS_TOPIC.to_string(),
        topic_id: *uuid::Uuid::new_v4().as_bytes(),
        partition_shards: ClusterImage::default()
            .place_partitions(offsets_topic_partitions as usize, shard_count),
        configs: vec![("cleanup.policy".into(), "compact".into())],
    };
    PersistedQuorum::bootstrapped(encode_records(std::slice::from_ref(&record)))
}
