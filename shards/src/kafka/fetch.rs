//! Fetch: one read per owning shard (parked there for a long-poll), then a
//! response whose record sets go from the segment files to the socket by
//! splice, never through user space.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{
    self as codes, encode_fetch_frame, ErrorCode, FetchPartitionHead, FetchTopicHead,
};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;

use super::dispatch::{decode, RequestContext, RequestError, Started};
use super::response::leader_hint;
use crate::io::splice::{OutFrame, OutPart};
use crate::mesh::data::{found_record_bytes, EndWait, FetchWait, PartitionRead, Read, ReadOutcome};
use crate::shard::Shard;

/// Longest a Fetch may park, whatever the client asks.
const FETCH_WAIT_MS_MAX: u64 = 30_000;
/// How much longer the connection's own shard parks its part of a Fetch
/// than the other owners (see `read_slots`); only a bound in case an
/// answer never comes.
const LOCAL_WAIT_SLACK_MS: u64 = 1_000;

struct FetchSlot {
    topic: std::sync::Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    owner: Result<usize, ErrorCode>,
}

/// Reads every slot, one mesh message per owning shard. With `wait`, each
/// owner parks its reads until it has data (a long-poll); once the replies
/// hold `min_bytes`, or an error, the owners still parked are told to answer
/// now.
async fn read_slots(
    shard: &Rc<Shard>,
    slots: &[FetchSlot],
    replica_id: Option<i32>,
    read_committed: bool,
    wait: Option<FetchWait>,
) -> Vec<Result<ReadOutcome, ErrorCode>> {
    let mut by_owner: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut results: Vec<Result<ReadOutcome, ErrorCode>> = Vec::with_capacity(slots.len());
    for (i, slot) in slots.iter().enumerate() {
        results.push(Err(codes::UNKNOWN_SERVER_ERROR));
        match slot.owner {
            Ok(owner) => by_owner.entry(owner).or_default().push(i),
            Err(code) => results[i] = Err(code),
        }
    }
    let mut parked: Vec<usize> = by_owner.keys().copied().collect();
    // With other owners involved, this shard's own part waits a little
    // longer than theirs and is ended when their answers are all in: their
    // timers then stand for its timer too (one wake-up less per idle poll).
    let remote_owners = parked.iter().filter(|&&o| o != shard.id).count();
    let mut calls: FuturesUnordered<_> = by_owner
        .into_iter()
        .map(|(owner, indexes)| {
            let wait = wait.map(|w| FetchWait {
                timeout_ms: if owner == shard.id && remote_owners > 0 {
                    w.timeout_ms + LOCAL_WAIT_SLACK_MS
                } else {
                    w.timeout_ms
                },
                ..w
            });
            let reads = indexes
                .iter()
                .map(|&i| PartitionRead {
                    topic: slots[i].topic.clone(),
                    partition: slots[i].partition,
                    offset: slots[i].offset,
                    max_bytes: slots[i].max_bytes,
                    current_leader_epoch: slots[i].current_leader_epoch,
                    last_fetched_epoch: slots[i].last_fetched_epoch,
                })
                .collect();
            let shard = shard.clone();
            async move {
                let read = Read {
                    reads,
                    wait,
                    replica_id,
                    read_committed,
                };
                let outcomes = shard.call(owner, read).await;
                (owner, indexes, outcomes)
            }
        })
        .collect();
    let mut found_bytes = 0usize;
    let mut any_error = results.iter().any(|r| r.is_err());
    while let Some((owner, indexes, outcomes)) = calls.next().await {
        parked.retain(|&o| o != owner);
        assert_eq!(outcomes.len(), indexes.len());
        found_bytes += found_record_bytes(&outcomes);
        any_error |= outcomes.iter().any(|o| o.is_err());
        for (i, outcome) in indexes.into_iter().zip(outcomes) {
            results[i] = outcome;
        }
        if let Some(wait) = wait {
            let enough = found_bytes >= wait.min_bytes.max(1) || any_error;
            let others_answered = remote_owners > 0 && parked.iter().all(|&o| o == shard.id);
            if enough || others_answered {
                for owner in std::mem::take(&mut parked) {
                    // Only the send matters; the answer comes with the read.
                    drop(
                        shard
                            .dispatch(
                                owner,
                                EndWait {
                                    origin: wait.origin,
                                    id: wait.id,
                                },
                            )
                            .await,
                    );
                }
            }
        }
    }
    results
}

