//! Idempotent-producer state on disk: `<offset>.snapshot` files in the
//! partition directory, each the state as of that log offset, written at
//! segment rolls and at a clean stop (through the durable-write helper).
//! Opening a partition loads the newest valid snapshot at or below the log
//! end and replays the batches after it from the segment files; without one
//! the whole log is replayed. Snapshots past the log end (a crash cut the
//! log back) are deleted, and only the newest `SNAPSHOTS_KEPT` stay.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use engine::log::{parse_segment_file_name, segment_file_stem, PartitionLog};
use engine::record::{read_marker, BatchHeader};
use engine::txn::{PartitionTxns, ProducerStates};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::io::BufferedFile;
use tracing::{info, warn};

use super::durable::{off_shard, write_file_durably};
use super::segment_files::{open_segment_file, to_io, SegmentFiles};

/// Snapshots kept per partition (the newest; one spare if it is damaged).
const SNAPSHOTS_KEPT: usize = 2;
/// Read size while replaying batches.
const REPLAY_READ_BYTES: usize = 1 << 20;

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{}.snapshot", segment_file_stem(offset)))
}

/// Snapshot offsets in `dir`, newest first (blocking).
fn snapshot_offsets_blocking(dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets: Vec<i64> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| parse_segment_file_name(entry.file_name().to_str()?, "snapshot"))
        .collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    Ok(offsets)
}

/// Writes a snapshot taken at `offset` (`ProducerStates::encode_snapshot`)
/// and drops snapshots beyond the newest `SNAPSHOTS_KEPT`.
pub async fn write_producer_snapshot(dir: &Path, offset: i64, snapshot: Vec<u8>) -> io::Result<()> {
    write_file_durably(snapshot_path(dir, offset), snapshot).await?;
    let dir = dir.to_path_buf();
    off_shard(move || {
        for old in snapshot_offsets_blocking(&dir)?
            .into_iter()
            .skip(SNAPSHOTS_KEPT)
        {
            std::fs::remove_file(snapshot_path(&dir, old))?;
        }
        Ok(())
    })
    .await
}

/// Where a replay gets a segment's file: the files recovery just opened,
/// or a partition that opens them on demand. None: no file (skipped).
pub trait SegmentFileSource {
    fn file_of(
        &self,
        segment_base_offset: i64,
    ) -> LocalBoxFuture<'_, io::Result<Option<Rc<BufferedFile>>>>;
}

/// The files recovery just opened (the active segment's), and any other
/// segment's opened for the replay and closed after it: recovery keeps no
/// closed segment open, so a partition of thousands of segments opens with
/// a descriptor or two.
pub struct RecoveredFiles<'a> {
    pub dir: &'a Path,
    pub files: &'a SegmentFiles,
}

impl SegmentFileSource for RecoveredFiles<'_> {
    fn file_of(
        &self,
        segment_base_offset: i64,
    ) -> LocalBoxFuture<'_, io::Result<Option<Rc<BufferedFile>>>> {
        async move {
            if let Some(file) = self.files.get(&segment_base_offset) {
                return Ok(Some(file.clone()));
            }
            let file = open_segment_file(self.dir, segment_base_offset).await?;
            Ok(Some(Rc::new(file)))
        }
        .boxed_local()
    }
}

/// The producer state and the transactions of a just-opened partition: the
/// newest valid snapshot at or below the log end, plus the batches after it.
pub async fn recover_producer_states(
    dir: &Path,
    log: &PartitionLog,
    files: &dyn SegmentFileSource,
    now_ms: i64,
) -> io::Result<(ProducerStates, PartitionTxns)> {
    let log_end = log.next_offset();
    let mut loaded = None;
    for offset in snapshot_offsets_blocking(dir)? {
        let path = snapshot_path(dir, offset);
        if offset > log_end {
            warn!(file = %path.display(), log_end, "producer snapshot past the log end (the log was cut back); deleting it");
            std::fs::remove_file(&path)?;
            continue;
        }
        match ProducerStates::decode_snapshot(&std::fs::read(&path)?) {
            Ok((at, states, txns)) if at == offset => {
                loaded = Some((at, states, txns));
                break;
            }
            Ok((at, _, _)) => {
                warn!(file = %path.display(), at, "producer snapshot names another offset; ignoring it")
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "damaged producer snapshot; ignoring it")
            }
        }
    }
    let first_offset = log.segments().next().map_or(0, |s| s.base_offset);
    let (start, mut states, mut txns) = loaded.unwrap_or((
        first_offset,
        ProducerStates::default(),
        PartitionTxns::new(),
    ));
    let mut replayed = 0u64;
    for segment in log.segments() {
        if segment.next_offset <= start || segment.size_bytes == 0 {
            continue;
        }
        let Some(file) = files.file_of(segment.base_offset).await? else {
            continue;
        };
        let mut position = 0u64;
        while position < segment.size_bytes {
            let want = REPLAY_READ_BYTES.min((segment.size_bytes - position) as usize);
            let chunk = file.read_at(position, want).await.map_err(to_io)?;
            let mut at = 0usize;
            while at < chunk.len() {
                let Ok(header) = BatchHeader::parse(&chunk[at..]) else {
                    break;
                };
                // The header is all a replay needs: a batch longer than
                // the chunk is skipped by its length.
                let total = header.total_bytes();
                if header.next_offset() > start {
                    states.replay(&header, now_ms);
                    if header.is_transactional() && header.producer_id >= 0 {
                        if header.is_control() {
                            // A marker's type is in its record: read the
                            // (small) batch whole.
                            let batch = if at + total <= chunk.len() {
                                chunk[at..at + total].to_vec()
                            } else {
                                let read = file.read_at(position + at as u64, total).await;
                                read.map_err(to_io)?.to_vec()
                            };
                            match read_marker(&batch) {
                                Ok(Some(marker)) => txns.on_marker(
                                    header.producer_id,
                                    header.base_offset,
                                    marker.commit,
                                ),
                                Ok(None) => {}
                                Err(e) => {
                                    warn!(dir = %dir.display(), offset = header.base_offset, error = %e, "unreadable transaction marker; its transaction stays open")
                                }
                            }
                        } else {
                            txns.on_data(header.producer_id, header.base_offset);
                        }
                    }
                    replayed += 1;
                }
                at += total;
            }
            if at == 0 {
                // A header that does not parse: recovery already cut the log
                // at the last valid batch, so this is the segment's end.
                break;
            }
            position += at as u64;
        }
    }
    if replayed > 0 || !states.is_empty() {
        info!(dir = %dir.display(), producers = states.len(), open_transactions = txns.open_count(), snapshot_offset = start, replayed_batches = replayed, "producer state recovered");
    }
    Ok((states, txns))
}
