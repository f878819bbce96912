//! The metadata controller: a one-voter quorum on shard 0. Topic changes are
//! appended to the metadata log (rkyv frames, fdatasync) before any shard
//! applies them. At start-up the log is replayed on top of the snapshot and
//! folded into a new snapshot.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use engine::group::OFFSETS_TOPIC;
use engine::metadata::{decode_frames, encode_frame, ClusterImage, MetadataRecord};
use glommio::io::{BufferedFile, OpenOptions};
use tracing::{info, warn};

use crate::partition_files::write_all_at;

const SNAPSHOT_FILE: &str = "metadata.snapshot";
const LOG_FILE: &str = "metadata.log";

fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__metadata")
}

fn write_durably_blocking(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().expect("file in a dir"))?.sync_all()
}

/// Loads snapshot + log into an image and writes them back as one snapshot
/// with an empty log. Runs once at start-up, before the shards start.
pub fn load_and_compact(
    data_dir: &Path,
    shard_count: usize,
    offsets_topic_partitions: u32,
) -> io::Result<ClusterImage> {
    let dir = metadata_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let mut image = ClusterImage::default();
    for name in [SNAPSHOT_FILE, LOG_FILE] {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let decoded = decode_frames(&bytes);
        if let Some(reason) = &decoded.stopped {
            if name == SNAPSHOT_FILE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("metadata snapshot {} is damaged: {reason}", path.display()),
                ));
            }
            warn!(file = %path.display(), %reason, valid_bytes = decoded.valid_bytes, "metadata log has a torn tail; dropping it");
        }
        for record in &decoded.records {
            if let Err(e) = image.apply(record) {
                warn!(file = %path.display(), error = %e, "skipping metadata record that does not apply");
            }
        }
    }
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
    let snapshot: Vec<u8> = image
        .snapshot_records()
        .iter()
        .flat_map(encode_frame)
        .collect();
    write_durably_blocking(&dir.join(SNAPSHOT_FILE), &snapshot)?;
    write_durably_blocking(&dir.join(LOG_FILE), &[])?;
    info!(topics = image.topics().count(), "loaded cluster metadata");
    Ok(image)
}

/// The open metadata log on shard 0.
pub struct MetadataLog {
    file: BufferedFile,
    position: u64,
}

impl MetadataLog {
    pub async fn open(data_dir: &Path) -> io::Result<MetadataLog> {
        let path = metadata_dir(data_dir).join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(&path)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let position = file
            .file_size()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(MetadataLog { file, position })
    }

    /// Appends records and makes them durable.
    pub async fn append(&mut self, records: &[MetadataRecord]) -> io::Result<()> {
        let bytes: Vec<u8> = records.iter().flat_map(encode_frame).collect();
        let length = bytes.len() as u64;
        write_all_at(&self.file, bytes, self.position).await?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.position += length;
        Ok(())
    }
}
