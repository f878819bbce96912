//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords: offset lookups and
//! moves on the shard that owns each partition.

use engine::protocol::kafka_protocol::messages::{self as km};

use engine::protocol as codes;

use super::dispatch::RequestContext;

use crate::mesh::data::{DeleteRecords, FindEpochEnd, ListOffset, ListedOffset};

pub async fn list_offsets(
    ctx: RequestContext,
    request: km::ListOffsetsRequest,
) -> km::ListOffsetsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let mut response = km::ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = km::list_offsets_response::ListOffsetsTopicResponse::default()
            .with_name(topic.name.clone());
        for partition in topic.partitions {
            let result = match shard.route(&name, partition.partition_index) {
                Err(code) => Err(code),
                Ok(owner) => {
                    let op = ListOffset {
                        topic: name.clone(),
                        partition: partition.partition_index,
                        timestamp_ms: partition.timestamp,
                        read_committed: version >= 2 && request.isolation_level == 1,
                    };
                    shard.call(owner, op).await
                }
            };
            let mut p = km::list_offsets_response::ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index);
            match result {
                Ok(ListedOffset {
                    offset,
                    timestamp_ms,
                }) => {
                    p.offset = offset;
                    p.timestamp = timestamp_ms;
                    if version >= 4 && offset >= 0 {
                        p.leader_epoch =
                            shard.backend.leader_epoch(&name, partition.partition_index);
                    }
                }
                Err(code) => p.error_code = code,
            }
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    response
}

/// Where each requested leader epoch ends, from the partition leader's
/// epoch cache (a partition that always had one replica has one epoch, which
/// ends at its high watermark); an epoch later than the leader's is unknown
/// (UNDEFINED offsets, as Kafka answers).
pub async fn offset_for_leader_epoch(
    ctx: RequestContext,
    request: km::OffsetForLeaderEpochRequest,
) -> km::OffsetForLeaderEpochResponse {
    let shard = &ctx.shard;
    let mut response = km::OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut out = km::offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
            .with_topic(topic.topic.clone());
        for p in topic.partitions {
            let mut entry = km::offset_for_leader_epoch_response::EpochEndOffset::default()
                .with_partition(p.partition);
            let leader_epoch = shard.backend.leader_epoch(&name, p.partition);
            let epoch_error =
                codes::check_current_leader_epoch(p.current_leader_epoch, leader_epoch);
            if epoch_error != codes::NONE {
                entry.error_code = epoch_error;
            } else {
                match shard.route(&name, p.partition) {
                    Err(code) => entry.error_code = code,
                    Ok(owner) => {
                        let op = FindEpochEnd {
                            topic: name.clone(),
                            partition: p.partition,
                            leader_epoch: p.leader_epoch,
                        };
                        match shard.call(owner, op).await {
                            Ok(end) => {
                                entry.leader_epoch = end.epoch;
                                entry.end_offset = end.end_offset;
                            }
                            Err(code) => entry.error_code = code,
                        }
                    }
                }
            }
            out.partitions.push(entry);
        }
        response.topics.push(out);
    }
    response
}

pub async fn delete_records(
    ctx: RequestContext,
    request: km::DeleteRecordsRequest,
) -> km::DeleteRecordsResponse {
    let shard = &ctx.shard;
    let mut response = km::DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = km::delete_records_response::DeleteRecordsTopicResult::default()
            .with_name(topic.name.clone());
        for p in topic.partitions {
            let mut entry = km::delete_records_response::DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match shard.route(&name, p.partition_index) {
                Err(code) => entry.error_code = code,
                Ok(owner) => {
                    let op = DeleteRecords {
                        topic: name.clone(),
                        partition: p.partition_index,
                        offset: p.offset,
                    };
                    match shard.call(owner, op).await {
                        Ok(start) => entry.low_watermark = start,
                        Err(code) => entry.error_code = code,
                    }
                }
            }
            out.partitions.push(entry);
        }
        response.topics.push(out);
    }
    response
}
