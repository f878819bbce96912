//! A shard's budget of open segment files (issue: partitions bounded by
//! disk, not descriptors). A partition opens a segment's file when a read
//! or write needs it and keeps it while it is used; past the budget, the
//! least recently used file that nobody holds is closed first, and files
//! idle for the quiet period are closed by the maintenance tick. So idle
//! partitions hold no descriptor. The budget is a bound with backpressure:
//! an open that finds every file in use waits for one to be let go, and
//! only after `OVER_BUDGET_WAIT_MS` opens past the bound (saying so), so
//! that tasks holding files while they open another cannot deadlock.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::io::BufferedFile;
use tracing::warn;

use super::Partition;
use crate::clock::steady_ms;
use crate::disk::producer_snapshots::SegmentFileSource;
use crate::disk::segment_files::open_existing_segment_file;
use crate::io::splice::SliceDescriptors;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

/// Idle files closed between two yields to other tasks.
const IDLE_CLOSES_BETWEEN_YIELDS: usize = 64;
/// Least-recently-used entries looked at for one eviction.
const EVICTION_SCAN_MAX: usize = 256;
/// How long an open waits for a file to be let go before it goes past the
/// budget, and how often it looks.
const OVER_BUDGET_WAIT_MS: u64 = 1_000;
const OVER_BUDGET_POLL_MS: u64 = 1;

