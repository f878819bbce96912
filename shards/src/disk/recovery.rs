//! Opening a partition directory restores its `PartitionLog`: after a clean
//! stop the checkpoint and indexes are trusted; after an unclean one the
//! active segment is rescanned and a torn or corrupt tail truncated. Damage
//! with valid batches after it is never truncated: the partition is opened
//! offline and the files are left as they are for an operator.

use std::io;
use std::path::Path;
use std::rc::Rc;

use engine::log::{
    find_valid_batch, parse_segment_file_name, scan_into_segment, ActiveCheckpoint, BatchSearch,
    LogConfig, OffsetIndex, PartitionLog, ScanStop, Segment, TimeIndex,
};
use engine::record::{validate_batch, BATCH_HEADER_BYTES};
use glommio::io::BufferedFile;
use tracing::{error, info, warn};

use super::compaction_swap::finish_interrupted_swaps;
use super::segment_files::{
    create_partition, open_segment_file, read_log_start_offset, segment_path, to_io,
    write_log_start_offset, write_segment_indexes, SegmentFiles, CHECKPOINT_FILE,
};

/// Read size while scanning a segment during recovery.
const RECOVERY_READ_BYTES: usize = 1 << 20;
/// Largest candidate batch the search after damage reads to validate; a
/// larger length in a damaged spot is taken as garbage.
const SEARCH_BATCH_BYTES_MAX: usize = 128 << 20;

/// The clean-shutdown checkpoint, if there is one that is whole and valid;
/// a damaged one is logged and ignored (the active segment is then scanned).
fn read_checkpoint(dir: &Path) -> Option<ActiveCheckpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        // Said by the caller if the active segment is not empty (an empty
        // partition is closed without one).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the checkpoint; scanning the active segment");
            return None;
        }
    };
    let decoded = std::str::from_utf8(&text)
        .map_err(|_| "not UTF-8".to_string())
        .and_then(|text| ActiveCheckpoint::decode(text).map_err(|e| e.to_string()));
    match decoded {
        Ok(checkpoint) => Some(checkpoint),
        Err(reason) => {
            warn!(file = %path.display(), %reason, "invalid checkpoint ignored; scanning the active segment");
            None
        }
    }
}

fn read_indexes(dir: &Path, base_offset: i64, size_bytes: u64) -> Option<(OffsetIndex, TimeIndex)> {
    let offset_bytes = std::fs::read(segment_path(dir, base_offset, "index")).ok()?;
    let time_bytes = std::fs::read(segment_path(dir, base_offset, "timeindex")).ok()?;
    Some((
        OffsetIndex::decode(&offset_bytes, size_bytes)?,
        TimeIndex::decode(&time_bytes)?,
    ))
}

/// What recovery did to one partition, for the log.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub scanned_segments: usize,
    pub truncated_bytes: u64,
    /// Set when a segment is damaged with valid batches after the damage:
    /// the partition must not be served (see `open_partition`).
    pub offline_reason: Option<String>,
    /// The active segment was restored from the clean-stop checkpoint (so
    /// that file still describes it).
    pub checkpoint_used: bool,
}

/// Searches the file from `from` for a valid batch with a base offset of at
/// least `min_base_offset`; returns its position.
async fn find_batch_after(
    file: &BufferedFile,
    from: u64,
    file_bytes: u64,
    min_base_offset: i64,
) -> io::Result<Option<u64>> {
    let mut position = from;
    // Each round advances `position` by at least one byte.
    for _round in 0..file_bytes.saturating_sub(from) + 2 {
        if position + BATCH_HEADER_BYTES as u64 > file_bytes {
            return Ok(None);
        }
        let length = RECOVERY_READ_BYTES.min((file_bytes - position) as usize);
        let at_file_end = position + length as u64 == file_bytes;
        let window = file.read_at(position, length).await.map_err(to_io)?;
        if window.len() != length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short read while searching",
            ));
        }
        match find_valid_batch(&window, min_base_offset, at_file_end) {
            BatchSearch::Found { position: found } => return Ok(Some(position + found as u64)),
            BatchSearch::NeedBytes {
                position: found,
                total_bytes,
            } => {
                let candidate = position + found as u64;
                if total_bytes <= SEARCH_BATCH_BYTES_MAX
                    && candidate + total_bytes as u64 <= file_bytes
                {
                    let whole = file.read_at(candidate, total_bytes).await.map_err(to_io)?;
                    if validate_batch(&whole)
                        .is_ok_and(|header| header.base_offset >= min_base_offset)
                    {
                        return Ok(Some(candidate));
                    }
                }
                position = candidate + 1;
            }
            BatchSearch::NotFound { searched } => {
                if at_file_end {
                    return Ok(None);
                }
                // Windows are much longer than a header, so `searched` > 0.
                assert!(searched > 0, "a full window always advances");
                position += searched as u64;
            }
        }
    }
    unreachable!("the search advances every round")
}

