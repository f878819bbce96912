//! The metadata quorum's file, `__metadata/quorum.log`: raft entries (each a
//! batch of metadata records) and hard states, CRC-framed
//! (`engine::raft::encode_quorum_log`). Shard 0's quorum driver appends one
//! ready at a time and fdatasyncs before it acknowledges anything. At
//! start-up the file is read, a torn tail dropped, and the file rewritten
//! compactly (without the entries a follower overwrote).
//!
//! Data dirs from before the quorum kept `metadata.snapshot` and
//! `metadata.log` (rkyv frames); the first start folds them into entry 1 of
//! the quorum log (term 1, committed), so a single node keeps its topics.

use std::io;
use std::path::{Path, PathBuf};

use engine::metadata::{decode_frames, ClusterImage};
use engine::raft::{
    decode_quorum_log, encode_persisted_quorum, encode_quorum_log, PersistedQuorum, QuorumEntry,
    QuorumHardState,
};
use glommio::io::{BufferedFile, OpenOptions};
use tracing::{info, warn};

use super::durable::write_file_durably_blocking;
use super::segment_files::write_all_at;

const QUORUM_LOG_FILE: &str = "quorum.log";
const LEGACY_SNAPSHOT_FILE: &str = "metadata.snapshot";
const LEGACY_LOG_FILE: &str = "metadata.log";

fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__metadata")
}

/// What this node persisted of the quorum (nothing on a first start).
/// Start-up only, before the shards run (blocking file calls).
pub fn load_quorum(data_dir: &Path) -> io::Result<PersistedQuorum> {
    let dir = metadata_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(QUORUM_LOG_FILE);
    let persisted = match std::fs::read(&path) {
        Ok(bytes) => {
            let decoded = decode_quorum_log(&bytes);
            if let Some(reason) = &decoded.stopped {
                warn!(file = %path.display(), %reason, valid_bytes = decoded.valid_bytes, dropped_bytes = bytes.len() - decoded.valid_bytes, "quorum log has a torn or damaged tail; dropping it");
            }
            decoded.persisted
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => match load_legacy_image(&dir)? {
            Some(image) => {
                let persisted = legacy_as_quorum(&image);
                info!(
                    topics = image.topics().count(),
                    "moved the single-node metadata into the quorum log (entry 1)"
                );
                persisted
            }
            None => PersistedQuorum::default(),
        },
        Err(e) => return Err(e),
    };
    write_quorum(data_dir, &persisted)?;
    for legacy in [LEGACY_SNAPSHOT_FILE, LEGACY_LOG_FILE] {
        match std::fs::remove_file(dir.join(legacy)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(persisted)
}

/// Replaces the quorum log with `persisted`, durably. Start-up only.
pub fn write_quorum(data_dir: &Path, persisted: &PersistedQuorum) -> io::Result<()> {
    let path = metadata_dir(data_dir).join(QUORUM_LOG_FILE);
    write_file_durably_blocking(&path, &encode_persisted_quorum(persisted))
}

/// The image of a data dir from before the quorum, if it has one.
fn load_legacy_image(dir: &Path) -> io::Result<Option<ClusterImage>> {
    let mut image = ClusterImage::default();
    let mut found = false;
    for name in [LEGACY_SNAPSHOT_FILE, LEGACY_LOG_FILE] {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found = true;
        let decoded = decode_frames(&bytes);
        if let Some(reason) = &decoded.stopped {
            if name == LEGACY_SNAPSHOT_FILE {
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
    Ok(found.then_some(image))
}

/// A single node's image as a quorum log: one committed entry in term 1
/// holding the records that rebuild it.
fn legacy_as_quorum(image: &ClusterImage) -> PersistedQuorum {
    PersistedQuorum::bootstrapped(engine::metadata::encode_records(&image.snapshot_records()))
}

/// The open quorum log on shard 0.
pub struct QuorumLogFile {
    file: BufferedFile,
    position: u64,
}

impl QuorumLogFile {
    pub async fn open(data_dir: &Path) -> io::Result<QuorumLogFile> {
        let path = metadata_dir(data_dir).join(QUORUM_LOG_FILE);
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
        Ok(QuorumLogFile { file, position })
    }

    /// Appends one ready's entries and hard state and makes them durable.
    pub async fn append(
        &mut self,
        entries: &[QuorumEntry],
        hard_state: Option<&QuorumHardState>,
    ) -> io::Result<()> {
        let bytes = encode_quorum_log(entries, hard_state);
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
