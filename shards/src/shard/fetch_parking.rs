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
use crate::mesh::data::{found_record_bytes, FetchWait, PartitionRead, ReadOutcome};
use crate::partition::DataSignal;

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
    async fn read_once(&self, reads: &[PartitionRead]) -> Vec<Result<ReadOutcome, ErrorCode>> {
        let mut outcomes = Vec::with_capacity(reads.len());
        let mut planned = Vec::new();
        let owned = self.backend.partitions_of(reads);
        for (i, (read, owner)) in reads.iter().zip(owned).enumerate() {
            let outcome = match owner {
                None => Some(Err(codes::NOT_LEADER_OR_FOLLOWER)),
                Some(p) => {
                    let outcome = p.read_without_io(read.offset);
                    if outcome.is_none() {
                        planned.push((i, p, read));
                    }
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        let done = futures::future::join_all(
            planned
                .iter()
                .map(|(_, p, read)| p.read(read.offset, read.max_bytes)),
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
        wait: Option<(FetchWait, oneshot::Receiver<()>)>,
    ) -> Vec<Result<ReadOutcome, ErrorCode>> {
        let started = std::time::Instant::now();
        let mut outcomes = self.read_once(reads).await;
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
            match self.park(reads, &outcomes, remaining_ms, &mut ended).await {
                Woken::Data => outcomes = self.read_once(reads).await,
                Woken::Ended => {
                    outcomes = self.read_once(reads).await;
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
        timeout_ms: u64,
        ended: &mut oneshot::Receiver<()>,
    ) -> Woken {
        let signal = Rc::new(DataSignal::default());
        let mut watching = false;
        let owned = self.backend.partitions_of(reads);
        for ((read, outcome), owner) in reads.iter().zip(outcomes).zip(owned) {
            let seen = outcome.as_ref().map_or(read.offset, |o| o.high_watermark);
            let Some(p) = owner else {
                continue;
            };
            if !p.watch_beyond(seen.max(read.offset), &signal) {
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