/// Rebuilds a segment by reading and validating every batch. A torn or
/// corrupt tail of the active segment (nothing valid after it) is truncated;
/// damage followed by valid batches, or any damage in a closed segment, is
/// reported in `report.offline_reason` and the file is left untouched.
async fn scan_segment(
    dir: &Path,
    file: &BufferedFile,
    base_offset: i64,
    is_active: bool,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> io::Result<Segment> {
    let file_bytes = file.file_size().await.map_err(to_io)?;
    let mut segment = Segment::new(base_offset);
    let mut position = 0u64;
    let mut want = RECOVERY_READ_BYTES;
    let mut stop_reason = None;
    let now = crate::clock::now_ms();
    // Each round either consumes bytes or grows `want` to a batch size that
    // fits the file, so the loop ends; the cap is a second guard.
    for _round in 0..(file_bytes / BATCH_HEADER_BYTES as u64 + 4) {
        if position >= file_bytes {
            break;
        }
        let length = want.min((file_bytes - position) as usize);
        let window = file.read_at(position, length).await.map_err(to_io)?;
        if window.is_empty() {
            break;
        }
        let outcome = scan_into_segment(&window, &mut segment, config.index_interval_bytes, now);
        position += outcome.valid_bytes as u64;
        match outcome.stop {
            ScanStop::Clean => want = RECOVERY_READ_BYTES,
            ScanStop::Incomplete { needed_bytes } => {
                if position + needed_bytes as u64 > file_bytes {
                    stop_reason = Some(format!(
                        "torn batch: {needed_bytes} bytes needed, {} left in the file",
                        file_bytes - position
                    ));
                    break;
                }
                want = needed_bytes.max(RECOVERY_READ_BYTES);
            }
            ScanStop::Corrupt { reason, .. } => {
                stop_reason = Some(reason);
                break;
            }
        }
    }
    report.scanned_segments += 1;
    let path = segment_path(dir, base_offset, "log");
    if position < file_bytes {
        let reason = stop_reason.unwrap_or_else(|| "unreadable bytes".into());
        let next_valid =
            find_batch_after(file, position + 1, file_bytes, segment.next_offset).await?;
        if next_valid.is_some() || !is_active {
            let next_valid_position = next_valid.map_or(-1, |p| p as i64);
            error!(
                file = %path.display(),
                offset = segment.next_offset,
                position,
                next_valid_position,
                %reason,
                "corrupt batch inside the log (valid data follows it or the segment is closed): \
                 refusing to truncate; the partition is offline until the segment is repaired"
            );
            report.offline_reason = Some(format!(
                "corrupt batch in {} at position {position} (offset {}): {reason}",
                path.display(),
                segment.next_offset
            ));
            return Ok(segment);
        }
        let cut = file_bytes - position;
        warn!(
            file = %path.display(),
            segment = base_offset,
            offset = segment.next_offset,
            valid_bytes = position,
            truncated_bytes = cut,
            %reason,
            "truncating segment tail"
        );
        file.truncate(position).await.map_err(to_io)?;
        file.fdatasync().await.map_err(to_io)?;
        report.truncated_bytes += cut;
    }
    Ok(segment)
}

/// Opens an existing partition directory. After a clean stop the active
/// segment's checkpoint and indexes are trusted; otherwise it is scanned.
/// Closed segments were synced when they rolled; their indexes are read back
/// and rebuilt by a scan if missing or invalid.
pub async fn open_partition(
    dir: &Path,
    config: LogConfig,
    clean: bool,
) -> io::Result<(PartitionLog, SegmentFiles, RecoveryReport)> {
    finish_interrupted_swaps(dir)?;
    let mut bases: Vec<i64> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| parse_segment_file_name(entry.file_name().to_str()?, "log"))
        .collect();
    bases.sort_unstable();
    let mut report = RecoveryReport::default();
    if bases.is_empty() {
        let (log, files) = create_partition(dir, config).await?;
        return Ok((log, files, report));
    }
    let checkpoint = if clean { read_checkpoint(dir) } else { None };
    let mut files = SegmentFiles::new();
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let is_active = i + 1 == bases.len();
        let path = segment_path(dir, base, "log");
        // Only the active segment's file stays open (it takes the appends);
        // a closed one is opened only if it must be scanned, and closed
        // after, so opening a partition needs a descriptor or two however
        // many segments it has (the partition opens them on demand later).
        let (mut file, size) = if is_active {
            let file = open_segment_file(dir, base).await?;
            let size = file.file_size().await.map_err(to_io)?;
            (Some(file), size)
        } else {
            (None, std::fs::metadata(&path)?.len())
        };
        if is_active && clean && checkpoint.is_none() && size > 0 {
            warn!(dir = %dir.display(), "no active-segment checkpoint after a clean stop; scanning the active segment");
        }
        let restored = if is_active && size == 0 {
            // Nothing to trust or scan: an empty partition closes without a
            // checkpoint.
            Some(Segment::new(base))
        } else if is_active {
            let restored = checkpoint.and_then(|cp| {
                if cp.base_offset != base || cp.size_bytes != size {
                    warn!(file = %path.display(), checkpoint_base_offset = cp.base_offset, checkpoint_size_bytes = cp.size_bytes, size_bytes = size, "checkpoint does not match the active segment; scanning it");
                    return None;
                }
                let Some((oi, ti)) = read_indexes(dir, base, size.max(1)) else {
                    warn!(file = %path.display(), "active segment index missing or invalid; scanning it");
                    return None;
                };
                Some(Segment::restored(
                    base,
                    size,
                    cp.next_offset,
                    cp.max_timestamp_ms,
                    oi,
                    ti,
                ))
            });
            report.checkpoint_used = restored.is_some();
            restored
        } else {
            let next = bases[i + 1];
            let restored = read_indexes(dir, base, size.max(1)).and_then(|(oi, ti)| {
                let max_ts = ti.last_timestamp_ms().unwrap_or(-1);
                (size > 0 && next > base)
                    .then(|| Segment::restored(base, size, next, max_ts, oi, ti))
            });
            if restored.is_none() {
                warn!(file = %path.display(), "segment index missing or invalid; rebuilding it by a scan");
            }
            restored
        };
        let segment = match restored {
            Some(segment) => segment,
            None => {
                let scanned = match file.take() {
                    Some(file) => file,
                    None => open_segment_file(dir, base).await?,
                };
                let segment =
                    scan_segment(dir, &scanned, base, is_active, &config, &mut report).await?;
                if is_active {
                    file = Some(scanned);
                }
                if report.offline_reason.is_some() {
                    // Later segments stay unopened: the partition is not served.
                    if let Some(file) = file {
                        files.insert(base, Rc::new(file));
                    }
                    segments.push(segment);
                    break;
                }
                if !is_active {
                    write_segment_indexes(dir, &segment).await?;
                    info!(file = %path.display(), index_entries = segment.offset_index.entries().len(), time_index_entries = segment.time_index.entries().len(), "rebuilt segment indexes");
                }
                segment
            }
        };
        if let Some(file) = file {
            files.insert(base, Rc::new(file));
        }
        segments.push(segment);
    }
    if !report.checkpoint_used {
        // A checkpoint stays only while it describes the active segment:
        // the partition's clean close may then skip rewriting it (see
        // `Partition::close`). One that did not serve this start is stale.
        let _ = std::fs::remove_file(dir.join(CHECKPOINT_FILE));
    }
    if report.scanned_segments > 0 {
        info!(dir = %dir.display(), scanned_segments = report.scanned_segments, truncated_bytes = report.truncated_bytes, offline = report.offline_reason.is_some(), "recovered partition");
    }
    let log_start_offset = read_log_start_offset(dir);
    let log = PartitionLog::from_segments(config, segments, log_start_offset);
    if log.log_start_offset() < log_start_offset {
        // A crash lost records the persisted start had passed; persist the
        // start the log now has, or a later restart would hide the records
        // appended (and synced) at those offsets from now on.
        warn!(dir = %dir.display(), persisted = log_start_offset, log_start_offset = log.log_start_offset(), "log start offset was past the recovered log end");
        write_log_start_offset(dir, log.log_start_offset()).await?;
    }
    Ok((log, files, report))
}
