//! The metadata log's files: `__metadata/metadata.snapshot` and
//! `__metadata/metadata.log`, both rkyv frames. The controller appends to
//! the log (fdatasync) before any shard applies a record; at start-up the
//! log is replayed on top of the snapshot and folded into a new snapshot.

use std::io;
use std::path::{Path, PathBuf};

use engine::metadata::{decode_frames, encode_frame, ClusterImage, MetadataRecord};
use glommio::io::{BufferedFile, OpenOptions};
use tracing::warn;

use super::durable::write_file_durably_blocking;
use super::segment_files::write_all_at;

const SNAPSHOT_FILE: &str = "metadata.snapshot";
const LOG_FILE: &str = "metadata.log";

fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__metadata")
}

/// Replays the snapshot and then the log into an image. Start-up only,
/// before the shards run (blocking reads).
pub fn load(data_dir: &Path) -> io::Result<ClusterImage> {
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
    Ok(image)
}

/// Writes `image` as the new snapshot and empties the log, each durably.
/// Start-up only, before the shards run.
pub fn write_snapshot(data_dir: &Path, image: &ClusterImage) -> io::Result<()> {
    let dir = metadata_dir(data_dir);
    let snapshot: Vec<u8> = image
        .snapshot_records()
        .iter()
        .flat_map(encode_frame)
        .collect();
    write_file_durably_blocking(&dir.join(SNAPSHOT_FILE), &snapshot)?;
    write_file_durably_blocking(&dir.join(LOG_FILE), &[])
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
