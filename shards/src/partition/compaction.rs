//! Log compaction of one partition (cleanup.policy=compact): keeps the
//! latest record per key in the closed segments, drops tombstones older than
//! `delete.retention.ms`, and swaps the result in atomically (the file
//! protocol is `disk::compaction_swap`). Runs in the low-priority
//! maintenance queue and yields between segments.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use engine::log::{compact_segment, scan_into_segment, OffsetMap, Segment};
use engine::metadata::TopicConfig;
use futures::channel::oneshot;
use glommio::io::OpenOptions;
use tracing::info;

use super::Partition;
use crate::disk::compaction_swap::{
    commit_swap, finish_swap, path_with, read_cleaner_checkpoint, swap_into_place,
    write_cleaner_checkpoint, write_swap_info,
};
use crate::disk::durable::off_shard;
use crate::disk::segment_files::{
    remove_segment_files, to_io, write_all_at, write_segment_indexes,
};

/// Most closed-segment bytes one cleaning pass reads (bounds memory).
const CLEAN_PASS_BYTES_MAX: u64 = 256 << 20;
/// Most distinct keys one pass tracks.
const OFFSET_MAP_BYTES_MAX: usize = 128 << 20;

/// Keeps a cleaning pass and a follower's truncation apart. A pass reads
/// segments, then swaps its output in for them; a truncation that cut
/// those segments meanwhile would see them come back. So a pass that a
/// truncation started after gives up before it commits, and a truncation
/// waits while a pass commits (a few fsyncs).
#[derive(Default)]
pub(super) struct CompactionFence {
    truncations: Cell<u64>,
    committing: Cell<bool>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl CompactionFence {
    pub(super) fn generation(&self) -> u64 {
        self.truncations.get()
    }

    /// A truncation is about to change the log.
    pub(super) async fn begin_truncation(&self) {
        while self.committing.get() {
            let (sender, receiver) = oneshot::channel();
            self.waiters.borrow_mut().push(sender);
            let _ = receiver.await;
        }
        self.truncations.set(self.truncations.get() + 1);
    }

    /// Whether a pass that began at `generation` may commit; if so, no
    /// truncation starts until `end_commit`.
    pub(super) fn begin_commit(&self, generation: u64) -> bool {
        assert!(!self.committing.get(), "one cleaning pass at a time");
        let clear = self.truncations.get() == generation;
        self.committing.set(clear);
        clear
    }

    pub(super) fn end_commit(&self) {
        self.committing.set(false);
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl Partition {
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
        let generation = self.compaction_fence.generation();
        let checkpoint = read_cleaner_checkpoint(&self.dir).await;
        // The cleanable range: closed segments old enough for
        // min.compaction.lag.ms, as a prefix, within the pass bound.
        let (range, dirty_bytes, total_bytes, oldest_dirty_ms) = {
            // Only below the last stable offset (Kafka's bound): a
            // follower's records above the high watermark may yet be cut by
            // a truncation, and an open transaction's outcome is unknown.
            let stable_offset = self.last_stable_offset();
            let log = self.log.borrow();
            let active_base = log.active().base_offset;
            let mut range = Vec::new();
            let mut total = 0u64;
            let mut dirty = 0u64;
            let mut oldest_dirty_ms = i64::MAX;
            for segment in log
                .segments()
                .take_while(|s| s.base_offset != active_base && s.next_offset <= stable_offset)
            {
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
            let file = match self.segment_file(base).await {
                Ok(file) => file,
                // Retention removed it meanwhile: clean another time.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
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
        if !self.swap_in(base, end, &bases, output, generation).await? {
            info!(topic = %self.topic, partition = self.index, "a truncation ran during the cleaning pass; its output is dropped");
            return Ok(None);
        }
        write_cleaner_checkpoint(&self.dir, end).await?;
        info!(topic = %self.topic, partition = self.index, segments = bases.len(), bytes_before = before, bytes_after = after, records_kept = kept, records_removed = removed, "compacted");
        Ok(Some((before, after)))
    }

    /// Steps 1–4 of the swap protocol, then the in-memory switch. False
    /// (nothing swapped) if a truncation began since `generation`.
    async fn swap_in(
        &self,
        base: i64,
        end: i64,
        old_bases: &[i64],
        bytes: Vec<u8>,
        generation: u64,
    ) -> io::Result<bool> {
        let mut segment = Segment::new(base);
        let outcome = scan_into_segment(
            &bytes,
            &mut segment,
            self.log.borrow().config().index_interval_bytes.max(1),
            crate::clock::now_ms(),
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
        if !self.compaction_fence.begin_commit(generation) {
            off_shard(move || std::fs::remove_file(cleaned_path)).await?;
            return Ok(false);
        }
        let committed = self.commit_swap_in(base, end, old_bases, segment).await;
        self.compaction_fence.end_commit();
        committed.map(|()| true)
    }

    async fn commit_swap_in(
        &self,
        base: i64,
        end: i64,
        old_bases: &[i64],
        segment: Segment,
    ) -> io::Result<()> {
        write_swap_info(&self.dir, base, end).await?;
        commit_swap(&self.dir, base).await?;
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
        for old in old_bases {
            self.forget_file(*old);
        }
        self.register_file(base, Rc::new(swapped));
        self.log
            .borrow_mut()
            .replace_segments(old_bases, segment.clone());
        for old in old_bases {
            remove_segment_files(&self.dir, *old).await?;
        }
        swap_into_place(&self.dir, base).await?;
        write_segment_indexes(&self.dir, &segment).await?;
        finish_swap(&self.dir, base).await
    }
}
