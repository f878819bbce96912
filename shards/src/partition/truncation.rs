//! A follower's truncation: its log loses what its leader says it never
//! had (the records past where their leader epochs diverge), so that the
//! next fetch copies the leader's records in their place.

use std::io;
use std::rc::Rc;

use engine::record::{BatchHeader, BATCH_HEADER_BYTES};
use futures::channel::oneshot;
use tracing::{info, warn};

use super::Partition;
use crate::clock::now_ms;
use crate::disk::producer_snapshots::recover_producer_states;
use crate::disk::segment_files::remove_segment_files;

/// Bound on batch headers read to find one batch boundary.
const HEADER_READS_MAX: usize = 1 << 20;

impl Partition {
    /// Cuts the log at the batch boundary at or before `offset`. Returns the
    /// new log end. The writer is held meanwhile, so no append interleaves.
    pub async fn truncate_log(self: &Rc<Self>, offset: i64) -> io::Result<i64> {
        while self.writer_running.replace(true) {
            let (sender, receiver) = oneshot::channel();
            self.writer_idle.borrow_mut().push(sender);
            let _ = receiver.await;
        }
        let result = self.truncate_holding_writer(offset).await;
        self.release_writer();
        if let Err(e) = &result {
            self.fail("truncation", e);
        }
        result
    }

    async fn truncate_holding_writer(&self, offset: i64) -> io::Result<i64> {
        let end = self.written_end.get();
        if self.is_leader() {
            // This replica was made leader since its fetch said to
            // truncate: a leader's log is the truth and only grows.
            return Ok(end);
        }
        if offset >= end {
            // Nothing to cut. But an epoch this replica started at its log
            // end when it last led, and wrote nothing in, is where its
            // fetches diverge: it must go, or every fetch would diverge on
            // it again and the replica never rejoin the ISR (Kafka drops
            // it the same way).
            if self.forget_epochs_from(end) {
                self.persist_epochs().await;
            }
            return Ok(end);
        }
        self.compaction_fence.begin_truncation().await;
        self.checkpoint_current.set(false);
        self.finish_direct().await?;
        let (_, cut) = self.log.borrow().plan_truncation(offset);
        let (offset, position) = match cut {
            Some(base) => self.batch_boundary(base, offset).await?,
            None => (offset, 0),
        };
        let removed = self.log.borrow_mut().truncate_to(offset, position);
        for segment in &removed {
            self.forget_file(segment.base_offset);
            remove_segment_files(&self.dir, segment.base_offset).await?;
        }
        let (active_base, active_size, log_end) = {
            let log = self.log.borrow();
            (
                log.active().base_offset,
                log.active().size_bytes,
                log.next_offset(),
            )
        };
        let file = self.segment_file(active_base).await?;
        file.truncate(active_size)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        file.fdatasync()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.written_position.set(active_size);
        self.written_end.set(log_end);
        self.truncated_replication(log_end);
        self.persist_epochs().await;
        self.rebuild_producer_states().await?;
        info!(topic = %self.topic, partition = self.index, from = end, to = log_end, segments_removed = removed.len(), "truncated to the leader's log");
        Ok(log_end)
    }

    /// The idempotent producers' state (and the transactions) of the cut log: what the cut batches
    /// recorded must go, or this replica, once leader, would answer a
    /// retried batch as a duplicate at an offset it no longer has. Rebuilt
    /// as at open (newest snapshot at or below the log end, then replay);
    /// truncation is rare, so the replay's cost does not matter.
    async fn rebuild_producer_states(&self) -> io::Result<()> {
        let log = self.log.borrow().clone();
        let (producers, txns) = recover_producer_states(&self.dir, &log, self, now_ms()).await?;
        *self.producers.borrow_mut() = producers;
        *self.txns.borrow_mut() = txns;
        Ok(())
    }

    /// The batch boundary at or before `offset` in the segment at
    /// `segment_base_offset`: (its offset, its position in the file).
    async fn batch_boundary(
        &self,
        segment_base_offset: i64,
        offset: i64,
    ) -> io::Result<(i64, u64)> {
        let (mut position, size) = {
            let log = self.log.borrow();
            let segment = log
                .segment(segment_base_offset)
                .ok_or_else(|| io::Error::other("the segment to cut is gone"))?;
            let start = match log.plan_read(offset) {
                Ok(Some(start)) if start.segment_base_offset == segment_base_offset => {
                    start.position
                }
                _ => 0,
            };
            (start, segment.size_bytes)
        };
        if offset <= segment_base_offset {
            return Ok((segment_base_offset, 0));
        }
        let file = self.segment_file(segment_base_offset).await?;
        for _ in 0..HEADER_READS_MAX {
            if position + BATCH_HEADER_BYTES as u64 > size {
                break;
            }
            let head = file
                .read_at(position, BATCH_HEADER_BYTES)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            let header = BatchHeader::parse(&head)
                .map_err(|e| io::Error::other(format!("stored batch header: {e:?}")))?;
            if header.next_offset() > offset {
                // `offset` is at or inside this batch: cut before it.
                return Ok((header.base_offset, position));
            }
            position += header.total_bytes() as u64;
        }
        warn!(topic = %self.topic, partition = self.index, offset, "no batch boundary found; cutting at the segment end");
        let next = self
            .log
            .borrow()
            .segment(segment_base_offset)
            .map_or(offset, |s| s.next_offset);
        Ok((next, size))
    }
}
