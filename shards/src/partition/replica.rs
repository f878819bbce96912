//! This replica's part in its partition's replication (DESIGN.md §5): its
//! role, the high watermark and the bytes it makes visible, the produces
//! waiting for it (acks=all), and the leader-epoch cache.
//!
//! - A partition with one replica is `Solo`: what is written is visible,
//!   as on a single node (acks=all still waits for its fdatasync).
//! - A `Leader` of several replicas follows `engine::replication`'s rules:
//!   the high watermark is the smallest fsynced log end over itself and
//!   its ISR. Its own writes are synced soon after they land, so acks=0/1
//!   records become visible within one fdatasync.
//! - A `Follower` appends what its shard's replica fetcher copies, with the
//!   leader's offsets and epochs, and keeps the leader's high watermark.
//!
//! Consumers read only below the high watermark. Because a zero-copy read
//! ends on a byte position, the high watermark moves only to the end of a
//! write whose position is known (`write_ends`), never into the middle of
//! one: a follower's fetch position between two write ends counts for the
//! earlier one until it reaches the next.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::rc::Rc;

use engine::protocol::{self as codes, ErrorCode};
use engine::replication::{
    check_fetch, truncation_point, EpochCache, EpochEnd, EpochEntry, FetchCheck, LeaderState,
};
use futures::channel::oneshot;
use tracing::{info, warn};

use super::Partition;
use crate::disk::durable::{off_shard, write_file_durably};

/// The leader-epoch cache's file in a partition directory (Kafka's name).
const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Produces waiting for the high watermark, per partition: beyond it a
/// produce is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND at once rather than
/// queued without bound.
const HIGH_WATERMARK_WAITERS_MAX: usize = 100_000;

pub(super) enum Role {
    Solo,
    Leader(Box<LeaderState>),
    Follower { leader: i32, leader_epoch: i32 },
}

/// The end of one write past the high watermark: offset after it, and where
/// it ends in which segment file.
#[derive(Debug, Clone, Copy)]
struct WriteEnd {
    next_offset: i64,
    segment_base_offset: i64,
    position: u64,
}

pub(super) struct Replication {
    pub(super) role: Role,
    write_ends: VecDeque<WriteEnd>,
    /// The byte end of the high watermark: segment base and position.
    /// Meaningless while `Solo` (everything written is visible).
    visible: (i64, u64),
    hw_waiters: Vec<(i64, oneshot::Sender<Result<(), ErrorCode>>)>,
    epochs: EpochCache,
    /// The cache changed since it was last written to its file.
    epochs_dirty: bool,
    /// Truncations so far (see `SyncMark`).
    truncations: u64,
    /// The log end the last fdatasync covered (the log as opened counts as
    /// synced): all a new leader may count as on its own disk.
    synced_end: i64,
}

/// What one fdatasync covers.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyncMark {
    durable_end: i64,
    truncations: u64,
}

impl Replication {
    pub(super) fn solo(synced_end: i64) -> Replication {
        Replication {
            role: Role::Solo,
            write_ends: VecDeque::new(),
            visible: (0, 0),
            hw_waiters: Vec::new(),
            epochs: EpochCache::default(),
            epochs_dirty: false,
            truncations: 0,
            synced_end,
        }
    }
}

/// What a follower's fetch position means to its leader.
pub enum FollowerFetch {
    /// Serve it (the high watermark may have moved).
    Serve,
    /// Its log diverged: it must truncate (Fetch `diverging_epoch`).
    Diverging(EpochEnd),
}

impl Partition {
    pub fn is_replicated(&self) -> bool {
        !matches!(self.replication.borrow().role, Role::Solo)
    }

    pub fn is_leader(&self) -> bool {
        !matches!(self.replication.borrow().role, Role::Follower { .. })
    }

    /// The epoch the leader stamps on batches (0 for a partition that has
    /// always had one replica).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    /// Where `requested` ends in this log (OffsetForLeaderEpoch): from the
    /// epoch cache; a partition that always had one replica has one epoch
    /// (its leader's), which ends at the high watermark.
    pub fn epoch_end(&self, requested: i32) -> EpochEnd {
        let replication = self.replication.borrow();
        if replication.epochs.latest_epoch().is_none() {
            let epoch = self.leader_epoch.get();
            return if requested <= epoch {
                EpochEnd {
                    epoch,
                    end_offset: self.high_watermark.get(),
                }
            } else {
                EpochEnd {
                    epoch: -1,
                    end_offset: -1,
                }
            };
        }
        replication
            .epochs
            .end_offset_for(requested, self.written_end.get())
    }

