//! Log compaction on the shard (cleanup.policy=compact): keeps the latest
//! record per key in the closed segments, drops tombstones older than
//! `delete.retention.ms`, and swaps the result in atomically.
//!
//! Swap protocol (crash at any step leaves the old or the new segment set):
//! 1. write `<base>.cleaned`, fdatasync;
//! 2. write `<base>.swapinfo` (the end offset of the replaced range), durably;
//! 3. rename `.cleaned` → `.swap` and sync the directory: the commit point;
//! 4. delete the replaced segments' files, rename `.swap` → `.log`, write
//!    its indexes, delete `.swapinfo`.
//!
//! Recovery (`finish_interrupted_swaps`) deletes stray `.cleaned` files and
//! redoes step 4 for any `.swap` it finds.

use std::io;
use std::path::Path;
use std::rc::Rc;

use engine::log::{compact_segment, scan_into_segment, segment_file_stem, OffsetMap, Segment};
use engine::metadata::TopicConfig;
use glommio::io::OpenOptions;
use tracing::{info, warn};

use crate::partition::Partition;
use crate::partition_files::{
    remove_segment_files, sync_dir, to_io, write_all_at, write_segment_indexes,
};

/// Most closed-segment bytes one cleaning pass reads (bounds memory).
const CLEAN_PASS_BYTES_MAX: u64 = 256 << 20;
/// Most distinct keys one pass tracks.
const OFFSET_MAP_BYTES_MAX: usize = 128 << 20;
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

fn path_with(dir: &Path, base: i64, extension: &str) -> std::path::PathBuf {
    dir.join(format!("{}.{extension}", segment_file_stem(base)))
}

