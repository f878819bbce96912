//! Retention: closed segments past `retention.ms`/`retention.bytes` go,
//! DeleteRecords moves the log start offset, idle active segments roll at
//! `segment.ms`.

use std::io;
use std::rc::Rc;

use engine::protocol::{self as codes, ErrorCode};
use tracing::info;

use super::Partition;
use crate::disk::segment_files::{remove_segment_files, write_log_start_offset};

impl Partition {
    /// Deletes closed segments past retention; returns (segments, bytes).
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> io::Result<(usize, u64)> {
        if self.closed.get() {
            return Ok((0, 0));
        }
        let (removed, log_start_offset) = {
            let mut log = self.log.borrow_mut();
            let doomed = log.plan_retention(now_ms, retention_ms, retention_bytes);
            if doomed.is_empty() {
                return Ok((0, 0));
            }
            let removed = log.remove_segments(&doomed);
            (removed, log.log_start_offset())
        };
        let bytes: u64 = removed.iter().map(|s| s.size_bytes).sum();
        self.forget_transactions_before(log_start_offset);
        write_log_start_offset(&self.dir, log_start_offset).await?;
        for segment in &removed {
            self.forget_file(segment.base_offset);
            remove_segment_files(&self.dir, segment.base_offset).await?;
        }
        info!(topic = %self.topic, partition = self.index, segments = removed.len(), bytes, log_start_offset, "retention deleted segments");
        Ok((removed.len(), bytes))
    }

    /// DeleteRecords: records below `offset` (-1: the high watermark) go;
    /// returns the new log start offset (the low watermark).
    pub async fn delete_records(&self, offset: i64) -> Result<i64, ErrorCode> {
        if self.offline.get() {
            return Err(codes::KAFKA_STORAGE_ERROR);
        }
        let high_watermark = self.high_watermark.get();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset > high_watermark {
            return Err(codes::OFFSET_OUT_OF_RANGE);
        }
        let log_start_offset = self
            .log
            .borrow_mut()
            .advance_log_start_offset(offset)
            .map_err(|_| codes::OFFSET_OUT_OF_RANGE)?;
        self.forget_transactions_before(log_start_offset);
        write_log_start_offset(&self.dir, log_start_offset)
            .await
            .map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
        // Whole segments below the new start go now rather than at the next
        // retention pass.
        self.apply_retention(crate::clock::now_ms(), -1, -1)
            .await
            .map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
        Ok(log_start_offset)
    }

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
}