    /// The log end a follower fetches from, and the epoch of its last batch.
    pub fn fetch_position(&self) -> (i64, i32) {
        let latest = self.replication.borrow().epochs.latest_epoch();
        (self.written_end.get(), latest.unwrap_or(-1))
    }

    /// Becomes the leader of `leader_epoch` (or takes a new ISR in it).
    /// A single replica stays `Solo`.
    pub async fn become_leader(
        self: &Rc<Self>,
        node_id: i32,
        leader_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        min_insync_replicas: usize,
        now_ms: i64,
    ) {
        self.leader_epoch.set(leader_epoch.max(0));
        if replicas.len() <= 1 {
            self.replication.borrow_mut().role = Role::Solo;
            return;
        }
        let isr: BTreeSet<i32> = isr.iter().copied().collect();
        let moved = {
            let mut replication = self.replication.borrow_mut();
            match &mut replication.role {
                Role::Leader(state) if state.leader_epoch() == leader_epoch => {
                    state.isr_committed(isr)
                }
                _ => {
                    let written_end = self.written_end.get();
                    let high_watermark = self.high_watermark.get().min(written_end);
                    let synced_end = replication.synced_end.min(written_end);
                    let state = LeaderState::new(
                        node_id,
                        leader_epoch,
                        replicas,
                        isr,
                        min_insync_replicas,
                        written_end,
                        synced_end,
                        high_watermark,
                        now_ms,
                    );
                    replication.role = Role::Leader(Box::new(state));
                    if replication.epochs.latest_epoch() != Some(leader_epoch) {
                        if let Err(e) = replication.epochs.assign(leader_epoch, written_end) {
                            warn!(topic = %self.topic, partition = self.index, error = %e, "leader epoch not recorded");
                        }
                        replication.epochs_dirty = true;
                    }
                    info!(topic = %self.topic, partition = self.index, leader_epoch, log_end = written_end, high_watermark, "leading");
                    None
                }
            }
        };
        if let Some(high_watermark) = moved {
            self.advance_visible(high_watermark);
        }
        let unsynced_tail = {
            let replication = self.replication.borrow();
            replication.synced_end < self.written_end.get()
        };
        if unsynced_tail {
            // Its last appends as a follower count once on its disk; sync
            // now rather than at the next produce.
            let partition = self.clone();
            glommio::spawn_local(async move {
                partition.sync_durable().await;
            })
            .detach();
        }
        self.fail_waiters_if_too_few();
        self.persist_epochs().await;
    }

    /// Follows `leader` in `leader_epoch`: produces waiting here are told
    /// to go to the new leader.
    pub fn become_follower(&self, leader: i32, leader_epoch: i32) {
        self.leader_epoch.set(leader_epoch.max(0));
        let waiters = {
            let mut replication = self.replication.borrow_mut();
            let known = matches!(replication.role,
                Role::Follower { leader: l, leader_epoch: e } if l == leader && e == leader_epoch);
            if !known {
                info!(topic = %self.topic, partition = self.index, leader, leader_epoch, log_end = self.written_end.get(), "following");
            }
            replication.role = Role::Follower {
                leader,
                leader_epoch,
            };
            std::mem::take(&mut replication.hw_waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(codes::NOT_LEADER_OR_FOLLOWER));
        }
    }