struct OpenEntry {
    partition: Weak<Partition>,
    segment_base_offset: i64,
    used_ms: i64,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileBudgetCounters {
    /// Segment files opened on demand (not counting creation or recovery).
    pub reopens: u64,
    /// Closed to make room for another.
    pub evictions: u64,
    /// Closed after the quiet period.
    pub idle_closes: u64,
    /// Opens that went past the budget because every file was in use.
    pub over_budget_opens: u64,
}

pub struct FileBudget {
    limit: usize,
    /// Room taken by opens in progress (`make_room` to registration), so
    /// that concurrent opens cannot together pass the bound.
    reserved: Cell<usize>,
    next_stamp: Cell<u64>,
    /// Open segment files by last use (stamp), oldest first.
    open: RefCell<BTreeMap<u64, OpenEntry>>,
    counters: Cell<FileBudgetCounters>,
    /// The bound on segment descriptors duplicated for responses in flight.
    slices: SliceDescriptors,
}

impl FileBudget {
    /// `limit` segment files open at once; `slice_limit` descriptors
    /// duplicated for responses in flight.
    pub fn new(limit: usize, slice_limit: usize) -> Rc<FileBudget> {
        assert!(limit > 0);
        Rc::new(FileBudget {
            slices: SliceDescriptors::new(slice_limit),
            limit,
            reserved: Cell::new(0),
            next_stamp: Cell::new(0),
            open: RefCell::new(BTreeMap::new()),
            counters: Cell::new(FileBudgetCounters::default()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn slices(&self) -> &SliceDescriptors {
        &self.slices
    }

    pub fn open_files(&self) -> usize {
        self.open.borrow().len()
    }

    pub fn counters(&self) -> FileBudgetCounters {
        self.counters.get()
    }

    /// Records a use of an open file (`previous`: its last stamp, None for
    /// a file just opened). Returns its new stamp.
    pub(super) fn touch(
        &self,
        partition: &Weak<Partition>,
        segment_base_offset: i64,
        previous: Option<u64>,
        now_ms: i64,
    ) -> u64 {
        let stamp = self.next_stamp.get();
        self.next_stamp.set(stamp + 1);
        let mut open = self.open.borrow_mut();
        if let Some(previous) = previous {
            open.remove(&previous);
        }
        open.insert(
            stamp,
            OpenEntry {
                partition: partition.clone(),
                segment_base_offset,
                used_ms: now_ms,
            },
        );
        stamp
    }

    /// A file closed by its partition (segment deleted, partition closed).
    pub(super) fn forget(&self, stamp: u64) {
        self.open.borrow_mut().remove(&stamp);
    }

    /// Waits until one more file fits (closing idle ones), or until the
    /// wait bound passes; the room is held until the returned guard drops
    /// (after the opened file is registered).
    pub async fn make_room(self: &Rc<Self>) -> RoomHeld {
        let mut waited_ms = 0;
        while self.open_files() + self.reserved.get() >= self.limit {
            if self.evict_one() {
                continue;
            }
            if waited_ms >= OVER_BUDGET_WAIT_MS {
                let mut counters = self.counters.get();
                counters.over_budget_opens += 1;
                self.counters.set(counters);
                warn!(
                    open = self.open_files(),
                    budget = self.limit,
                    "every open segment file is in use; opening one past the budget"
                );
                break;
            }
            glommio::timer::sleep(Duration::from_millis(OVER_BUDGET_POLL_MS)).await;
            waited_ms += OVER_BUDGET_POLL_MS;
        }
        self.reserved.set(self.reserved.get() + 1);
        RoomHeld {
            budget: self.clone(),
        }
    }

    pub(super) fn count_reopen(&self) {
        let mut counters = self.counters.get();
        counters.reopens += 1;
        self.counters.set(counters);
    }

    /// Closes files past the budget (after partitions registered the files
    /// they opened at recovery or creation).
    pub(super) fn trim(&self) {
        while self.open_files() > self.limit {
            if !self.evict_one() {
                return;
            }
        }
    }

    /// Closes the least recently used file nobody holds. False if none of
    /// the oldest `EVICTION_SCAN_MAX` could be closed.
    fn evict_one(&self) -> bool {
        let candidates: Vec<(u64, Weak<Partition>, i64)> = self
            .open
            .borrow()
            .iter()
            .take(EVICTION_SCAN_MAX)
            .map(|(stamp, e)| (*stamp, e.partition.clone(), e.segment_base_offset))
            .collect();
        for (stamp, partition, base) in candidates {
            if self.try_close(stamp, &partition, base) {
                let mut counters = self.counters.get();
                counters.evictions += 1;
                self.counters.set(counters);
                return true;
            }
        }
        false
    }

    /// Closes one entry's file if nobody holds it (or its partition is
    /// gone) and drops the entry. True if it did.
    fn try_close(&self, stamp: u64, partition: &Weak<Partition>, segment_base_offset: i64) -> bool {
        let closed = match partition.upgrade() {
            Some(partition) => partition.close_file_if_unused(segment_base_offset, stamp),
            None => true,
        };
        if closed {
            self.open.borrow_mut().remove(&stamp);
        }
        closed
    }

    /// Closes every file unused since `now_ms - quiet_ms` that nobody
    /// holds, yielding between small groups (after a mass creation that is
    /// thousands at once, and produce and fetch come first). Returns how
    /// many.
    pub async fn close_idle(&self, now_ms: i64, quiet_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(quiet_ms);
        let idle: Vec<(u64, Weak<Partition>, i64)> = self
            .open
            .borrow()
            .iter()
            .take_while(|(_, e)| e.used_ms < cutoff)
            .map(|(stamp, e)| (*stamp, e.partition.clone(), e.segment_base_offset))
            .collect();
        let mut closed = 0;
        for (i, (stamp, partition, base)) in idle.into_iter().enumerate() {
            if self.try_close(stamp, &partition, base) {
                closed += 1;
            }
            if i % IDLE_CLOSES_BETWEEN_YIELDS == IDLE_CLOSES_BETWEEN_YIELDS - 1 {
                glommio::executor().yield_if_needed().await;
            }
        }
        let mut counters = self.counters.get();
        counters.idle_closes += closed as u64;
        self.counters.set(counters);
        closed
    }
}

/// Room for one file, taken by `make_room`; given back when dropped.
pub struct RoomHeld {
    budget: Rc<FileBudget>,
}

impl Drop for RoomHeld {
    fn drop(&mut self) {
        let reserved = self.budget.reserved.get();
        debug_assert!(reserved > 0);
        self.budget.reserved.set(reserved.saturating_sub(1));
    }
}

/// One open segment file of a partition.
pub(super) struct OpenSegment {
    file: Rc<BufferedFile>,
    /// Its entry in the budget.
    stamp: u64,
}

impl Partition {
    /// The file of the segment at `segment_base_offset`, opened if it is
    /// closed (within the shard's budget). NotFound if the log has no such
    /// segment (deleted or replaced meanwhile).
    pub(super) async fn segment_file(
        &self,
        segment_base_offset: i64,
    ) -> io::Result<Rc<BufferedFile>> {
        if let Some(file) = self.use_open_file(segment_base_offset) {
            return Ok(file);
        }
        let gone = || io::Error::new(io::ErrorKind::NotFound, "the segment is gone");
        if self.log.borrow().segment(segment_base_offset).is_none() {
            return Err(gone());
        }
        let _room = self.file_budget.make_room().await;
        if let Some(file) = self.use_open_file(segment_base_offset) {
            return Ok(file);
        }
        let opened = open_existing_segment_file(&self.dir, segment_base_offset).await?;
        // Awaited twice: another task may have opened it, or removed the
        // segment, meanwhile.
        if let Some(file) = self.use_open_file(segment_base_offset) {
            return Ok(file);
        }
        if self.log.borrow().segment(segment_base_offset).is_none() {
            return Err(gone());
        }
        let file = Rc::new(opened);
        self.register_file(segment_base_offset, file.clone());
        self.file_budget.count_reopen();
        Ok(file)
    }

    fn use_open_file(&self, segment_base_offset: i64) -> Option<Rc<BufferedFile>> {
        let mut files = self.files.borrow_mut();
        let entry = files.get_mut(&segment_base_offset)?;
        entry.stamp = self.file_budget.touch(
            &self.me,
            segment_base_offset,
            Some(entry.stamp),
            steady_ms(),
        );
        Some(entry.file.clone())
    }

    /// The open file of a segment, if it is open (no I/O, no budget use).
    pub(super) fn open_file(&self, segment_base_offset: i64) -> Option<Rc<BufferedFile>> {
        self.files
            .borrow()
            .get(&segment_base_offset)
            .map(|entry| entry.file.clone())
    }

    /// Counts a file this partition opened (created, recovered, swapped
    /// in) as open; it replaces any file held for that segment.
    pub(super) fn register_file(&self, segment_base_offset: i64, file: Rc<BufferedFile>) {
        let stamp = self
            .file_budget
            .touch(&self.me, segment_base_offset, None, steady_ms());
        let replaced = self
            .files
            .borrow_mut()
            .insert(segment_base_offset, OpenSegment { file, stamp });
        if let Some(replaced) = replaced {
            self.file_budget.forget(replaced.stamp);
        }
    }

    /// Lets go of a segment's file (the segment was deleted or replaced).
    pub(super) fn forget_file(&self, segment_base_offset: i64) {
        let removed = self.files.borrow_mut().remove(&segment_base_offset);
        if let Some(removed) = removed {
            self.file_budget.forget(removed.stamp);
        }
    }

    /// Lets go of every file (the partition is deleted or dropped).
    pub(super) fn forget_files(&self) {
        let files = std::mem::take(&mut *self.files.borrow_mut());
        for entry in files.values() {
            self.file_budget.forget(entry.stamp);
        }
    }

    /// The budget closes a file: only if `stamp` is still its entry and no
    /// task holds the file (a read or write in flight keeps it open). True
    /// if the entry is gone.
    fn close_file_if_unused(&self, segment_base_offset: i64, stamp: u64) -> bool {
        let mut files = self.files.borrow_mut();
        match files.get(&segment_base_offset) {
            Some(entry) if entry.stamp == stamp => {
                if Rc::strong_count(&entry.file) > 1 {
                    return false;
                }
                files.remove(&segment_base_offset);
                true
            }
            // A stale entry: the file was closed or replaced since.
            _ => true,
        }
    }
}

impl SegmentFileSource for Partition {
    fn file_of(
        &self,
        segment_base_offset: i64,
    ) -> LocalBoxFuture<'_, io::Result<Option<Rc<BufferedFile>>>> {
        async move { self.segment_file(segment_base_offset).await.map(Some) }.boxed_local()
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.forget_files();
    }
}
