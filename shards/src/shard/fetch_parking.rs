//! Fetch long-polls on the shard that owns the partitions: read, and if
//! there is too little, park until a partition gets data past what was
//! read, the fetch's shard ends the wait, or time runs out; then read again.
//! No polling: partitions wake their watchers on write.

use std::rc::Rc;
use std::time::Duration;

use engine::protocol::{self as codes, ErrorCode};
use futures::channel::oneshot;
use futures::future::{select, Either};

use super::Shard;
use crate::clock::steady_ms;
use crate::mesh::data::{found_record_bytes, FetchWait, PartitionRead, ReadBound, ReadOutcome};
use crate::partition::{DataSignal, FollowerFetch, Partition};

/// Bound on read-and-park rounds of one fetch long-poll (each round follows
/// a write to one of its partitions).
const FETCH_WAIT_ROUNDS_MAX: usize = 1000;

/// What ended one park of a fetch's reads (see `Shard::park`).
enum Woken {
    /// A partition has new data: read again.
    Data,
    /// The fetch's shard has enough from others: read again and answer.
    Ended,
    /// Time is up, or nothing is left to wait on: answer with the reads.
    Stop,
}

impl Shard {
    /// Reads every partition once. Caught-up partitions (most of a long
    /// poll's) answer from memory; only those with batches to plan await.
    async fn read_once(
        &self,
        reads: &[PartitionRead],
        replica_id: Option<i32>,
        bound: ReadBound,
    ) -> Vec<Result<ReadOutcome, ErrorCode>> {
        let mut outcomes = Vec::with_capacity(reads.len());
        let mut planned = Vec::new();
        let owned = self.backend.partitions_of(reads);
        let now = steady_ms();
        for (i, (read, owner)) in reads.iter().zip(owned).enumerate() {
            let outcome = match owner {
                None => Some(Err(self
                    .backend
                    .absent_partition_error(&read.topic, read.partition))),
                Some(p) => match check_reader(&p, read, replica_id, now) {
                    Some(answer) => Some(answer),
                    None => {
                        let outcome = p.read_without_io(read.offset, bound);
                        if outcome.is_none() {
                            planned.push((i, p, read));
                        }
                        outcome
                    }
                },
            };
            outcomes.push(outcome);
        }
        let done = futures::future::join_all(
            planned
                .iter()
                .map(|(_, p, read)| p.read(read.offset, read.max_bytes, bound)),
        )
        .await;
        for ((i, _, _), outcome) in planned.iter().zip(done) {
            outcomes[*i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every read has an outcome"))
            .collect()
    }

    /// Reads every partition. With `wait`, a read that finds fewer than
    /// `min_bytes` parks until a partition gets data past what was read,
    /// the fetch's shard ends the wait (the receiver), or time runs out, and
    /// reads again. No polling: partitions wake their waiters on write.
    pub(super) async fn read_partitions(
        &self,
        reads: &[PartitionRead],
        replica_id: Option<i32>,
        bound: ReadBound,
        wait: Option<(FetchWait, oneshot::Receiver<()>)>,
    ) -> Vec<Result<ReadOutcome, ErrorCode>> {
        let started = std::time::Instant::now();
        let mut outcomes = self.read_once(reads, replica_id, bound).await;
        let Some((wait, mut ended)) = wait else {
            return outcomes;
        };
        for _round in 0..FETCH_WAIT_ROUNDS_MAX {
            let enough = outcomes.iter().any(|o| o.is_err())
                || found_record_bytes(&outcomes) >= wait.min_bytes.max(1);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            if enough || elapsed_ms >= wait.timeout_ms {
                break;
            }
            let remaining_ms = wait.timeout_ms - elapsed_ms;
            match self
                .park(reads, &outcomes, bound, remaining_ms, &mut ended)
                .await
            {
                Woken::Data => outcomes = self.read_once(reads, replica_id, bound).await,
                Woken::Ended => {
                    outcomes = self.read_once(reads, replica_id, bound).await;
                    break;
                }
                Woken::Stop => break,
            }
        }
        self.parked_fetches
            .borrow_mut()
            .remove(&(wait.origin, wait.id));
        outcomes
    }

    /// Parks a fetch's reads until a partition has data past the high
    /// watermark its read saw, `ended` fires, or `timeout_ms` passes.
    async fn park(
        &self,
        reads: &[PartitionRead],
        outcomes: &[Result<ReadOutcome, ErrorCode>],
        bound: ReadBound,
        timeout_ms: u64,
        ended: &mut oneshot::Receiver<()>,
    ) -> Woken {
        let signal = Rc::new(DataSignal::default());
        let mut watching = false;
        let owned = self.backend.partitions_of(reads);
        for ((read, outcome), owner) in reads.iter().zip(outcomes).zip(owned) {
            let seen = match (outcome, bound) {
                (Ok(o), ReadBound::HighWatermark) => o.high_watermark,
                (Ok(o), ReadBound::LastStable) => o.last_stable_offset,
                _ => read.offset,
            };
            let Some(p) = owner else {
                continue;
            };
            if !p.watch_beyond(seen.max(read.offset), bound, &signal) {
                // A write landed while the reads ran.
                return Woken::Data;
            }
            watching = true;
        }
        if !watching {
            // Nothing here to wait on (moved or deleted): the reads stand.
            return Woken::Stop;
        }
        let timer = glommio::timer::sleep(Duration::from_millis(timeout_ms));
        futures::pin_mut!(timer);
        let fired = signal.fired();
        futures::pin_mut!(fired);
        let woken = select(fired, select(timer, ended)).await;
        match woken {
            Either::Left(_) => Woken::Data,
            // Time is up: nothing new arrived, the reads stand.
            Either::Right((Either::Left(_), _)) => Woken::Stop,
            Either::Right((Either::Right(_), _)) => Woken::Ended,
        }
    }
}

/// The checks before a read: a follower's fetch counts its position (or is
/// told to truncate); anyone's `current_leader_epoch` must be this leader's.
/// `Some` is the answer without reading.
fn check_reader(
    partition: &Partition,
    read: &PartitionRead,
    replica_id: Option<i32>,
    now_ms: i64,
) -> Option<Result<ReadOutcome, ErrorCode>> {
    let Some(follower) = replica_id else {
        if !partition.is_leader() {
            return Some(Err(codes::NOT_LEADER_OR_FOLLOWER));
        }
        let code =
            codes::check_current_leader_epoch(read.current_leader_epoch, partition.leader_epoch());
        return (code != codes::NONE).then_some(Err(code));
    };
    match partition.follower_fetched(
        follower,
        read.current_leader_epoch,
        read.offset,
        read.last_fetched_epoch,
        now_ms,
    ) {
        Err(code) => Some(Err(code)),
        Ok(FollowerFetch::Serve) => None,
        Ok(FollowerFetch::Diverging(end)) => Some(Ok(ReadOutcome {
            records: None,
            high_watermark: partition.high_watermark_offset(),
            last_stable_offset: partition.last_stable_offset(),
            log_start_offset: partition.log_start_offset(),
            aborted: Vec::new(),
            diverging_epoch: Some(end),
        })),
    }
}