fn read_cleaner_checkpoint(dir: &Path) -> i64 {
    std::fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_small_file_durably(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Completes or rolls back a compaction swap a crash interrupted. Runs at
/// start-up before the segments are listed.
pub fn finish_interrupted_swaps(dir: &Path) -> io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in &names {
        if name.ends_with(".cleaned") {
            warn!(dir = %dir.display(), file = %name, "removing an unfinished compaction output");
            std::fs::remove_file(dir.join(name))?;
        }
    }
    for name in &names {
        let Some(stem) = name.strip_suffix(".swap") else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        let info = std::fs::read_to_string(path_with(dir, base, "swapinfo")).ok();
        let Some(end) = info.and_then(|t| t.trim().parse::<i64>().ok()) else {
            warn!(dir = %dir.display(), file = %name, "compaction swap without its range; dropping it");
            std::fs::remove_file(dir.join(name))?;
            continue;
        };
        warn!(dir = %dir.display(), base, end, "finishing an interrupted compaction swap");
        for other in &names {
            let Some(other_stem) = other.strip_suffix(".log") else {
                continue;
            };
            let Ok(other_base) = other_stem.parse::<i64>() else {
                continue;
            };
            if (base..end).contains(&other_base) {
                for extension in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(path_with(dir, other_base, extension));
                }
            }
        }
        std::fs::rename(dir.join(name), path_with(dir, base, "log"))?;
        std::fs::remove_file(path_with(dir, base, "swapinfo"))?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Partition {
    /// Starts a new segment when the active one is older than `segment.ms`
    /// even without new appends, so idle data becomes cleanable.
    pub async fn roll_if_idle_expired(self: &Rc<Self>, now_ms: i64) -> io::Result<()> {
        let due = {
            let log = self.log.borrow();
            let active = log.active();
            !active.is_empty()
                && active
                    .first_append_ms
                    .is_some_and(|first| now_ms - first >= log.config().segment_ms)
        };
        if !due || self.closed.get() || self.writer_running.replace(true) {
            return Ok(());
        }
        // A failed roll changes nothing (a failed sync fails the partition
        // inside `roll`); the caller logs it and the next tick retries.
        let result = self.roll().await;
        self.release_writer();
        result
    }

    /// One cleaning pass if the dirty ratio (or max.compaction.lag.ms) says
    /// so. Returns (bytes before, bytes after) of the cleaned range.
    pub async fn clean(
        self: &Rc<Self>,
        config: &TopicConfig,
        now_ms: i64,
    ) -> io::Result<Option<(u64, u64)>> {
        if self.closed.get() {
            return Ok(None);
        }
        let checkpoint = read_cleaner_checkpoint(&self.dir);
        // The cleanable range: closed segments old enough for
        // min.compaction.lag.ms, as a prefix, within the pass bound.
        let (range, dirty_bytes, total_bytes, oldest_dirty_ms) = {
            let log = self.log.borrow();
            let active_base = log.active().base_offset;
            let mut range = Vec::new();
            let mut total = 0u64;
            let mut dirty = 0u64;
            let mut oldest_dirty_ms = i64::MAX;
            for segment in log.segments().take_while(|s| s.base_offset != active_base) {
                let lagging = segment.max_timestamp_ms >= 0
                    && now_ms - segment.max_timestamp_ms < config.min_compaction_lag_ms;
                if lagging || total + segment.size_bytes > CLEAN_PASS_BYTES_MAX && !range.is_empty()
                {
                    break;
                }
                total += segment.size_bytes;
                if segment.base_offset >= checkpoint {
                    dirty += segment.size_bytes;
                    oldest_dirty_ms = oldest_dirty_ms.min(segment.max_timestamp_ms.max(0));
                }
                range.push((segment.base_offset, segment.size_bytes));
            }
            (range, dirty, total, oldest_dirty_ms)
        };
        if range.is_empty() || dirty_bytes == 0 {
            return Ok(None);
        }
        let ratio = dirty_bytes as f64 / total_bytes.max(1) as f64;
        let overdue = now_ms.saturating_sub(oldest_dirty_ms) >= config.max_compaction_lag_ms;
        if ratio < config.min_cleanable_dirty_ratio && !overdue {
            return Ok(None);
        }
        // Read the range and build the latest-offset-per-key map.
        let mut contents = Vec::with_capacity(range.len());
        let mut map = OffsetMap::new();
        for &(base, size) in &range {
            let file = self.files.borrow().get(&base).cloned();
            let Some(file) = file else { return Ok(None) };
            let bytes = file.read_at(0, size as usize).await.map_err(to_io)?;
            if bytes.len() as u64 != size {
                return Err(io::Error::other("short read of a closed segment"));
            }
            let bytes = bytes.to_vec();
            let mut position = 0usize;
            while position < bytes.len() {
                let header = engine::record::BatchHeader::parse(&bytes[position..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let end = position + header.total_bytes();
                map.add_batch(&bytes[position..end.min(bytes.len())])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                position = end;
                if map.memory_bytes() > OFFSET_MAP_BYTES_MAX {
                    break;
                }
            }
            contents.push(bytes);
            glommio::executor().yield_if_needed().await;
        }
        let horizon_ms = now_ms.saturating_sub(config.delete_retention_ms);
        let mut output = Vec::new();
        let (mut kept, mut removed) = (0usize, 0usize);
        for bytes in &contents {
            let (compacted, k, r) = compact_segment(bytes, &map, horizon_ms)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            output.extend_from_slice(&compacted);
            kept += k;
            removed += r;
            glommio::executor().yield_if_needed().await;
        }
        let base = range[0].0;
        let end = self.log.borrow().active().base_offset;
        let bases: Vec<i64> = range.iter().map(|(b, _)| *b).collect();
        let before: u64 = range.iter().map(|(_, s)| s).sum();
        let after = output.len() as u64;
        self.swap_in(base, end, &bases, output).await?;
        write_small_file_durably(&self.dir.join(CLEANER_CHECKPOINT_FILE), &format!("{end}\n"))?;
        info!(topic = %self.topic, partition = self.index, segments = bases.len(), bytes_before = before, bytes_after = after, records_kept = kept, records_removed = removed, "compacted");
        Ok(Some((before, after)))
    }

    /// Steps 1–4 of the swap protocol, then the in-memory switch.
    async fn swap_in(
        &self,
        base: i64,
        end: i64,
        old_bases: &[i64],
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        let mut segment = Segment::new(base);
        let outcome = scan_into_segment(
            &bytes,
            &mut segment,
            self.log.borrow().config().index_interval_bytes.max(1),
            crate::now_ms(),
        );
        if outcome.valid_bytes != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "compaction produced an invalid segment",
            ));
        }
        let cleaned_path = path_with(&self.dir, base, "cleaned");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&cleaned_path)
            .await
            .map_err(to_io)?;
        if !bytes.is_empty() {
            write_all_at(&file, bytes, 0).await?;
        }
        file.fdatasync().await.map_err(to_io)?;
        file.close().await.map_err(to_io)?;
        write_small_file_durably(&path_with(&self.dir, base, "swapinfo"), &format!("{end}\n"))?;
        std::fs::rename(&cleaned_path, path_with(&self.dir, base, "swap"))?;
        sync_dir(&self.dir).await?;
        // Committed: from here a crash finishes the swap at recovery.
        // Readers switch to the new segment at once, with no await between
        // the file map and the log (a fetch planned meanwhile would find a
        // segment without a file); the descriptor outlives the renames.
        let swapped = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(path_with(&self.dir, base, "swap"))
            .await
            .map_err(to_io)?;
        {
            let mut files = self.files.borrow_mut();
            for old in old_bases {
                files.remove(old);
            }
            files.insert(base, Rc::new(swapped));
        }
        self.log
            .borrow_mut()
            .replace_segments(old_bases, segment.clone());
        for old in old_bases {
            remove_segment_files(&self.dir, *old).await?;
        }
        std::fs::rename(
            path_with(&self.dir, base, "swap"),
            path_with(&self.dir, base, "log"),
        )?;
        write_segment_indexes(&self.dir, &segment).await?;
        std::fs::remove_file(path_with(&self.dir, base, "swapinfo"))?;
        sync_dir(&self.dir).await?;
        Ok(())
    }
}