    /// Whether an acks=all produce may be appended now.
    pub fn enough_replicas(&self) -> Result<(), ErrorCode> {
        match &self.replication.borrow().role {
            Role::Solo => Ok(()),
            Role::Leader(state) if state.enough_replicas() => Ok(()),
            Role::Leader(_) => Err(codes::NOT_ENOUGH_REPLICAS),
            Role::Follower { .. } => Err(codes::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// Resolves once the high watermark reaches `next_offset` (acks=all on
    /// a replicated leader), or with the error the producer should see.
    pub async fn wait_high_watermark(
        &self,
        next_offset: i64,
        timeout_ms: u64,
    ) -> Result<(), ErrorCode> {
        if self.high_watermark.get() >= next_offset {
            return Ok(());
        }
        let receiver = {
            let mut replication = self.replication.borrow_mut();
            if !matches!(replication.role, Role::Leader(_)) {
                return Err(codes::NOT_LEADER_OR_FOLLOWER);
            }
            if replication.hw_waiters.len() >= HIGH_WATERMARK_WAITERS_MAX {
                return Err(codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
            }
            let (sender, receiver) = oneshot::channel();
            replication.hw_waiters.push((next_offset, sender));
            receiver
        };
        let timer = glommio::timer::sleep(std::time::Duration::from_millis(timeout_ms));
        futures::pin_mut!(timer);
        match futures::future::select(receiver, timer).await {
            futures::future::Either::Left((answer, _)) => {
                answer.unwrap_or(Err(codes::NOT_LEADER_OR_FOLLOWER))
            }
            futures::future::Either::Right(_) => Err(codes::REQUEST_TIMED_OUT),
        }
    }

    /// Appends a record set the broker writes itself (a coordinator's
    /// record) and waits for acks=all.
    pub async fn append_acks_all(
        self: &Rc<Self>,
        records: bytes::Bytes,
        timeout_ms: u64,
    ) -> Result<crate::mesh::data::AppendOutcome, ErrorCode> {
        let appended = self
            .enqueue(records)
            .await
            .unwrap_or(Err(codes::UNKNOWN_SERVER_ERROR))?;
        self.wait_acks_all(appended.base_offset, timeout_ms).await?;
        Ok(appended)
    }

    /// acks=all for an append at `base_offset`: the ISR's high watermark
    /// passes it (several replicas), or the next fdatasync covers it (one).
    pub async fn wait_acks_all(
        self: &Rc<Self>,
        base_offset: i64,
        timeout_ms: u64,
    ) -> Result<(), ErrorCode> {
        if self.is_replicated() {
            // The high watermark moves only to whole writes, so passing the
            // base offset means passing the whole append.
            self.wait_high_watermark(base_offset + 1, timeout_ms).await
        } else if self.sync_durable().await {
            Ok(())
        } else {
            Err(codes::KAFKA_STORAGE_ERROR)
        }
    }

    /// The offset after the last batch written (followers and loaders read
    /// up to it).
    pub fn log_end_offset(&self) -> i64 {
        self.written_end.get()
    }

    /// The writer finished a write ending at `next_offset`, at `position`
    /// of the active segment.
    pub(super) fn on_written(self: &Rc<Self>, next_offset: i64, position: u64) {
        self.written_end.set(next_offset);
        let segment_base_offset = self.log.borrow().active().base_offset;
        let mut replication = self.replication.borrow_mut();
        let leading = match &mut replication.role {
            Role::Solo => {
                drop(replication);
                self.high_watermark.set(next_offset);
                return;
            }
            Role::Leader(state) => {
                state.on_append(next_offset);
                true
            }
            Role::Follower { .. } => false,
        };
        replication.write_ends.push_back(WriteEnd {
            next_offset,
            segment_base_offset,
            position,
        });
        drop(replication);
        if leading {
            // The high watermark needs this write on the leader's disk too;
            // no producer may be waiting (acks=0/1), so start the sync here.
            let partition = self.clone();
            glommio::spawn_local(async move {
                partition.sync_durable().await;
            })
            .detach();
        }
    }

    /// What an fdatasync starting now will cover: the written log end, as
    /// of the log's current truncation.
    pub(super) fn sync_mark(&self) -> SyncMark {
        SyncMark {
            durable_end: self.written_end.get(),
            truncations: self.replication.borrow().truncations,
        }
    }

    /// An fdatasync covered what `mark` says. One that started before a
    /// truncation says nothing about the log since.
    pub(super) fn on_synced(&self, mark: SyncMark) {
        let mut replication = self.replication.borrow_mut();
        if replication.truncations != mark.truncations {
            return;
        }
        let durable_end = mark.durable_end.min(self.written_end.get());
        replication.synced_end = replication.synced_end.max(durable_end);
        let moved = match &mut replication.role {
            Role::Leader(state) => state.on_durable(durable_end),
            _ => None,
        };
        drop(replication);
        if let Some(high_watermark) = moved {
            self.advance_visible(high_watermark);
        }
    }

    /// A follower fetched: checks its epochs, then counts its position.
    pub fn follower_fetched(
        &self,
        follower: i32,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        now_ms: i64,
    ) -> Result<FollowerFetch, ErrorCode> {
        let moved = {
            let mut replication = self.replication.borrow_mut();
            let Replication { role, epochs, .. } = &mut *replication;
            let Role::Leader(state) = role else {
                return Err(codes::NOT_LEADER_OR_FOLLOWER);
            };
            let code =
                codes::check_current_leader_epoch(current_leader_epoch, state.leader_epoch());
            if code != codes::NONE {
                return Err(code);
            }
            let written_end = self.written_end.get();
            if let FetchCheck::Diverging(end) =
                check_fetch(epochs, written_end, fetch_offset, last_fetched_epoch)
            {
                return Ok(FollowerFetch::Diverging(end));
            }
            if fetch_offset > written_end {
                return Err(codes::OFFSET_OUT_OF_RANGE);
            }
            state
                .on_follower_fetch(follower, fetch_offset, now_ms)
                .map_err(|e| {
                    warn!(topic = %self.topic, partition = self.index, follower, error = %e, "replica fetch refused");
                    codes::NOT_LEADER_OR_FOLLOWER
                })?
        };
        if let Some(high_watermark) = moved {
            self.advance_visible(high_watermark);
        }
        Ok(FollowerFetch::Serve)
    }

    /// The ISR this leader should ask the controller for now (followers
    /// lagging more than `lag_max_ms` leave, caught-up ones join), marked
    /// as in flight; None when it has nothing to ask.
    pub fn isr_change_due(&self, now_ms: i64, lag_max_ms: i64) -> Option<(i32, Vec<i32>)> {
        let mut replication = self.replication.borrow_mut();
        let Role::Leader(state) = &mut replication.role else {
            return None;
        };
        let change = state.isr_change(now_ms, lag_max_ms)?;
        state.isr_change_sent(&change);
        Some((change.leader_epoch, change.isr.into_iter().collect()))
    }

    /// The controller refused an ISR change: the committed ISR stands.
    pub fn isr_change_refused(&self, leader_epoch: i32, isr: &[i32]) {
        let moved = match &mut self.replication.borrow_mut().role {
            Role::Leader(state) if state.leader_epoch() == leader_epoch => {
                state.isr_committed(isr.iter().copied().collect())
            }
            _ => None,
        };
        if let Some(high_watermark) = moved {
            self.advance_visible(high_watermark);
        }
    }

    /// A follower learned its leader's high watermark.
    pub fn on_leader_high_watermark(&self, high_watermark: i64) {
        if matches!(self.replication.borrow().role, Role::Follower { .. }) {
            self.advance_visible(high_watermark.min(self.written_end.get()));
        }
    }

    /// Moves the visible end to the last write end at or below
    /// `high_watermark`; wakes long-polls and the produces it satisfies.
    fn advance_visible(&self, high_watermark: i64) {
        let mut replication = self.replication.borrow_mut();
        let mut reached = None;
        while let Some(end) = replication.write_ends.front() {
            if end.next_offset > high_watermark {
                break;
            }
            reached = replication.write_ends.pop_front();
        }
        let Some(end) = reached else {
            return;
        };
        assert!(
            end.next_offset >= self.high_watermark.get(),
            "the high watermark never moves back"
        );
        replication.visible = (end.segment_base_offset, end.position);
        self.high_watermark.set(end.next_offset);
        let (done, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut replication.hw_waiters)
            .into_iter()
            .partition(|(offset, _)| *offset <= end.next_offset);
        replication.hw_waiters = kept;
        drop(replication);
        for (_, waiter) in done {
            let _ = waiter.send(Ok(()));
        }
        self.wake_data_waiters();
    }

    /// Produces waiting while the ISR fell below `min.insync.replicas`
    /// cannot complete in time: Kafka answers them at once.
    fn fail_waiters_if_too_few(&self) {
        let waiters = {
            let mut replication = self.replication.borrow_mut();
            match &replication.role {
                Role::Leader(state) if !state.enough_replicas() => {
                    std::mem::take(&mut replication.hw_waiters)
                }
                _ => return,
            }
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND));
        }
    }

    /// The byte end a consumer may read in `segment_base_offset`.
    pub(super) fn visible_limit(&self, segment_base_offset: i64, written_limit: u64) -> u64 {
        let replication = self.replication.borrow();
        if matches!(replication.role, Role::Solo) {
            return written_limit;
        }
        let (base, position) = replication.visible;
        match segment_base_offset.cmp(&base) {
            std::cmp::Ordering::Less => written_limit,
            std::cmp::Ordering::Equal => position.min(written_limit),
            std::cmp::Ordering::Greater => 0,
        }
    }

    /// A follower's batches carry leader epochs this log has not seen:
    /// records where each starts.
    pub(super) fn note_replica_epochs(&self, batches: &[engine::record::BatchHeader]) {
        let mut replication = self.replication.borrow_mut();
        for batch in batches {
            let epoch = batch.partition_leader_epoch;
            if replication
                .epochs
                .latest_epoch()
                .is_none_or(|latest| epoch > latest)
            {
                if let Err(e) = replication.epochs.assign(epoch, batch.base_offset) {
                    warn!(topic = %self.topic, partition = self.index, error = %e, "leader epoch not recorded");
                }
                replication.epochs_dirty = true;
            }
        }
    }

    /// Where this follower truncates when its leader says its last epoch
    /// ends at `leader`.
    pub fn truncation_offset(&self, leader: EpochEnd) -> i64 {
        let replication = self.replication.borrow();
        truncation_point(
            &replication.epochs,
            self.written_end.get(),
            self.high_watermark.get(),
            leader,
        )
        .offset
    }

    /// After a truncation to `offset`: write ends, the epoch cache and the
    /// high watermark forget what is gone.
    /// Forgets the epochs that start at or past `offset` (none of their
    /// records is in the log); true if there were any.
    pub(super) fn forget_epochs_from(&self, offset: i64) -> bool {
        let mut replication = self.replication.borrow_mut();
        let latest = replication.epochs.latest_epoch();
        replication.epochs.truncate_from_end(offset);
        let changed = replication.epochs.latest_epoch() != latest;
        replication.epochs_dirty |= changed;
        changed
    }

    pub(super) fn truncated_replication(&self, offset: i64) {
        let mut replication = self.replication.borrow_mut();
        replication.truncations += 1;
        replication.synced_end = replication.synced_end.min(offset);
        replication
            .write_ends
            .retain(|end| end.next_offset <= offset);
        replication.epochs.truncate_from_end(offset);
        replication.epochs_dirty = true;
        if self.high_watermark.get() > offset {
            // Only a high watermark this follower never confirmed can be
            // past where its leader says it diverged.
            self.high_watermark.set(offset);
            let segment = self.log.borrow().active().base_offset;
            replication.visible = (segment, self.written_position.get());
        }
    }

    /// Writes the epoch cache if it changed (Kafka's leader-epoch-checkpoint:
    /// version, count, then one `epoch start_offset` line each).
    pub async fn persist_epochs(&self) {
        let text = {
            let mut replication = self.replication.borrow_mut();
            if !replication.epochs_dirty {
                return;
            }
            replication.epochs_dirty = false;
            encode_epoch_checkpoint(replication.epochs.entries())
        };
        let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
        if let Err(e) = write_file_durably(path, text.into_bytes()).await {
            warn!(topic = %self.topic, partition = self.index, error = %e, "cannot write the leader-epoch checkpoint");
            self.replication.borrow_mut().epochs_dirty = true;
        }
    }

    /// At open, a replica of several: the high watermark is not persisted,
    /// so it starts at the log start and moves to the log end once the ISR
    /// confirms it (consumers never read what a failover may still cut).
    pub fn hold_back_high_watermark(&self) {
        let (start, first_base, active_base, active_size) = {
            let log = self.log.borrow();
            let first_base = log.segments().next().map_or(0, |s| s.base_offset);
            (
                log.log_start_offset(),
                first_base,
                log.active().base_offset,
                log.active().size_bytes,
            )
        };
        let end = self.written_end.get();
        if start >= end {
            return;
        }
        let mut replication = self.replication.borrow_mut();
        replication.write_ends.clear();
        replication.write_ends.push_back(WriteEnd {
            next_offset: end,
            segment_base_offset: active_base,
            position: active_size,
        });
        replication.visible = (first_base, 0);
        self.high_watermark.set(start);
    }

    /// Loads the epoch cache written by `persist_epochs`, cut to the log.
    pub async fn load_epochs(&self) {
        let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
        let Some(entries) = off_shard(move || read_epoch_checkpoint(&path)).await else {
            return;
        };
        let mut cache = EpochCache::from_entries(entries);
        cache.truncate_from_end(self.written_end.get());
        self.replication.borrow_mut().epochs = cache;
    }
}

fn encode_epoch_checkpoint(entries: &[EpochEntry]) -> String {
    let mut text = format!("0\n{}\n", entries.len());
    for entry in entries {
        text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
    }
    text
}

fn read_epoch_checkpoint(path: &Path) -> Option<Vec<EpochEntry>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let entries: Vec<EpochEntry> = lines
        .take(count)
        .filter_map(|line| {
            let (epoch, start) = line.split_once(' ')?;
            Some(EpochEntry {
                epoch: epoch.parse().ok()?,
                start_offset: start.parse().ok()?,
            })
        })
        .collect();
    (entries.len() == count).then_some(entries)
}