pub fn start_fetch(ctx: RequestContext, mut frame: Bytes) -> Result<Started, RequestError> {
    let request: km::FetchRequest = decode(&ctx, &mut frame)?;
    Ok(async move { Some(fetch(ctx, request).await) }.boxed_local())
}

/// Fetch: the response frame is assembled by hand around the record sets,
/// which stay file ranges until the connection splices them.
async fn fetch(ctx: RequestContext, request: km::FetchRequest) -> OutFrame {
    let (shard, correlation_id, version) = (&ctx.shard, ctx.correlation_id, ctx.version);
    let max_wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX);
    let response_bytes_max = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut slots = Vec::new();
    for topic in &request.topics {
        let name: std::sync::Arc<str> = topic.topic.0.as_str().into();
        let owners = shard.route_all(&name, topic.partitions.iter().map(|p| p.partition));
        for (partition, owner) in topic.partitions.iter().zip(owners) {
            slots.push(FetchSlot {
                topic: name.clone(),
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: partition.partition_max_bytes.max(0) as usize,
                current_leader_epoch: partition.current_leader_epoch,
                last_fetched_epoch: partition.last_fetched_epoch,
                owner,
            });
        }
    }
    let wait = (max_wait_ms > 0).then(|| FetchWait {
        origin: shard.id,
        id: shard.next_fetch_id(),
        timeout_ms: max_wait_ms,
        min_bytes: request.min_bytes.max(0) as usize,
    });
    // A follower's fetch names its broker (Fetch v12 and older carry it as
    // replica_id; consumers send -1).
    let replica_id = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let read_committed = request.isolation_level == 1;
    let results = read_slots(shard, &slots, replica_id, read_committed, wait).await;
    // The response's max_bytes: always return the first non-empty partition
    // whole, then only what fits.
    let mut budget = response_bytes_max;
    let mut topics: Vec<FetchTopicHead> = Vec::new();
    let mut slices = Vec::new();
    for (slot, result) in slots.iter().zip(results) {
        let mut head = FetchPartitionHead {
            partition_index: slot.partition,
            error_code: codes::NONE,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: Vec::new(),
            records_bytes: 0,
            diverging_epoch: None,
            current_leader: None,
        };
        match result {
            Ok(outcome) => {
                head.high_watermark = outcome.high_watermark;
                head.last_stable_offset = outcome.last_stable_offset;
                head.aborted_transactions = outcome
                    .aborted
                    .iter()
                    .map(|a| (a.producer_id, a.first_offset))
                    .collect();
                head.log_start_offset = outcome.log_start_offset;
                head.diverging_epoch = outcome
                    .diverging_epoch
                    .map(|end| (end.epoch, end.end_offset));
                if let Some(slice) = outcome.records {
                    let fits = slice.len as usize <= budget || budget == response_bytes_max;
                    if fits {
                        budget = budget.saturating_sub(slice.len as usize);
                        head.records_bytes = slice.len as u32;
                        slices.push(slice);
                    }
                }
            }
            Err(code) => {
                head.error_code = code;
                if matches!(
                    code,
                    codes::NOT_LEADER_OR_FOLLOWER | codes::FENCED_LEADER_EPOCH
                ) {
                    head.current_leader = leader_hint(shard, &slot.topic, slot.partition);
                }
            }
        }
        match topics.last_mut() {
            Some(last) if *last.name == *slot.topic => last.partitions.push(head),
            _ => topics.push(FetchTopicHead {
                name: slot.topic.to_string(),
                partitions: vec![head],
            }),
        }
    }
    let plan = encode_fetch_frame(correlation_id, version, &topics);
    // Interleave the encoded bytes with the record sets; partitions without
    // records leave empty gaps, which merge into the surrounding bytes.
    let mut slices = slices.into_iter();
    let sizes = topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records_bytes);
    let mut parts = Vec::new();
    let mut from = 0;
    for (gap, records_bytes) in plan.gaps.iter().zip(sizes) {
        if records_bytes == 0 {
            continue;
        }
        parts.push(OutPart::Bytes(plan.bytes[from..*gap].to_vec()));
        let slice = slices.next().expect("one slice per non-empty partition");
        assert_eq!(slice.len, records_bytes as u64);
        parts.push(OutPart::File(slice));
        from = *gap;
    }
    parts.push(OutPart::Bytes(plan.bytes[from..].to_vec()));
    assert!(slices.next().is_none());
    OutFrame { parts }
}
